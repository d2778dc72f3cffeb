"""Hub over the in-memory storage, with a fake clock: publish, dedupe, read, groups, delete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tidings.core.dedupe import DedupeWindow, Position
from tidings.core.groups import GroupConfig
from tidings.core.hub import Hub, HubOptions
from tidings.core.patterns import TypeFilter
from tidings.core.published import Spread
from tidings.errors import Conflict, GroupNotFound, StorageUnavailable, TooLarge, TopicNotFound
from tidings.events.batch import new_event_ids
from tidings.events.envelope import normalize_event
from tidings.log.config import Retention
from tidings.log.memory import MemoryPartition, MemoryStorage

T0 = 1_700_000_000_000
WINDOW_MS = 10_000


class FakeClock:
    """The ``Clock`` seam: a time the test moves by hand."""

    def __init__(self, now_ms: int = T0) -> None:
        self.now_ms = now_ms

    def time_ms(self) -> int:
        return self.now_ms


class DeferredPartition(MemoryPartition):
    """Acknowledges an append on the next turn of the loop, as a log writing to disk does."""

    def append(self, payloads: Any, timestamp_ms: int | None = None) -> asyncio.Future[int]:
        base = super().append(payloads, timestamp_ms).result()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(fut.set_result, base)
        return fut


class CountingPartition(MemoryPartition):
    """Counts the waits of readers, to see a loop that polls instead of waiting."""

    waits = 0

    async def wait(self, offset: int, timeout: float | None = None) -> bool:
        self.waits += 1
        return await super().wait(offset, timeout)


class SeamStorage(MemoryStorage):
    """MemoryStorage whose partitions are of the class the test gives."""

    def __init__(self, clock: FakeClock, kind: type[MemoryPartition]) -> None:
        super().__init__(clock)
        self.kind = kind

    async def open_partition(
        self, topic: str, partition: int, retention: Retention
    ) -> MemoryPartition:
        part = self.partitions.get((topic, partition))
        if part is None:
            part = self.partitions[(topic, partition)] = self.kind(retention, self.clock)
        part.retention = retention
        return part


def ev(topic: str = "orders", etype: str = "order.placed", **attrs: Any) -> dict[str, Any]:
    return normalize_event({"type": etype, **attrs}, topic=topic)


def ids_of(records: list[tuple[int, int, bytes]]) -> list[str]:
    return [orjson.loads(payload)["id"] for _, _, payload in records]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def storage(clock: FakeClock) -> MemoryStorage:
    return MemoryStorage(clock)


@pytest.fixture
async def hub(storage: MemoryStorage, clock: FakeClock) -> AsyncIterator[Hub]:
    h = Hub(storage, HubOptions(dedupe_window_ms=WINDOW_MS), clock)
    await h.start()
    yield h
    await h.close()


async def test_publish_appends_in_order_and_creates_the_topic(hub: Hub) -> None:
    out = await hub.publish("orders", [ev(id="a"), ev(id="b")])
    assert [(p.id, p.partition, p.offset, p.duplicate) for p in out] == [
        ("a", 0, 0, False),
        ("b", 0, 1, False),
    ]
    [one] = await hub.publish("orders", [ev(id="c")])
    assert (one.partition, one.offset) == (0, 2)
    assert "orders" in hub.topics
    result = await hub.read("orders", {0: 0})
    assert ids_of(result.records) == ["a", "b", "c"]
    assert result.next == {0: 3}
    assert hub.metrics.events_in["orders"] == 3


async def test_publish_to_an_unknown_topic_without_auto_create(
    storage: MemoryStorage, clock: FakeClock
) -> None:
    h = Hub(storage, HubOptions(auto_create=False), clock)
    with pytest.raises(TopicNotFound):
        await h.publish("orders", [ev()])
    await h.create_topic("orders")
    assert len(await h.publish("orders", [ev()])) == 1


async def test_same_key_same_partition(hub: Hub) -> None:
    await hub.create_topic("orders", 4)
    seen: dict[str, set[int]] = {}
    for i in range(40):
        key = f"k{i % 7}"
        [p] = await hub.publish("orders", [ev(partitionkey=key)])
        seen.setdefault(key, set()).add(p.partition)
    assert all(len(parts) == 1 for parts in seen.values())


async def test_dedupe_within_the_window_appends_nothing(hub: Hub, clock: FakeClock) -> None:
    [first] = await hub.publish("orders", [ev(id="x")])
    clock.now_ms += WINDOW_MS - 1
    [again] = await hub.publish("orders", [ev(id="x", data=2)])
    assert again.duplicate
    assert (again.partition, again.offset) == (first.partition, first.offset)
    assert hub.topic("orders").partitions[0].end_offset == 1
    assert hub.metrics.events_in["orders"] == 1


async def test_dedupe_window_expires(hub: Hub, clock: FakeClock) -> None:
    await hub.publish("orders", [ev(id="x")])
    clock.now_ms += WINDOW_MS
    [later] = await hub.publish("orders", [ev(id="x")])
    assert not later.duplicate
    assert later.offset == 1
    # The old entry expired; the new one is remembered in its place.
    hit = hub.dedupe.get("orders", "x", clock.now_ms)
    assert hit is not None and (hit.partition, hit.offset) == (later.partition, later.offset)
    # Entries live at most two windows, then the memory is given back.
    clock.now_ms += 2 * WINDOW_MS
    await hub.publish("orders", [ev(id="y")])
    clock.now_ms += WINDOW_MS
    await hub.publish("orders", [ev(id="z")])
    assert len(hub.dedupe) == 2  # y (old generation) and z


async def test_dedupe_is_per_topic(hub: Hub) -> None:
    await hub.publish("orders", [ev(id="x")])
    [other] = await hub.publish("carts", [ev("carts", id="x")])
    assert not other.duplicate


async def test_dedupe_inside_one_batch(hub: Hub) -> None:
    await hub.publish("orders", [ev(id="old")])
    out = await hub.publish("orders", [ev(id="n1"), ev(id="old"), ev(id="n1"), ev(id="n2")])
    assert [(p.id, p.offset, p.duplicate) for p in out] == [
        ("n1", 1, False),
        ("old", 0, True),
        ("n1", 1, True),
        ("n2", 2, False),
    ]
    assert hub.topic("orders").partitions[0].end_offset == 3


async def test_dedupe_holds_for_concurrent_publishes(clock: FakeClock) -> None:
    """Requests with one id, the later arriving while the first is not yet durable."""
    storage = SeamStorage(clock, DeferredPartition)
    hub = Hub(storage, HubOptions(dedupe_window_ms=WINDOW_MS), clock)
    await hub.create_topic("orders")
    singles = await asyncio.gather(*(hub.publish("orders", [ev(id="same")]) for _ in range(3)))
    batches = await asyncio.gather(
        hub.publish("orders", [ev(id="b1"), ev(id="b2")]),
        hub.publish("orders", [ev(id="b2"), ev(id="b3")]),
        hub.publish("orders", [ev(id="b1")]),
    )
    assert hub.topic("orders").partitions[0].end_offset == 4
    assert [p.duplicate for [p] in singles].count(False) == 1
    assert len({p.offset for [p] in singles}) == 1
    by_id: dict[str, set[int]] = {}
    for out in batches:
        for p in out:
            by_id.setdefault(p.id, set()).add(p.offset)
    assert all(len(offsets) == 1 for offsets in by_id.values()), by_id
    result = await hub.read("orders", {0: 0})
    assert sorted(ids_of(result.records)) == ["b1", "b2", "b3", "same"]


@pytest.mark.parametrize("batch", [False, True])
async def test_a_cancelled_publish_still_dedupes_its_retry(clock: FakeClock, batch: bool) -> None:
    """The client went away mid-append: the append goes on, and a retry finds it."""
    storage = SeamStorage(clock, DeferredPartition)
    hub = Hub(storage, HubOptions(dedupe_window_ms=WINDOW_MS), clock)
    await hub.create_topic("orders")
    events = [ev(id="c1"), ev(id="c2")] if batch else [ev(id="c1")]
    first = asyncio.ensure_future(hub.publish("orders", events))
    waiter = asyncio.ensure_future(hub.publish("orders", [ev(id="c1")]))  # same id, meanwhile
    await asyncio.sleep(0)
    first.cancel()
    [dup] = await waiter  # not cancelled by the other request's cancellation
    assert dup.duplicate and dup.offset == 0
    retry = await hub.publish("orders", events)
    assert all(p.duplicate for p in retry)
    assert hub.topic("orders").partitions[0].end_offset == len(events)


async def test_a_cancelled_publish_of_a_made_id_is_remembered_all_the_same(
    clock: FakeClock,
) -> None:
    """An event whose id the hub made is not claimed while in flight (no one can know
    the id yet), yet once stored it is in the window, cancelled request or not."""
    storage = SeamStorage(clock, DeferredPartition)
    hub = Hub(storage, HubOptions(dedupe_window_ms=WINDOW_MS), clock)
    await hub.create_topic("orders")
    made = ev()
    first = asyncio.ensure_future(hub.publish("orders", [made], new_ids=True))
    await asyncio.sleep(0)
    assert not hub._appending  # nothing claimed
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    for _ in range(5):
        await asyncio.sleep(0)
    [again] = await hub.publish("orders", [made])
    assert (again.duplicate, again.offset) == (True, 0)
    assert hub.topic("orders").partitions[0].end_offset == 1


class GatedDropStorage(SeamStorage):
    """Storage whose topic deletion waits for the test to open the gate."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock, DeferredPartition)
        self.gate = asyncio.Event()

    async def drop_topic(self, topic: str) -> None:
        await self.gate.wait()
        await super().drop_topic(topic)


