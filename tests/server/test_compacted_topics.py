"""Topics compacted by key, against real hub processes: configured by PUT, kept across
restarts, read and consumed across the gaps compaction leaves, and a hub killed with
SIGKILL again and again while it compacts keeps the latest value of every key."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from hubapi import (
    ack,
    expect_problem,
    fetch_all,
    get_group,
    get_topic,
    publish,
    put_group,
    put_topic,
    read,
    read_all,
    unique,
)
from hubproc import HubFactory, HubProcess, hub_env

FAST = ("--segment-bytes", "4096", "--compaction-interval", "0.05")
KILLS = int(os.environ.get("TIDINGS_TEST_COMPACTION_KILLS", "12"))  # more for a longer run
# Rounds added, at most, while no kill has landed mid-compaction yet.
EXTRA_AIMED_KILLS = 20


def keyed(key: str, value: Any, *, tombstone: bool = False) -> dict[str, Any]:
    ev: dict[str, Any] = {"type": "stock.set", "source": "/test", "partitionkey": key}
    if not tombstone:
        ev["data"] = value
    return ev


async def wait_compacted(
    http: aiohttp.ClientSession, base: str, topic: str, published: int, timeout: float = 30
) -> list[dict[str, Any]]:
    """Every record of ``topic`` once compaction has removed some of ``published``
    and the records read stay the same for 0.5 s (ten compaction intervals)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    before: list[dict[str, Any]] | None = None
    while True:
        records = await read_all(http, base, topic)
        if len(records) < published and records == before:
            return records
        before = records if len(records) < published else None
        assert loop.time() < deadline, f"compaction did not remove records and settle in {timeout}s"
        await asyncio.sleep(0.5 if before else 0.1)


async def test_put_topic_sets_compaction_and_it_survives_a_restart(
    hub_factory: HubFactory,
) -> None:
    hub = hub_factory.start()
    topic = unique("compacted")
    async with aiohttp.ClientSession() as http:
        made = await put_topic(http, hub.base_url, topic, 201, compaction="key")
        assert made["compaction"] == "key" and made["delete_retention"] == 86400
        got = await put_topic(http, hub.base_url, topic, 200, delete_retention="10m")
        assert got["compaction"] == "key" and got["delete_retention"] == 600
        # a change of retention keeps the compaction, and the other way round
        got = await put_topic(http, hub.base_url, topic, 200, retention={"max_bytes": 10**9})
        assert got["compaction"] == "key" and got["retention"]["max_bytes"] == 10**9
        plain = unique("plain")
        assert (await put_topic(http, hub.base_url, plain, 201))["compaction"] == "none"
    hub.restart()
    async with aiohttp.ClientSession() as http:
        info = await get_topic(http, hub.base_url, topic)
        assert (info["compaction"], info["delete_retention"]) == ("key", 600)
        assert info["retention"]["max_bytes"] == 10**9
        assert (await get_topic(http, hub.base_url, plain))["compaction"] == "none"
        await put_topic(http, hub.base_url, topic, 200, compaction="none")
        assert (await get_topic(http, hub.base_url, topic))["compaction"] == "none"


async def test_bad_compaction_settings_get_a_400_naming_the_field(hub: HubProcess) -> None:
    topic = unique("bad")
    async with aiohttp.ClientSession() as http:
        for body, field in [
            ({"compaction": "latest"}, "compaction"),
            ({"compaction": True}, "compaction"),
            ({"compaction": None}, "compaction"),
            ({"compaction": "key", "delete_retention": "soon"}, "delete_retention"),
            ({"compaction": "key", "delete_retention": -1}, "delete_retention"),
        ]:
            async with http.put(f"{hub.base_url}/v1/topics/{topic}", json=body) as resp:
                problem = await expect_problem(resp, 400)
            assert problem.get("field") == field, problem
            assert field in problem["detail"]
        async with http.get(f"{hub.base_url}/v1/topics/{topic}") as resp:
            assert resp.status == 404  # nothing was made


