"""Nothing acknowledged is lost when nats-server processes die with SIGKILL.

On a 3-node cluster with R3 streams (``sync_interval: always``), producers append
under load while the stream leader is killed; on one node, the server is killed and
restarted on its store. Afterwards every acknowledged append is read back at its
offset, none twice, the offsets dense, and appends go on after the election.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import nats
import pytest
from nats.js.client import JetStreamContext

from tidings.backends.nats import NatsLog, NatsSettings, names
from tidings.cluster.natsproc import NatsCluster, NatsServer
from tidings.errors import StorageUnavailable
from tidings.log.config import Retention

TOTAL = 5000  # records at most, per producing loop
BATCH = 5  # records per append
PRODUCERS = 4
LOOP_DEADLINE_S = 150.0
AFTER_KILL = 1000  # records acknowledged after the last kill before the loop stops


@dataclass
class Load:
    """What the producers were told: the offset of each acknowledged record id."""

    acked: dict[str, int] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def reach(self, count: int, timeout: float = 120.0) -> None:
        """Until ``count`` records are acknowledged (or the loop ended: the caller checks)."""
        deadline = time.monotonic() + timeout
        while len(self.acked) < count and not self.stop.is_set():
            assert time.monotonic() < deadline, f"{len(self.acked)} of {count} acknowledged"
            await asyncio.sleep(0.02)


async def produce(log: NatsLog, topic: str, load: Load, total: int = TOTAL) -> None:
    """PRODUCERS tasks append up to ``total`` records in batches of BATCH, until
    ``load.stop`` is set or LOOP_DEADLINE_S passes; a failed append is retried under
    the same ids, as a client would."""
    deadline = time.monotonic() + LOOP_DEADLINE_S
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for b in range(0, total, BATCH):
        queue.put_nowait([f"r{i:06d}" for i in range(b, min(b + BATCH, total))])

    async def producer() -> None:
        while not queue.empty() and not load.stop.is_set() and time.monotonic() < deadline:
            ids = queue.get_nowait()
            for _ in range(3):
                try:
                    offsets = await log.append(topic, 0, [i.encode() for i in ids], ids)
                except StorageUnavailable:
                    continue
                for i, o in zip(ids, offsets, strict=True):
                    load.acked[i] = o
                break
            else:
                load.failed.update(ids)

    try:
        await asyncio.gather(*(producer() for _ in range(PRODUCERS)))
    finally:
        load.stop.set()


async def until_after_kill(load: Load, loop: asyncio.Task[None]) -> int:
    """Let AFTER_KILL more records be acknowledged, stop the loop; how many came after."""
    at_kill = len(load.acked)
    await load.reach(at_kill + AFTER_KILL)
    load.stop.set()
    await loop
    return len(load.acked) - at_kill


async def read_all(log: NatsLog, topic: str) -> list[tuple[int, int, bytes]]:
    start, end = await log.bounds(topic, 0)
    assert start == 0
    out: list[tuple[int, int, bytes]] = []
    while len(out) < end:
        out += await log.read(topic, 0, len(out))
    return out


def check(load: Load, records: list[tuple[int, int, bytes]]) -> None:
    assert [r[0] for r in records] == list(range(len(records))), "offsets not dense"
    payloads = [r[2].decode() for r in records]
    assert len(set(payloads)) == len(payloads), "a record appended twice"
    for rid, offset in load.acked.items():
        assert payloads[offset] == rid, f"acknowledged {rid} at {offset} reads {payloads[offset]}"


async def leader_of(log: NatsLog, topic: str) -> str:
    info = await log.conn.api(f"STREAM.INFO.{names.stream_name(topic, 0)}")
    return str(info["cluster"]["leader"])


async def wait_current(log: NatsLog, topic: str, peers: int) -> None:
    """Until ``peers`` replicas besides the leader are current (bounded)."""
    deadline = time.monotonic() + 60
    while True:
        info = await log.conn.api(f"STREAM.INFO.{names.stream_name(topic, 0)}")
        replicas = info["cluster"].get("replicas", [])
        if sum(1 for r in replicas if r.get("current")) >= peers and info["cluster"].get("leader"):
            return
        assert time.monotonic() < deadline, f"replicas never current: {info['cluster']}"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(400)
async def test_sigkill_of_the_stream_leader_under_load_loses_no_acknowledged_append(
    nats_cluster: NatsCluster,
) -> None:
    log = await NatsLog.connect(NatsSettings(servers=tuple(nats_cluster.urls)), replicas=3)
    try:
        topic = "orders.eu"
        await log.create_topic(topic, 1)
        await wait_current(log, topic, 2)
        load = Load()
        loop = asyncio.create_task(produce(log, topic, load))
        await load.reach(1000)
        victim = nats_cluster.by_name(await leader_of(log, topic))
        victim.kill()
        assert await until_after_kill(load, loop) >= AFTER_KILL, "appends did not resume"
        assert await leader_of(log, topic) != victim.name
        check(load, await read_all(log, topic))
    finally:
        await log.close()


@pytest.mark.timeout(400)
async def test_a_killed_and_restarted_replica_keeps_every_acknowledged_append(
    nats_cluster: NatsCluster,
) -> None:
    """n1 is killed under load and restarted; once it caught up, another node is killed,
    so the records are read from a quorum that needs n1's store."""
    log = await NatsLog.connect(NatsSettings(servers=tuple(nats_cluster.urls)), replicas=3)
    try:
        topic = "payments"
        await log.create_topic(topic, 1)
        await wait_current(log, topic, 2)
        load = Load()
        # Enough records that the restart and its catch-up never use them all up
        # before the second kill (the loop still ends at LOOP_DEADLINE_S).
        loop = asyncio.create_task(produce(log, topic, load, total=20 * TOTAL))
        await load.reach(1000)
        first = nats_cluster.by_name(await leader_of(log, topic))
        first.kill()
        first.start()
        await asyncio.to_thread(first.wait_ready)
        await wait_current(log, topic, 2)
        second = next(s for s in nats_cluster.servers if s is not first)
        second.kill()
        at_kill = len(load.acked)
        after = await until_after_kill(load, loop)
        assert after >= AFTER_KILL, f"appends did not resume: {after} after {at_kill}"
        check(load, await read_all(log, topic))
    finally:
        await log.close()


