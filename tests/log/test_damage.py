"""Damage in the middle of the active segment is told apart from a torn tail.

A bad batch with good batches after it is damage: recovery keeps the good ones
(acknowledged records), names the bad range, and the next append continues after
the highest offset a good batch holds. A bad batch with nothing good after it is
a torn tail and is cut, as before.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.log.test_corruption import BATCH, FLIPS, PER_BATCH, flip, payload
from tidings.log import format as fmt
from tidings.log.check import check_partition
from tidings.log.config import FsyncPolicy, LogConfig, LogRecord
from tidings.log.damage import DAMAGE_FILE, load
from tidings.log.partition import PartitionLog

BATCHES = 10
# One segment holds everything: the damage is in the active segment.
CONFIG = LogConfig(segment_bytes=1 << 20, segment_ms=None)


def open_log(path: Path) -> PartitionLog:
    return PartitionLog.open(path, CONFIG, FsyncPolicy.parse("always"))


async def make_log(path: Path) -> tuple[Path, list[LogRecord]]:
    log = open_log(path)
    for b in range(BATCHES):
        base = b * PER_BATCH
        assert await log.append([payload(base + i) for i in range(PER_BATCH)]) == base
    records = log.read_now(0, max_records=10_000)
    await log.close()
    [active] = sorted(path.glob("*.log"))
    assert active.stat().st_size == BATCHES * BATCH
    return active, records


def without(records: list[LogRecord], *batches: int) -> list[LogRecord]:
    gone = {b * PER_BATCH + i for b in batches for i in range(PER_BATCH)}
    return [r for r in records if r[0] not in gone]


@pytest.mark.parametrize("bad", [0, 4, 8])
@pytest.mark.parametrize(("at", "bit"), list(FLIPS.values()), ids=list(FLIPS))
async def test_a_flipped_bit_mid_active_segment_keeps_the_good_batches(
    tmp_path: Path, bad: int, at: int, bit: int
) -> None:
    active, records = await make_log(tmp_path)
    flip(active, bad * BATCH + at, bit)
    end = BATCHES * PER_BATCH

    log = open_log(tmp_path)
    # nothing is cut: the nine good batches after and before it are kept
    assert log.report.truncated == []
    assert not list(tmp_path.glob("*.cut-*"))
    assert active.stat().st_size == BATCHES * BATCH
    assert (log.start_offset, log.end_offset) == (0, end)
    assert log.read_now(0, max_records=10_000) == without(records, bad)
    # the bad batch is named
    [damage] = log.damage
    assert log.report.damaged == [damage]
    assert (damage.segment, damage.position, damage.length) == (active.name, bad * BATCH, BATCH)
    assert (damage.first_offset, damage.end_offset) == (bad * PER_BATCH, (bad + 1) * PER_BATCH)
    assert damage.why
    assert load(tmp_path) == [damage]
    # no offset is reused: the next append continues after the last good batch
    assert await log.append([b"again"]) == end
    await log.close()

    again = open_log(tmp_path)
    assert again.damage == [damage]
    assert again.report.truncated == []
    assert again.read_now(0, max_records=10_000) == [
        *without(records, bad), (end, again.read_now(end)[0][1], b"again")
    ]
    assert await again.append([b"more"]) == end + 1
    await again.close()


async def test_two_bad_batches_in_a_row_are_one_range(tmp_path: Path) -> None:
    active, records = await make_log(tmp_path)
    flip(active, 4 * BATCH + fmt.BATCH_HEADER_LEN + 12)
    flip(active, 5 * BATCH + 2, 7)  # a length far past the end of the file
    log = open_log(tmp_path)
    [damage] = log.damage
    assert (damage.position, damage.length) == (4 * BATCH, 2 * BATCH)
    assert (damage.first_offset, damage.end_offset) == (12, 18)
    assert log.read_now(0, max_records=100) == without(records, 4, 5)
    assert log.end_offset == BATCHES * PER_BATCH
    await log.close()


async def test_damage_then_a_torn_tail_keeps_the_middle_and_cuts_the_tail(tmp_path: Path) -> None:
    active, records = await make_log(tmp_path)
    flip(active, 3 * BATCH + fmt.BATCH_HEADER_LEN + 3)
    os.truncate(active, BATCHES * BATCH - 7)  # the last write did not finish
    log = open_log(tmp_path)
    [damage] = log.damage
    assert (damage.first_offset, damage.end_offset) == (9, 12)
    [(file, position, length, _)] = log.report.truncated
    assert (file, position, length) == (str(active), 9 * BATCH, BATCH - 7)
    assert log.read_now(0, max_records=100) == without(records, 3, 9)
    assert log.end_offset == 9 * PER_BATCH
    assert await log.append([b"again"]) == 9 * PER_BATCH
    await log.close()


async def test_a_torn_last_batch_is_still_cut(tmp_path: Path) -> None:
    active, records = await make_log(tmp_path)
    flip(active, 9 * BATCH + fmt.BATCH_HEADER_LEN + 3)
    log = open_log(tmp_path)
    assert log.damage == []
    assert not (tmp_path / DAMAGE_FILE).exists()
    assert [t[1] for t in log.report.truncated] == [9 * BATCH]
    assert log.read_now(0, max_records=100) == records[:27]
    assert await log.append([b"again"]) == 27
    await log.close()


async def test_retention_forgets_the_damage_of_the_segments_it_removes(tmp_path: Path) -> None:
    active, _ = await make_log(tmp_path)
    flip(active, 2 * BATCH + fmt.BATCH_HEADER_LEN + 3)
    log = PartitionLog.open(
        tmp_path,
        LogConfig(segment_bytes=1 << 20, segment_ms=None, retention_bytes=1),
        FsyncPolicy.parse("never"),
    )
    assert len(log.damage) == 1
    log.roll()
    await log.append([b"next"])
    assert log.apply_retention_now() == 1
    assert log.damage == []
    assert not (tmp_path / DAMAGE_FILE).exists()
    await log.close()


async def test_check_finds_what_recovery_finds_and_changes_nothing(tmp_path: Path) -> None:
    active, _ = await make_log(tmp_path)
    clean = check_partition(tmp_path)
    assert (clean.segments, clean.batches, clean.records) == (1, BATCHES, BATCHES * PER_BATCH)
    assert not clean.damaged and clean.torn is None
    flip(active, 6 * BATCH + fmt.BATCH_HEADER_LEN + 3)
    os.truncate(active, BATCHES * BATCH - 1)
    before = active.read_bytes()
    found = check_partition(tmp_path)
    assert active.read_bytes() == before
    assert [(d.position, d.first_offset, d.end_offset) for d in found.damage] == [
        (6 * BATCH, 18, 21)
    ]
    assert found.torn is not None and found.torn[1:3] == (9 * BATCH, BATCH - 1)
    log = open_log(tmp_path)
    assert log.damage == found.damage
    await log.close()


async def test_damage_a_read_finds_while_open_is_recorded_and_found_again(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    for b in range(BATCHES):
        await log.append([payload(b * PER_BATCH + i) for i in range(PER_BATCH)])
    [active] = sorted(tmp_path.glob("*.log"))
    flip(active, 2 * BATCH + fmt.BATCH_HEADER_LEN + 3)  # bit rot under a running log
    flip(active, 9 * BATCH + fmt.BATCH_HEADER_LEN + 3)  # and in its last batch
    got = log.read_now(0, max_records=100)
    assert [r[0] for r in got] == [o for o in range(27) if not 6 <= o < 9]
    assert [(d.first_offset, d.end_offset) for d in log.damage] == [(6, 9), (27, 30)]
    assert [(d.first_offset, d.end_offset) for d in load(tmp_path)] == [(6, 9), (27, 30)]
    await log.close()

    # after a restart the middle one is damage again; the last batch, with nothing
    # good after it, is a torn tail: cut, and no longer in the record
    again = open_log(tmp_path)
    assert [(d.first_offset, d.end_offset) for d in again.damage] == [(6, 9)]
    assert [(d.first_offset, d.end_offset) for d in load(tmp_path)] == [(6, 9)]
    assert [t[1] for t in again.report.truncated] == [9 * BATCH]
    assert again.end_offset == 27
    await again.close()


async def test_healing_after_a_full_disk_keeps_the_good_batches_after_damage(
    tmp_path: Path,
) -> None:
    from fulldisk import small_disk

    from tidings.errors import StorageUnavailable

    with small_disk(tmp_path / "disk") as disk:
        directory = disk.path / "p"
        active, records = await make_log(directory)
        flip(active, 2 * BATCH + fmt.BATCH_HEADER_LEN + 3)
        log = open_log(directory)
        assert [(d.first_offset, d.end_offset) for d in log.damage] == [(6, 9)]
        disk.fill()
        with pytest.raises(StorageUnavailable):
            for _ in range(100):
                await log.append([b"x" * 4000] * 4)
        end = log.end_offset
        disk.free()
        assert log.heal()
        # the heal cut back only what was refused, never the good batches after the damage
        assert log.read_now(0, max_records=10_000)[: len(records) - 3] == without(records, 2)
        assert await log.append([b"after"]) == end
        await log.close()
