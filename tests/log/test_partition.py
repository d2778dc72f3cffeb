"""PartitionLog: append, read, roll, retention, waiting readers, close and reopen."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.errors import BadRequest, OffsetOutOfRange, StorageUnavailable
from tidings.log import format as fmt
from tidings.log.config import FsyncPolicy, LogConfig, LogRecord, WrongEnd
from tidings.log.partition import PartitionLog

T0 = 1_700_000_000_000


class FakeClock:
    """The ``Clock`` seam: a time the test sets by hand."""

    def __init__(self, now_ms: int = T0) -> None:
        self.now_ms = now_ms

    def time_ms(self) -> int:
        return self.now_ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def batch_bytes(payloads: Sequence[bytes]) -> int:
    return fmt.BATCH_HEADER_LEN + sum(fmt.RECORD_HEADER_LEN + len(p) for p in payloads)


def payload(offset: int, size: int = 20) -> bytes:
    return f"{offset}:".encode().ljust(size, b"x")


def read_all(log: PartitionLog, offset: int | None = None) -> list[LogRecord]:
    """Every record from ``offset`` (the start by default) to the end, in small reads."""
    offset = log.start_offset if offset is None else offset
    out: list[LogRecord] = []
    while offset < log.end_offset:
        got = log.read_now(offset, max_records=7)
        assert got, f"empty read at {offset} < end {log.end_offset}"
        out.extend(got)
        offset = got[-1][0] + 1
    return out


async def fill(log: PartitionLog, n: int, *, per_batch: int = 1, size: int = 20) -> None:
    """Append ``n`` records, numbered by offset, ``per_batch`` to a batch."""
    start = log.end_offset
    for base in range(start, start + n, per_batch):
        count = min(per_batch, start + n - base)
        assert await log.append([payload(base + i, size) for i in range(count)]) == base


def segment_bases(directory: Path) -> list[int]:
    return sorted(int(p.stem) for p in directory.glob("*.log"))


def open_log(
    path: Path, clock: FakeClock | None = None, policy: str = "never", **config: Any
) -> PartitionLog:
    clock = clock or FakeClock()
    return PartitionLog.open(path, LogConfig(**config), FsyncPolicy.parse(policy), clock)


# -- append and read -----------------------------------------------------------------


async def test_append_then_read(tmp_path: Path, clock: FakeClock) -> None:
    log = open_log(tmp_path, clock)
    assert (log.start_offset, log.end_offset) == (0, 0)
    assert await log.append([b"a", b"b"]) == 0
    clock.now_ms += 5
    assert await log.append([b"c"]) == 2
    assert await log.append([b"d"], timestamp_ms=T0 + 9) == 3
    assert log.end_offset == 4
    assert log.read_now(0) == [(0, T0, b"a"), (1, T0, b"b"), (2, T0 + 5, b"c"), (3, T0 + 9, b"d")]
    assert log.read_now(2) == [(2, T0 + 5, b"c"), (3, T0 + 9, b"d")]
    assert log.read_now(4) == []
    await log.close()


async def test_an_append_at_an_expected_end_lands_only_there(
    tmp_path: Path, clock: FakeClock
) -> None:
    log = open_log(tmp_path, clock)
    assert await log.append([b"a", b"b"], expect_end=0) == 0
    first = log.append([b"c"], expect_end=2)  # offsets are taken at the call:
    with pytest.raises(WrongEnd) as refused:  # the next one expects past it
        log.append([b"x"], expect_end=2)
    assert (refused.value.end, refused.value.fields["expected"]) == (3, 2)
    assert await first == 2
    assert await log.append([b"d"], expect_end=3) == 3
    assert [r[2] for r in log.read_now(0)] == [b"a", b"b", b"c", b"d"]
    await log.close()


async def test_empty_payload_is_a_record(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    await log.append([b"", b"x", b""])
    assert [r[2] for r in log.read_now(0)] == [b"", b"x", b""]
    await log.close()


async def test_append_of_nothing_is_refused(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    with pytest.raises(BadRequest):
        log.append([])
    assert log.end_offset == 0
    await log.close()


@pytest.mark.parametrize("policy", ["always", "interval:5", "never"])
async def test_offsets_are_contiguous_in_call_order(tmp_path: Path, policy: str) -> None:
    log = open_log(tmp_path, policy=policy, segment_bytes=2048)
    sizes = [1, 3, 1, 7, 2, 5, 1, 1, 4, 9] * 5
    futures = []
    for i, n in enumerate(sizes):
        futures.append(log.append([payload(i * 100 + j) for j in range(n)]))
        if i % 7 == 0:
            await asyncio.sleep(0)  # let the writer take some, so batches group differently
    bases = await asyncio.gather(*futures)
    expected_bases = [sum(sizes[:i]) for i in range(len(sizes))]
    assert bases == expected_bases
    records = read_all(log)
    assert [r[0] for r in records] == list(range(sum(sizes)))
    assert [r[2] for r in records] == [
        payload(i * 100 + j) for i, n in enumerate(sizes) for j in range(n)
    ]
    assert log.segment_count > 1
    await log.close()


async def test_a_record_is_visible_only_once_acknowledged(tmp_path: Path) -> None:
    log = open_log(tmp_path, policy="always")
    fut = log.append([b"a"])
    assert log.end_offset == 0
    assert log.read_now(0) == []
    with pytest.raises(OffsetOutOfRange):
        log.read_now(1)
    await fut
    assert log.end_offset == 1
    assert log.read_now(0)[0][2] == b"a"
    await log.close()


# -- read limits ---------------------------------------------------------------------


async def test_max_records(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    await fill(log, 30, per_batch=4)
    assert [r[0] for r in log.read_now(0, max_records=1)] == [0]
    assert [r[0] for r in log.read_now(3, max_records=5)] == [3, 4, 5, 6, 7]
    assert [r[0] for r in log.read_now(25, max_records=100)] == [25, 26, 27, 28, 29]
    await log.close()


async def test_max_bytes_stops_before_the_record_that_would_overflow(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    await fill(log, 10, per_batch=3, size=100)
    assert len(log.read_now(0, max_bytes=100)) == 1
    assert len(log.read_now(0, max_bytes=299)) == 2
    assert len(log.read_now(0, max_bytes=300)) == 3
    assert len(log.read_now(1, max_bytes=450)) == 4
    await log.close()


async def test_read_returns_at_least_one_record(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    await log.append([b"x" * 5000, b"y"])
    assert log.read_now(0, max_bytes=10) == [(0, log.read_now(0)[0][1], b"x" * 5000)]
    assert [r[2] for r in log.read_now(1, max_bytes=0)] == [b"y"]
    await log.close()


async def test_max_bytes_holds_across_segments(tmp_path: Path) -> None:
    # One 100-byte record per segment: the second segment must not add a record
    # past the budget just because it is the first that segment returns.
    log = open_log(tmp_path, segment_bytes=batch_bytes([b"x" * 100]))
    await fill(log, 6, size=100)
    assert log.segment_count == 6
    assert [r[0] for r in log.read_now(0, max_bytes=150)] == [0]
    assert [r[0] for r in log.read_now(1, max_bytes=350)] == [1, 2, 3]
    assert [r[0] for r in log.read_now(0, max_bytes=50)] == [0]
    await log.close()


def model_read(
    records: list[bytes], start: int, offset: int, max_records: int, max_bytes: int
) -> list[int]:
    """The offsets a read must return: whole records in order, the first always."""
    out: list[int] = []
    used = 0
    for i in range(offset - start, len(records)):
        if len(out) >= max_records or (out and used + len(records[i]) > max_bytes):
            break
        out.append(start + i)
        used += len(records[i])
    return out


async def test_read_limits_agree_with_the_model_everywhere(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=700, index_interval=100)
    sizes = [(i * 37) % 90 + 1 for i in range(60)]
    payloads = [bytes([65 + i % 26]) * n for i, n in enumerate(sizes)]
    i = 0
    for count in [1, 2, 3, 1, 4, 4] * 4:
        await log.append(payloads[i : i + count])
        i += count
    assert i == len(payloads)
    assert log.segment_count > 3
    for offset in range(0, 61):
        for max_records in (1, 2, 5, 1000):
            for max_bytes in (0, 1, 50, 90, 200, 1000, 1 << 20):
                got = log.read_now(offset, max_records, max_bytes)
                want = model_read(payloads, 0, offset, max_records, max_bytes)
                assert [r[0] for r in got] == want, (offset, max_records, max_bytes)
                assert [r[2] for r in got] == [payloads[o] for o in want]
    await log.close()


async def test_read_outside_the_log_raises(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=batch_bytes([payload(0)]), retention_bytes=1)
    await fill(log, 5)
    with pytest.raises(OffsetOutOfRange):
        log.read_now(6)
    with pytest.raises(OffsetOutOfRange):
        log.read_now(-1)
    log.apply_retention_now()
    assert log.start_offset == 4
    with pytest.raises(OffsetOutOfRange) as err:
        log.read_now(3)
    assert err.value.fields == {"start": 4, "end": 5}
    assert log.read_now(4)[0][0] == 4
    assert log.read_now(5) == []
    await log.close()


async def test_reads_span_segments(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=300, index_interval=64)
    await fill(log, 100, per_batch=3)
    assert log.segment_count > 10
    everything = log.read_now(0, max_records=1000)
    assert [r[0] for r in everything] == list(range(100))
    assert [r[2] for r in everything] == [payload(i) for i in range(100)]
    for offset in range(100):
        got = log.read_now(offset, max_records=13)
        assert [r[0] for r in got] == list(range(offset, min(offset + 13, 100)))
    await log.close()


# -- time ---------------------------------------------------------------------------


async def test_offset_for_time(tmp_path: Path, clock: FakeClock) -> None:
    log = open_log(tmp_path, clock, segment_bytes=400, index_interval=1)
    assert log.offset_for_time_now(0) == 0  # an empty log: the end
    times = []
    for i in range(40):
        clock.now_ms = T0 + 10 * (i // 2)  # two records at each time
        times.append(clock.now_ms)
        await log.append([payload(i)])
    assert log.segment_count > 3
    assert log.offset_for_time_now(0) == 0
    assert log.offset_for_time_now(T0) == 0
    for i, ts in enumerate(times):
        first = times.index(ts)
        assert log.offset_for_time_now(ts) == first, i
        assert log.offset_for_time_now(ts - 1) == first, i
        if first + 2 < 40:
            assert log.offset_for_time_now(ts + 1) == first + 2
    assert log.offset_for_time_now(times[-1] + 1) == 40 == log.end_offset
    await log.close()


async def test_offset_for_time_with_batches_and_sparse_index(
    tmp_path: Path, clock: FakeClock
) -> None:
    log = open_log(tmp_path, clock, segment_bytes=2000, index_interval=300)
    for i in range(50):
        clock.now_ms = T0 + 1000 * i
        await log.append([payload(4 * i + j) for j in range(4)])
    for i in range(50):
        assert log.offset_for_time_now(T0 + 1000 * i) == 4 * i
        assert log.offset_for_time_now(T0 + 1000 * i - 999) == 4 * i
    await log.close()


# -- rolling --------------------------------------------------------------------------


async def test_roll_by_size(tmp_path: Path) -> None:
    one = batch_bytes([payload(0)])
    log = open_log(tmp_path, segment_bytes=3 * one)
    await fill(log, 10)
    assert segment_bases(tmp_path) == [0, 3, 6, 9]
    assert log.segment_count == 4
    for base in (0, 3, 6):
        assert (tmp_path / fmt.segment_name(base, ".log")).stat().st_size == 3 * one
    await log.close()


async def test_a_batch_larger_than_a_segment_gets_a_segment_of_its_own(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=100)
    await log.append([b"a"])
    await log.append([b"x" * 500, b"y" * 500])
    await log.append([b"b"])
    assert segment_bases(tmp_path) == [0, 1, 3]
    assert [r[2] for r in log.read_now(0, max_bytes=1 << 20)] == [
        b"a",
        b"x" * 500,
        b"y" * 500,
        b"b",
    ]
    await log.close()


async def test_roll_by_age(tmp_path: Path, clock: FakeClock) -> None:
    log = open_log(tmp_path, clock, segment_ms=1000)
    await log.append([b"a"])
    clock.now_ms += 999
    await log.append([b"b"])
    assert log.segment_count == 1
    clock.now_ms += 1  # 1000 ms after the segment's first record
    await log.append([b"c"])
    assert segment_bases(tmp_path) == [0, 2]
    clock.now_ms += 500
    await log.append([b"d"])
    assert log.segment_count == 2
    await log.close()


async def test_forced_roll(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.roll()  # an empty active segment stays
    assert log.segment_count == 1
    await log.append([b"a"])
    log.roll()
    log.roll()
    await log.append([b"b"])
    assert segment_bases(tmp_path) == [0, 1]
    assert [r[2] for r in log.read_now(0)] == [b"a", b"b"]
    await log.close()


# -- retention ----------------------------------------------------------------------


async def test_retention_by_bytes(tmp_path: Path, clock: FakeClock) -> None:
    one = batch_bytes([payload(0)])
    log = open_log(tmp_path, clock, segment_bytes=2 * one, retention_bytes=5 * one)
    await fill(log, 11)  # segments [0,1] [2,3] [4,5] [6,7] [8,9] [10]
    assert segment_bases(tmp_path) == [0, 2, 4, 6, 8, 10]
    assert log.apply_retention_now(clock.time_ms()) == 3
    # whole segments only: 5 records of budget keeps [6,7] [8,9] [10]
    assert log.start_offset == 6
    assert segment_bases(tmp_path) == [6, 8, 10]
    assert not list(tmp_path.glob(f"{fmt.segment_name(4, '')}*"))
    assert log.size_bytes == 5 * one
    assert [r[0] for r in read_all(log)] == list(range(6, 11))
    assert log.apply_retention_now(clock.time_ms()) == 0
    await log.close()


async def test_retention_never_deletes_the_active_segment(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=10_000, retention_bytes=1, segment_ms=None)
    await fill(log, 20)
    assert log.apply_retention_now() == 0
    assert (log.start_offset, log.end_offset, log.segment_count) == (0, 20, 1)
    log.roll()
    assert await log.append([b"next"]) == 20
    assert log.apply_retention_now() == 1
    assert (log.start_offset, log.end_offset, log.segment_count) == (20, 21, 1)
    assert log.read_now(20)[0][2] == b"next"
    await log.close()


async def test_retention_by_age(tmp_path: Path, clock: FakeClock) -> None:
    log = open_log(tmp_path, clock, retention_ms=10_000, segment_ms=None)
    for _ in range(4):
        await fill(log, 3)
        log.roll()
        clock.now_ms += 5_000
    await fill(log, 2)  # active: offsets 12, 13
    # segments by max_ts: [0..2] T0, [3..5] T0+5s, [6..8] T0+10s, [9..11] T0+15s
    assert log.apply_retention_now(T0 + 10_000) == 0
    assert log.apply_retention_now(T0 + 10_001) == 1
    assert log.start_offset == 3
    assert log.apply_retention_now(T0 + 20_000) == 1  # max_ts T0+10s is not older than now-10s
    assert log.start_offset == 6
    assert log.apply_retention_now(T0 + 100_000) == 2
    assert (log.start_offset, log.segment_count) == (12, 1)
    assert [r[0] for r in read_all(log)] == [12, 13]
    await log.close()


async def test_retention_by_age_rolls_an_old_active_segment_but_keeps_it(
    tmp_path: Path, clock: FakeClock
) -> None:
    log = open_log(tmp_path, clock, retention_ms=1000, segment_ms=1000)
    await fill(log, 5)
    assert log.apply_retention_now(T0 + 500) == 0
    assert log.segment_count == 1
    assert log.apply_retention_now(T0 + 5000) == 1
    assert (log.start_offset, log.end_offset, log.segment_count) == (5, 5, 1)
    assert segment_bases(tmp_path) == [5]
    clock.now_ms = T0 + 5000
    assert await log.append([b"later"]) == 5
    assert log.read_now(5)[0][2] == b"later"
    await log.close()


# -- waiting readers ----------------------------------------------------------------


async def test_wait_wakes_on_append(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    waiter = asyncio.create_task(log.wait(0, timeout=5))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await log.append([b"a"])
    assert await asyncio.wait_for(waiter, 1) is True
    assert await log.wait(0, timeout=0) is True  # already there
    await log.close()


async def test_wait_times_out(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    await log.append([b"a"])
    started = time.monotonic()
    assert await log.wait(1, timeout=0.05) is False
    assert 0.04 <= time.monotonic() - started < 1
    await log.close()


async def test_wait_times_out_while_other_records_trickle_in(tmp_path: Path) -> None:
    log = open_log(tmp_path)

    async def trickle() -> None:
        for _ in range(40):
            await asyncio.sleep(0.01)
            await log.append([b"."])

    appender = asyncio.create_task(trickle())
    started = time.monotonic()
    assert await log.wait(1000, timeout=0.1) is False
    assert time.monotonic() - started < 0.3
    await appender
    await log.close()


async def test_wait_returns_false_on_close(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    waiter = asyncio.create_task(log.wait(0))
    await asyncio.sleep(0.01)
    await log.close()
    assert await asyncio.wait_for(waiter, 1) is False
    assert await log.wait(0) is False


# -- close, policies, reopen --------------------------------------------------------


@pytest.mark.parametrize("policy", ["always", "interval:5", "never"])
async def test_close_finishes_queued_appends(tmp_path: Path, policy: str) -> None:
    log = open_log(tmp_path, policy=policy, segment_bytes=500)
    futures = [log.append([payload(i)]) for i in range(50)]
    await log.close()
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == list(range(50))
    with pytest.raises(StorageUnavailable):
        log.append([b"late"])
    with pytest.raises(StorageUnavailable):
        log.read_now(0)
    await log.close()  # twice is fine
    again = open_log(tmp_path)
    assert [r[2] for r in read_all(again)] == [payload(i) for i in range(50)]
    await again.close()


@pytest.mark.parametrize("policy", ["always", "interval:5", "never"])
async def test_every_policy_acknowledges(tmp_path: Path, policy: str) -> None:
    log = open_log(tmp_path, policy=policy)
    assert str(log.policy) == policy
    results = await asyncio.gather(*(log.append([payload(i)]) for i in range(20)))
    assert results == list(range(20))
    await log.flush()
    assert not log.dirty
    assert log.end_offset == 20
    await log.close()


@pytest.mark.parametrize(
    ("text", "mode", "interval_ms"),
    [
        ("always", "always", 50),
        ("never", "never", 50),
        ("interval:5", "interval", 5),
        ("interval:1000", "interval", 1000),
        (" interval:7 ", "interval", 7),
    ],
)
def test_fsync_policy_parse(text: str, mode: str, interval_ms: int) -> None:
    policy = FsyncPolicy.parse(text)
    assert (policy.mode, policy.interval_ms) == (mode, interval_ms)
    assert FsyncPolicy.parse(str(policy)) == policy


@pytest.mark.parametrize(
    "text",
    [
        "interval:0",
        "interval:x",
        "interval:",
        "interval:-5",
        "interval:1.5",
        "sometimes",
        "",
        "ALWAYS",
        "interval",
        "interval:²",
    ],
)
def test_fsync_policy_parse_refuses(text: str) -> None:
    with pytest.raises(BadRequest) as err:
        FsyncPolicy.parse(text)
    message = str(err.value)
    assert repr(text.strip()) in message
    for option in ("'always'", "'interval:<ms>'", "'never'"):
        assert option in message
    assert err.value.status == 400


@given(st.text(max_size=20))
def test_fsync_policy_parse_never_raises_anything_but_bad_request(text: str) -> None:
    try:
        policy = FsyncPolicy.parse(text)
    except BadRequest:
        return
    assert FsyncPolicy.parse(str(policy)) == policy


async def test_reopen_keeps_everything(tmp_path: Path, clock: FakeClock) -> None:
    config = {"segment_bytes": 600, "index_interval": 100, "retention_bytes": 2000}
    log = open_log(tmp_path, clock, **config)
    for i in range(30):
        clock.now_ms = T0 + i
        await log.append([payload(3 * i + j, 10 + i) for j in range(3)])
    log.apply_retention_now()
    before = read_all(log)
    start, end, count = log.start_offset, log.end_offset, log.segment_count
    assert start > 0
    await log.close()

    again = open_log(tmp_path, clock, **config)
    assert (again.start_offset, again.end_offset, again.segment_count) == (start, end, count)
    assert read_all(again) == before
    assert again.report.truncated == [] and again.report.corrupt == []
    for i in range(start, end, 5):
        assert again.offset_for_time_now(before[i - start][1]) <= i
    clock.now_ms = T0 + 1000
    assert await again.append([b"after"]) == end
    assert again.read_now(end) == [(end, T0 + 1000, b"after")]
    assert again.offset_for_time_now(T0 + 1000) == end
    await again.close()


async def test_reopen_an_empty_log(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    await log.close()
    again = open_log(tmp_path / "p")
    assert (again.start_offset, again.end_offset) == (0, 0)
    assert await again.append([b"a"]) == 0
    await again.close()


# -- indexes are caches ---------------------------------------------------------------


def _garble_truncate(raw: bytes) -> bytes:
    return raw[:-3]


def _garble_random(raw: bytes) -> bytes:
    return random.Random(len(raw)).randbytes(len(raw))


def _garble_first_entry(raw: bytes) -> bytes:
    return b"\xff" * 8 + raw[8:]


def _garble_past_end(raw: bytes) -> bytes:
    # a last entry that points past the end of the .log
    return raw[:-8] + (10**6).to_bytes(4, "little") * 2


def _garble_empty(raw: bytes) -> bytes:
    return b""


@pytest.mark.parametrize(
    ("which", "damage"),
    [
        (".index", None),
        (".index", _garble_truncate),
        (".index", _garble_random),
        (".index", _garble_first_entry),
        (".index", _garble_past_end),
        (".index", _garble_empty),
        (".timeindex", None),
        (".timeindex", _garble_truncate),
        (".timeindex", _garble_empty),
    ],
    ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", "deleted"),
)
async def test_a_damaged_index_is_rebuilt_at_reopen(
    tmp_path: Path,
    clock: FakeClock,
    which: str,
    damage: Callable[[bytes], bytes] | None,
) -> None:
    config = {"segment_bytes": 2000, "index_interval": 150}
    log = open_log(tmp_path, clock, **config)
    for i in range(60):
        clock.now_ms = T0 + 10 * i
        await log.append([payload(2 * i), payload(2 * i + 1)])
    assert log.segment_count >= 3
    before = read_all(log)
    await log.close()

    victim = tmp_path / fmt.segment_name(segment_bases(tmp_path)[1], which)
    good = victim.read_bytes()
    if damage is None:
        victim.unlink()
    else:
        victim.write_bytes(damage(good))

    again = open_log(tmp_path, clock, **config)
    assert str(victim.with_suffix(".index")) in again.report.rebuilt_indexes
    assert again.report.corrupt == []
    assert victim.read_bytes() == good  # rebuilt to what it was
    assert read_all(again) == before
    for offset in range(0, 120, 3):
        assert again.read_now(offset, max_records=3) == before[offset : offset + 3]
    for i in range(60):
        assert again.offset_for_time_now(T0 + 10 * i) == 2 * i
    await again.close()


async def test_the_active_segment_index_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    log = open_log(tmp_path, index_interval=50)
    await fill(log, 30)
    await log.close()
    index = tmp_path / fmt.segment_name(0, ".index")
    good = index.read_bytes()
    index.write_bytes(os.urandom(len(good)))
    again = open_log(tmp_path, index_interval=50)
    assert index.read_bytes() == good
    assert [r[2] for r in read_all(again)] == [payload(i) for i in range(30)]
    await again.close()
