"""Damage inside a segment: found, named, skipped, and never a reason to drop what follows.

A bad batch is one that fails a check: framing, length, CRC, offset continuity,
records that fill it exactly. What comes after it decides what it is:

- no whole batch after it in the file: a **torn tail**, the unfinished last write.
  In the active segment recovery cuts it off (see :mod:`tidings.log.recovery`).
- a whole batch after it: **damage**. The bytes stay where they are; the offsets
  from the one expected there up to the next good batch's base offset are lost,
  named by a :class:`Damage`, and skipped by reads. The good batches after it
  are kept and read as before.

The next good batch is found by scanning forward (:func:`find_next_batch`): the
bad batch's own length is tried first, when its header still parses, then every
byte position after it. A candidate counts only if it is a whole batch (header,
length inside the file, CRC, records filling it) whose base offset is at or past
the offset expected at the bad batch, and below the next segment's base when
there is one.

Each partition keeps the damage it knows of in ``damage.json`` beside its
segments: a record for operators and the API, never an input to reads, which
check every batch they cross.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tidings.log import format as fmt
from tidings.log.config import disk

DAMAGE_FILE = "damage.json"

# The magic byte sits at this position of a batch header: scans look for it first,
# a plain batch's or a linked one's.
_MAGIC_AT = 36
_MAGIC = re.compile(
    b"["
    + re.escape(bytes([fmt.FORMAT_VERSION, fmt.LINKED_VERSION, fmt.COMPACTED_VERSION]))
    + b"]"
)
_SCAN_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Damage:
    """A bad byte range of one segment and the offsets it cost."""

    segment: str
    """The ``.log`` file's name, in the partition's directory."""
    position: int
    """Byte position of the first bad byte (the bad batch's start)."""
    length: int
    """Bytes from ``position`` to the next good batch (or the end of the file)."""
    first_offset: int
    """The first offset lost."""
    end_offset: int
    """One past the last offset lost: the next good batch's base offset."""
    why: str

    @property
    def records(self) -> int:
        return self.end_offset - self.first_offset

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def batch_at(
    fd: int, position: int, size: int, expected: int | None
) -> tuple[fmt.BatchHeader | None, str]:
    """Check the batch at ``position`` whole; (header, "") if good, else (None, why)."""
    raw = os.pread(fd, fmt.BATCH_HEADER_LEN, position)
    if len(raw) < fmt.BATCH_HEADER_LEN:
        return None, "torn batch header"
    try:
        header = fmt.BatchHeader(raw)
    except ValueError as exc:
        return None, str(exc)
    if position + header.size > size:
        return None, "batch runs past the end of the file"
    batch = os.pread(fd, header.size, position)
    if not fmt.check_crc(header, batch):
        return None, "batch fails its CRC"
    if expected is not None and header.base_offset != expected:
        return None, f"batch offset {header.base_offset}, expected {expected}"
    try:
        fmt.decode_records(header, batch)
    except ValueError as exc:
        return None, str(exc)
    return header, ""


def _candidate(
    fd: int, position: int, size: int, expected: int, limit: int | None
) -> fmt.BatchHeader | None:
    header, _ = batch_at(fd, position, size, None)
    if header is None or header.base_offset < expected:
        return None
    if limit is not None and header.next_offset > limit:
        return None
    return header


def _plausible(raw: bytes, position: int, size: int, expected: int, limit: int | None) -> bool:
    """Whether the header bytes ``raw`` could start the next good batch: checked in
    memory, before the batch is read and its CRC computed."""
    try:
        header = fmt.BatchHeader(raw)
    except (ValueError, struct.error):
        return False
    if position + header.size > size or header.base_offset < expected:
        return False
    # Invariants of the layout: every record held takes at least its header, and
    # ts_delta is unsigned, so the last timestamp is never before the first.
    room = header.size - fmt.BATCH_HEADER_LEN
    if header.records * fmt.RECORD_HEADER_LEN > room or header.last_ts < header.first_ts:
        return False
    return limit is None or header.next_offset <= limit


def find_next_batch(
    fd: int, bad: int, size: int, expected: int, limit: int | None = None
) -> tuple[int, fmt.BatchHeader] | None:
    """The first good batch after the bad one at ``bad``: (position, header), or None.

    ``expected`` is the offset the bad batch should have started at; ``limit``
    the offset no batch of this segment reaches (the next segment's base).
    """
    raw = os.pread(fd, fmt.BATCH_HEADER_LEN, bad)
    try:
        own = fmt.BatchHeader(raw) if len(raw) == fmt.BATCH_HEADER_LEN else None
    except ValueError:
        own = None
    if own is not None and bad + own.size < size:
        header = _candidate(fd, bad + own.size, size, expected, limit)
        if header is not None:
            return bad + own.size, header
    start = bad + 1
    while start + fmt.BATCH_HEADER_LEN <= size:
        chunk = os.pread(fd, _SCAN_CHUNK + fmt.BATCH_HEADER_LEN, start)
        for found in _MAGIC.finditer(chunk, _MAGIC_AT, _SCAN_CHUNK + _MAGIC_AT):
            rel = found.start() - _MAGIC_AT
            position = start + rel
            if position + fmt.BATCH_HEADER_LEN > size:
                return None
            if _plausible(chunk[rel : rel + fmt.BATCH_HEADER_LEN], position, size, expected, limit):
                header = _candidate(fd, position, size, expected, limit)
                if header is not None:
                    return position, header
        start += _SCAN_CHUNK
    return None


# -- the record beside the segments -----------------------------------------------------


def load(directory: Path) -> list[Damage]:
    """The damage recorded in ``directory`` (nothing if the file is missing or unreadable)."""
    try:
        raw = json.loads((directory / DAMAGE_FILE).read_bytes())
        return [Damage(**item) for item in raw["damage"]]
    except (OSError, ValueError, TypeError, KeyError):
        return []


def save(directory: Path, damage: Iterable[Damage]) -> None:
    """Write the record whole: a temporary file, fsynced, renamed over the old one."""
    items = [d.to_dict() for d in damage]
    path = directory / DAMAGE_FILE
    if not items:
        if path.exists():
            path.unlink()
            _fsync_dir(directory)
        return
    tmp = directory / (DAMAGE_FILE + ".tmp")
    with open(tmp, "wb") as out:
        out.write(json.dumps({"damage": items}, indent=1).encode())
        out.flush()
        disk().fsync(out.fileno())
    os.replace(tmp, path)
    _fsync_dir(directory)


def merge(known: Iterable[Damage], found: Iterable[Damage]) -> list[Damage]:
    """Both lists, one entry per (segment, position), in offset order."""
    by_place = {(d.segment, d.position): d for d in known}
    for d in found:
        by_place[(d.segment, d.position)] = d
    return sorted(by_place.values(), key=lambda d: (d.first_offset, d.segment, d.position))


def _fsync_dir(path: Path) -> None:
    disk().fsync_dir(path)
