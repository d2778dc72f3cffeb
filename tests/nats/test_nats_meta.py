"""Metadata in JetStream KV on a real nats-server: compare-and-set, deletes, listing
and watching."""

from __future__ import annotations

import asyncio
import itertools

import nats
import orjson
import pytest

from tidings.backends.nats import Entry, NatsLog, NatsSettings
from tidings.cluster.natsproc import NatsCluster, NatsServer
from tidings.errors import BadRequest, Conflict

_n = itertools.count()


async def test_put_is_compare_and_set_on_revision(nats_log: NatsLog) -> None:
    b = await nats_log.bucket(f"cas{next(_n)}")
    assert await b.get("g1") is None
    r1 = await b.put("g1", {"v": 1}, 0)  # 0: only if never written
    with pytest.raises(Conflict, match="changed since revision 0"):
        await b.put("g1", {"v": "lost"}, 0)
    r2 = await b.put("g1", {"v": 2}, r1)
    assert r2 > r1
    with pytest.raises(Conflict) as info:
        await b.put("g1", {"v": "stale"}, r1)
    assert info.value.fields == {"key": "g1", "revision": r1}
    assert await b.get("g1") == Entry("g1", {"v": 2}, r2)  # the refused writes changed nothing
    r3 = await b.put("g1", {"v": 3})  # unconditional
    assert (await b.get("g1")) == Entry("g1", {"v": 3}, r3)


async def test_two_writers_racing_on_one_revision_one_wins(nats_log: NatsLog) -> None:
    b = await nats_log.bucket(f"race{next(_n)}")
    rev = await b.put("lease", {"owner": None}, 0)
    results = await asyncio.gather(
        *(b.put("lease", {"owner": f"node{i}"}, rev) for i in range(5)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, int)]
    assert len(winners) == 1
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, int))
    entry = await b.get("lease")
    assert entry is not None and entry.revision == winners[0]


async def test_delete_leaves_a_marker_and_create_writes_again(nats_log: NatsLog) -> None:
    b = await nats_log.bucket(f"del{next(_n)}")
    rev = await b.create("w", {"url": "https://example.com"})
    with pytest.raises(Conflict):
        await b.create("w", {"url": "again"})
    drev = await b.delete("w", rev)
    assert await b.get("w") == Entry("w", None, drev)
    assert (await b.items())[0] == {}
    await b.create("w", {"url": "new"})
    assert (await b.get("w")) is not None


async def test_items_lists_the_latest_values_and_watch_follows_from_there(
    nats_log: NatsLog, nats_server: NatsServer
) -> None:
    name = f"watch{next(_n)}"
    b = await nats_log.bucket(name)
    await b.put("a", 1)
    await b.put("b", 2)
    await b.put("a", 3)
    await b.put("c", 4)
    await b.delete("c")
    entries, rev = await b.items()
    assert {k: e.value for k, e in entries.items()} == {"a": 3, "b": 2}
    seen: list[Entry] = []

    async def follow() -> None:
        async for entry in b.watch(rev):
            seen.append(entry)
            if len(seen) == 2:
                return

    watcher = asyncio.create_task(follow())
    other = await NatsLog.connect(NatsSettings(servers=(nats_server.url,)))
    try:
        ob = await other.bucket(name)  # the same bucket, seen from another node
        await ob.put("b", 5)
        await ob.delete("a")
        await asyncio.wait_for(watcher, 30)
    finally:
        await other.close()
    assert [(e.key, e.value) for e in seen] == [("b", 5), ("a", None)]
    assert seen[0].revision > rev


@pytest.mark.parametrize(
    "key", ["", "a b", "a.*", ">", "a..b", ".a", "a.", "a\r\nPUB x 1", "k\u00e9", "x" * 1025]
)
async def test_a_key_nats_cannot_carry_is_refused_and_nothing_is_written(
    nats_log: NatsLog, key: str
) -> None:
    b = await nats_log.bucket(f"keys{next(_n)}")
    for call in (b.get(key), b.put(key, 1), b.create(key, 1), b.delete(key)):
        with pytest.raises(BadRequest, match="KV key"):
            await call
    assert (await b.items())[0] == {}
    assert await b.put("ok.key/with=all-_chars", 1, 0) > 0  # the connection is unharmed


@pytest.mark.parametrize("name", ["", "a.b", "a b", "a*", "x" * 65])
async def test_a_bucket_name_nats_cannot_carry_is_refused(nats_log: NatsLog, name: str) -> None:
    with pytest.raises(BadRequest, match="bucket name"):
        await nats_log.bucket(name)


async def test_a_negative_revision_is_refused(nats_log: NatsLog) -> None:
    b = await nats_log.bucket(f"neg{next(_n)}")
    with pytest.raises(BadRequest, match="revision -1 is negative"):
        await b.put("k", 1, -1)
    assert await b.get("k") is None


async def write_first_ack_lost(url: str, bucket: str, key: str, value: object, msg_id: str) -> int:
    """A compare-and-set write (revision 0) that landed, published by bare nats-py as
    the first attempt of ``put`` would be; its revision, which the writer never saw."""
    nc = await nats.connect(url)
    try:
        ack = await nc.jetstream().publish(
            f"$KV.{bucket}.{key}", orjson.dumps(value),
            headers={"Nats-Msg-Id": msg_id, "Nats-Expected-Last-Subject-Sequence": "0"},
        )  # fmt: skip
        return int(ack.seq)
    finally:
        await nc.close()


async def check_retry_after_lost_ack(log: NatsLog, url: str, replicated: bool) -> None:
    name = f"lost{next(_n)}"
    b = await log.bucket(name)
    await b.put("other", 1)  # the key's revision is not the bucket's first
    first = await write_first_ack_lost(url, name, "lease", {"owner": "n1"}, "w-1")
    # the retry, under the same id and expected revision: the first revision, no Conflict
    assert await b.put("lease", {"owner": "n1"}, 0, msg_id="w-1") == first
    assert await b.get("lease") == Entry("lease", {"owner": "n1"}, first)
    # another write on that same stale revision is still refused
    with pytest.raises(Conflict, match="changed since revision 0"):
        await b.put("lease", {"owner": "n2"}, 0, msg_id="w-2")
    # once another write followed, a late retry changes nothing: a replicated stream
    # answers it from the duplicate window, an R1 stream (our id is not the key's
    # last any more) with Conflict
    second = await b.put("lease", {"owner": "n3"}, first)
    if replicated:
        assert await b.put("lease", {"owner": "n1"}, 0, msg_id="w-1") == first
    else:
        with pytest.raises(Conflict):
            await b.put("lease", {"owner": "n1"}, 0, msg_id="w-1")
    assert await b.get("lease") == Entry("lease", {"owner": "n3"}, second)


async def test_a_write_retried_after_its_ack_was_lost_answers_its_revision_on_r1(
    nats_log: NatsLog, nats_server: NatsServer
) -> None:
    await check_retry_after_lost_ack(nats_log, nats_server.url, replicated=False)


@pytest.mark.timeout(120)
async def test_a_write_retried_after_its_ack_was_lost_answers_its_revision_on_r3(
    nats_cluster: NatsCluster,
) -> None:
    log = await NatsLog.connect(NatsSettings(servers=tuple(nats_cluster.urls)), replicas=3)
    try:
        await check_retry_after_lost_ack(log, nats_cluster.urls[0], replicated=True)
    finally:
        await log.close()
