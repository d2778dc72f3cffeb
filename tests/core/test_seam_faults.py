"""The hub over a storage whose reads can fail: a fetch that meets a partition it
cannot read loses nothing it leased or expired before or after that read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tidings.core.groups import GroupConfig
from tidings.core.hub import Hub, HubOptions
from tidings.errors import Conflict, StorageUnavailable
from tidings.events.envelope import normalize_event
from tidings.log.config import LogRecord, Retention
from tidings.log.memory import MemoryPartition, MemoryStorage


async def _turns() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def time_ms(self) -> int:
        return self.now


class FailingPartition(MemoryPartition):
    failing = False

    async def apply_retention(self, now_ms: int | None = None) -> int:
        if self.failing:
            raise StorageUnavailable("the partition cannot be reached now")
        return self.apply_retention_now(now_ms)

    async def read(
        self, offset: int, max_records: int = 1000, max_bytes: int = 1 << 20
    ) -> list[LogRecord]:
        if self.failing:
            raise StorageUnavailable("the partition cannot be read now")
        return self.read_now(offset, max_records, max_bytes)


class FailingStorage(MemoryStorage):
    partition_type = FailingPartition

    async def open_partition(
        self, topic: str, partition: int, retention: Retention
    ) -> MemoryPartition:
        await _turns()
        return await super().open_partition(topic, partition, retention)

    async def save_group(self, topic: str, group: str, config: dict[str, Any]) -> None:
        await _turns()  # a network round trip: others run meanwhile
        await super().save_group(topic, group, config)

    async def delete_group(self, topic: str, group: str) -> None:
        await _turns()
        await super().delete_group(topic, group)

    def part(self, topic: str, partition: int) -> FailingPartition:
        part = self.partitions[(topic, partition)]
        assert isinstance(part, FailingPartition)
        return part


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def hub(clock: Clock) -> AsyncIterator[Hub]:
    h = Hub(FailingStorage(clock), HubOptions(max_topics=3), clock)
    await h.start()
    yield h
    await h.close()


def _storage(hub: Hub) -> FailingStorage:
    assert isinstance(hub.storage, FailingStorage)
    return hub.storage


def ev(i: int) -> dict[str, Any]:
    return normalize_event(
        {"type": "order.placed", "id": f"e{i}", "partitionkey": f"k{i}"}, topic="orders"
    )


async def test_a_partition_that_cannot_be_read_leaves_the_others_leases_delivered(
    hub: Hub,
) -> None:
    await hub.create_topic("orders", 2)
    await hub.publish("orders", [ev(i) for i in range(12)])
    ends = [p.end_offset for p in hub.topic("orders").partitions]
    assert all(ends)
    await hub.put_group("orders", "g", GroupConfig(start="earliest"))
    _storage(hub).part("orders", 1).failing = True
    # Either order of the partitions: partition 0's records are delivered, not
    # left leased with no holder.
    got = await hub.fetch("orders", "g", 100)
    assert sorted(d.offset for d in got if d.partition == 0) == list(range(ends[0]))
    assert all(d.partition == 0 for d in got)
    with pytest.raises(StorageUnavailable):  # nothing else to lease: the error is told
        await hub.fetch("orders", "g", 100)
    _storage(hub).part("orders", 1).failing = False
    await hub.ack("orders", "g", [d.lease for d in got])
    rest = await hub.fetch("orders", "g", 100)
    assert sorted(d.offset for d in rest) == list(range(ends[1]))
    assert all(d.partition == 1 for d in rest)
    committed = {p: c for p, (c, _, _) in _storage(hub).positions[("orders", "g")].items()}
    assert committed[0] == ends[0]


async def test_records_expired_before_a_failed_read_are_dead_lettered(
    hub: Hub, clock: Clock
) -> None:
    await hub.publish("orders", [ev(0)])
    await hub.put_group("orders", "g", GroupConfig(ack_wait_ms=1000, max_deliver=1))
    got = await hub.fetch("orders", "g", 1)
    assert [d.offset for d in got] == [0]
    await hub.publish("orders", [ev(1), ev(2)])  # not read yet: the next fetch reads
    clock.now += 2000  # its lease runs out, its last delivery
    _storage(hub).part("orders", 0).failing = True
    assert await hub.fetch("orders", "g", 1) == []
    dlq = hub.topic("orders.dlq").partitions[0]
    assert dlq.end_offset == 1  # copied, not held as dead forever
    _storage(hub).part("orders", 0).failing = False
    rest = await hub.fetch("orders", "g", 10)
    assert [d.offset for d in rest] == [1, 2]


async def test_a_group_changed_while_it_is_deleted_is_made_anew_or_gone(hub: Hub) -> None:
    await hub.publish("orders", [ev(0)])
    await hub.put_group("orders", "g", GroupConfig())
    await asyncio.gather(
        hub.delete_group("orders", "g"), hub.put_group("orders", "g", GroupConfig(max_deliver=2))
    )
    storage = _storage(hub)
    live = hub.topic("orders").groups.get("g")
    # What a restart would load is what the hub serves: no row of a deleted group.
    assert (live is not None) == (("orders", "g") in storage.groups)
    assert (live is not None) == (("orders", "g") in storage.positions)
    assert live is not None and live.config.max_deliver == 2


async def test_topics_made_at_once_stay_within_max_topics(hub: Hub) -> None:
    await hub.publish("orders", [ev(0)])
    await hub.publish("refunds", [ev(1)])
    made = await asyncio.gather(
        *(hub.publish(f"t{i}", [ev(i)]) for i in range(3)), return_exceptions=True
    )
    refused = [r for r in made if isinstance(r, Conflict)]
    assert len(refused) == 2, made
    assert len(hub.topics) == 3  # the limit, not past it


async def test_one_partition_failing_retention_does_not_hold_up_the_others(
    hub: Hub, clock: Clock
) -> None:
    await hub.create_topic("orders", 2, Retention(max_age_ms=1000))
    await hub.publish("orders", [ev(i) for i in range(12)])
    ends = [p.end_offset for p in hub.topic("orders").partitions]
    clock.now += 5000
    _storage(hub).part("orders", 0).failing = True
    assert await hub.apply_retention(clock.now) == ends[1]
    assert hub.topic("orders").partitions[1].start_offset == ends[1]