async def test_a_publish_during_topic_deletion_is_refused(clock: FakeClock) -> None:
    storage = GatedDropStorage(clock)
    hub = Hub(storage, HubOptions(dedupe_window_ms=WINDOW_MS), clock)
    await hub.publish("orders", [ev(id="a")])
    deleting = asyncio.ensure_future(hub.delete_topic("orders"))
    await asyncio.sleep(0)
    with pytest.raises(Conflict, match="being deleted"):
        await hub.publish("orders", [ev(id="b")])
    storage.gate.set()
    await deleting
    [fresh] = await hub.publish("orders", [ev(id="b")])  # the name is free again
    assert fresh.offset == 0


async def test_read_with_types(hub: Hub) -> None:
    await hub.publish(
        "orders",
        [
            ev(etype="order.placed", id="a"),
            ev(etype="order.item.added", id="b"),
            ev(etype="cart.added", id="c"),
            ev(etype="order.paid", id="d"),
        ],
    )
    one = await hub.read("orders", {0: 0}, types=TypeFilter(["order.*"]))
    assert ids_of(one.records) == ["a", "d"]
    assert one.next == {0: 4}
    rest = await hub.read("orders", {0: 0}, types=TypeFilter(["order.>"]))
    assert ids_of(rest.records) == ["a", "b", "d"]
    limited = await hub.read("orders", {0: 0}, limit=1, types=TypeFilter(["cart.*"]))
    assert ids_of(limited.records) == ["c"]
    assert limited.next == {0: 3}


