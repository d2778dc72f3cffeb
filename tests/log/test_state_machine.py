"""Any sequence of appends, reads, rolls, retention and reopens agrees with a list in memory."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from tidings.errors import OffsetOutOfRange
from tidings.log.config import FsyncPolicy, LogConfig, LogRecord
from tidings.log.partition import PartitionLog

T = TypeVar("T")
T0 = 1_700_000_000_000
RETENTION_BYTES = 700
CONFIG = LogConfig(
    segment_bytes=300,
    segment_ms=5_000,
    index_interval=100,
    retention_bytes=RETENTION_BYTES,
)

payloads = st.binary(max_size=150)
batches = st.lists(st.lists(payloads, min_size=1, max_size=5), min_size=1, max_size=4)


class FakeClock:
    def __init__(self) -> None:
        self.now_ms = T0

    def time_ms(self) -> int:
        return self.now_ms


class PartitionLogMachine(RuleBasedStateMachine):
    """The model: every payload ever appended, by offset, and the first offset kept."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.directory = Path(tempfile.mkdtemp(prefix="tidings-sm-"))
        self.clock = FakeClock()
        self.model: list[bytes] = []
        self.start = 0
        self.policy = FsyncPolicy()
        self.log: PartitionLog | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def open(self) -> PartitionLog:
        return PartitionLog.open(self.directory, CONFIG, self.policy, self.clock)

    @property
    def partition(self) -> PartitionLog:
        assert self.log is not None
        return self.log

    def segments(self) -> list[tuple[int, int]]:
        """(base offset, bytes) of each segment on disk."""
        return [(int(p.stem), p.stat().st_size) for p in sorted(self.directory.glob("*.log"))]

    def teardown(self) -> None:
        try:
            if self.log is not None:
                self.run(self.log.close())
            self.run(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- rules ---------------------------------------------------------------------

    @initialize(policy=st.sampled_from(["always", "interval:5", "never"]))
    def open_log(self, policy: str) -> None:
        self.policy = FsyncPolicy.parse(policy)
        self.log = self.open()

    @rule(batches=batches)
    def append(self, batches: list[list[bytes]]) -> None:
        log = self.partition

        async def appends() -> list[int]:
            # all issued before any is awaited: they share a write (group commit)
            return await asyncio.gather(*(log.append(b) for b in batches))

        bases = self.run(appends())
        expected = []
        for b in batches:
            expected.append(len(self.model))
            self.model.extend(b)
        assert bases == expected
        event(f"{min(self.partition.segment_count, 5)} segments after an append")

    @rule(ms=st.integers(0, 3_000))
    def time_passes(self, ms: int) -> None:
        self.clock.now_ms += ms

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        end = len(self.model)
        offset = data.draw(st.integers(self.start, end), label="offset")
        max_records = data.draw(st.integers(1, 30), label="max_records")
        max_bytes = data.draw(st.integers(0, 400), label="max_bytes")
        got = self.partition.read_now(offset, max_records, max_bytes)
        want = self.model[offset : offset + max_records]
        assert [r[0] for r in got] == list(range(offset, offset + len(got)))
        assert [r[2] for r in got] == want[: len(got)]
        if offset < end:
            assert got, "a read returns at least one record"
        used = sum(len(r[2]) for r in got)
        assert len(got) <= 1 or used <= max_bytes
        if len(got) < len(want):
            # it stopped early only because the budget was spent
            assert used >= max_bytes or used + len(want[len(got)]) > max_bytes

    @rule(data=st.data())
    def read_out_of_range(self, data: st.DataObject) -> None:
        below = st.integers(-5, self.start - 1) if self.start else st.just(-1)
        offset = data.draw(st.one_of(below, st.integers(len(self.model) + 1, len(self.model) + 5)))
        with pytest.raises(OffsetOutOfRange):
            self.partition.read_now(offset)

    @rule()
    def roll(self) -> None:
        before = self.segments()
        self.partition.roll()
        after = self.segments()
        if before[-1][1]:
            assert after == [*before, (len(self.model), 0)]
        else:
            assert after == before

    @rule()
    def retention(self) -> None:
        before = [base for base, _ in self.segments()]
        removed = self.partition.apply_retention_now(self.clock.time_ms())
        after = self.segments()
        new_start = self.partition.start_offset
        assert new_start == after[0][0]
        # whole segments from the front; the active one may have rolled first, never gone
        kept = [b for b in before if b >= new_start]
        assert [b for b, _ in after] in (kept, [*kept, len(self.model)])
        assert removed == len(before) - len(kept)
        sizes = [size for _, size in after]
        if removed:
            assert sum(sizes) >= RETENTION_BYTES, "deleted a segment it needed to keep"
        if len(after) > 1:
            assert sum(sizes) - sizes[0] < RETENTION_BYTES, "kept a segment it could delete"
        assert new_start >= self.start
        self.start = new_start
        event(f"retention removed {min(removed, 2)}+ segments")

    @rule()
    def reopen(self) -> None:
        log = self.partition
        self.run(log.close())
        self.log = self.open()
        assert self.log.report.truncated == []
        assert self.log.report.corrupt == []

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def positions_agree(self) -> None:
        if self.log is None:
            return
        assert self.log.start_offset == self.start
        assert self.log.end_offset == len(self.model)
        assert self.segments()[0][0] == self.start
        assert self.log.segment_count == len(self.segments())

    @invariant()
    def everything_reads_back(self) -> None:
        if self.log is None:
            return
        records: list[LogRecord] = []
        offset = self.start
        while offset < len(self.model):
            got = self.log.read_now(offset, max_records=50)
            records.extend(got)
            offset = got[-1][0] + 1
        assert [r[0] for r in records] == list(range(self.start, len(self.model)))
        assert [r[2] for r in records] == self.model[self.start :]


PartitionLogMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None
)
TestPartitionLog = PartitionLogMachine.TestCase
