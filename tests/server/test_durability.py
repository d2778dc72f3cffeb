"""Nothing acknowledged is ever lost: kill -9 and SIGTERM of a real hub under load.

Each load is bounded in events and in time; the moment of the kill is random
(the seed is printed), the checks are not: every 202 is readable at its exact
position after the restart, offsets are contiguous, batches are whole.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from hubapi import ack, fetch_all, get_group, publish, put_group, put_topic, read, read_all
from hubproc import HubFactory, HubProcess

PUBLISHERS = 8
EVENTS_PER_PUBLISHER = 2000
LOAD_DEADLINE_S = 20.0
PARTITIONS = 3


@dataclass
class Outcome:
    """What every publish request of a load got back."""

    acked: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (partition, offset)
    batches: list[list[str]] = field(default_factory=list)  # ids sent together
    failed: set[str] = field(default_factory=set)  # no 202: refused, cut off or an error status
    error_statuses: list[tuple[int, str]] = field(default_factory=list)


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))


async def publisher(
    base: str,
    topic: str,
    n: int,
    out: Outcome,
    stop: asyncio.Event,
    deadline: float,
) -> None:
    """Publish up to EVENTS_PER_PUBLISHER events (odd publishers in batches) until cut off.

    Each event of a batch picks its own partition key, so most batches spread over
    several partitions: a kill -9 must keep such a batch whole or not at all.
    """
    rng = random.Random(n)
    per_request = 1 if n % 2 == 0 else 10
    async with session() as http:
        for i in range(EVENTS_PER_PUBLISHER // per_request):
            if stop.is_set() or time.monotonic() > deadline:
                return
            events = []
            for j in range(per_request):
                event: dict[str, Any] = {"type": "load.tick", "id": f"p{n}-{i}-{j}", "data": i}
                if rng.random() < 0.8:
                    event["partitionkey"] = f"key-{rng.randrange(20)}"
                events.append(event)
            batch = [e["id"] for e in events]
            out.batches.append(batch)
            try:
                positions = await publish(http, base, topic, *events)
            except AssertionError as exc:  # an answer other than 202
                out.failed.update(batch)
                out.error_statuses.append((n, str(exc)[:300]))
                return
            except (TimeoutError, aiohttp.ClientError):
                out.failed.update(batch)
                return
            for p in positions:
                out.acked[p["id"]] = (p["partition"], p["offset"])


async def tail(base: str, topic: str, seen: set[str], stop: asyncio.Event) -> None:
    """Read every partition as it grows (long polls), noting each id read, until cut off."""
    position: str | None = None
    async with session() as http:
        while not stop.is_set():
            try:
                page = await read(http, base, topic, limit=1000, wait=1, **{"from": position})
            except (AssertionError, TimeoutError, aiohttp.ClientError):
                return
            seen.update(r["event"]["id"] for r in page["records"])
            position = page["next"]


async def read_back(hub: HubProcess, topic: str) -> dict[tuple[int, int], str]:
    """Every record of ``topic`` after a restart, checking that each partition is contiguous."""
    log: dict[tuple[int, int], str] = {}
    async with session() as http:
        for p in range(PARTITIONS):
            records = await read_all(http, hub.base_url, topic, limit=5000, partition=p)
            offsets = [r["offset"] for r in records]
            assert offsets == list(range(len(records))), f"partition {p} has gaps"
            for r in records:
                log[(p, r["offset"])] = r["event"]["id"]
    ids = list(log.values())
    assert len(ids) == len(set(ids)), "an event was written twice"
    return log


def check_acknowledged(out: Outcome, log: dict[tuple[int, int], str]) -> None:
    for eid, pos in out.acked.items():
        assert log.get(pos) == eid, f"acknowledged {eid} at {pos} reads back as {log.get(pos)}"
    present = set(log.values())
    for batch in out.batches:
        kept = [eid in present for eid in batch]
        assert all(kept) or not any(kept), f"batch {batch[0]}.. was written in part"


@pytest.mark.parametrize("fsync", ["always", "interval:5"])
async def test_kill_9_during_a_publish_load_loses_no_acknowledged_event(
    hub_factory: HubFactory, fsync: str
) -> None:
    hub = hub_factory.start(fsync=fsync)
    topic = "load"
    async with session() as http:
        await put_topic(http, hub.base_url, topic, 201, partitions=PARTITIONS)

    seed = int.from_bytes(os.urandom(4), "big")
    kill_after = random.Random(seed).uniform(0.5, 1.5)
    print(f"seed {seed}: kill -9 after {kill_after:.2f}s")
    out = Outcome()
    stop = asyncio.Event()
    deadline = time.monotonic() + LOAD_DEADLINE_S
    tasks = [
        asyncio.create_task(
            publisher(hub.base_url, topic, n, out, stop, deadline)
        )
        for n in range(PUBLISHERS)
    ]
    seen: set[str] = set()
    tasks.append(asyncio.create_task(tail(hub.base_url, topic, seen, stop)))
    await asyncio.sleep(kill_after)
    hub.kill()
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert out.error_statuses == []
    assert len(out.acked) >= 20, "the load had not started when the hub was killed"

    hub.start()
    log = await read_back(hub, topic)
    print(f"{len(out.acked)} events acknowledged, {len(seen)} read, {len(log)} in the log after")
    check_acknowledged(out, log)
    # A reader never saw what the crash took back.
    unread = sorted(seen - set(log.values()))
    assert unread == [], f"{len(unread)} events read before the kill are gone, e.g. {unread[:3]}"

    # The hub goes on where the log ends.
    async with session() as http:
        [after] = await publish(http, hub.base_url, topic, {"type": "after", "partitionkey": "x"})
    assert after["offset"] == sum(1 for p, _ in log if p == after["partition"])


async def test_sigterm_while_publishing_writes_whole_requests_only(
    hub_factory: HubFactory,
) -> None:
    hub = hub_factory.start(fsync="always")
    topic = "graceful"
    async with session() as http:
        await put_topic(http, hub.base_url, topic, 201, partitions=PARTITIONS)

    seed = int.from_bytes(os.urandom(4), "big")
    term_after = random.Random(seed).uniform(0.5, 1.0)
    print(f"seed {seed}: SIGTERM after {term_after:.2f}s")
    out = Outcome()
    stop = asyncio.Event()
    deadline = time.monotonic() + LOAD_DEADLINE_S
    tasks = [
        asyncio.create_task(publisher(hub.base_url, topic, n, out, stop, deadline))
        for n in range(6)
    ]
    await asyncio.sleep(term_after)
    assert hub.proc is not None
    hub.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(hub.proc.wait, 30)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert code in (0, -signal.SIGTERM)
    log_text = hub.log_text()
    assert "Traceback" not in log_text, log_text
    assert len(out.acked) >= 20

    hub.start()
    log = await read_back(hub, topic)
    print(f"{len(out.acked)} events acknowledged, {len(log)} in the log after the restart")
    check_acknowledged(out, log)
    # A request that got no 202 wrote nothing: in-flight requests were finished, not cut.
    written_unacked = sorted(set(log.values()) & out.failed)
    assert written_unacked == [], f"{len(written_unacked)} events written without a 202"
    # 503 "shutting down" is an answer a client may get; any other error status is a bug.
    assert all("503" in text for _, text in out.error_statuses), out.error_statuses


async def test_group_positions_survive_restart_and_kill_9(hub_factory: HubFactory) -> None:
    """Acks out of order, leases left open; SIGTERM, more acks, kill -9: nothing acked returns."""
    hub = hub_factory.start()
    topic, group = "orders", "payments"
    n = 30
    async with session() as http:
        await publish(http, hub.base_url, topic, *[{"type": "o", "id": f"e{i}"} for i in range(n)])
        await put_group(http, hub.base_url, topic, group, 201, ack_wait=300)
        leased = await fetch_all(http, hub.base_url, topic, group, max_records=20, quiet_s=0)
        assert [r["offset"] for r in leased] == list(range(n))
        lease = {r["offset"]: r["lease"] for r in leased}
        acked: set[int] = set()
        for offsets in ([15, 2], [0, 19, 7], [1, 5, 11, 10], [28]):
            assert await ack(http, hub.base_url, topic, group, [lease[o] for o in offsets]) == len(
                offsets
            )
            acked.update(offsets)
        info = await get_group(http, hub.base_url, topic, group)
        assert info["partitions"][0]["committed"] == 3
        assert info["pending"] == n - len(acked)

    hub.restart()  # SIGTERM, then the same dir and port
    async with session() as http:
        again = await fetch_all(http, hub.base_url, topic, group, quiet_s=0.2)
        offsets = [r["offset"] for r in again]
        assert sorted(offsets) == sorted(set(range(n)) - acked)
        assert all(r["deliveries"] == 2 for r in again)  # the lease before the restart counts
        info = await get_group(http, hub.base_url, topic, group)
        assert info["partitions"][0]["committed"] == 3

        # Leases from before the restart are stale.
        url = f"{hub.base_url}/v1/topics/{topic}/groups/{group}/ack"
        async with http.post(url, json={"leases": [lease[3]]}) as resp:
            assert resp.status == 409

        lease = {r["offset"]: r["lease"] for r in again}
        for offsets in ([3, 29], [4, 6, 25], [20]):
            await ack(http, hub.base_url, topic, group, [lease[o] for o in offsets])
            acked.update(offsets)

    hub.restart(hard=True)  # kill -9
    async with session() as http:
        last = await fetch_all(http, hub.base_url, topic, group, quiet_s=0.2)
        assert sorted(r["offset"] for r in last) == sorted(set(range(n)) - acked)
        info = await get_group(http, hub.base_url, topic, group)
        assert info["partitions"][0]["committed"] == 8
        await ack(http, hub.base_url, topic, group, [r["lease"] for r in last])
        info = await get_group(http, hub.base_url, topic, group)
        assert (info["lag"], info["pending"]) == (0, 0)


async def test_kill_9_keeps_topics_groups_and_retention_config(hub_factory: HubFactory) -> None:
    hub = hub_factory.start()
    async with session() as http:
        retention = {"max_age": "1d", "max_bytes": 1 << 30}
        await put_topic(http, hub.base_url, "kept", 201, partitions=2, retention=retention)
        config = {"ack_wait": 7, "max_deliver": 2, "ordering": "key", "types": ["order.*"]}
        await put_group(
            http, hub.base_url, "kept", "g", 201, dead_letter_topic="kept-dead", **config
        )
        before = await get_group(http, hub.base_url, "kept", "g")
    hub.restart(hard=True)
    async with session() as http:
        async with http.get(f"{hub.base_url}/v1/topics/kept") as resp:
            info = await resp.json()
        assert len(info["partitions"]) == 2
        assert info["retention"] == {"max_age": 86400, "max_bytes": 1 << 30}
        after = await get_group(http, hub.base_url, "kept", "g")
        assert after["config"] == before["config"]
    # Groups are listed after a restart too.
    counts: dict[str, int] = defaultdict(int)
    async with session() as http, http.get(f"{hub.base_url}/v1/groups") as resp:
        for g in (await resp.json())["groups"]:
            counts[g["topic"]] += 1
    assert counts == {"kept": 1}


async def test_dedupe_window_survives_kill_9(hub_factory: HubFactory) -> None:
    """A producer that retries after a crash gets its first position, not a second copy."""
    hub = hub_factory.start()
    async with session() as http:
        await put_topic(http, hub.base_url, "orders", 201, partitions=2)
        first = await publish(
            http,
            hub.base_url,
            "orders",
            {"type": "o", "id": "a", "partitionkey": "k1"},
            {"type": "o", "id": "b", "partitionkey": "k2"},
        )
        [single] = await publish(http, hub.base_url, "orders", {"type": "o", "id": "c"})
    hub.restart(hard=True)
    async with session() as http:
        again = await publish(
            http,
            hub.base_url,
            "orders",
            {"type": "o", "id": "a", "partitionkey": "k1"},
            {"type": "o", "id": "b", "partitionkey": "k2"},
            {"type": "o", "id": "d"},
        )
        assert again[:2] == [{**p, "duplicate": True} for p in first]
        assert "duplicate" not in again[2]
        [retry] = await publish(http, hub.base_url, "orders", {"type": "o", "id": "c"})
        assert retry == {**single, "duplicate": True}
        records = await read_all(http, hub.base_url, "orders")
    assert sorted(r["event"]["id"] for r in records) == ["a", "b", "c", "d"]


async def test_sigterm_answers_open_long_polls_at_once(hub_factory: HubFactory) -> None:
    """A read and a fetch waiting 30 s do not hold a graceful shutdown for their wait."""
    hub = hub_factory.start()
    async with session() as http:
        await put_topic(http, hub.base_url, "idle", 201)
        await put_group(http, hub.base_url, "idle", "g", 201)

        async def long_read() -> int:
            url = f"{hub.base_url}/v1/topics/idle/events?from=latest&wait=30"
            async with http.get(url) as resp:
                await resp.read()
                return resp.status

        async def long_fetch() -> int:
            url = f"{hub.base_url}/v1/topics/idle/groups/g/fetch"
            async with http.post(url, json={"wait": 30}) as resp:
                await resp.read()
                return resp.status

        polls = [asyncio.create_task(long_read()), asyncio.create_task(long_fetch())]
        await asyncio.sleep(0.5)
        assert hub.proc is not None
        started = time.monotonic()
        hub.proc.send_signal(signal.SIGTERM)
        statuses = await asyncio.wait_for(asyncio.gather(*polls), 15)
        code = await asyncio.to_thread(hub.proc.wait, 15)
        took = time.monotonic() - started
    assert statuses == [200, 200]
    assert code in (0, -signal.SIGTERM)
    assert took < 8, f"shutdown took {took:.1f}s: the long polls held it"
    assert "Traceback" not in hub.log_text()