async def test_read_wait_wakes_on_publish(hub: Hub) -> None:
    await hub.create_topic("orders", 2)

    async def later() -> None:
        await asyncio.sleep(0.05)
        await hub.publish("orders", [ev(id="late", partitionkey="k")])

    result, _ = await asyncio.gather(hub.read("orders", {0: 0, 1: 0}, wait_s=30), later())
    assert ids_of(result.records) == ["late"]


async def test_delete_topic(hub: Hub, storage: MemoryStorage) -> None:
    await hub.publish("orders", [ev(id="x")])
    await hub.put_group("orders", "g", GroupConfig())
    await hub.delete_topic("orders")
    with pytest.raises(TopicNotFound):
        hub.topic("orders")
    with pytest.raises(TopicNotFound):
        await hub.read("orders", {0: 0})
    with pytest.raises(TopicNotFound):
        hub.group("orders", "g")
    with pytest.raises(TopicNotFound):
        await hub.delete_topic("orders")
    assert "orders" not in storage.topics
    assert not [k for k in storage.partitions if k[0] == "orders"]
    assert not [k for k in storage.groups if k[0] == "orders"]
    # Its ids are forgotten with it.
    [again] = await hub.publish("orders", [ev(id="x")])
    assert (again.offset, again.duplicate) == (0, False)


