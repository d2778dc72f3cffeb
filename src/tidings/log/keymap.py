"""What a compaction pass reads: the records of a segment file, and the latest per key.

:func:`units` walks a segment's bytes batch by batch as reads do (damage found,
measured and stepped over); :func:`scan_keys` maps each ``partitionkey`` of the
compactable segments to its latest record; :class:`Rules` says which records a
rewrite keeps (see :mod:`tidings.log.compaction`). File work only, for worker threads.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from tidings.log import format as fmt
from tidings.log.damage import Damage, find_next_batch

MAX_CODES = 32 << 20
"""Records whose keys a pass keeps for its rewrite (4 bytes each); the rest are parsed
again when rewritten, so a pass over a huge partition stays within memory."""

# -- reading a segment file -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """A segment as the compactor reads it: path, first offset, end offset."""

    path: Path
    base: int
    end: int


Records = list[tuple[int, int, bytes]]


def units(
    fd: int, data: bytes, base: int, limit: int
) -> Iterator[tuple[int, fmt.BatchHeader | None, Records, Damage | None]]:
    """``(position, header, records, None)`` for each good batch of a segment's bytes
    ``data``, ``(position, None, [], damage)`` for each bad range, as reads find it."""
    size = len(data)
    position, expected = 0, base
    view = memoryview(data)
    while position < size:
        why = ""
        header: fmt.BatchHeader | None = None
        records: Records = []
        if position + fmt.BATCH_HEADER_LEN > size:
            why = "torn batch header"
        else:
            try:
                header = fmt.BatchHeader(view[position : position + fmt.BATCH_HEADER_LEN])
            except ValueError as exc:
                why = str(exc)
        if header is not None:
            batch = view[position : position + header.size]
            if len(batch) < header.size or not fmt.check_crc(header, batch):
                why = "batch fails its CRC"
            elif header.base_offset != expected:
                why = f"batch offset {header.base_offset}, expected {expected}"
            else:
                try:
                    records = fmt.decode_records(header, batch)
                except ValueError as exc:
                    why = str(exc)
        if not why and header is not None:
            yield position, header, records, None
            position += header.size
            expected = header.next_offset
            continue
        found = find_next_batch(fd, position, size, expected, limit)
        name = fmt.segment_name(base, ".log")
        if found is None:
            yield position, None, [], Damage(name, position, size - position, expected, limit, why)
            return
        at, nxt = found
        lost = Damage(name, position, at - position, expected, nxt.base_offset, why)
        yield position, None, [], lost
        position, expected = at, nxt.base_offset


def read_span(part: Span) -> tuple[int, bytes, tuple[int, int]]:
    """A descriptor of the file, its bytes, and (inode, size) to know it again by."""
    fd = os.open(part.path, os.O_RDONLY)
    st = os.fstat(fd)
    return fd, os.pread(fd, st.st_size, 0), (st.st_ino, st.st_size)


def key_of(payload: bytes) -> tuple[str | None, bool]:
    """The event's ``partitionkey`` (None if it has none, or is not JSON) and whether it
    is a tombstone: no ``data`` nor ``data_base64``."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None, False
    if not isinstance(event, dict):
        return None, False
    key = event.get("partitionkey")
    if not isinstance(key, str):
        return None, False
    return key, "data" not in event and "data_base64" not in event


# -- the map of keys --------------------------------------------------------------------


@dataclass(slots=True)
class KeyMap:
    """What a pass learned of the compactable segments, key by key."""

    latest: dict[str, int] = field(default_factory=dict)
    """key -> offset of its latest record."""
    first: dict[str, int] = field(default_factory=dict)
    """key -> offset of its oldest record still there."""
    pinned: set[str] = field(default_factory=set)
    """Keys with a record in a linked batch compaction may not rewrite yet."""
    tombstones: dict[str, int] = field(default_factory=dict)
    """key -> append time of its latest record, where that is a tombstone."""
    names: list[str] = field(default_factory=list)
    codes: dict[Path, tuple[tuple[int, int], array[int]]] = field(default_factory=dict)
    """Per segment file (known by inode and size), each record's key as read: -1 for
    none, else ``2 * (its index in names) + (1 if a tombstone)``, so that the rewrite
    need not parse the records again."""


Settled = Callable[[fmt.Link], bool]
"""Whether every part of a linked batch is in a compactable segment of its partition."""


def never(link: fmt.Link) -> bool:
    return False


def is_fixed(header: fmt.BatchHeader, frame: bytes | memoryview, settled: Settled) -> bool:
    """Whether a batch must be copied as it is: a linked one not settled yet."""
    if not header.linked:
        return False
    link = fmt.decode_link(header, frame)
    return link is None or not settled(link)


def scan_keys(parts: Iterable[Span], settled: Settled = never) -> KeyMap:
    """Read every record of ``parts`` (in a worker thread) and map the keys."""
    km = KeyMap()
    latest, first, tombs = km.latest, km.first, km.tombstones
    ids: dict[str, int] = {}
    kept_codes = 0
    for part in parts:
        fd, data, known = read_span(part)
        codes: array[int] = array("i")
        if kept_codes < MAX_CODES:  # past it, the rewrite parses those records again
            km.codes[part.path] = (known, codes)
        try:
            for position, header, records, _ in units(fd, data, part.base, part.end):
                if header is None:
                    continue
                frame = memoryview(data)[position : position + header.size]
                fixed = is_fixed(header, frame, settled)
                for offset, ts, payload in records:
                    key, tomb = key_of(payload)
                    if key is None:
                        codes.append(-1)
                        continue
                    n = ids.get(key)
                    if n is None:
                        n = ids[key] = len(km.names)
                        km.names.append(key)
                    else:
                        key = km.names[n]  # one string per key, however many records
                    codes.append(2 * n + tomb)
                    latest[key] = offset
                    first.setdefault(key, offset)
                    if tomb:
                        tombs[key] = ts
                    else:
                        tombs.pop(key, None)
                    if fixed:
                        km.pinned.add(key)
        finally:
            os.close(fd)
        kept_codes += len(codes)
    return km


@dataclass(frozen=True, slots=True)
class Rules:
    """What a pass keeps: see the module's docstring."""

    keys: KeyMap
    now_ms: int
    delete_retention_ms: int
    last_offset: int
    """The partition's last offset: never removed, so a read from below the end
    always finds a record."""

    def keep(self, offset: int, ts: int, payload: bytes) -> bool:
        return self.keep_key(offset, ts, *key_of(payload))

    def keep_key(self, offset: int, ts: int, key: str | None, tomb: bool) -> bool:
        if key is None:
            return True
        if self.keys.latest.get(key, offset) != offset:
            return False
        if not tomb or offset == self.last_offset:
            return True
        expired = ts + self.delete_retention_ms <= self.now_ms
        return not (expired and self.keys.first[key] == offset and key not in self.keys.pinned)

    def next_expiry(self) -> int | None:
        """When the next tombstone kept now for its ``delete_retention`` goes (None: none)."""
        due = [
            ts + self.delete_retention_ms
            for ts in self.keys.tombstones.values()
            if ts + self.delete_retention_ms > self.now_ms
        ]
        return min(due) if due else None

    def blocked(self) -> bool:
        """Whether a tombstone due to go stayed for an older record of its key."""
        k = self.keys
        return any(
            ts + self.delete_retention_ms <= self.now_ms
            and k.first[key] != k.latest[key]
            and key not in k.pinned
            for key, ts in k.tombstones.items()
        )