async def test_reads_and_groups_go_across_the_gaps(hub_factory: HubFactory) -> None:
    hub = hub_factory.start(*FAST)
    topic = unique("stock")
    rng = random.Random(3)
    async with aiohttp.ClientSession() as http:
        await put_topic(http, hub.base_url, topic, compaction="key")
        await put_group(http, hub.base_url, topic, "late", start="earliest")
        latest: dict[str, tuple[int, int]] = {}
        n = 600
        for i in range(0, n, 20):
            events = [keyed(f"sku-{rng.randrange(15)}", i + j) for j in range(20)]
            for ev, pos in zip(events, await publish(http, hub.base_url, topic, *events),
                               strict=True):
                latest[ev["partitionkey"]] = (pos["offset"], ev["data"])
        records = await wait_compacted(http, hub.base_url, topic, n)
        by_offset = {r["offset"]: r["event"] for r in records}
        for key, (offset, value) in latest.items():
            assert by_offset[offset]["partitionkey"] == key
            assert by_offset[offset]["data"] == value
        info = await get_topic(http, hub.base_url, topic)
        assert info["partitions"][0]["next_offset"] == n  # offsets never change

        # a read from a removed offset answers the next record kept
        kept = sorted(by_offset)
        gap = next(o for o in range(n) if o not in by_offset)
        page = await read(http, hub.base_url, topic, **{"from": gap, "limit": 1})
        # (the compactor goes on meanwhile and only removes: the answer is a record kept
        # at the snapshot, at or past the first one kept after the gap then)
        answered = page["records"][0]["offset"]
        assert answered >= min(o for o in kept if o > gap) and answered in by_offset

        # a group started before compaction gets every record kept, each once: those
        # kept when it fetched, so at least those still kept after it and at most
        # those kept before it (compaction only removes)
        got = await fetch_all(http, hub.base_url, topic, "late", max_records=100)
        after = {r["offset"] for r in await read_all(http, hub.base_url, topic)}
        delivered = [r["offset"] for r in got]
        assert len(delivered) == len(set(delivered)), "a record was delivered twice"
        assert after <= set(delivered) <= set(by_offset)
        assert all(r["event"] == by_offset[r["offset"]] for r in got)
        for i in range(0, len(got), 100):
            await ack(http, hub.base_url, topic, "late", [r["lease"] for r in got[i : i + 100]])
        group = await get_group(http, hub.base_url, topic, "late")
        assert group["lag"] == 0, group
        assert group["partitions"][0]["committed"] == n, group


# -- SIGKILL while compacting ---------------------------------------------------------