async def test_delete_group(hub: Hub) -> None:
    await hub.put_group("orders", "g", GroupConfig())
    await hub.delete_group("orders", "g")
    with pytest.raises(GroupNotFound):
        hub.group("orders", "g")
    assert hub.list_groups() == []


async def test_group_positions_survive_a_new_hub(storage: MemoryStorage, clock: FakeClock) -> None:
    """Acknowledged out of order, then a restart: nothing acknowledged comes back."""
    first = Hub(storage, HubOptions(), clock)  # never started: no task outlives the test
    await first.publish("orders", [ev(id=f"e{i}") for i in range(6)])
    await first.put_group("orders", "g", GroupConfig(ack_wait_ms=60_000))
    got = await first.fetch("orders", "g", max_records=6)
    assert [d.offset for d in got] == [0, 1, 2, 3, 4, 5]
    await first.ack("orders", "g", [got[0].lease, got[2].lease, got[3].lease, got[5].lease])

    second = Hub(storage, HubOptions(), clock)
    await second.start()
    try:
        again = await second.fetch("orders", "g", max_records=10)
        assert [d.offset for d in again] == [1, 4]
        assert all(d.deliveries == 2 for d in again)  # the delivery before the restart counts
        info = second.group_info("orders", "g")
        assert info["partitions"][0]["committed"] == 1
        await second.ack("orders", "g", [d.lease for d in again])
        assert second.group_info("orders", "g")["lag"] == 0
    finally:
        await second.close()


async def test_fetch_wait_does_not_poll_for_a_due_record_it_may_not_lease(
    clock: FakeClock,
) -> None:
    storage = SeamStorage(clock, CountingPartition)
    hub = Hub(storage, HubOptions(), clock)
    await hub.publish("orders", [ev(etype="a")])
    await hub.put_group("orders", "g", GroupConfig(ack_wait_ms=60_000))
    [d] = await hub.fetch("orders", "g")
    await hub.nack("orders", "g", [d.lease])  # due again now, but not of the type fetched below
    part = storage.partitions[("orders", 0)]
    assert isinstance(part, CountingPartition)
    part.waits = 0
    assert await hub.fetch("orders", "g", wait_s=0.3, types=TypeFilter(["b"])) == []
    assert part.waits <= 3, f"fetch woke {part.waits} times in 0.3 s: it polls"
    [again] = await hub.fetch("orders", "g")
    assert (again.offset, again.deliveries) == (0, 2)


async def test_ack_wakes_a_fetch_waiting_behind_a_key(hub: Hub) -> None:
    await hub.put_group("orders", "g", GroupConfig(ordering="key", ack_wait_ms=60_000))
    await hub.publish("orders", [ev(id="k1", partitionkey="k"), ev(id="k2", partitionkey="k")])
    [first] = await hub.fetch("orders", "g", max_records=10)
    waiting = asyncio.create_task(hub.fetch("orders", "g", wait_s=30))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await hub.ack("orders", "g", [first.lease])
    [second] = await asyncio.wait_for(waiting, 5)
    assert orjson.loads(second.payload)["id"] == "k2"


async def test_fetch_wait_wakes_when_a_lease_runs_out(clock: FakeClock) -> None:
    """Beside a due record the fetch may not take, a lease that runs out still wakes it."""
    hub = Hub(MemoryStorage(clock), HubOptions(), clock)
    await hub.publish("orders", [ev(etype="a", id="x"), ev(etype="b", id="y")])
    await hub.put_group("orders", "g", GroupConfig(ack_wait_ms=200))
    x, _ = await hub.fetch("orders", "g", max_records=2)
    await hub.nack("orders", "g", [x.lease])  # x is due now, but the fetch below wants b
    waiting = asyncio.create_task(hub.fetch("orders", "g", wait_s=30, types=TypeFilter(["b"])))
    await asyncio.sleep(0.05)
    clock.now_ms += 200  # y's lease has run out
    [again] = await asyncio.wait_for(waiting, 10)
    assert (again.offset, again.deliveries) == (1, 2)


