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

TOTAL = 5000  # records
BATCH = 5  # records per append
PRODUCERS = 4
LOOP_DEADLINE_S = 150.0


@dataclass
class Load:
    """What the producers were told: the offset of each acknowledged record id."""

    acked: dict[str, int] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    acks_at: list[float] = field(default_factory=list)  # monotonic time of each ack

    def after(self, t: float) -> int:
        return sum(1 for a in self.acks_at if a > t)


async def produce(log: NatsLog, topic: str, load: Load, start_at: asyncio.Event) -> None:
    """PRODUCERS tasks append TOTAL records in batches, bounded by LOOP_DEADLINE_S."""
    deadline = time.monotonic() + LOOP_DEADLINE_S
    batches = [
        [f"r{i:05d}" for i in range(b, min(b + BATCH, TOTAL))] for b in range(0, TOTAL, BATCH)
    ]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def producer() -> None:
        while not queue.empty() and time.monotonic() < deadline:
            ids = queue.get_nowait()
            for _ in range(3):  # a retry under the same ids, as a client would
                try:
                    offsets = await log.append(topic, 0, [i.encode() for i in ids], ids)
                except StorageUnavailable:
                    continue
                now = time.monotonic()
                for i, o in zip(ids, offsets, strict=True):
                    load.acked[i] = o
                    load.acks_at.append(now)
                break
            else:
                load.failed.update(ids)
            if len(load.acked) >= 1000:
                start_at.set()

    await asyncio.gather(*(producer() for _ in range(PRODUCERS)))
    start_at.set()


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
        half = asyncio.Event()
        loop = asyncio.create_task(produce(log, topic, load, half))
        await half.wait()
        victim = nats_cluster.by_name(await leader_of(log, topic))
        victim.kill()
        killed_at = time.monotonic()
        await loop
        assert load.after(killed_at) > 0, "no append acknowledged after the election"
        new_leader = await leader_of(log, topic)
        assert new_leader != victim.name
        check(load, await read_all(log, topic))
        assert len(load.acked) + len(load.failed) == TOTAL
        assert len(load.acked) > 2000  # the loop ran through the election
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
        half = asyncio.Event()
        loop = asyncio.create_task(produce(log, topic, load, half))
        await half.wait()
        first = nats_cluster.by_name(await leader_of(log, topic))
        first.kill()
        first.start()
        await asyncio.to_thread(first.wait_ready)
        await wait_current(log, topic, 2)
        second = next(s for s in nats_cluster.servers if s is not first)
        second.kill()
        killed_at = time.monotonic()
        await loop
        assert load.after(killed_at) > 0, "no append acknowledged after the second kill"
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
            half = asyncio.Event()
            loop = asyncio.create_task(produce(log, topic, load, half))
            await half.wait()
            server.kill()
            killed_at = time.monotonic()
            server.start()
            await asyncio.to_thread(server.wait_ready)
            await loop
            assert load.after(killed_at) > 0, "no append acknowledged after the restart"
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
