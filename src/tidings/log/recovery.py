"""Start-up recovery, after Kafka's ``LogSegment.recover()`` and ZODB's side files.

The active (last) segment is checked batch by batch: length, framing, CRC and
offset continuity. A bad batch with a good batch somewhere after it is damage
(:mod:`tidings.log.damage`): it stays in place, its offsets are reported as a
:class:`~tidings.log.damage.Damage`, and the scan goes on from the good batch,
so acknowledged records after it are kept and the next append continues after
the highest offset any good batch holds. A bad batch with no good batch after
it is a torn tail, the unfinished last write (and so is one whose bad range holds a
page the OS never wrote back, see :func:`_unwritten_page`): those bytes are copied to
``<base>.log.cut-<position>`` beside the segment, fsynced, and the segment is
truncated to its last good batch. Indexes are rebuilt from what remains.

Linked batches (one publish over several partitions) found in the active
segment, or in a sealed one marked ``<base>.linked``, are listed in the report;
:mod:`tidings.log.linked` checks them against the other partitions.

A sealed segment was fsynced whole when it rolled, so a bad batch inside it is
damage, never a torn write: it is never cut. When its indexes must be rebuilt,
recovery scans it the same way and reports the damage; otherwise reads find it
(see :meth:`~tidings.log.segment.Segment.read`) and step over it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from tidings.log.config import disk
from tidings.log.damage import Damage, find_next_batch
from tidings.log.format import BatchHeader, Link, decode_link
from tidings.log.segment import Segment, fsync_dir

logger = logging.getLogger("tidings.log")


@dataclass
class RecoveryReport:
    """What recovery found in one partition."""

    truncated: list[tuple[str, int, int, str]] = field(default_factory=list)
    """(file, position, bytes cut, why) for each tail cut off."""
    corrupt: list[tuple[str, int, str]] = field(default_factory=list)
    """(file, position, why) for damage inside a sealed segment."""
    damaged: list[Damage] = field(default_factory=list)
    """Every bad range with good batches after it (or in a sealed segment), kept in place."""
    rebuilt_indexes: list[str] = field(default_factory=list)
    linked: list[tuple[int, int, Link]] = field(default_factory=list)
    """(base, count, link) of each linked batch that may yet be torn."""


def linked_marker(segment: Segment) -> Path:
    """The empty file that marks a segment rolled while a linked batch in it was not whole."""
    return segment.path.with_suffix(".linked")


def scan_links(segment: Segment) -> list[tuple[int, int, Link]]:
    """(base, count, link) of every linked batch in ``segment``, damage stepped over."""
    found: list[tuple[int, int, Link]] = []
    for position, header in segment.batches():
        if header.linked:
            found.append(_link(segment, position, header))
    return found


def _link(segment: Segment, position: int, header: BatchHeader) -> tuple[int, int, Link]:
    link = decode_link(header, os.pread(segment.fd, header.size, position))
    assert link is not None  # the header says linked
    return header.base_offset, header.count, link


def _rebuild(
    segment: Segment,
    report: RecoveryReport,
    limit: int | None = None,
    links: list[tuple[int, int, Link]] | None = None,
) -> tuple[int | None, str]:
    """Scan ``segment`` from the start, re-noting every good batch (and adding each
    linked one to ``links``).

    Damage with a good batch after it is noted and stepped over. Returns the
    position and reason of a bad batch with no good batch after it (a torn
    tail), or (None, ""). ``limit`` is the segment's end offset, when sealed.
    """
    segment.reset_indexes()
    position, expected = 0, segment.base_offset
    while True:
        bad: tuple[int, str] | None = None
        for at, header, why in segment.scan(position, expected):
            if header is None:
                bad = at, why
                break
            if links is not None and header.linked:
                links.append(_link(segment, at, header))
            segment.note_batch(
                at, header.base_offset, header.count, header.first_ts, header.last_ts, header.size
            )
            expected = header.next_offset
        if bad is None:
            return None, ""
        found = _step_over(segment, bad[0], expected, bad[1], limit, report)
        if found is None:
            return bad
        position, expected = found


def _step_over(
    segment: Segment, bad: int, expected: int, why: str, limit: int | None, report: RecoveryReport
) -> tuple[int, int] | None:
    """Note the damage at ``bad`` if a good batch follows; (its position, its base offset).

    In the active segment (no ``limit``), a bad range holding a page never written
    back is no damage but a torn tail (None): see :func:`_unwritten_page`.
    """
    found = find_next_batch(segment.fd, bad, segment.size, expected, limit)
    if found is None:
        return None
    at, header = found
    if limit is None and _unwritten_page(segment, bad, at):
        logger.warning(
            "%s holds a page never written back at byte %d (a power loss before its "
            "fsync): the batches from there on are a torn tail",
            segment.path, bad,
        )
        return None
    damage = Damage(segment.path.name, bad, at - bad, expected, header.base_offset, why)
    segment.note_damage(damage)
    report.damaged.append(damage)
    logger.error(
        "damage in %s at byte %d (%s): offsets %d to %d lost, %d bytes skipped; "
        "the good batches after it are kept",
        segment.path, bad, why, expected, header.base_offset - 1, at - bad,
    )
    return at, header.base_offset


PAGE_BYTES = 4096
"""The page size the operating system writes files back in."""

_HOLE_RUN = 32
"""Zero bytes before a page boundary that no batch holds: its headers and JSON payloads
never have more than a dozen in a row."""


def _unwritten_page(segment: Segment, bad: int, at: int) -> bool:
    """Whether ``[bad, at)`` holds zeros up to a page boundary, either ``_HOLE_RUN`` of
    them or all from ``bad``: a page the OS had not written back when the power went.

    The OS writes a file's dirty pages back in no set order, so a power loss may keep
    a later page of unsynced appends and not an earlier one, which reads as zeros (the
    file's size was already extended). Every batch after such a page was written after
    the last fsync (an fsync writes back every dirty page), so none was acknowledged
    under ``always``, and under ``interval`` all are within the interval: they are cut,
    with a side copy, not kept as good batches after damage. A flipped bit does not make
    a run of zeros end on a page boundary.
    """
    boundary = (bad // PAGE_BYTES + 1) * PAGE_BYTES
    while boundary <= at:
        start = max(bad, boundary - _HOLE_RUN)
        if not os.pread(segment.fd, boundary - start, start).strip(b"\0"):
            return True
        boundary += PAGE_BYTES
    return False


def recover_active(segment: Segment, report: RecoveryReport) -> bool:
    """Check the last segment whole, step over damage and cut a torn tail.

    True if a torn tail is still there because its side copy could not be
    written (a full disk): the segment then reads up to its last good batch,
    and the caller takes no append until :func:`cut_tail` succeeds.
    """
    links: list[tuple[int, int, Link]] = []
    bad, why = _rebuild(segment, report, links=links)
    report.linked.extend(links)
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
                disk().fsync(out.fileno())
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
    position, expected = 0, segment.base_offset
    while True:
        for at, header, _why in segment.scan(position, expected):
            if header is None:
                position = at
                break
            if header.base_offset >= end_offset:
                return at
            segment.note_batch(
                at, header.base_offset, header.count, header.first_ts, header.last_ts, header.size
            )
            expected = header.next_offset
        else:
            return segment.size
        # Damage is not the end: the good batches after it below end_offset stay.
        found = find_next_batch(segment.fd, position, segment.size, expected)
        if found is None or found[1].base_offset >= end_offset:
            return position
        position, expected = found[0], found[1].base_offset


def recover_sealed(segment: Segment, next_offset: int, report: RecoveryReport) -> None:
    """Load a sealed segment's indexes, rebuilding them if they fail a check."""
    if segment.load_indexes(next_offset):
        segment.sealed = True
        return
    bad, why = _rebuild(segment, report, next_offset)
    if bad is None and segment.next_offset != next_offset:
        bad = segment.size
        why = f"ends at offset {segment.next_offset}, next segment starts at {next_offset}"
    if bad is not None:
        lost = Damage(
            segment.path.name, bad, segment.size - bad, segment.next_offset, next_offset, why
        )
        segment.note_damage(lost)
        report.damaged.append(lost)
        logger.error("damage in sealed segment %s at byte %d: %s", segment.path, bad, why)
    for damage in segment.damage.values():
        report.corrupt.append((str(segment.path), damage.position, damage.why))
    segment.next_offset = next_offset
    segment.open_indexes_for_append()
    segment.seal()
    report.rebuilt_indexes.append(str(segment.index_path))
