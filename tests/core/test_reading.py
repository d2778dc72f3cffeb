"""Reads with append times: each record's time and the read's horizon (streams section 1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tidings.core.hub import Hub
from tidings.core.patterns import TypeFilter
from tidings.events.envelope import normalize_event
from tidings.log.memory import MemoryStorage

T0 = 1_700_000_000_000


class FakeClock:
    """The ``Clock`` seam: a time the test moves by hand."""

    def __init__(self, now_ms: int = T0) -> None:
        self.now_ms = now_ms

    def time_ms(self) -> int:
        return self.now_ms


def ev(etype: str = "order.placed", **attrs: Any) -> dict[str, Any]:
    return normalize_event({"type": etype, **attrs}, topic="orders")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def hub(clock: FakeClock) -> AsyncIterator[Hub]:
    h = Hub(MemoryStorage(clock), clock=clock)
    await h.start()
    yield h
    await h.close()


async def test_a_read_to_the_end_answers_times_and_now_as_horizon(
    hub: Hub, clock: FakeClock
) -> None:
    await hub.create_topic("orders", partitions=2)
    await hub.publish("orders", [ev(partitionkey="a")])
    clock.now_ms += 10
    await hub.publish("orders", [ev(partitionkey="a")])
    clock.now_ms += 5
    got = await hub.read("orders", {0: 0, 1: 0}, appended=True)
    assert sorted(t for _, _, t, _ in got.records) == [T0, T0 + 10]
    assert got.horizon == T0 + 15
    plain = await hub.read("orders", {0: 0, 1: 0})
    assert sorted((p, o) for p, o, _ in plain.records) == sorted(
        (p, o) for p, o, _, _ in got.records
    )


async def test_a_read_that_stops_early_answers_the_next_record_s_time(
    hub: Hub, clock: FakeClock
) -> None:
    for _ in range(3):
        await hub.publish("orders", [ev()])
        clock.now_ms += 100
    got = await hub.read("orders", {0: 0}, limit=1, appended=True)
    assert [(o, t) for _, o, t, _ in got.records] == [(0, T0)]
    assert got.horizon == T0 + 100  # offset 1, not read yet, was appended then
    rest = await hub.read("orders", got.next, appended=True)
    assert [t for _, _, t, _ in rest.records] == [T0 + 100, T0 + 200]
    assert rest.horizon == T0 + 300


async def test_the_horizon_is_the_minimum_over_the_partitions_read(
    hub: Hub, clock: FakeClock
) -> None:
    await hub.create_topic("orders", partitions=2)
    [placed] = await hub.publish("orders", [ev(partitionkey="k")])
    full, empty = placed.partition, 1 - placed.partition
    clock.now_ms += 1000
    got = await hub.read("orders", {0: 0, 1: 0}, appended=True)
    assert got.horizon == T0 + 1000
    await hub.publish("orders", [ev(partitionkey="k")])
    # The empty partition reached its end (now); the other stopped before its second.
    got = await hub.read("orders", {empty: 0, full: 0}, limit=1, appended=True)
    assert got.horizon == T0 + 1000 and got.next == {empty: 0, full: 1}
    clock.now_ms += 1000
    got = await hub.read("orders", {empty: 0, full: 1}, limit=1, appended=True)
    assert got.horizon == T0 + 2000
    assert (await hub.read("orders", {empty: 0}, appended=True)).horizon == T0 + 2000
    # Read past the record, filtered out by type: it counts as read.
    skipped = await hub.read("orders", {full: 0}, types=TypeFilter.parse(["other"]), appended=True)
    assert skipped.records == [] and skipped.next == {full: 2}
    assert skipped.horizon == T0 + 2000


async def test_a_long_poll_that_times_out_answers_a_horizon(hub: Hub, clock: FakeClock) -> None:
    await hub.create_topic("orders")
    clock.now_ms += 42
    got = await hub.read("orders", {0: 0}, wait_s=0.01, appended=True)
    assert got.records == [] and got.horizon == T0 + 42