async def test_a_batch_of_new_ids_is_remembered_as_one_run(hub: Hub, clock: FakeClock) -> None:
    events = [ev(data=i) for i in range(5)]  # ids made one after the other: sorted
    out = await hub.publish("orders", events, new_ids=True)
    assert [(p.offset, p.duplicate) for p in out] == [(i, False) for i in range(5)]
    assert len(hub.dedupe) == 5
    # Sent again with those ids, in a batch or alone, they are the same events.
    again = await hub.publish("orders", [events[3], ev(id="other"), events[0]])
    assert [(p.id, p.offset, p.duplicate) for p in again] == [
        (events[3]["id"], 3, True),
        ("other", 5, False),
        (events[0]["id"], 0, True),
    ]
    [alone] = await hub.publish("orders", [events[4]])
    assert (alone.offset, alone.duplicate) == (4, True)
    [elsewhere] = await hub.publish("carts", [events[4]])
    assert not elsewhere.duplicate
    clock.now_ms += WINDOW_MS
    [later] = await hub.publish("orders", [events[4]])
    assert not later.duplicate


def test_runs_of_new_ids_in_the_window() -> None:
    window = DedupeWindow(window_ms=1000)
    first = new_event_ids(4)
    second = new_event_ids(3)
    window.remember_new("t", second, 1, 10, 0)
    window.remember_new("t", first, 0, 20, 0)  # settled out of order: still found
    assert [window.get("t", i, 5) for i in first] == [Position(0, 20 + k) for k in range(4)]
    assert [window.get("t", i, 5) for i in second] == [Position(1, 10 + k) for k in range(3)]
    assert window.get("u", first[0], 5) is None
    assert window.get("t", first[0] + "x", 5) is None
    assert window.knows_any("t", ["a", second[2]], ["t\0a", "t\0" + second[2]])
    assert not window.knows_any("t", ["a", first[0] + "x"], ["t\0a", "t\0" + first[0] + "x"])
    assert not window.knows_any("u", first, ["u\0" + i for i in first])
    # A run that overlaps one held, or is out of order, is kept id by id.
    overlapping = [first[1] + "0", first[2] + "0"]
    window.remember_new("t", overlapping, 2, 30, 0)
    window.remember_new("t", ["z", "b"], 2, 40, 0)
    assert window.get("t", overlapping[1], 5) == Position(2, 31)
    assert window.get("t", "b", 5) == Position(2, 41)
    assert window.get("t", first[2], 5) == Position(0, 22)
    assert len(window) == 11
    assert window.get("t", first[0], 1000) is None  # past the window
    window.drop_topic("t")
    assert len(window) == 0 and window.get("t", second[0], 5) is None


def test_runs_of_new_ids_rotate_with_their_generation() -> None:
    window = DedupeWindow(window_ms=1000, max_entries=10)
    window.expire(0)
    ids = new_event_ids(4)
    window.remember_new("t", ids, 0, 0, 0)
    window.expire(999)  # neither old enough nor full: nothing moves
    window.expire(1000)  # a window old: to the old generation, still found
    assert window.get("t", ids[3], 1500) is None  # past the window by its own time
    assert window.get("t", ids[3], 999) == Position(0, 3)
    assert window.knows_any("t", [ids[1]], ["t\0" + ids[1]])
    window.expire(2000)  # one more rotation: gone
    assert len(window) == 0 and window.get("t", ids[3], 999) is None
    # Runs count towards the entries that make the window rotate early.
    first, second = new_event_ids(6), new_event_ids(6)
    window.remember_new("t", first, 0, 10, 2000)
    window.expire(2001)
    window.remember_new("t", second, 0, 16, 2001)
    assert len(window) == 12 and window.get("t", first[0], 2002) == Position(0, 10)
    window.expire(2002)  # the first six go, a generation later
    assert len(window) == 6 and window.get("t", first[0], 2002) is None
    assert window.get("t", second[5], 2002) == Position(0, 21)