class Load:
    """Publishes keyed values and tombstones, noting each acknowledged one."""

    def __init__(self, base: str, topic: str, rng: random.Random) -> None:
        self.base = base
        self.topic = topic
        self.rng = rng
        self.seq = 0
        self.acked: dict[str, tuple[int, int, dict[str, Any]]] = {}  # id -> (p, offset, event)
        self.sent: dict[str, dict[str, Any]] = {}  # id -> event, acknowledged or not

    def events(self, n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            self.seq += 1
            key = f"k{self.rng.randrange(40)}"
            ev = keyed(key, {"seq": self.seq}, tombstone=self.rng.random() < 0.05)
            ev["id"] = f"e{self.seq}"
            self.sent[ev["id"]] = ev
            out.append(ev)
        return out

    async def run(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            events = self.events(self.rng.choice([1, 5, 20]))
            try:
                positions = await publish(http, self.base, self.topic, *events)
            except (TimeoutError, aiohttp.ClientError, AssertionError):
                return  # killed under it: these are not acknowledged
            for ev, pos in zip(events, positions, strict=True):
                self.acked[ev["id"]] = (pos["partition"], pos["offset"], ev)


def check_log(load: Load, records: list[dict[str, Any]], partitions: list[dict[str, Any]]) -> None:
    """What a restarted hub serves against what was acknowledged."""
    at: dict[tuple[int, int], dict[str, Any]] = {}
    last_of_key: dict[str, tuple[int, int]] = {}
    for r in records:
        ev = r["event"]
        where = (r["partition"], r["offset"])
        assert ev["id"] in load.sent, ev  # nothing made up
        acked = load.acked.get(ev["id"])
        if acked is not None:  # offsets unchanged
            assert (acked[0], acked[1]) == where, (ev["id"], acked, where)
        at[where] = ev
        last_of_key[ev["partitionkey"]] = max(last_of_key.get(ev["partitionkey"], where), where)
    # the latest acknowledged record of every key
    latest: dict[str, tuple[int, int, dict[str, Any]]] = {}
    for p, offset, ev in load.acked.values():
        key = ev["partitionkey"]
        if key not in latest or (p, offset) > latest[key][:2]:
            latest[key] = (p, offset, ev)
    for key, (p, offset, ev) in latest.items():
        last = last_of_key.get(key)
        if last is None:
            # gone only as a deleted key: a tombstone past its delete_retention
            assert "data" not in ev, (key, p, offset)
            continue
        assert last >= (p, offset), (key, "an older record is the latest", last, (p, offset))
        if last == (p, offset):
            assert at[last]["id"] == ev["id"] and at[last].get("data") == ev.get("data")
    assert sum(p["next_offset"] for p in partitions) >= len(load.acked)


def compacting(directory: Path) -> bool:
    """Whether a compaction's new files, not yet in place, are in ``directory``."""
    try:
        return any(name.endswith(".compacting") for name in os.listdir(directory))
    except FileNotFoundError:
        return False


async def until_compacting(directories: list[Path], timeout: float) -> None:
    """Return once a compaction writes its files in one of ``directories`` (or at the
    deadline: the kill then lands wherever it lands)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline and not any(compacting(d) for d in directories):
        await asyncio.sleep(0.001)


async def test_sigkill_while_compacting_keeps_the_latest_value_of_every_key(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    kills = KILLS
    hub = hub_factory.start(*FAST)
    topic = unique("kv")
    rng = random.Random(16)
    load = Load(hub.base_url, topic, rng)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await put_topic(
            http, hub.base_url, topic, 201, partitions=2, compaction="key", delete_retention=0
        )
    parts = [hub.data_dir / "topics" / topic / str(p) for p in range(2)]
    landed = 0  # kills that left a compaction's .compacting files behind
    round_ = 0
    while round_ < kills or (landed == 0 and round_ < kills + EXTRA_AIMED_KILLS):
        aimed = round_ % 2 == 1 or round_ >= kills
        async with aiohttp.ClientSession(timeout=timeout) as http:
            stop = asyncio.Event()
            tasks = [asyncio.create_task(load.run(http, stop)) for _ in range(4)]
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            if aimed:  # the next moment a compaction is writing its new files
                await until_compacting(parts, timeout=5)
            hub.kill()  # SIGKILL, at a random moment of the load (and of compaction)
            stop.set()
            await asyncio.gather(*tasks)
        cut = [d for d in parts if compacting(d)]
        landed += bool(cut)
        told = hub.log_text().count("of a compaction cut short")
        hub.start()
        # recovery removed what the compaction cut short left, and said so per partition
        # (the restarted hub may be compacting again already: its files prove nothing)
        assert hub.log_text().count("of a compaction cut short") == told + len(cut)
        round_ += 1
        async with aiohttp.ClientSession(timeout=timeout) as http:
            records = await read_all(http, hub.base_url, topic)
            info = await get_topic(http, hub.base_url, topic)
            check_log(load, records, info["partitions"])
            for p in info["partitions"]:
                assert not p["damage"], (round_, p)
            # a read from any offset succeeds and answers a record at or after it
            for _ in range(20):
                part = rng.randrange(2)
                end = info["partitions"][part]["next_offset"]
                if not end:
                    continue
                offset = rng.randrange(end)
                page = await read(
                    http, hub.base_url, topic, partition=part, **{"from": offset, "limit": 1}
                )
                assert page["records"] and page["records"][0]["offset"] >= offset
    assert landed, f"no kill of {round_} landed while a compaction was writing its files"
    cut_short = hub.log_text().count("of a compaction cut short")
    assert len(records) < len(load.acked)  # compaction removed records
    hub.stop()
    check = subprocess.run(
        [sys.executable, "-m", "tidings", "check", str(hub.data_dir)],
        capture_output=True, text=True, timeout=120, env=hub_env(),
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    print(
        f"kills={round_} acknowledged={len(load.acked)} kept={len(records)} "
        f"kills mid-compaction={landed} partitions cut short={cut_short}"
    )
    (tmp_path / "summary.json").write_bytes(
        orjson.dumps(
            {"kills": round_, "acked": len(load.acked), "landed": landed, "cut_short": cut_short}
        )
    )
