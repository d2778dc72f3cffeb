"""Damage on disk: torn tails are cut aside; damage with good batches after it is skipped."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import pytest

from tidings.log import format as fmt
from tidings.log.config import FsyncPolicy, LogConfig, LogRecord
from tidings.log.damage import DAMAGE_FILE
from tidings.log.partition import PartitionLog

PER_BATCH = 3
BATCH = fmt.BATCH_HEADER_LEN + PER_BATCH * (fmt.RECORD_HEADER_LEN + 20)
# Eight batches to a segment, one index entry per segment: reads walk every batch.
CONFIG = LogConfig(segment_bytes=8 * BATCH, segment_ms=None)


def payload(offset: int) -> bytes:
    return f"{offset}:".encode().ljust(20, b"x")


def open_log(path: Path) -> PartitionLog:
    return PartitionLog.open(path, CONFIG, FsyncPolicy.parse("never"))


async def make_log(path: Path, batches: int) -> list[LogRecord]:
    """A closed log of ``batches`` batches of three records; returns every record."""
    log = open_log(path)
    for b in range(batches):
        base = b * PER_BATCH
        assert await log.append([payload(base + i) for i in range(PER_BATCH)]) == base
    records = log.read_now(0, max_records=10_000)
    assert len(records) == batches * PER_BATCH
    await log.close()
    return records


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.log"))


def read_all(log: PartitionLog, offset: int | None = None) -> list[LogRecord]:
    offset = log.start_offset if offset is None else offset
    out: list[LogRecord] = []
    while offset < log.end_offset:
        got = log.read_now(offset, max_records=5)
        assert got
        out.extend(got)
        offset = got[-1][0] + 1
    return out


def flip(path: Path, position: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ (1 << bit)]))


# -- the active segment: cut and kept aside ---------------------------------------------

# 20 batches: segments of 8, 8 and 4 batches; the last segment is the active one.
BATCHES = 20
LAST_SEGMENT_BATCHES = 4
LAST_POS = (LAST_SEGMENT_BATCHES - 1) * BATCH
LAST_BASE = (BATCHES - 1) * PER_BATCH


async def check_cut(path: Path, records: list[LogRecord], cut: bytes) -> None:
    """Reopen after the active segment's last batch was damaged into ``cut``."""
    active = segments(path)[-1]
    log = open_log(path)
    side = active.with_name(f"{active.name}.cut-{LAST_POS}")
    assert side.read_bytes() == cut
    assert active.stat().st_size == LAST_POS
    assert len(log.report.truncated) == 1
    file, position, length, why = log.report.truncated[0]
    assert (file, position, length) == (str(active), LAST_POS, len(cut))
    assert why
    assert (log.start_offset, log.end_offset) == (0, LAST_BASE)
    assert read_all(log) == records[:LAST_BASE]
    # appends carry on where the good records end
    assert await log.append([b"again"]) == LAST_BASE
    assert log.read_now(LAST_BASE)[0][2] == b"again"
    await log.close()

    again = open_log(path)
    assert again.report.truncated == []
    assert read_all(again)[:LAST_BASE] == records[:LAST_BASE]
    assert again.read_now(LAST_BASE)[0][2] == b"again"
    assert again.end_offset == LAST_BASE + 1
    await again.close()