async def test_redrive_publishes_dead_letters_again_once_each(hub: Hub) -> None:
    await hub.create_topic("orders", 2)
    await hub.put_group("orders", "g", GroupConfig(max_deliver=1))
    await hub.put_group("orders", "other", GroupConfig(max_deliver=1))
    await hub.publish("orders", [ev(id="a", partitionkey="k1"), ev(id="b", partitionkey="k2")])
    for group in ("g", "other"):
        got = await hub.fetch("orders", group, max_records=10)
        await hub.nack("orders", group, [d.lease for d in got])
    assert hub.group_info("orders", "g")["dead_lettered"] == 2
    where = {}
    for p, part in enumerate(hub.topics["orders"].partitions):
        for offset, _, payload in await part.read(0):
            where[orjson.loads(payload)["id"]] = (p, offset)

    answer = await hub.redrive("orders", "g")
    assert answer == {"dead_letter_topic": "orders.dlq", "redriven": 2, "skipped": 2}
    again: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for p, part in enumerate(hub.topics["orders"].partitions):
        for offset, _, payload in await part.read(0):
            event = orjson.loads(payload)
            if (p, offset) != where[event["id"]]:
                again.setdefault(event["id"], []).append((p, event))
    assert sorted(again) == ["a", "b"]  # the same ids, past the dedupe window
    for eid, [(p, event)] in again.items():
        assert p == where[eid][0]  # the partition it was dead-lettered from
        assert not any(name.startswith("dlq") for name in event)
    # The group sees them again; a second re-drive has nothing new to send.
    redelivered = await hub.fetch("orders", "g", max_records=10)
    assert {orjson.loads(d.payload)["id"] for d in redelivered} == {"a", "b"}
    assert (await hub.redrive("orders", "g"))["redriven"] == 0
    assert (await hub.redrive("orders", "other"))["redriven"] == 2


async def test_redrive_without_dead_letters_sends_nothing(hub: Hub) -> None:
    await hub.put_group("orders", "g", GroupConfig())
    assert await hub.redrive("orders", "g") == {
        "dead_letter_topic": "orders.dlq",
        "redriven": 0,
        "skipped": 0,
    }
    with pytest.raises(GroupNotFound):
        await hub.redrive("orders", "nope")


async def test_redrive_keeps_a_place_per_group_on_a_shared_dead_letter_topic(hub: Hub) -> None:
    for topic in ("orders", "refunds"):
        await hub.put_group(topic, "g", GroupConfig(max_deliver=1, dead_letter_topic="dead"))
        await hub.publish(topic, [ev(topic, id=f"{topic}-1")])
        got = await hub.fetch(topic, "g")
        await hub.nack(topic, "g", [d.lease for d in got])
    assert (await hub.redrive("orders", "g"))["redriven"] == 1
    assert (await hub.redrive("refunds", "g"))["redriven"] == 1
    assert set(hub.topics["dead"].groups) == {"redrive.orders.g", "redrive.refunds.g"}


class StoppingStorage(MemoryStorage):
    """Saves up to ``saves_left`` group positions, then refuses them: a hub that stops
    (as if killed) right there keeps only what was saved before."""

    saves_left = 1 << 30

    async def save_positions(
        self, topic: str, group: str, positions: Any, stats: Any = None
    ) -> None:
        if self.saves_left <= 0:
            raise StorageUnavailable("stopped")
        self.saves_left -= 1
        await super().save_positions(topic, group, positions, stats)


async def test_a_stop_between_the_dead_letter_append_and_its_save_copies_it_once(
    clock: FakeClock,
) -> None:
    storage = StoppingStorage(clock)
    first = Hub(storage, HubOptions(), clock)  # never started: no task outlives the test
    await first.publish("orders", [ev(id="poison")])
    await first.put_group("orders", "g", GroupConfig(max_deliver=1))
    (poison,) = await first.fetch("orders", "g", max_records=2)
    # The nack's save and the save before the dead-letter append go through; the
    # one after it (the copy is done) does not.
    storage.saves_left = 2
    assert await first.nack("orders", "g", [poison.lease]) == 1
    assert first.topics["orders.dlq"].partitions[0].end_offset == 1

    storage.saves_left = 1 << 30
    second = Hub(storage, HubOptions(), clock)
    await second.start()
    try:
        await second.publish("orders", [ev(id="fine")])
        again = await second.fetch("orders", "g", max_records=10)
        assert [(d.offset, d.deliveries) for d in again] == [(1, 1)]  # "fine" only
        assert second.topics["orders.dlq"].partitions[0].end_offset == 1  # not copied twice
        assert second.group_info("orders", "g")["partitions"][0]["committed"] == 1
    finally:
        await second.close()


