"""The event index over both backends: by id, by correlationid, paging, retention, deletion.

One contract, two stores: the in-memory one (``log/memory.py``) and SQLite
(``backends/embedded``), each under a real Hub. What only a store on disk can show
(going on after a restart from where it was left) is marked as such.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tidings.backends.embedded import EmbeddedStorage
from tidings.core.eventindex import parse_cursor
from tidings.core.hub import Hub
from tidings.core.indexrows import (
    Hint,
    _attributes,
    _parsed,
    key_hash,
    rows_of_hint,
    rows_of_records,
    run_key,
    run_of_hint,
)
from tidings.errors import BadRequest
from tidings.events.batch import new_event_ids
from tidings.events.envelope import new_event_id, normalize_event
from tidings.log.config import LogConfig, Retention
from tidings.log.memory import MemoryStorage

Factory = Callable[[], Hub]


class TickingClock:
    """The ``Clock`` seam, one millisecond later at each call: publish order is append
    time in ms (within a millisecond it is the order the index took records in), so
    each append here gets a time of its own."""

    def __init__(self) -> None:
        self.now_ms = 1_700_000_000_000

    def time_ms(self) -> int:
        self.now_ms += 1
        return self.now_ms


@pytest.fixture(params=["memory", "embedded"])
def make_hub(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    def make() -> Hub:
        clock = TickingClock()
        if request.param == "memory":
            return Hub(MemoryStorage(clock), clock=clock)
        # Small segments, so retention can remove some of a partition.
        storage = EmbeddedStorage(tmp_path, log_config=LogConfig(segment_bytes=4096), clock=clock)
        return Hub(storage, clock=clock)

    return make


@pytest.fixture
async def hub(make_hub: Factory) -> AsyncIterator[Hub]:
    h = make_hub()
    await h.start()
    yield h
    await h.close()


def ev(type_: str, corr: str | None = None, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"type": type_, **extra}
    if corr is not None:
        raw["correlationid"] = corr
    return normalize_event(raw, topic="t")


def event_of(found: Any) -> dict[str, Any]:
    return dict(orjson.loads(found.payload))


async def test_finds_an_event_by_id_in_any_topic(hub: Hub) -> None:
    await hub.create_topic("orders", 3)
    a = ev("order.placed", "o-1", partitionkey="o-1")
    b = ev("payment.succeeded", "o-1", partitionkey="o-1")
    [pa] = await hub.publish("orders", [a])
    [pb] = await hub.publish("payments", [b])
    found = await hub.index.find_id(b["id"])
    assert found is not None
    assert (found.topic, found.partition, found.offset) == ("payments", pb.partition, pb.offset)
    assert event_of(found) == b
    found = await hub.index.find_id(a["id"])
    assert found is not None and (found.topic, found.offset) == ("orders", pa.offset)
    assert await hub.index.find_id("no-such-id") is None


async def test_an_order_is_traced_across_topics_in_publish_order(hub: Hub) -> None:
    chain = [("orders", "order.placed"), ("inventory", "stock.reserved"),
             ("payments", "payment.succeeded"), ("orders", "order.paid"),
             ("shipping", "shipment.sent")]  # fmt: skip
    sent = []
    for i in range(20):  # other orders between, so the index has more than one key
        await hub.publish("orders", [ev("order.placed", f"o-{i}")])
    for topic, type_ in chain:
        e = ev(type_, "o-1004")
        sent.append(e["id"])
        await hub.publish(topic, [e])
        await hub.publish(topic, [ev(type_, "o-other")])
    page = await hub.index.find_correlated("o-1004")
    assert [event_of(f)["id"] for f in page.records] == sent
    assert [f.topic for f in page.records] == [t for t, _ in chain]
    assert page.next is None
    assert (await hub.index.find_correlated("o-none")).records == []


async def test_pages_follow_each_other_without_gap_or_repeat(hub: Hub) -> None:
    sent = []
    for i in range(23):
        batch = [ev("step", "o-9", n=i * 3 + k) for k in range(3)]  # batches, and singles
        sent += [e["id"] for e in batch]
        await hub.publish("steps" if i % 2 else "other", batch)
    got: list[str] = []
    after = None
    pages = 0
    while True:
        page = await hub.index.find_correlated("o-9", parse_cursor(after), limit=10)
        got += [event_of(f)["id"] for f in page.records]
        pages += 1
        if page.next is None:
            break
        assert len(page.records) == 10
        after = page.next
    assert got == sent
    assert pages == 7  # 69 records: six full pages and one of nine


async def test_an_event_published_just_now_is_found_at_once(hub: Hub) -> None:
    # The lookup waits for the index to take in what was acknowledged before it.
    for i in range(50):
        e = ev("x", f"c-{i}")
        await hub.publish("fresh", [e])
        found = await hub.index.find_id(e["id"])
        assert found is not None, i
        assert len((await hub.index.find_correlated(f"c-{i}")).records) == 1


async def test_a_token_sees_only_the_topics_it_may_read(hub: Hub) -> None:
    a, b = ev("a", "o-5"), ev("b", "o-5")
    await hub.publish("public", [a])
    await hub.publish("secret", [b])
    only_public = lambda topic: topic == "public"  # noqa: E731
    assert await hub.index.find_id(b["id"], only_public) is None
    found = await hub.index.find_id(a["id"], only_public)
    assert found is not None and found.topic == "public"
    page = await hub.index.find_correlated("o-5", visible=only_public)
    assert [f.topic for f in page.records] == ["public"]


async def test_a_repeated_id_answers_the_first_record(hub: Hub) -> None:
    e = ev("order.placed", "o-2")
    await hub.publish("orders", [e])
    await hub.publish("orders.dlq", [e])  # a dead letter keeps its id
    found = await hub.index.find_id(e["id"])
    assert found is not None and found.topic == "orders"
    assert [f.topic for f in (await hub.index.find_correlated("o-2")).records] == [
        "orders", "orders.dlq",
    ]  # fmt: skip


async def test_a_deleted_topic_is_not_found_and_its_name_starts_over(hub: Hub) -> None:
    old = ev("x", "o-7")
    await hub.publish("gone", [old])
    assert await hub.index.find_id(old["id"]) is not None
    await hub.delete_topic("gone")
    assert await hub.index.find_id(old["id"]) is None
    assert (await hub.index.find_correlated("o-7")).records == []
    # A new topic of the same name: its records are found, the old one's never
    # (the new record sits at the offset the old one had).
    new = ev("y", "o-7")
    [p] = await hub.publish("gone", [new])
    assert p.offset == 0
    found = await hub.index.find_id(new["id"])
    assert found is not None and event_of(found)["id"] == new["id"]
    assert await hub.index.find_id(old["id"]) is None
    assert [event_of(f)["id"] for f in (await hub.index.find_correlated("o-7")).records] == [
        new["id"]
    ]


async def test_records_removed_by_retention_are_not_answered(hub: Hub) -> None:
    await hub.create_topic("short", 1, Retention(max_bytes=8192))
    sent = []
    for i in range(120):
        e = ev("x", "o-r", pad="p" * 200, n=i)
        sent.append(e["id"])
        await hub.publish("short", [e])
    assert await hub.index.find_id(sent[0]) is not None
    assert await hub.apply_retention() > 0
    start = hub.topics["short"].partitions[0].start_offset
    assert start > 0
    assert await hub.index.find_id(sent[0]) is None
    assert await hub.index.find_id(sent[-1]) is not None
    page = await hub.index.find_correlated("o-r", limit=1000)
    assert [event_of(f)["id"] for f in page.records] == sent[start:]


async def test_bad_cursor_and_limit_are_refused() -> None:
    for raw in ("", "x", "12", "1-", "-1", "1-2-3", "a-b"):
        with pytest.raises(BadRequest) as err:
            parse_cursor(raw)
        assert err.value.fields["field"] == "after"
    assert parse_cursor("17-4") == (17, 4)
    hub = Hub(MemoryStorage())
    await hub.start()
    try:
        for limit in (0, 1001):
            with pytest.raises(BadRequest):
                await hub.index.find_correlated("o", limit=limit)
    finally:
        await hub.close()


async def test_the_index_goes_on_after_a_restart_from_where_it_was(tmp_path: Path) -> None:
    """Embedded only: rows and offsets are on disk. A restart indexes only what is new."""
    hub = Hub(EmbeddedStorage(tmp_path))
    await hub.start()
    first = [ev("x", "o-1") for _ in range(200)]
    await hub.publish("orders", first)
    assert await hub.index.settle()
    await hub.close()
    hub = Hub(EmbeddedStorage(tmp_path))
    await hub.start()
    try:
        later = ev("y", "o-1")
        await hub.publish("orders", [later])
        page = await hub.index.find_correlated("o-1", limit=1000)
        assert [event_of(f)["id"] for f in page.records] == [e["id"] for e in first] + [later["id"]]
        assert hub.index.indexed_total == 1  # the 200 were not read again
    finally:
        await hub.close()


HOSTILE = [
    {"type": "x", "id": "plain", "correlationid": "o-1"},
    {"data": {"id": "inner", "correlationid": "inner"}, "type": "x", "id": "outer"},
    {"type": "x", "id": "a", "data": {"correlationid": "nested"}, "correlationid": "top"},
    {"type": "x", "id": 'quo"te', "correlationid": 'back\\slash'},
    {"type": "x", "id": "ünïcødé-✓", "correlationid": "注文-1"},
    {"type": "data.changed", "id": "after-a-data-value", "correlationid": "c"},
    {"type": "x", "id": "no-corr", "data": "\"correlationid\":\"fake\""},
    {"type": "x", "id": "int-corr", "correlationid": 5},
    {"type": "x", "data_base64": "AA==", "id": "b64", "correlationid": "k"},
    {"type": "x", "causationid": "cause", "id": "i", "subject": '"id":"no"'},
    # The id the hub fills in comes last, after the data.
    {"type": "x", "data": {"order_id": "o-1"}, "specversion": "1.0", "id": "last"},
    {"type": "x", "data": {"id": "inner"}, "id": "after", "time": "2026-01-01T00:00:00Z"},
    {"type": "x", "id": "first", "data": {"x": [{"id": "deep"}]}},
    {"type": "x", "data": {"x": [{"id": "deep"}]}, "id": "after-deep"},
    {"type": "x", "data": {"id": "only-inner"}, "id": "a", "subject": "}"},
    {"type": "x", "data": [1, {"correlationid": "in"}], "correlationid": "out", "id": "c2"},
    {"type": "x", "data": {"correlationid": "in"}, "id": "c3"},
    {"type": "x", "data": {"id": "in", "k": {"id": "in2"}}, "id": "c4", "partitionkey": "]"},
]


@pytest.mark.parametrize("event", HOSTILE, ids=[str(e["id"]) for e in HOSTILE])
def test_attributes_read_from_the_bytes_agree_with_a_parse(event: dict[str, Any]) -> None:
    payload = orjson.dumps(event)
    fast = _attributes(payload)
    slow = _parsed(payload)
    assert slow is not None
    assert fast is None or fast == slow  # None: the bytes could not say; it is parsed
    eid, corr = slow
    assert eid == event["id"].encode()
    want = event.get("correlationid")
    assert corr == (want.encode() if isinstance(want, str) else None)


def test_keys_hash_the_same_from_text_and_from_bytes() -> None:
    from tidings.core.indexrows import _hash

    for value in ("o-1004", "ünïcødé-✓", "0193f0a4-7f4b-7c3e-9a77-8e2e1f3a7b5c"):
        assert key_hash(value) == _hash(value.encode())
        assert -(1 << 63) <= key_hash(value) < (1 << 63)
    assert key_hash("o-1") != key_hash("o-2")


async def test_a_lookup_the_trailing_index_cannot_answer_whole_is_refused(hub: Hub) -> None:
    from tidings.errors import ServerBusy

    found = ev("x", "o-8")
    await hub.publish("t", [found])
    assert await hub.index.find_id(found["id"]) is not None
    task = hub.index._task
    assert task is not None
    task.cancel()  # an index that takes nothing in any more: it trails from here on
    await asyncio.sleep(0)
    later = ev("y", "o-8")
    await hub.publish("t", [later])
    assert await hub.index.find_id(found["id"]) is not None  # found is found
    with pytest.raises(ServerBusy) as err:
        await hub.index.find_id(later["id"])  # not found, and it may be there
    assert err.value.fields["behind"] == 1
    with pytest.raises(ServerBusy):
        await hub.index.find_correlated("o-8")


@pytest.mark.parametrize("event", HOSTILE, ids=range(len(HOSTILE)))
async def test_rows_from_a_publish_hint_are_the_rows_read_back(event: dict[str, Any]) -> None:
    """The index makes a published event's row from the ids the publish knew; a
    record read back from the log must give the very same row."""
    corr = event.get("correlationid")
    store = await MemoryStorage().open_partition("t", 0, Retention())
    for corrs in ([corr], None if corr is None else [corr]):
        hint = Hint("t", 0, store, [event["id"]], corrs, 17)
        assert rows_of_hint(40, 17, hint) == rows_of_records([(40, 17, orjson.dumps(event))])


async def _publish_every_way(hub: Hub) -> list[dict[str, Any]]:
    """Events in publish order, through each path of a publish (with a hint) and
    appended straight to the log (none): the index takes both."""
    await hub.create_topic("mixed", 3)
    sent: list[dict[str, Any]] = []

    async def publish(events: list[dict[str, Any]]) -> None:
        await hub.publish("mixed", events)
        sent.extend(events)

    for i in range(6):
        await publish([ev("one", "o-m", n=i)])  # a single event
        await publish([ev("plain", "o-m", n=i, k=k) for k in range(4)])  # one partition
        await publish([ev("keyed", "o-m", partitionkey=f"k{k}", n=i) for k in range(9)])
        await publish([ev("some", "o-m" if k % 2 else None, n=i, k=k) for k in range(3)])
        twice, after = ev("twice", "o-m", n=i), ev("after", "o-m", n=i)
        await hub.publish("mixed", [twice, after, twice])  # a repeat: the careful path
        sent += [twice, after]
        raw = ev("raw", "o-m", n=i)  # no publish: no hint
        await hub.topics["mixed"].partitions[i % 3].append([orjson.dumps(raw)])
        sent.append(raw)
    return sent


async def test_published_and_appended_records_are_all_found(hub: Hub) -> None:
    sent = await _publish_every_way(hub)
    found = []
    for e in sent:
        f = await hub.index.find_id(e["id"])
        assert f is not None, e
        found.append(event_of(f))
        assert found[-1]["id"] == e["id"]
    page = await hub.index.find_correlated("o-m", limit=1000)
    ids = {e["id"] for e in sent if e.get("correlationid") == "o-m"}
    assert sorted(event_of(f)["id"] for f in page.records) == sorted(ids)
    # Each partition's records come in offset order.
    for p in range(3):
        offsets = [f.offset for f in page.records if f.partition == p]
        assert offsets == sorted(offsets)
    assert hub.index.lag() == 0
    assert hub.index._hinted == 0  # every hint taken or dropped, none left behind


async def test_published_records_are_not_read_back(hub: Hub) -> None:
    sent = await _publish_every_way(hub)
    assert await hub.index.settle()
    # Of 120 records, 18 came without a hint (6 appended straight to the log, 12 by
    # the careful path); a round never reads back a record acknowledged since the
    # round before, whose hint may be on its way.
    assert len(sent) == 120 and hub.index.indexed_total == 120
    assert hub.index.read_back_total == 18


async def test_past_the_hints_it_keeps_the_index_reads_records_back(hub: Hub) -> None:
    hub.index.hint_events = 5
    sent = await _publish_every_way(hub)
    for e in sent:
        f = await hub.index.find_id(e["id"])
        assert f is not None and event_of(f)["id"] == e["id"]
    page = await hub.index.find_correlated("o-m", limit=1000)
    assert len(page.records) == sum(e.get("correlationid") == "o-m" for e in sent)
    assert hub.index._hinted == 0
    assert hub.index.read_back_total > 60


async def test_ids_the_hub_made_for_a_batch_are_found_from_one_run(hub: Hub) -> None:
    """A batch of made ids is indexed as one run; every id in it is found, at its own
    record, and ids next to the run's ends are not."""
    await hub.create_topic("made", 1)
    batches = []
    for n in (2, 5, 300):
        ids = new_event_ids(n)
        events = [dict(ev("made", n=k), id=i) for k, i in enumerate(ids)]
        batches.append(events)
        await hub.publish("made", events, new_ids=True)
    one_by_one = [new_event_id() for _ in range(4)]  # made, but not counting up
    events = [dict(ev("made", n=k), id=i) for k, i in enumerate(sorted(one_by_one))]
    batches.append(events)
    await hub.publish("made", events, new_ids=True)
    with_corrs = [dict(ev("made", "o-r", n=k), id=i) for k, i in enumerate(new_event_ids(3))]
    batches.append(with_corrs)
    await hub.publish("made", with_corrs, new_ids=True)
    assert await hub.index.settle()
    for events in batches:
        for e in events:
            f = await hub.index.find_id(e["id"])
            assert f is not None and event_of(f) == e
    page = await hub.index.find_correlated("o-r")
    assert [event_of(f)["id"] for f in page.records] == [e["id"] for e in with_corrs]
    first, last = batches[2][0]["id"], batches[2][-1]["id"]
    for near in (int(first[28:], 16) - 1, int(last[28:], 16) + 1):
        assert await hub.index.find_id(f"{first[:28]}{near:08x}") is None
    assert hub.index.read_back_total == 0


def test_a_hint_is_one_run_only_when_its_ids_count_up() -> None:
    store: Any = None
    ids = new_event_ids(50)
    run = run_of_hint(7, 17, Hint("t", 0, store, ids, None, 17, True))
    assert run is not None and run[0] == 7 and run[4] == 50
    assert (run[2], run[3]) == run_key(ids[0])
    assert run_key(ids[10]) == (run[2], run[3] + 10)
    assert run_of_hint(7, 17, Hint("t", 0, store, ids, None, 17)) is None  # not made here
    assert run_of_hint(7, 17, Hint("t", 0, store, ids, [None] * 50, 17, True)) is None
    gap = ids[:10] + ids[11:]
    assert run_of_hint(7, 17, Hint("t", 0, store, gap, None, 17, True)) is None
    upper = [i.upper() for i in ids]
    assert run_of_hint(7, 17, Hint("t", 0, store, upper, None, 17, True)) is None
    assert run_key("order-1") is None and run_key(ids[0].upper()) is None
