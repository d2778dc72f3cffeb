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

import pytest
from natsproc import NatsCluster, NatsServer

from tidings.backends.nats import NatsLog, NatsSettings, names
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
        queue.put_nowait([f"r{i:05d}" for i in range(b, min(b + BATCH, total))])

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
        loop = asyncio.create_task(produce(log, topic, load, total=4 * TOTAL))
        await load.reach(1000)
        first = nats_cluster.by_name(await leader_of(log, topic))
        first.kill()
        first.start()
        await asyncio.to_thread(first.wait_ready)
        await wait_current(log, topic, 2)
        second = next(s for s in nats_cluster.servers if s is not first)
        second.kill()
        assert await until_after_kill(load, loop) >= AFTER_KILL, "appends did not resume"
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