class FailingPartition(MemoryPartition):
    """A partition whose appends fail, as a disk that refuses a write does."""

    def append(self, payloads: Any, timestamp_ms: int | None = None) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        fut.set_exception(StorageUnavailable("the disk refused the write"))
        return fut


@pytest.mark.parametrize("count", [1, 3])
async def test_a_failed_publish_records_no_type_in_the_catalogue(
    clock: FakeClock, count: int
) -> None:
    hub = Hub(SeamStorage(clock, FailingPartition), HubOptions(), clock)
    await hub.create_topic("orders")
    with pytest.raises(StorageUnavailable):
        await hub.publish("orders", [ev(etype="order.lost") for _ in range(count)])
    assert await hub.catalog.types("orders", hub.topic("orders").partitions) == []


@pytest.mark.parametrize("count", [1, 3])
async def test_an_event_too_large_makes_no_topic(hub: Hub, count: int) -> None:
    # It used to be measured only once the publish had made its topic.
    big = [ev(etype="order.placed", data="x" * (hub.options.max_event_bytes + 1))]
    events = [ev() for _ in range(count - 1)] + big
    with pytest.raises(TooLarge) as refused:
        await hub.publish("fresh", events)
    assert refused.value.fields.get("index") == (None if count == 1 else count - 1)
    assert "fresh" not in hub.topics
    with pytest.raises(TopicNotFound):
        hub.topic("fresh")


async def test_dead_letters_wait_for_a_dead_letter_topic_that_could_not_open(
    hub: Hub, storage: MemoryStorage
) -> None:
    # Its metadata is there but it failed to open at start: dead-lettering used to
    # make it again over what is stored (one partition, default retention).
    await storage.save_topic("orders.dlq", {"partitions": 3, "retention": None})
    hub.unavailable["orders.dlq"] = "its files could not be opened"
    await hub.put_group("orders", "g", GroupConfig(max_deliver=1))
    await hub.publish("orders", [ev(id="poison")])
    got = await hub.fetch("orders", "g")
    await hub.nack("orders", "g", [d.lease for d in got])
    assert "orders.dlq" not in hub.topics
    assert (await storage.load_topics())["orders.dlq"]["partitions"] == 3
    assert hub.group_info("orders", "g")["dead_lettered"] == 0  # it waits, not lost


COUNTERS = ("delivered", "redelivered", "acked", "dead_lettered", "skipped_events")


def counters(hub: Hub, topic: str, group: str) -> dict[str, int]:
    info = hub.group_info(topic, group)
    return {k: info[k] for k in COUNTERS}


async def test_group_counters_outlive_a_restart(clock: FakeClock) -> None:
    storage = MemoryStorage(clock)
    first = Hub(storage, HubOptions(), clock)  # never started: no task outlives the test
    await first.publish("orders", [ev(id=f"e{i}") for i in range(5)])
    await first.put_group("orders", "g", GroupConfig(max_deliver=2))
    got = await first.fetch("orders", "g", max_records=5)
    await first.ack("orders", "g", [got[0].lease, got[1].lease])
    await first.nack("orders", "g", [d.lease for d in got[2:]])
    again = await first.fetch("orders", "g", max_records=5)  # the 3 nacked, redelivered
    await first.nack("orders", "g", [d.lease for d in again])  # the second time: dead
    before = counters(first, "orders", "g")
    assert before == {
        "delivered": 8, "redelivered": 3, "acked": 2, "dead_lettered": 3, "skipped_events": 0,
    }  # fmt: skip

    second = Hub(storage, HubOptions(), clock)
    await second.start()
    try:
        assert counters(second, "orders", "g") == before
        assert second.topics["orders.dlq"].partitions[0].end_offset == 3
        # and they go on counting from there
        await second.publish("orders", [ev(id="e5")])
        (late,) = await second.fetch("orders", "g", max_records=5)
        await second.ack("orders", "g", [late.lease])
        after = counters(second, "orders", "g")
        assert (after["delivered"], after["acked"]) == (9, 3)
    finally:
        await second.close()


