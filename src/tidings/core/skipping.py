"""Reading past damage: the records after a bad range, and a note of what was skipped.

A partition's ``read`` steps over records lost to damage on disk (see
:attr:`~tidings.core.storage.PartitionStore.damage`). The hub's readers (reads,
groups, the dedupe refill, re-drive) go through :func:`read_past_damage`, which
also says which offsets it stepped over, so each can report them and none of
them stops at a range it cannot read.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidings.core.storage import LogRecord, PartitionStore


@dataclass(frozen=True, slots=True)
class Skipped:
    """Offsets ``first`` to ``end`` (exclusive) of a partition, lost to damage."""

    partition: int
    first: int
    end: int
    why: str

    def to_dict(self) -> dict[str, object]:
        return {"partition": self.partition, "from": self.first, "to": self.end, "why": self.why}


async def read_past_damage(
    part: PartitionStore, partition: int, offset: int, max_records: int, max_bytes: int = 1 << 20
) -> tuple[list[LogRecord], int, list[Skipped]]:
    """Records from ``offset``, the offset to read next, and the damage stepped over.

    The next offset is ``offset`` itself when there is nothing to read yet.
    """
    got = await part.read(offset, max_records, max_bytes)
    upto = got[-1][0] + 1 if got else part.end_offset
    skipped = [
        Skipped(partition, max(d.first_offset, offset), min(d.end_offset, upto), d.why)
        for d in part.damage
        if d.first_offset < upto and d.end_offset > offset
    ]
    if not got and not skipped:
        return [], offset, []
    return got, upto, skipped


def find_gaps(
    partition: int, offset: int, upto: int, got: list[LogRecord], lost: list[Skipped]
) -> list[tuple[int, int, int]]:
    """``(partition, first, end)`` of each range from ``offset`` to ``upto`` that a read
    answered no record of and that no damage explains: offsets a compaction by key
    removed (see :mod:`tidings.log.compaction`)."""
    holes: list[tuple[int, int, int]] = []
    bad = sorted((s.first, s.end) for s in lost)
    at = offset
    for o, _, _ in got:
        if o > at:
            holes.extend(_minus(partition, at, o, bad))
        at = o + 1
    if upto > at:
        holes.extend(_minus(partition, at, upto, bad))
    return holes


def _minus(
    partition: int, first: int, end: int, bad: list[tuple[int, int]]
) -> list[tuple[int, int, int]]:
    """``[first, end)`` without the damaged ranges ``bad`` (sorted)."""
    out: list[tuple[int, int, int]] = []
    at = first
    for lo, hi in bad:
        if hi <= at or lo >= end:
            continue
        if lo > at:
            out.append((partition, at, lo))
        at = max(at, hi)
    if at < end:
        out.append((partition, at, end))
    return out
