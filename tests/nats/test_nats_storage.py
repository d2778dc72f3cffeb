"""The hub's storage seam on JetStream (``NatsStorage``, ``NatsPartition``), on a real
``nats-server``: partitions, appends in call order from one node and dense offsets
from two, metadata in KV shared by every node, and linked appends across partitions
(committed, held back, aborted; a writer process killed between its parts).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import types
import uuid
from collections.abc import AsyncIterator

import pytest

from tidings.backends.nats import NatsSettings, names
from tidings.backends.nats import linked as linked_module
from tidings.backends.nats.linked import ABORTED, COMMITTED, LINK_HEADER
from tidings.backends.nats.storage import NatsStorage, read_hub_id
from tidings.cluster.natsproc import NatsCluster, NatsServer
from tidings.errors import BadRequest, Conflict, OffsetOutOfRange, StorageUnavailable
from tidings.log.config import Retention

NO_RETENTION = Retention()


def topic_config(partitions: int, r: Retention = NO_RETENTION) -> dict[str, object]:
    """What the hub saves for a topic (``core.hub._topic_dict``)."""
    return {
        "partitions": partitions,
        "retention": {"max_age_ms": r.max_age_ms, "max_bytes": r.max_bytes},
    }


def fresh_topic() -> str:
    return f"t.{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def store(nats_server: NatsServer) -> AsyncIterator[NatsStorage]:
    s = await NatsStorage.connect([nats_server.url], link_timeout_s=3.0)
    yield s
    await s.close()


@pytest.fixture
async def other(nats_server: NatsServer) -> AsyncIterator[NatsStorage]:
    """A second node on the same cluster."""
    s = await NatsStorage.connect([nats_server.url], link_timeout_s=3.0)
    yield s
    await s.close()


async def make_topic(s: NatsStorage, topic: str, partitions: int, r: Retention = NO_RETENTION):  # type: ignore[no-untyped-def]
    parts = [await s.open_partition(topic, p, r) for p in range(partitions)]
    await s.save_topic(topic, topic_config(partitions, r))
    return parts


async def until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


# -- partitions --------------------------------------------------------------------


async def test_appends_not_awaited_land_in_call_order_and_read_back(store: NatsStorage) -> None:
    (part,) = await make_topic(store, fresh_topic(), 1)
    futures = [part.append([f"a{i}".encode(), f"b{i}".encode()]) for i in range(60)]
    bases = [await f for f in futures]
    assert bases == list(range(0, 120, 2))
    assert part.end_offset == 120
    records = await part.read(0, max_records=1000)
    assert [r[2] for r in records[:4]] == [b"a0", b"b0", b"a1", b"b1"]
    assert [r[0] for r in records] == list(range(120))
    assert (await part.read(118))[0][2] == b"a59"
    assert await part.read(120) == []
    with pytest.raises(OffsetOutOfRange):
        await part.read(121)


async def test_two_nodes_appending_to_one_partition_get_dense_distinct_offsets(
    store: NatsStorage, other: NatsStorage
) -> None:
    topic = fresh_topic()
    (a,) = await make_topic(store, topic, 1)
    await other.load_topics()
    b = await other.open_partition(topic, 0, NO_RETENTION)

    async def write(part, tag: bytes) -> list[tuple[int, bytes]]:  # type: ignore[no-untyped-def]
        out = []
        for i in range(40):
            payload = tag + str(i).encode()
            out.append((await part.append([payload]), payload))
        return out

    got = await asyncio.gather(write(a, b"a"), write(b, b"b"))
    acked = dict(got[0] + got[1])
    assert sorted(acked) == list(range(80))
    records = await a.read(0)
    assert {o: p for o, _, p in records} == acked
    # each node's end follows the other's appends (its tail subscription)
    await until(lambda: _true(a.end_offset == 80 and b.end_offset == 80))


async def _true(value: bool) -> bool:
    return value


async def test_a_wait_on_one_node_wakes_for_an_append_on_another(
    store: NatsStorage, other: NatsStorage
) -> None:
    topic = fresh_topic()
    (a,) = await make_topic(store, topic, 1)
    b = await other.open_partition(topic, 0, NO_RETENTION)
    waiting = asyncio.create_task(b.wait(0, timeout=10))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await a.append([b"x"])
    assert await waiting
    assert await b.wait(1, timeout=0.2) is False


async def test_an_append_of_more_than_1000_records_is_refused_whole(store: NatsStorage) -> None:
    (part,) = await make_topic(store, fresh_topic(), 1)
    with pytest.raises(BadRequest, match="1 to 1000 records"):
        part.append([b"x"] * 1001)
    assert part.end_offset == 0
    assert await part.append([b"x"] * 1000) == 0


async def test_retention_moves_the_start_and_apply_retention_counts_it(
    store: NatsStorage,
) -> None:
    r = Retention(max_bytes=2000)
    (part,) = await make_topic(store, fresh_topic(), 1, r)
    for _ in range(10):
        await part.append([b"y" * 500])
    removed = await part.apply_retention()
    assert removed > 0 and part.start_offset == removed
    assert part.size_bytes <= 2000
    assert (await part.read(part.start_offset))[0][0] == part.start_offset
    with pytest.raises(OffsetOutOfRange):
        await part.read(part.end_offset + 1)


async def test_a_read_below_a_start_jetstream_moved_by_itself_answers_from_the_start(
    store: NatsStorage, other: NatsStorage
) -> None:
    r = Retention(max_bytes=2000)
    topic = fresh_topic()
    (part,) = await make_topic(store, topic, 1, r)
    theirs = await other.open_partition(topic, 0, r)  # its start read before the appends
    for _ in range(10):
        await part.append([b"y" * 500])
    assert theirs.start_offset == 0  # no apply_retention on this node yet
    got = await theirs.read(0)
    assert got and got[0][0] > 0  # the records JetStream kept, not OffsetOutOfRange
    assert theirs.start_offset == got[0][0]
    assert [o for o, _, _ in got] == list(range(got[0][0], 10))


# -- metadata ----------------------------------------------------------------------


async def test_every_node_answers_the_same_hub_id(store: NatsStorage, other: NatsStorage) -> None:
    assert store.hub_id == other.hub_id and len(store.hub_id) == 32


async def test_a_group_saved_again_sees_what_another_node_wrote_since(
    store: NatsStorage, other: NatsStorage
) -> None:
    topic = fresh_topic()
    await make_topic(store, topic, 1)
    await store.save_group(topic, "g", {"max_deliver": 1})
    await store.save_positions(topic, "g", {0: (1, [])})
    await other.save_group(topic, "g", {"max_deliver": 2})  # another node's change
    await store.save_positions(topic, "g", {0: (2, [])})
    ((_, _, config, positions, _),) = [r for r in await other.load_groups() if r[0] == topic]
    assert config == {"max_deliver": 2} and positions[0][0] == 2
    await other.delete_group(topic, "g")
    await store.save_positions(topic, "g", {0: (3, [])})  # brings no row back
    assert [r for r in await other.load_groups() if r[0] == topic] == []


async def test_topics_groups_and_schemas_are_shared_by_nodes(
    store: NatsStorage, other: NatsStorage
) -> None:
    topic = fresh_topic()
    await make_topic(store, topic, 2)
    assert (await other.load_topics())[topic] == topic_config(2)
    await store.save_group(topic, "g.1", {"mode": "auto"})
    positions = {0: (5, [6, (8, 2)], [(9, 1, 100)]), 1: (0, [], [])}
    await store.save_positions(topic, "g.1", positions, {"acked": 3})
    await store.save_group(topic, "g.1", {"mode": "manual"})  # keeps the positions
    rows = [r for r in await other.load_groups() if r[0] == topic]
    assert rows == [(topic, "g.1", {"mode": "manual"}, positions, {"acked": 3})]
    await other.save_positions(topic, "g.1", {0: (6, [], [])})  # stats kept
    rows = [r for r in await store.load_groups() if r[0] == topic]
    assert rows == [(topic, "g.1", {"mode": "manual"}, {0: (6, [], [])}, {"acked": 3})]
    await store.save_positions(topic, "never-saved", {0: (1, [], [])})
    await store.save_group(topic, "g2", {})
    await store.delete_group(topic, "g.1")
    assert [r[1] for r in await other.load_groups() if r[0] == topic] == ["g2"]
    await store.save_schemas("order.placed", {"versions": [1]})
    assert (await other.load_schemas())["order.placed"] == {"versions": [1]}


async def test_a_dropped_topic_takes_its_streams_and_groups(
    store: NatsStorage, other: NatsStorage
) -> None:
    topic = fresh_topic()
    (part,) = await make_topic(store, topic, 1)
    await part.append([b"x"])
    await store.save_group(topic, "g", {})
    await store.drop_topic(topic)
    assert topic not in await other.load_topics()
    assert all(r[0] != topic for r in await other.load_groups())
    with pytest.raises(StorageUnavailable):
        part.append([b"x"])
    # made again: a new stream, offsets from 0
    (again,) = await make_topic(store, topic, 1)
    assert await again.append([b"y"]) == 0


async def test_a_creation_that_failed_before_its_record_is_dropped_too(
    store: NatsStorage,
) -> None:
    topic = fresh_topic()
    await store.open_partition(topic, 0, NO_RETENTION)  # no save_topic: a failed creation
    await store.drop_topic(topic)
    (part,) = await make_topic(store, topic, 1)
    assert part.end_offset == 0


# -- linked appends ----------------------------------------------------------------


async def test_a_linked_append_lands_in_every_partition_and_is_committed(
    store: NatsStorage, other: NatsStorage
) -> None:
    topic = fresh_topic()
    parts = await make_topic(store, topic, 3)
    await parts[1].append([b"before"])
    bases = await store.append_linked(topic, [(0, [b"a0", b"a1"]), (1, [b"b0"]), (2, [b"c0"])])
    assert bases == [0, 1, 0]
    await other.load_topics()
    theirs = [await other.open_partition(topic, p, NO_RETENTION) for p in range(3)]
    assert [r[2] for r in await theirs[0].read(0)] == [b"a0", b"a1"]
    assert [r[2] for r in await theirs[1].read(0)] == [b"before", b"b0"]
    assert await theirs[2].wait(0, timeout=5)
    raw = await store.log.read_with_headers(topic, 2, 0)
    link = raw[0][3][LINK_HEADER]
    assert (await store.links.bucket.get(link)).value == COMMITTED  # type: ignore[union-attr]


async def test_a_reader_that_aborts_a_slow_linked_append_fails_it_and_leaves_gaps(
    nats_server: NatsServer,
) -> None:
    writer = await NatsStorage.connect([nats_server.url], link_timeout_s=0.3)
    reader = await NatsStorage.connect([nats_server.url], link_timeout_s=0.3)
    try:
        topic = fresh_topic()
        parts = await make_topic(writer, topic, 2)
        slow = parts[1]
        real_append = writer.log.append_marked
        stored = asyncio.Event()

        async def slow_append(t, p, payloads, msg_ids=None, headers=None, repeats=None, split=True):  # type: ignore[no-untyped-def]
            if p == 1:
                await stored.wait()
                await asyncio.sleep(0.6)  # past the timeout: a reader aborts meanwhile
            out = await real_append(t, p, payloads, msg_ids, headers, repeats, split)
            if p == 0:
                stored.set()
            return out

        writer.log.append_marked = slow_append  # type: ignore[method-assign]
        linked = writer.append_linked(topic, [(0, [b"a"]), (1, [b"b"])])
        await stored.wait()
        theirs = await reader.open_partition(topic, 0, NO_RETENTION)
        assert await theirs.read(0) == []  # held back: undecided, younger than the timeout
        assert theirs.end_offset == 1
        assert not await theirs.wait(0, timeout=0.05)
        await asyncio.sleep(0.4)
        assert await theirs.read(0) == []  # aborted now: a gap
        with pytest.raises(StorageUnavailable, match="aborted"):
            await linked
        writer.log.append_marked = real_append  # type: ignore[method-assign]
        assert await slow.append([b"after"]) == 1
        theirs1 = await reader.open_partition(topic, 1, NO_RETENTION)
        assert [(o, p) for o, _, p in await theirs1.read(0)] == [(1, b"after")]
        assert await theirs1.wait(0, timeout=5)  # past the gap
    finally:
        await writer.close()
        await reader.close()


async def test_the_horizon_stays_at_a_held_back_linked_record_until_it_is_decided(
    store: NatsStorage, other: NatsStorage
) -> None:
    topic = fresh_topic()
    await make_topic(store, topic, 2)
    real_append = store.log.append_marked
    stored, go = asyncio.Event(), asyncio.Event()

    async def held_append(t, p, payloads, msg_ids=None, headers=None, repeats=None, split=True):  # type: ignore[no-untyped-def]
        if p == 1:
            await go.wait()
        out = await real_append(t, p, payloads, msg_ids, headers, repeats, split)
        if p == 0:
            stored.set()
        return out

    store.log.append_marked = held_append  # type: ignore[method-assign]
    try:
        linked = store.append_linked(topic, [(0, [b"a"]), (1, [b"b"])])
        await stored.wait()
        theirs = await other.open_partition(topic, 0, NO_RETENTION)
        assert await theirs.read(0) == []  # held back: undecided
        stamp = (await other.log.read(topic, 0, 0))[0][1]
        later = stamp + 3_600_000
        # The record becomes readable later with its own (earlier) time stamp.
        assert theirs.horizon(later) == stamp
        go.set()
        await linked
        assert [p for _, _, p in await theirs.read(0)] == [b"a"]
        assert theirs.horizon(later) == later
    finally:
        go.set()
        store.log.append_marked = real_append  # type: ignore[method-assign]


async def test_an_append_stored_but_not_answered_in_time_answers_its_offsets_once(
    store: NatsStorage,
) -> None:
    (part,) = await make_topic(store, fresh_topic(), 1)
    real_append = store.log.append_marked
    calls = 0

    async def unanswered(t, p, payloads, msg_ids=None, headers=None, repeats=None, split=True):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        out = await real_append(t, p, payloads, msg_ids, headers, repeats, split)
        if calls == 1:  # stored, but its ack is lost: the retry deadline passed
            raise StorageUnavailable("publish: no answer within 30 s")
        return out

    store.log.append_marked = unanswered  # type: ignore[method-assign]
    try:
        first = part.append([b"a", b"b"])
        assert await first == 0
        assert await part.append([b"c"]) == 2
    finally:
        store.log.append_marked = real_append  # type: ignore[method-assign]
    assert [p for _, _, p in await part.read(0)] == [b"a", b"b", b"c"]  # stored once


async def test_a_link_commit_stored_but_not_answered_in_time_is_a_success(
    store: NatsStorage,
) -> None:
    topic = fresh_topic()
    parts = await make_topic(store, topic, 2)
    bucket = store.links.bucket
    real_put = bucket.put

    async def unanswered(key, value, revision=None, *, msg_id=None):  # type: ignore[no-untyped-def]
        out = await real_put(key, value, revision, msg_id=msg_id)
        if value == COMMITTED:
            raise StorageUnavailable("publish: no answer within 30 s")
        return out

    bucket.put = unanswered  # type: ignore[method-assign]
    try:
        assert await store.append_linked(topic, [(0, [b"a"]), (1, [b"b"])]) == [0, 0]
    finally:
        bucket.put = real_put  # type: ignore[method-assign]
    assert [p for _, _, p in await parts[0].read(0)] == [b"a"]
    assert [p for _, _, p in await parts[1].read(0)] == [b"b"]


async def test_a_reader_whose_clock_runs_ahead_does_not_abort_a_live_linked_append(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = await NatsStorage.connect([nats_server.url], link_timeout_s=2.0)
    reader = await NatsStorage.connect([nats_server.url], link_timeout_s=2.0)
    try:
        topic = fresh_topic()
        await make_topic(writer, topic, 2)
        real_append = writer.log.append_marked
        stored, go = asyncio.Event(), asyncio.Event()

        async def held_append(t, p, payloads, msg_ids=None, headers=None, repeats=None, split=True):  # type: ignore[no-untyped-def]
            if p == 1:
                await go.wait()
            out = await real_append(t, p, payloads, msg_ids, headers, repeats, split)
            if p == 0:
                stored.set()
            return out

        writer.log.append_marked = held_append  # type: ignore[method-assign]
        linked = writer.append_linked(topic, [(0, [b"a"]), (1, [b"b"])])
        await stored.wait()
        # The reader's wall clock is an hour ahead of the server's time stamps.
        ahead = types.SimpleNamespace(time=lambda: time.time() + 3600, monotonic=time.monotonic)
        monkeypatch.setattr(linked_module, "time", ahead)
        theirs = await reader.open_partition(topic, 0, NO_RETENTION)
        assert await theirs.read(0) == []  # held back, not aborted
        go.set()
        assert await linked == [0, 0]
        assert [p for _, _, p in await theirs.read(0)] == [b"a"]
    finally:
        writer.log.append_marked = real_append  # type: ignore[method-assign]
        await writer.close()
        await reader.close()


WRITER = r"""
import asyncio, sys
from tidings.backends.nats import NatsSettings
from tidings.backends.nats.storage import NatsStorage, read_hub_id
from tidings.log.config import Retention

