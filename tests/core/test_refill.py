"""Refilling the dedupe window at start-up: the newest ids across every partition first."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from tests.log.test_corruption import flip
from tidings.core.dedupe import DedupeWindow
from tidings.core.refill import refill
from tidings.log.config import FsyncPolicy
from tidings.log.memory import MemoryPartition
from tidings.log.partition import PartitionLog

NOW = 1_000_000_000


def partition(name: str, times: list[int]) -> MemoryPartition:
    part = MemoryPartition()
    for i, ts in enumerate(times):
        part.append([orjson.dumps({"id": f"{name}-{i}"})], ts)
    return part


async def test_a_full_window_keeps_the_newest_ids_of_every_partition() -> None:
    # Partition 0 was busy a minute ago, partitions 1 and 2 (taking turns, one
    # millisecond apart) just now: the newest 3,000 ids are half in each of those.
    parts = [
        partition("a", [NOW - 60_000 + i for i in range(5_000)]),
        partition("b", [NOW - 5_000 + 2 * i for i in range(2_500)]),
        partition("c", [NOW - 4_999 + 2 * i for i in range(2_500)]),
    ]
    window = DedupeWindow(120_000, max_entries=3_000)
    n = await refill(window, {"t": parts}, NOW)
    assert n == 3_000
    # Every record newer than the 3000th newest is known, wherever it is.
    everything = sorted(
        (ts, name, i)
        for name, part in zip("abc", parts, strict=True)
        for i, (_, ts, _) in enumerate(part.read_now(0, 10_000, 1 << 30))
    )
    newest = everything[-3_000:]
    for ts, name, i in newest:
        assert window.get("t", f"{name}-{i}", NOW) is not None, (ts, name, i)
    assert {name for _, name, _ in newest} == {"b", "c"}
    assert window.get("t", "c-2499", NOW) == (2, 2_499)
    assert window.get("t", "b-999", NOW) is None  # the oldest are left out
    assert window.get("t", "a-4999", NOW) is None


async def test_records_older_than_the_window_are_not_refilled() -> None:
    part = partition("a", [NOW - 200_000, NOW - 150_000, NOW - 10_000, NOW - 5])
    window = DedupeWindow(120_000)
    assert await refill(window, {"t": [part]}, NOW) == 2
    assert window.get("t", "a-1", NOW) is None
    assert window.get("t", "a-2", NOW) == (0, 2)
    assert window.get("t", "a-3", NOW) == (0, 3)


async def test_a_damaged_newest_batch_does_not_end_its_partitions_refill(
    tmp_path: Path,
) -> None:
    """The newest batch of a partition (the end of a sealed segment, the active one
    empty) is damaged, and holds more records than one chunk of the refill: the ids of
    the intact records before it are refilled all the same."""
    log = PartitionLog.open(tmp_path, policy=FsyncPolicy.parse("always"))
    try:
        assert await log.append([orjson.dumps({"id": f"a-{i}"}) for i in range(10)]) == 0
        assert await log.append([orjson.dumps({"id": f"b-{i}"}) for i in range(2_500)]) == 10
        log.roll()
    finally:
        await log.close()
    sealed = tmp_path / "00000000000000000000.log"
    flip(sealed, sealed.stat().st_size - 3)  # the last record's payload: its batch's CRC fails

    log = PartitionLog.open(tmp_path, policy=FsyncPolicy.parse("always"))
    try:
        window = DedupeWindow(120_000)
        now = int(time.time() * 1000)
        assert await refill(window, {"t": [log]}, now) == 10
        assert [window.get("t", f"a-{i}", now) for i in range(10)] == [(0, i) for i in range(10)]
        assert window.get("t", "b-0", now) is None
        assert [(d.first_offset, d.end_offset) for d in log.damage] == [(10, 2_510)]
    finally:
        await log.close()