@pytest.mark.parametrize(
    "keep", [1, 20, fmt.BATCH_HEADER_LEN - 1, fmt.BATCH_HEADER_LEN, BATCH // 2, BATCH - 1]
)
async def test_a_truncated_tail_is_cut_and_kept_aside(tmp_path: Path, keep: int) -> None:
    records = await make_log(tmp_path, BATCHES)
    active = segments(tmp_path)[-1]
    whole = active.read_bytes()
    assert len(whole) == LAST_POS + BATCH
    os.truncate(active, LAST_POS + keep)
    await check_cut(tmp_path, records, whole[LAST_POS : LAST_POS + keep])


# Byte positions inside the last batch: each header field, a record header, a payload.
FLIPS = {
    "length-low": (0, 0),
    "length-high": (2, 7),
    "crc": (5, 3),
    "base-low": (8, 0),
    "base-high": (15, 6),
    "count": (16, 1),
    "first-ts": (21, 2),
    "last-ts": (29, 4),
    "magic": (36, 0),
    "flags": (37, 5),
    "record-size": (fmt.BATCH_HEADER_LEN + 4, 1),
    "payload-first": (fmt.BATCH_HEADER_LEN + fmt.RECORD_HEADER_LEN, 0),
    "payload-last": (BATCH - 1, 7),
}


@pytest.mark.parametrize(("at", "bit"), list(FLIPS.values()), ids=list(FLIPS))
async def test_a_flipped_bit_in_the_last_batch_is_cut(tmp_path: Path, at: int, bit: int) -> None:
    records = await make_log(tmp_path, BATCHES)
    active = segments(tmp_path)[-1]
    flip(active, LAST_POS + at, bit)
    cut = active.read_bytes()[LAST_POS:]
    await check_cut(tmp_path, records, cut)


def _garbage_cases() -> dict[str, bytes]:
    rng = random.Random(7)
    good = fmt.encode_batch(LAST_BASE, [b"z"], 0)
    return {
        "zeros-short": b"\0" * 10,
        "zeros-long": b"\0" * 300,
        "ones": b"\xff" * 64,
        "random-short": rng.randbytes(5),
        "random-long": rng.randbytes(1000),
        "batch-with-a-wrong-offset": fmt.encode_batch(LAST_BASE + 3 + 10, [b"z"], 0),
        "batch-repeating-an-offset": fmt.encode_batch(LAST_BASE, [b"z"], 0),
        "batch-cut-short": good[:-1],
        "header-promising-more": good[: fmt.BATCH_HEADER_LEN],
    }


GARBAGE = _garbage_cases()


@pytest.mark.parametrize("garbage", list(GARBAGE.values()), ids=list(GARBAGE))
async def test_garbage_after_the_last_batch_is_cut(tmp_path: Path, garbage: bytes) -> None:
    records = await make_log(tmp_path, BATCHES)
    active = segments(tmp_path)[-1]
    with open(active, "ab") as f:
        f.write(garbage)
    end = BATCHES * PER_BATCH
    good_size = LAST_POS + BATCH

    log = open_log(tmp_path)
    side = active.with_name(f"{active.name}.cut-{good_size}")
    assert side.read_bytes() == garbage
    assert active.stat().st_size == good_size
    assert (log.start_offset, log.end_offset) == (0, end)
    assert read_all(log) == records
    assert await log.append([b"again"]) == end
    await log.close()
    again = open_log(tmp_path)
    assert again.report.truncated == []
    assert [r[2] for r in read_all(again)] == [r[2] for r in records] + [b"again"]
    await again.close()


async def test_an_active_segment_cut_to_nothing(tmp_path: Path) -> None:
    # the active segment holds one batch, torn: recovery leaves it empty
    records = await make_log(tmp_path, 17)
    active = segments(tmp_path)[-1]
    assert active.stat().st_size == BATCH
    os.truncate(active, BATCH - 5)
    log = open_log(tmp_path)
    assert active.with_name(f"{active.name}.cut-0").stat().st_size == BATCH - 5
    assert log.end_offset == 16 * PER_BATCH
    assert read_all(log) == records[: 16 * PER_BATCH]
    assert await log.append([b"again"]) == 16 * PER_BATCH
    await log.close()


# -- sealed segments: never cut, stepped over and reported ------------------------------


def lost(records: list[LogRecord], first: int, end: int) -> list[LogRecord]:
    """``records`` without offsets ``first`` to ``end``, as a read past damage answers them."""
    return records[:first] + records[end:]


@pytest.mark.parametrize("batch_in_segment", [0, 3, 7])
@pytest.mark.parametrize(("at", "bit"), list(FLIPS.values()), ids=list(FLIPS))
async def test_a_flipped_bit_in_a_sealed_segment_is_skipped_and_reported(
    tmp_path: Path, batch_in_segment: int, at: int, bit: int
) -> None:
    records = await make_log(tmp_path, BATCHES)
    sealed = segments(tmp_path)[1]
    seg_base = int(sealed.stem)
    assert seg_base == 8 * PER_BATCH
    size = sealed.stat().st_size
    bad_pos = batch_in_segment * BATCH
    bad_base = seg_base + batch_in_segment * PER_BATCH
    bad_end = bad_base + PER_BATCH
    flip(sealed, bad_pos + at, bit)

    log = open_log(tmp_path)
    assert log.report.truncated == []
    assert not list(tmp_path.glob("*.cut-*"))
    assert sealed.stat().st_size == size
    assert (log.start_offset, log.end_offset) == (0, BATCHES * PER_BATCH)

    # every read that reaches the bad batch steps over it to the next good one
    assert log.read_now(bad_base, max_records=1) == [records[bad_end]]
    assert log.read_now(bad_base + 2, max_records=1) == [records[bad_end]]
    assert log.read_now(seg_base, max_records=1000) == lost(records, bad_base, bad_end)[seg_base:]
    assert log.read_now(0, max_records=10_000) == lost(records, bad_base, bad_end)
    assert read_all(log) == lost(records, bad_base, bad_end)
    # and it is named: file, bytes, offsets lost, why
    [damage] = log.damage
    assert (damage.segment, damage.position, damage.length) == (sealed.name, bad_pos, BATCH)
    assert (damage.first_offset, damage.end_offset) == (bad_base, bad_end)
    assert damage.why
    # records before it stay readable
    assert log.read_now(0, max_records=seg_base) == records[:seg_base]
    if batch_in_segment:
        assert log.read_now(seg_base, max_records=bad_base - seg_base) == records[seg_base:bad_base]
    # appends go on
    end = BATCHES * PER_BATCH
    assert await log.append([b"again"]) == end
    assert log.read_now(end)[0][2] == b"again"
    await log.close()

    # the record of it is kept beside the segments, and known after a restart
    assert (tmp_path / DAMAGE_FILE).exists()
    again = open_log(tmp_path)
    assert again.damage == [damage]
    assert again.read_now(0, max_records=10_000)[:-1] == lost(records, bad_base, bad_end)
    await again.close()


@pytest.mark.parametrize("index", ["intact", "deleted"])
async def test_a_sealed_segment_cut_short_is_skipped_not_read_as_the_next(
    tmp_path: Path, index: str
) -> None:
    # The last batch of a sealed segment is gone: its offsets must not read as the
    # next segment's records; they are skipped and reported.
    records = await make_log(tmp_path, BATCHES)
    sealed = segments(tmp_path)[0]
    if index == "deleted":
        (tmp_path / fmt.segment_name(0, ".index")).unlink()  # recovery has to scan
    os.truncate(sealed, 7 * BATCH)
    log = open_log(tmp_path)
    assert log.report.truncated == []
    if index == "deleted":
        assert [c[:2] for c in log.report.corrupt] == [(str(sealed), 7 * BATCH)]
    assert log.read_now(0, max_records=21) == records[:21]
    assert log.read_now(21, max_records=1) == [records[24]]
    assert log.read_now(0, max_records=100) == records[:21] + records[24:]
    [damage] = log.damage
    assert (damage.segment, damage.position, damage.length) == (sealed.name, 7 * BATCH, 0)
    assert (damage.first_offset, damage.end_offset) == (21, 24)
    assert read_all(log, 24) == records[24:]
    await log.close()


async def test_a_sealed_batch_with_a_good_crc_but_a_wrong_offset_is_skipped(
    tmp_path: Path,
) -> None:
    records = await make_log(tmp_path, BATCHES)
    sealed = segments(tmp_path)[1]
    seg_base = int(sealed.stem)
    bad = seg_base + 2 * PER_BATCH
    # a whole, well-formed batch whose offsets belong elsewhere
    with open(sealed, "r+b") as f:
        f.seek(2 * BATCH)
        f.write(fmt.encode_batch(500, [payload(500 + i) for i in range(PER_BATCH)], 0))
    log = open_log(tmp_path)
    assert log.read_now(bad) == records[bad + PER_BATCH : BATCHES * PER_BATCH]
    assert log.read_now(seg_base, max_records=100) == lost(records, bad, bad + PER_BATCH)[
        seg_base:
    ]
    assert log.read_now(seg_base, max_records=6) == records[seg_base : seg_base + 6]
    [damage] = log.damage
    assert (damage.position, damage.first_offset, damage.end_offset) == (
        2 * BATCH, bad, bad + PER_BATCH,
    )
    assert damage.why == f"batch offset 500, expected {bad}"
    await log.close()


async def test_damage_found_by_recovery_in_a_sealed_segment_is_reported(tmp_path: Path) -> None:
    records = await make_log(tmp_path, BATCHES)
    sealed = segments(tmp_path)[1]
    (tmp_path / fmt.segment_name(int(sealed.stem), ".index")).unlink()
    flip(sealed, 4 * BATCH + fmt.BATCH_HEADER_LEN + 10)
    log = open_log(tmp_path)
    assert [c[:2] for c in log.report.corrupt] == [(str(sealed), 4 * BATCH)]
    assert log.report.truncated == []
    assert [(d.position, d.first_offset, d.end_offset) for d in log.report.damaged] == [
        (4 * BATCH, 36, 39)
    ]
    assert log.damage == log.report.damaged
    assert log.read_now(int(sealed.stem), max_records=100) == records[24:36] + records[39:]
    assert log.read_now(0, max_records=24) == records[:24]
    await log.close()


def test_batch_positions_match_the_layout() -> None:
    frame = fmt.encode_batch(0, [payload(i) for i in range(PER_BATCH)], 0)
    assert len(frame) == BATCH
    assert struct.unpack_from("<I", frame)[0] == BATCH - fmt.LENGTH_FIELD_LEN