async def main(url, topic):
    s = await NatsStorage.connect([url], link_timeout_s=60)
    for p in range(2):
        await s.open_partition(topic, p, Retention())
    await s.save_topic(topic, {"partitions": 2, "retention": {}})
    real = s.log.append_marked
    first = asyncio.Event()

    async def append(t, p, payloads, msg_ids=None, headers=None, repeats=None, split=True):
        if p == 1:
            await first.wait()
            print("BETWEEN", flush=True)
            await asyncio.sleep(3600)
        out = await real(t, p, payloads, msg_ids, headers, repeats, split)
        first.set()
        return out

    s.log.append_marked = append
    await s.append_linked(topic, [(0, [b"a0", b"a1"]), (1, [b"b0"])])

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_writer_killed_between_parts_leaves_nothing_readable(
    nats_server: NatsServer,
) -> None:
    """SIGKILL of a writer process once its first part is stored and before its second
    is sent: readers hold back at the first part, abort it once it is older than the
    timeout, and then step over it; records appended after it are read as usual."""
    topic = fresh_topic()
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, nats_server.url, topic],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        assert line.strip() == b"BETWEEN", proc.stderr.read() if proc.stderr else line
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    reader = await NatsStorage.connect([nats_server.url], link_timeout_s=2.0)
    try:
        await reader.load_topics()
        p0 = await reader.open_partition(topic, 0, NO_RETENTION)
        p1 = await reader.open_partition(topic, 1, NO_RETENTION)
        assert (p0.end_offset, p1.end_offset) == (2, 0)
        await p0.append([b"later"])
        assert await p0.read(0) == []  # held back at the undecided part (and after it)
        assert await p0.wait(0, timeout=10)  # aborted once 2 s old: readable past it
        assert [(o, p) for o, _, p in await p0.read(0)] == [(2, b"later")]
        assert await p1.read(0) == []
        raw = await reader.log.read_with_headers(topic, 0, 0)
        link = raw[0][3][LINK_HEADER]
        assert (await reader.links.bucket.get(link)).value == ABORTED  # type: ignore[union-attr]
    finally:
        await reader.close()


