"""Offline verification of partitions: every batch of every segment, read only.

What :mod:`tidings.log.recovery` does at open, without changing a byte: each
segment is scanned whole (framing, length, CRC, offset continuity, records),
damage is found and measured as recovery and reads find it (see
:mod:`tidings.log.damage`), and a torn tail of the last segment is reported as
what the hub will cut at its next start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tidings.log import format as fmt
from tidings.log.damage import Damage, batch_at, find_next_batch


@dataclass
class PartitionCheck:
    """What a check of one partition directory found."""

    directory: Path
    segments: int = 0
    bytes: int = 0
    batches: int = 0
    records: int = 0
    """Records held: on a compacted topic, fewer than the offsets the segments cover."""
    damage: list[Damage] = field(default_factory=list)
    torn: tuple[str, int, int, str] | None = None
    """(segment, position, bytes, why) of a torn tail the hub would cut."""

    @property
    def damaged(self) -> bool:
        return bool(self.damage)


def check_partition(directory: Path) -> PartitionCheck:
    """Scan every segment of the partition in ``directory``; nothing is written."""
    out = PartitionCheck(directory)
    stems = [p.stem for p in directory.glob("*.log")]
    bases = sorted(int(s) for s in stems if s.isascii() and s.isdigit())
    for i, base in enumerate(bases):
        limit = bases[i + 1] if i + 1 < len(bases) else None
        _check_segment(directory / fmt.segment_name(base, ".log"), base, limit, out)
    return out


def _check_segment(path: Path, base: int, limit: int | None, out: PartitionCheck) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        out.segments += 1
        out.bytes += size
        position, expected = 0, base
        while position < size:
            header, why = batch_at(fd, position, size, expected)
            if header is not None:
                out.batches += 1
                out.records += header.records
                position, expected = position + header.size, header.next_offset
                continue
            found = find_next_batch(fd, position, size, expected, limit)
            if found is not None:
                at, nxt = found
                out.damage.append(
                    Damage(path.name, position, at - position, expected, nxt.base_offset, why)
                )
                position, expected = at, nxt.base_offset
            elif limit is None:
                out.torn = (path.name, position, size - position, why)
                return
            else:
                rest = size - position
                out.damage.append(Damage(path.name, position, rest, expected, limit, why))
                return
        if limit is not None and expected < limit:
            why = f"ends at offset {expected}, next segment starts at {limit}"
            out.damage.append(Damage(path.name, size, 0, expected, limit, why))
    finally:
        os.close(fd)
