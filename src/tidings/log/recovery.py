"""Start-up recovery, after Kafka's ``LogSegment.recover()`` and ZODB's side files.

The active (last) segment is checked batch by batch: length, framing, CRC and
offset continuity. The first bad batch and everything after it is a torn or
corrupt tail: those bytes are copied to ``<base>.log.cut-<position>`` beside the
segment, fsynced, and the segment is truncated to its last good batch. Indexes
are rebuilt from what remains.

A sealed segment was fsynced whole when it rolled, so a bad batch inside it is
damage, not a torn write: it is never cut. Recovery reports it with file and
position, and reads that reach it raise :class:`~tidings.errors.CorruptLog`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from tidings.log.segment import Segment, fsync_dir

logger = logging.getLogger("tidings.log")


@dataclass
class RecoveryReport:
    """What recovery found in one partition."""

    truncated: list[tuple[str, int, int, str]] = field(default_factory=list)
    """(file, position, bytes cut, why) for each tail cut off."""
    corrupt: list[tuple[str, int, str]] = field(default_factory=list)
    """(file, position, why) for damage inside a sealed segment."""
    rebuilt_indexes: list[str] = field(default_factory=list)


def _rebuild(segment: Segment) -> tuple[int | None, str]:
    """Scan ``segment`` from the start, re-noting every good batch.

    Returns the position and reason of the first bad batch, or (None, "").
    """
    segment.reset_indexes()
    for position, header, why in segment.scan(0):
        if header is None:
            return position, why
        segment.note_batch(
            position, header.base_offset, header.count, header.first_ts, header.last_ts, header.size
        )
    return None, ""


def recover_active(segment: Segment, report: RecoveryReport) -> bool:
    """Check the last segment whole and cut a torn or corrupt tail.

    True if a torn tail is still there because its side copy could not be
    written (a full disk): the segment then reads up to its last good batch,
    and the caller takes no append until :func:`cut_tail` succeeds.
    """
    bad, why = _rebuild(segment)
    owed = False
    if bad is not None:
        try:
            cut_tail(segment, bad, why, report, keep=True)
        except OSError as exc:
            # Never lose the bytes: leave them in place and read up to them.
            segment.size = bad
            owed = True
            logger.error(
                "torn tail of %s at byte %d (%s) not cut: its side copy failed: %s",
                segment.path, bad, why, exc,
            )
    segment.open_indexes_for_append()
    report.rebuilt_indexes.append(str(segment.index_path))
    return owed


def cut_tail(
    segment: Segment, position: int, why: str, report: RecoveryReport, *, keep: bool
) -> None:
    """Truncate ``segment`` at ``position``; with ``keep``, copy the cut bytes to
    ``<base>.log.cut-<position>`` first (and leave no side file if that fails)."""
    cut = os.fstat(segment.fd).st_size - position
    if keep and cut > 0:
        side = segment.path.with_name(f"{segment.path.name}.cut-{position}")
        n = 1
        while side.exists():  # an earlier cut at the same place: keep both
            side = segment.path.with_name(f"{segment.path.name}.cut-{position}.{n}")
            n += 1
        try:
            with open(side, "xb") as out:
                out.write(os.pread(segment.fd, cut, position))
                out.flush()
                os.fsync(out.fileno())
        except OSError:
            side.unlink(missing_ok=True)
            raise
        logger.warning(
            "cut %d bytes of torn tail from %s at byte %d (%s); kept in %s",
            cut, segment.path, position, why, side.name,
        )
    segment.truncate(position)
    fsync_dir(segment.directory)
    if cut > 0:
        report.truncated.append((str(segment.path), position, cut, why))


def cut_back(segment: Segment, end_offset: int) -> int:
    """Where ``segment`` must end to hold nothing from ``end_offset`` on: its batches
    before it are noted again (indexes rebuilt in memory), the byte position returned."""
    segment.close_indexes()
    segment.reset_indexes()
    for position, header, _why in segment.scan(0):
        if header is None or header.base_offset >= end_offset:
            return position
        segment.note_batch(
            position, header.base_offset, header.count, header.first_ts, header.last_ts, header.size
        )
    return segment.size


def recover_sealed(segment: Segment, next_offset: int, report: RecoveryReport) -> None:
    """Load a sealed segment's indexes, rebuilding them if they fail a check."""
    if segment.load_indexes(next_offset):
        segment.sealed = True
        return
    bad, why = _rebuild(segment)
    if bad is None and segment.next_offset != next_offset:
        bad = segment.size
        why = f"ends at offset {segment.next_offset}, next segment starts at {next_offset}"
    if bad is not None:
        segment.next_offset = next_offset
        report.corrupt.append((str(segment.path), bad, why))
        logger.error("corrupt sealed segment %s at byte %d: %s", segment.path, bad, why)
    segment.open_indexes_for_append()
    segment.seal()
    report.rebuilt_indexes.append(str(segment.index_path))