@pytest.mark.timeout(200)
async def test_linked_appends_on_r3_survive_a_killed_stream_leader(
    nats_cluster: NatsCluster,
) -> None:
    s = await NatsStorage.connect(nats_cluster.urls, replicas=3)
    try:
        topic = fresh_topic()
        await make_topic(s, topic, 2)
        acked = []
        for i in range(20):
            acked.append(await s.append_linked(topic, [(0, [b"a%d" % i]), (1, [b"b%d" % i])]))
        info = await s.log.conn.api(f"STREAM.INFO.{names.stream_name(topic, 0)}")
        nats_cluster.by_name(info["cluster"]["leader"]).kill()
        for i in range(20, 40):
            acked.append(await s.append_linked(topic, [(0, [b"a%d" % i]), (1, [b"b%d" % i])]))
        assert acked == [[i, i] for i in range(40)]
        for p, tag in ((0, b"a"), (1, b"b")):
            records = await s._parts[(topic, p)].read(0)
            assert [r[2] for r in records] == [tag + b"%d" % i for i in range(40)]
    finally:
        await s.close()


async def test_a_storage_made_unconnected_starts_on_first_use_with_the_hub_id_read_before(
    nats_server: NatsServer, store: NatsStorage
) -> None:
    """What ``tidings serve`` does: the hub id read over a connection in a loop of its
    own (here a thread's), then a storage that connects within the server's loop."""
    hub_id = await asyncio.to_thread(read_hub_id, [nats_server.url])
    assert hub_id == store.hub_id
    lazy = NatsStorage(NatsSettings(servers=(nats_server.url,)), hub_id=hub_id)
    try:
        topic = fresh_topic()
        await make_topic(store, topic, 1)
        assert topic in await lazy.load_topics()
        assert lazy.hub_id == hub_id
    finally:
        await lazy.close()
    wrong = NatsStorage(NatsSettings(servers=(nats_server.url,)), hub_id="0" * 32)
    with pytest.raises(StorageUnavailable, match="holds hub"):
        await wrong.load_topics()
    await wrong.close()