@pytest.mark.timeout(300)
async def test_a_single_server_killed_and_restarted_keeps_every_acknowledged_append(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = NatsServer(tmp_path_factory.mktemp("nats1"), "solo", sync="always").start()
    try:
        server.wait_ready()
        log = await NatsLog.connect(NatsSettings(servers=(server.url,), retry_deadline_s=60))
        try:
            topic = "ledger"
            await log.create_topic(topic, 1)
            load = Load()
            loop = asyncio.create_task(produce(log, topic, load))
            await load.reach(1000)
            server.kill()
            server.start()
            await asyncio.to_thread(server.wait_ready)
            assert await until_after_kill(load, loop) >= AFTER_KILL, "appends did not resume"
            check(load, await read_all(log, topic))
        finally:
            await log.close()
    finally:
        server.kill()


@pytest.mark.timeout(300)
async def test_a_waiter_wakes_for_a_record_appended_after_the_leader_was_killed(
    nats_cluster: NatsCluster,
) -> None:
    settings = NatsSettings(servers=tuple(nats_cluster.urls))
    reader = await NatsLog.connect(settings, replicas=3)
    writer = await NatsLog.connect(settings, replicas=3)
    try:
        topic = "signals"
        await writer.create_topic(topic, 1)
        await wait_current(writer, topic, 2)
        assert await writer.append(topic, 0, [b"before"]) == [0]
        assert await reader.wait(topic, 0, 0, timeout=30)
        waiter = asyncio.create_task(reader.wait(topic, 0, 1, timeout=120))
        await asyncio.sleep(0.2)
        nats_cluster.by_name(await leader_of(writer, topic)).kill()
        assert await writer.append(topic, 0, [b"after"]) == [1]  # retried through the election
        assert await waiter
        assert (await reader.read(topic, 0, 1))[0][2] == b"after"
    finally:
        await reader.close()
        await writer.close()


@pytest.mark.timeout(120)
async def test_with_the_server_down_calls_fail_within_the_deadline_and_resume_after(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """No call waits forever on a dead server (nats-py's futures would): each gives up
    with StorageUnavailable once the retry deadline passes, and works once it is back."""
    server = NatsServer(tmp_path_factory.mktemp("nats2"), "down", sync="always").start()
    try:
        server.wait_ready()
        log = await NatsLog.connect(NatsSettings(servers=(server.url,), retry_deadline_s=2))
        try:
            await log.create_topic("t", 1)
            meta = await log.bucket("leases")
            assert await log.append("t", 0, [b"a", b"b"]) == [0, 1]
            assert await log.wait("t", 0, 0, timeout=5)
            server.kill()
            with pytest.raises(StorageUnavailable, match="no answer within 2"):
                await log.append("t", 0, [b"lost?"], ["one"])
            with pytest.raises(StorageUnavailable, match="no answer within 2"):
                await log.append("t", 0, [b"x", b"y"], ["two", "three"])
            with pytest.raises(StorageUnavailable):
                await log.read("t", 0, 0)
            with pytest.raises(StorageUnavailable):
                await meta.put("k", 1)
            assert not await log.wait("t", 0, 2, timeout=0.5)
            server.start()
            await asyncio.to_thread(server.wait_ready)
            # the failed appends may or may not have landed; their retry is deduplicated
            again = await log.append("t", 0, [b"x", b"y"], ["two", "three"])
            assert again[1] == again[0] + 1
            one = await log.append("t", 0, [b"lost?"], ["one"])
            records = await read_all(log, "t")
            assert [r[2] for r in records].count(b"lost?") == 1
            assert [r[0] for r in records] == list(range(len(records)))
            assert records[one[0]][2] == b"lost?"
            assert await meta.put("k", 1) > 0
        finally:
            await log.close()
    finally:
        server.kill()


@pytest.mark.timeout(120)
async def test_offsets_are_not_reused_after_retention_emptied_a_partition_and_a_restart(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = NatsServer(tmp_path_factory.mktemp("nats3"), "expiry", sync="always").start()
    try:
        server.wait_ready()
        log = await NatsLog.connect(NatsSettings(servers=(server.url,), retry_deadline_s=60))
        try:
            await log.create_topic("short", 1, Retention(max_age_ms=1000))
            assert await log.append("short", 0, [b"a", b"b", b"c"]) == [0, 1, 2]
            deadline = time.monotonic() + 30
            while await log.bounds("short", 0) != (3, 3):
                assert time.monotonic() < deadline, "JetStream never expired the records"
                await asyncio.sleep(0.2)
            server.kill()
            server.start()
            await asyncio.to_thread(server.wait_ready)
            assert await log.bounds("short", 0) == (3, 3)
            assert await log.append("short", 0, [b"d"]) == [3]
        finally:
            await log.close()
    finally:
        server.kill()


async def publish_bare(url: str, subject: str, payloads: list[bytes], ids: list[str]) -> list[int]:
    """The first attempt of an append, by bare nats-py: it lands, and its acks are never
    seen by the log (as when the connection drops before they arrive)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        return [
            int((await js.publish(subject, p, headers={"Nats-Msg-Id": i})).seq)
            for p, i in zip(payloads, ids, strict=True)
        ]
    finally:
        await nc.close()


async def test_an_append_whose_first_attempt_landed_answers_the_first_offsets(
    nats_log: NatsLog, nats_server: NatsServer
) -> None:
    topic = "landed-once"
    await nats_log.create_topic(topic, 1)
    subject = names.subject(topic, 0)
    assert await publish_bare(nats_server.url, subject, [b"one"], ["s1"]) == [1]
    assert await nats_log.append(topic, 0, [b"one"], ["s1"]) == [0]
    ids = ["b1", "b2", "b3"]
    assert await publish_bare(nats_server.url, subject, [b"1", b"2", b"3"], ids) == [2, 3, 4]
    assert await nats_log.append(topic, 0, [b"1", b"2", b"3"], ids) == [1, 2, 3]
    # only the first two landed: the third is appended after them, once
    assert await publish_bare(nats_server.url, subject, [b"p", b"q"], ["p1", "p2"]) == [5, 6]
    assert await nats_log.append(topic, 0, [b"p", b"q", b"r"], ["p1", "p2", "p3"]) == [4, 5, 6]
    records = await read_all(nats_log, topic)
    assert [r[2] for r in records] == [b"one", b"1", b"2", b"3", b"p", b"q", b"r"]
    # a whole batch of the largest size sent again: its offsets, nothing stored
    ids = [f"big{i}" for i in range(1000)]
    first = await nats_log.append(topic, 0, [i.encode() for i in ids], ids)
    assert first == list(range(7, 1007))
    assert await nats_log.append(topic, 0, [i.encode() for i in ids], ids) == first
    assert await nats_log.bounds(topic, 0) == (0, 1007)


@pytest.mark.timeout(120)
async def test_a_listing_and_a_first_wait_give_up_when_the_server_dies(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server dies after a bucket listing subscribed: the listing raises
    StorageUnavailable instead of waiting forever; a wait on a partition not followed
    yet answers False at its timeout instead of raising after the retry deadline."""
    server = NatsServer(tmp_path_factory.mktemp("nats4"), "dies", sync="always").start()
    try:
        server.wait_ready()
        log = await NatsLog.connect(NatsSettings(servers=(server.url,), retry_deadline_s=5))
        try:
            await log.create_topic("w", 1)
            meta = await log.bucket("groups")
            await meta.put("g", 1)
            subscribe = JetStreamContext.subscribe

            async def subscribe_then_die(self: Any, *args: Any, **kwargs: Any) -> Any:
                async def nothing(_: Any) -> None:
                    return None

                # nothing delivered reaches the listing: the server dies right away
                sub = await subscribe(self, *args, **{**kwargs, "cb": nothing})
                server.kill()
                return sub

            monkeypatch.setattr(JetStreamContext, "subscribe", subscribe_then_die)
            async with asyncio.timeout(60):  # the listing hung here before
                with pytest.raises(StorageUnavailable, match="listing of bucket groups"):
                    await meta.items()
                assert not await log.wait("w", 0, 0, timeout=0.5)
        finally:
            await log.close()
    finally:
        server.kill()


@pytest.mark.timeout(120)
async def test_an_append_stops_retrying_within_a_duplicate_window_cut_by_max_age(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """With max_age 1 s the duplicate window is 1 s: an append's retries end within it
    (else a retry landing later is stored twice), not at the 60 s retry deadline."""
    server = NatsServer(tmp_path_factory.mktemp("nats5"), "window", sync="always").start()
    try:
        server.wait_ready()
        log = await NatsLog.connect(NatsSettings(servers=(server.url,), retry_deadline_s=60))
        try:
            await log.create_topic("brief", 1, Retention(max_age_ms=1000))
            await log.create_topic("long", 1)
            assert await log.append("brief", 0, [b"a"]) == [0]
            server.kill()
            async with asyncio.timeout(30):  # the retry deadline is 60 s
                with pytest.raises(StorageUnavailable):
                    await log.append("brief", 0, [b"b"], ["b"])
                with pytest.raises(StorageUnavailable):
                    await log.append("brief", 0, [b"c", b"d"], ["c", "d"])
            long = asyncio.create_task(log.append("long", 0, [b"e"], ["e"]))
            await asyncio.sleep(3)
            assert not long.done()  # a topic with the full window still retries
            server.start()
            await asyncio.to_thread(server.wait_ready)
            assert await long == [0]
        finally:
            await log.close()
    finally:
        server.kill()
