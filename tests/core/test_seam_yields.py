"""The hub over a storage that yields to the loop in every call, as a backend whose
calls are network round trips does: what it saves and answers is what it would be
if each call were made at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tidings.core.groups import GroupConfig
from tidings.core.hub import Hub, HubOptions
from tidings.errors import GroupNotFound
from tidings.events.envelope import normalize_event
from tidings.log.config import GroupStats, LogRecord, Positions, Retention
from tidings.log.memory import MemoryPartition, MemoryStorage

TURNS = 3  # loop turns each call gives away before it acts


async def _turns() -> None:
    for _ in range(TURNS):
        await asyncio.sleep(0)


class YieldingPartition(MemoryPartition):
    async def read(
        self, offset: int, max_records: int = 1000, max_bytes: int = 1 << 20
    ) -> list[LogRecord]:
        await _turns()
        return self.read_now(offset, max_records, max_bytes)

    async def offset_for_time(self, ts_ms: int) -> int:
        await _turns()
        return self.offset_for_time_now(ts_ms)


class YieldingStorage(MemoryStorage):
    """Each call waits a few turns of the loop first; a save lands after them."""

    partition_type = YieldingPartition

    async def open_partition(
        self, topic: str, partition: int, retention: Retention
    ) -> MemoryPartition:
        await _turns()
        return await super().open_partition(topic, partition, retention)

    async def save_topic(self, topic: str, config: dict[str, Any]) -> None:
        await _turns()
        await super().save_topic(topic, config)

    async def save_group(self, topic: str, group: str, config: dict[str, Any]) -> None:
        await _turns()
        await super().save_group(topic, group, config)

    async def save_positions(
        self, topic: str, group: str, positions: Positions, stats: GroupStats | None = None
    ) -> None:
        await _turns()
        await super().save_positions(topic, group, positions, stats)

    async def delete_group(self, topic: str, group: str) -> None:
        await _turns()
        await super().delete_group(topic, group)

    async def save_schemas(self, etype: str, entry: dict[str, Any]) -> None:
        await _turns()
        await super().save_schemas(etype, entry)


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    h = Hub(YieldingStorage(), HubOptions())
    await h.start()
    yield h
    await h.close()


def ev(i: int) -> dict[str, Any]:
    return normalize_event({"type": "order.placed", "id": f"e{i}"}, topic="orders")


async def test_an_ack_is_not_undone_by_a_fetch_saved_meanwhile(hub: Hub) -> None:
    await hub.publish("orders", [ev(i) for i in range(4)])
    await hub.put_group("orders", "g", GroupConfig(start="earliest"))
    first = await hub.fetch("orders", "g", 2)
    # The ack's save is under way while the fetch leases and saves the rest.
    await asyncio.gather(
        hub.ack("orders", "g", [d.lease for d in first]), hub.fetch("orders", "g", 2)
    )
    storage = hub.storage
    assert isinstance(storage, YieldingStorage)
    committed, _, pending = storage.positions[("orders", "g")][0]
    assert committed == 2  # the ack is in the last saved state
    assert sorted(p[0] for p in pending) == [2, 3]  # and so are the fetch's leases


async def test_acks_made_together_are_all_saved(hub: Hub) -> None:
    await hub.publish("orders", [ev(i) for i in range(6)])
    await hub.put_group("orders", "g", GroupConfig(start="earliest"))
    got = await hub.fetch("orders", "g", 6)
    await asyncio.gather(*(hub.ack("orders", "g", [d.lease]) for d in got))
    storage = hub.storage
    assert isinstance(storage, YieldingStorage)
    assert storage.positions[("orders", "g")][0][0] == 6


async def test_an_ack_that_waited_on_a_deletion_saves_nothing(hub: Hub) -> None:
    await hub.publish("orders", [ev(i) for i in range(2)])
    await hub.put_group("orders", "g", GroupConfig(start="earliest"))
    got = await hub.fetch("orders", "g", 2)
    deleted, acked = await asyncio.gather(
        hub.delete_group("orders", "g"),
        hub.ack("orders", "g", [d.lease for d in got]),
        return_exceptions=True,
    )
    assert deleted is None
    assert isinstance(acked, GroupNotFound)
    storage = hub.storage
    assert isinstance(storage, YieldingStorage)
    assert ("orders", "g") not in storage.positions  # no row comes back for it


async def test_a_topic_created_twice_at_once_is_one_topic(hub: Hub) -> None:
    (a, made_a), (b, made_b) = await asyncio.gather(
        hub.create_topic("orders", 2), hub.create_topic("orders", 2)
    )
    assert a is b is hub.topics["orders"]
    assert sorted([made_a, made_b]) == [False, True]
    assert len(a.partitions) == 2


async def test_publishes_that_make_a_topic_together_land_in_one(hub: Hub) -> None:
    await asyncio.gather(*(hub.publish("fresh", [ev(i)]) for i in range(5)))
    got = await hub.read("fresh", {0: 0})
    assert len(got.records) == 5


async def test_schema_versions_registered_together_are_all_kept(hub: Hub) -> None:
    schemas = [
        {"type": "object"},
        {"type": "object", "properties": {"a": {"type": "string"}}},
    ]
    await hub.schemas.configure("order.placed", "none")
    await asyncio.gather(*(hub.schemas.put("order.placed", s) for s in schemas))
    storage = hub.storage
    assert isinstance(storage, YieldingStorage)
    assert len(storage.schemas["order.placed"]["versions"]) == 2
    assert len(hub.schemas.get("order.placed").versions) == 2


async def test_a_time_position_is_read_through_the_seam(hub: Hub) -> None:
    await hub.publish("orders", [ev(i) for i in range(3)])
    topic = hub.topic("orders")
    assert await hub.positions(topic, None, None, "1970-01-01T00:00:00Z") == {0: 0}