async def test_a_dead_letter_copied_before_a_stop_is_counted_once_after_it(
    clock: FakeClock,
) -> None:
    storage = StoppingStorage(clock)
    first = Hub(storage, HubOptions(), clock)
    await first.publish("orders", [ev(id="poison")])
    await first.put_group("orders", "g", GroupConfig(max_deliver=1))
    (poison,) = await first.fetch("orders", "g")
    storage.saves_left = 2  # the nack's save and the one before the copy; not the one after
    await first.nack("orders", "g", [poison.lease])
    assert first.group_info("orders", "g")["dead_lettered"] == 1

    storage.saves_left = 1 << 30
    second = Hub(storage, HubOptions(), clock)
    await second.start()
    try:
        # Saved as "being copied" with a count of 0; found in orders.dlq at start: 1.
        assert counters(second, "orders", "g") == {
            "delivered": 1, "redelivered": 0, "acked": 0, "dead_lettered": 1, "skipped_events": 0,
        }  # fmt: skip
    finally:
        await second.close()


@pytest.mark.parametrize("new_ids", [False, True])
async def test_a_keyed_batch_spreads_as_event_by_event_would(
    hub: Hub, clock: FakeClock, new_ids: bool
) -> None:
    """A batch of new keyed events goes over the partitions in one pass (a Spread):
    each event where its key sends it, each partition's events in batch order, all
    remembered by the window; as one event at a time would place them."""
    await hub.create_topic("orders", 3)
    await hub.create_topic("alone", 3)
    made = new_event_ids(40)
    events = [
        ev(id=made[i] if new_ids else f"e{i}", partitionkey=f"k{i % 11}", data=i) for i in range(40)
    ]
    result = await hub.publish_batch("orders", events, new_ids=new_ids)
    assert isinstance(result, Spread)
    out = result.published()
    one_by_one = [(await hub.publish("alone", [e]))[0] for e in events]
    assert [(p.id, p.partition, p.offset, p.duplicate) for p in out] == [
        (p.id, p.partition, p.offset, False) for p in one_by_one
    ]
    assert {p.partition for p in out} == {0, 1, 2}
    for part in range(3):
        read = await hub.read("orders", {part: 0}, limit=100)
        assert ids_of(read.records) == [p.id for p in out if p.partition == part]
    assert hub.metrics.events_in["orders"] == 40
    # Sent again, in a batch or alone, they are the same events.
    again = await hub.publish("orders", [events[7], events[30], ev(id="new", partitionkey="k1")])
    assert [(p.id, p.partition, p.offset, p.duplicate) for p in again[:2]] == [
        (out[7].id, out[7].partition, out[7].offset, True),
        (out[30].id, out[30].partition, out[30].offset, True),
    ]
    assert not again[2].duplicate
    [alone] = await hub.publish("orders", [events[12]])
    assert (alone.partition, alone.offset, alone.duplicate) == (
        out[12].partition,
        out[12].offset,
        True,
    )


async def test_a_keyed_batch_with_a_repeat_or_a_keyless_event_goes_event_by_event(
    hub: Hub,
) -> None:
    await hub.create_topic("orders", 3)
    repeat = [
        ev(id="a", partitionkey="k1"),
        ev(id="b", partitionkey="k2"),
        ev(id="a", partitionkey="k1"),
    ]
    out = await hub.publish_batch("orders", repeat)
    assert isinstance(out, list)
    assert [p.duplicate for p in out] == [False, False, True]
    assert (out[2].partition, out[2].offset) == (out[0].partition, out[0].offset)
    keyless = [ev(id="c", partitionkey="k1"), ev(id="d")]
    out = await hub.publish_batch("orders", keyless)
    assert isinstance(out, list) and [p.duplicate for p in out] == [False, False]