async def test_a_topic_saved_with_fewer_partitions_than_the_cluster_holds_is_refused(
    store: NatsStorage, other: NatsStorage
) -> None:
    """A node that did not know of a topic made elsewhere (auto-creating it with its
    default of one partition) must not shrink it."""
    topic = fresh_topic()
    await make_topic(store, topic, 3)
    await other.open_partition(topic, 0, NO_RETENTION)
    with pytest.raises(Conflict, match="3 partitions in the cluster"):
        await other.save_topic(topic, topic_config(1))
    assert (await store.load_topics())[topic]["partitions"] == 3
    # the hub discards what a failed creation left: here, nothing of the cluster's topic
    await other.drop_topic(topic)
    assert (await store.load_topics())[topic]["partitions"] == 3
    (part,) = [await store.open_partition(topic, 0, NO_RETENTION)]
    assert await part.append([b"still here"]) == 0
    await other.open_partition(topic, 0, NO_RETENTION)
    await other.save_topic(topic, topic_config(4))  # growing is a change like any other
    assert (await store.load_topics())[topic]["partitions"] == 4


async def test_a_refused_change_leaves_a_later_deletion_whole(
    store: NatsStorage, other: NatsStorage
) -> None:
    topic = fresh_topic()
    await make_topic(store, topic, 1)
    assert topic in await other.load_topics()  # known to the other node
    await make_topic(store, topic, 3)  # grown by the first meanwhile
    with pytest.raises(Conflict, match="3 partitions in the cluster"):
        await other.save_topic(topic, topic_config(2))  # a change: refused
    await other.drop_topic(topic)  # a DELETE on the other node, later
    assert topic not in await store.load_topics()
