"""Metadata in JetStream KV on a real nats-server: compare-and-set, deletes, listing
and watching."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from natsproc import NatsServer

from tidings.backends.nats import Entry, NatsLog, NatsSettings
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
