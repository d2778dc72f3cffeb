"""Append times never go back in a partition, and the read horizon bounds what comes.

Section 1 of the streams design: ``ts = max(clock, last ts)`` per partition (after
a restart too, and for linked parts), and ``horizon(now)`` is ``now`` or the time of
the oldest append not readable yet, whichever is earlier.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.log.config import FsyncPolicy, LogConfig, Retention
from tidings.log.linked import append_linked
from tidings.log.memory import MemoryPartition, MemoryStorage
from tidings.log.partition import PartitionLog

T0 = 1_700_000_000_000


class FakeClock:
    """The ``Clock`` seam: a time the test sets by hand."""

    def __init__(self, now_ms: int = T0) -> None:
        self.now_ms = now_ms

    def time_ms(self) -> int:
        return self.now_ms


def open_log(path: Path, clock: FakeClock, policy: str = "never") -> PartitionLog:
    return PartitionLog.open(path, LogConfig(), FsyncPolicy.parse(policy), clock)


def times(log: PartitionLog | MemoryPartition) -> list[int]:
    return [ts for _, ts, _ in log.read_now(log.start_offset, 10_000)]


async def test_a_clock_that_goes_back_does_not_take_append_times_back(tmp_path: Path) -> None:
    clock = FakeClock()
    log = open_log(tmp_path, clock)
    await log.append([b"a"])
    clock.now_ms -= 1000
    await log.append([b"b"])
    await log.append([b"c"], timestamp_ms=T0 - 5000)
    clock.now_ms = T0 + 7
    await log.append([b"d"])
    assert times(log) == [T0, T0, T0, T0 + 7]
    await log.close()


async def test_append_times_go_on_from_the_last_record_after_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    log = open_log(tmp_path, clock)
    await log.append([b"a"])
    log.roll()  # the last record in a sealed segment, the active one empty
    await log.close()
    clock.now_ms = T0 - 60_000  # the machine's clock went back across the restart
    log = open_log(tmp_path, clock)
    assert log.last_ts == T0
    await log.append([b"b"])
    assert times(log) == [T0, T0]
    await log.close()


async def test_linked_parts_share_one_time_at_least_each_partition_s_last(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    storage = EmbeddedStorage(tmp_path, FsyncPolicy.parse("never"), clock=clock)
    await storage.save_topic("t", {"partitions": 2})
    p0 = await storage.open_partition("t", 0, Retention())
    p1 = await storage.open_partition("t", 1, Retention())
    clock.now_ms = T0 + 50
    await p1.append([b"later"])
    clock.now_ms = T0
    await storage.append_linked("t", [(0, [b"x"]), (1, [b"y"])])
    assert [r[1] for r in p0.read_now(0)] == [T0 + 50]
    assert [r[1] for r in p1.read_now(0)] == [T0 + 50, T0 + 50]
    await storage.close()


async def test_horizon_is_now_when_everything_appended_is_readable(tmp_path: Path) -> None:
    clock = FakeClock()
    log = open_log(tmp_path, clock)
    assert log.horizon(T0 + 3) == T0 + 3
    await log.append([b"a"])
    assert log.horizon(T0 + 10) == T0 + 10
    await log.close()


async def test_horizon_stops_at_an_append_not_yet_synced(tmp_path: Path) -> None:
    clock = FakeClock()
    log = open_log(tmp_path, clock, policy="always")
    first = log.append([b"a"])  # queued: the fsync runs in a thread
    clock.now_ms = T0 + 20
    second = log.append([b"b"])
    assert log.end_offset == 0
    assert log.horizon(T0 + 30) == T0  # the oldest unreadable append's time
    await first
    await second
    assert log.end_offset == 2
    assert log.horizon(T0 + 30) == T0 + 30
    await log.close()


async def test_horizon_stops_at_a_held_linked_part_until_it_is_released(tmp_path: Path) -> None:
    clock = FakeClock()
    a = open_log(tmp_path / "0", clock)
    b = open_log(tmp_path / "1", clock, policy="always")
    done = append_linked([(0, a, [b"x"]), (1, b, [b"y"])], T0)
    clock.now_ms = T0 + 100
    await asyncio.sleep(0)  # a's part is written, held until b's is synced
    assert a.end_offset == 0
    assert a.horizon(T0 + 100) == T0
    await done
    assert a.end_offset == 1
    assert a.horizon(T0 + 100) == T0 + 100
    await a.close()
    await b.close()


async def test_appends_after_a_horizon_are_stamped_at_least_it(tmp_path: Path) -> None:
    clock = FakeClock()
    log = open_log(tmp_path, clock)
    assert log.horizon(T0 + 500) == T0 + 500  # a reader was told: nothing below T0+500 comes
    await log.append([b"a"])  # the log's clock is behind the hub's
    assert times(log) == [T0 + 500]
    await log.close()


async def test_memory_partition_keeps_the_same_rules() -> None:
    clock = FakeClock()
    storage = MemoryStorage(clock)
    part = await storage.open_partition("t", 0, Retention())
    await storage.open_partition("t", 1, Retention())
    await part.append([b"a"])
    clock.now_ms -= 10
    await part.append([b"b"])
    assert part.horizon(T0 + 40) == T0 + 40
    await part.append([b"c"])
    await storage.append_linked("t", [(0, [b"d"]), (1, [b"e"])])
    assert times(part) == [T0, T0, T0 + 40, T0 + 40]
