"""The byte layout of the event log.

A partition is a directory of segments. A segment is three files named by the
offset of its first record, zero-padded to 20 digits::

    00000000000000004096.log        batches, append-only
    00000000000000004096.index      sparse offset index (a cache)
    00000000000000004096.timeindex  sparse time index (a cache)

The ``.log`` file is a sequence of batches. One batch is written by one append
and is the unit of integrity: it is whole, or recovery cuts it off. All integers
are little-endian::

    batch header (40 bytes)
      u32  length       bytes after this field: 36 + the records
      u32  crc          zlib.crc32 of every byte after this field
      u64  base_offset  offset of the first record
      u32  count        records in the batch, at least 1
      i64  first_ts     append time of the first record, ms since the epoch
      i64  last_ts      append time of the last record
      u8   magic        FORMAT_VERSION, LINKED_VERSION for a linked batch, or
                        COMPACTED_VERSION for a batch rewritten by compaction
      u8   flags        0, or FLAG_LINKED
      u16  reserved     0; in a compacted batch, the records it holds
    link (linked batches only: magic LINKED_VERSION, flags FLAG_LINKED)
      u64  link_id      the same in every part of one publish
      u16  parts        how many partitions the publish spans, at least 2
      part (16 bytes), ``parts`` times, in partition order
        u32  partition  the partition's number in its topic
        u64  base       offset of the part's first record in that partition
        u32  count      records of the part
    record (8 bytes + payload), ``count`` times
      u32  ts_delta     ms after first_ts
      u32  size         payload bytes
      ...  payload      the serialized event

A compacted batch (magic COMPACTED_VERSION, see ``tidings.log.compaction``)
covers the offsets ``base_offset`` to ``base_offset + count`` like any batch, but
holds only the records compaction kept there (the ``reserved`` field says how
many, from 0), each with its own offset::

    compacted record (12 bytes + payload), ``records`` times, offsets ascending
      u32  offset_delta offset - base_offset, below count
      u32  ts_delta     ms after first_ts
      u32  size         payload bytes
      ...  payload

So batches still follow each other offset by offset (what recovery and reads
check), and the offsets a compaction removed are gaps that reads step over.

The ``.index`` file holds 8-byte entries ``(u32 relative_offset, u32 position)``:
the base offset (relative to the segment's) and byte position of a batch, one
entry each time at least ``index_interval`` bytes were written since the last.
The ``.timeindex`` file holds 12-byte entries ``(i64 max_ts, u32 relative_offset)``
written beside the offset entries. Indexes are caches, never the truth:
recovery rebuilds any that fail a sanity check, from the ``.log``.

A publish spread over several partitions is written as one linked batch in each,
every part naming all of them. Its records become readable only once every part
is written (fsynced under ``always``), and recovery keeps a linked batch only
if every part it names is there; otherwise it cuts it and what follows it in
its partition, as a torn tail (see ``tidings.log.linked``). A segment rolled
while a linked batch in it was not yet whole (or, under ``interval``, not yet
fsynced in every partition) is marked by an empty ``<base>.linked`` file, so that
recovery checks it too.

A torn tail (a bad batch with no good batch after it) cut off by recovery is
kept beside its segment as ``<base>.log.cut-<position>``. A bad batch with good
batches after it is damage: it stays in place and is recorded in the partition's
``damage.json`` (see :mod:`tidings.log.damage`).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import NamedTuple

FORMAT_VERSION = 1
LINKED_VERSION = 2
COMPACTED_VERSION = 3
FLAG_LINKED = 1
MAX_COMPACTED_RECORDS = 0xFFFF

BATCH_HEADER = "<IIQIqqBBH"
BATCH_HEADER_LEN = 40
assert struct.calcsize(BATCH_HEADER) == BATCH_HEADER_LEN
# length and crc sit before what the crc covers
CRC_START = 8
LENGTH_FIELD_LEN = 4

RECORD_HEADER = "<II"
RECORD_HEADER_LEN = 8
assert struct.calcsize(RECORD_HEADER) == RECORD_HEADER_LEN

COMPACTED_RECORD_HEADER = "<III"
COMPACTED_RECORD_HEADER_LEN = 12
assert struct.calcsize(COMPACTED_RECORD_HEADER) == COMPACTED_RECORD_HEADER_LEN

INDEX_ENTRY = "<II"
INDEX_ENTRY_LEN = 8
assert struct.calcsize(INDEX_ENTRY) == INDEX_ENTRY_LEN

TIME_INDEX_ENTRY = "<qI"
TIME_INDEX_ENTRY_LEN = 12
assert struct.calcsize(TIME_INDEX_ENTRY) == TIME_INDEX_ENTRY_LEN

LINK_HEADER = "<QH"
LINK_HEADER_LEN = 10
assert struct.calcsize(LINK_HEADER) == LINK_HEADER_LEN
LINK_PART = "<IQI"
LINK_PART_LEN = 16
assert struct.calcsize(LINK_PART) == LINK_PART_LEN

MAX_BATCH_BYTES = 1 << 30

_batch_header = struct.Struct(BATCH_HEADER)
_length_crc = struct.Struct("<II")
_header_tail = struct.Struct("<" + BATCH_HEADER[3:])
assert _length_crc.size + _header_tail.size == BATCH_HEADER_LEN
_record_header = struct.Struct(RECORD_HEADER)
_compacted_header = struct.Struct(COMPACTED_RECORD_HEADER)
# A record header with ts_delta 0: four zero bytes, then the size.
_pack_size_only = struct.Struct("<4xI").pack
assert _pack_size_only(7) == _record_header.pack(0, 7)
_crc32 = zlib.crc32
_link_header = struct.Struct(LINK_HEADER)
_link_part = struct.Struct(LINK_PART)


class Link(NamedTuple):
    """What a linked batch says of the publish it is part of."""

    link_id: int
    parts: tuple[tuple[int, int, int], ...]  # (partition, base, count), by partition


def encode_link(link: Link) -> bytes:
    return _link_header.pack(link.link_id, len(link.parts)) + b"".join(
        _link_part.pack(*part) for part in link.parts
    )


def decode_link(header: BatchHeader, batch: bytes | memoryview) -> Link | None:
    """The link of a linked batch (None for a plain one); ValueError if it is malformed."""
    if not header.linked:
        return None
    end = BATCH_HEADER_LEN + LINK_HEADER_LEN
    if end > header.size:
        raise ValueError("link header past the end of its batch")
    link_id, n = _link_header.unpack_from(batch, BATCH_HEADER_LEN)
    if n < 2 or end + n * LINK_PART_LEN > header.size:
        raise ValueError(f"link of {n} parts does not fit its batch")
    parts = tuple(_link_part.unpack_from(batch, end + k * LINK_PART_LEN) for k in range(n))
    return Link(link_id, parts)


def segment_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


def encode_batch(
    base_offset: int, payloads: Sequence[bytes], timestamp_ms: int, link: bytes = b""
) -> bytes:
    """One batch whose records all carry ``timestamp_ms``; ``link`` (see
    :func:`encode_link`) makes it a linked batch."""
    if len(payloads) == 1:
        body = _pack_size_only(len(payloads[0])) + payloads[0]
    else:
        # Record headers and payloads interleaved by slice assignment: no loop in Python.
        parts: list[bytes] = [b""] * (2 * len(payloads))
        parts[0::2] = map(_pack_size_only, map(len, payloads))
        parts[1::2] = payloads
        body = b"".join(parts)
    if link:
        body = link + body
        magic, flags = LINKED_VERSION, FLAG_LINKED
    else:
        magic, flags = FORMAT_VERSION, 0
    tail = _header_tail.pack(
        base_offset, len(payloads), timestamp_ms, timestamp_ms, magic, flags, 0
    )
    crc = _crc32(body, _crc32(tail))
    length = BATCH_HEADER_LEN - LENGTH_FIELD_LEN + len(body)
    return b"".join((_length_crc.pack(length, crc), tail, body))


def encode_compacted(
    base_offset: int,
    count: int,
    records: Sequence[tuple[int, int, bytes]],
    first_ts: int,
    last_ts: int,
) -> bytes:
    """A compacted batch covering ``count`` offsets from ``base_offset`` and holding
    ``records`` (``(offset, ts, payload)``, offsets ascending inside that range, every
    ts at or after ``first_ts``); with no records it only covers a gap."""
    if len(records) > MAX_COMPACTED_RECORDS:
        raise ValueError(f"a compacted batch holds at most {MAX_COMPACTED_RECORDS} records")
    pack = _compacted_header.pack
    body = b"".join(
        pack(offset - base_offset, ts - first_ts, len(payload)) + payload
        for offset, ts, payload in records
    )
    tail = _header_tail.pack(
        base_offset, count, first_ts, last_ts, COMPACTED_VERSION, 0, len(records)
    )
    crc = _crc32(body, _crc32(tail))
    length = BATCH_HEADER_LEN - LENGTH_FIELD_LEN + len(body)
    return b"".join((_length_crc.pack(length, crc), tail, body))


class BatchHeader:
    """A decoded batch header; ``size`` is the whole batch in bytes, ``count`` the
    offsets it covers, ``records`` the records it holds (fewer once compacted)."""

    __slots__ = (
        "base_offset", "compacted", "count", "crc", "first_ts", "last_ts", "linked",
        "records", "size",
    )  # fmt: skip

    def __init__(self, raw: bytes | memoryview) -> None:
        length, crc, base, count, first_ts, last_ts, magic, flags, res = _batch_header.unpack(
            raw[:BATCH_HEADER_LEN]
        )
        self.compacted = False
        self.records = count
        if magic == FORMAT_VERSION:
            self.linked = False
        elif magic == LINKED_VERSION and flags == FLAG_LINKED:
            self.linked = True
        elif magic == COMPACTED_VERSION and flags == 0:
            self.linked = False
            self.compacted = True
            self.records = res
            if res > count:
                raise ValueError(f"compacted batch of {count} offsets holds {res} records")
        else:
            raise ValueError(f"unknown batch magic {magic} (flags {flags})")
        if count < 1:
            raise ValueError("batch with no records")
        if length < BATCH_HEADER_LEN - LENGTH_FIELD_LEN or length > MAX_BATCH_BYTES:
            raise ValueError(f"batch length {length} out of range")
        self.size = length + LENGTH_FIELD_LEN
        self.crc = crc
        self.base_offset = base
        self.count = count
        self.first_ts = first_ts
        self.last_ts = last_ts

    @property
    def next_offset(self) -> int:
        return int(self.base_offset + self.count)


def check_crc(header: BatchHeader, batch: bytes | memoryview) -> bool:
    return bool(_crc32(memoryview(batch)[CRC_START : header.size]) == header.crc)


def decode_records(
    header: BatchHeader, batch: bytes | memoryview, first: int = 0, limit: int = -1
) -> list[tuple[int, int, bytes]]:
    """The records of a checked batch as ``(offset, timestamp_ms, payload)``: those
    at offset ``first`` or later, at most ``limit`` of them (-1: no limit). The
    framing of every record is checked, the payloads only of those returned are
    copied (a read from the middle of a batch, or of one record, copies no more).

    Raises ValueError when the records do not fill the batch exactly.
    """
    if header.compacted:
        return _decode_compacted(header, batch, first, limit)
    view = memoryview(batch)
    unpack = _record_header.unpack_from
    pos = BATCH_HEADER_LEN
    if header.linked:
        if pos + LINK_HEADER_LEN > header.size:
            raise ValueError("link header past the end of its batch")
        pos += LINK_HEADER_LEN + LINK_PART_LEN * _link_header.unpack_from(view, pos)[1]
    end = header.size
    offset = header.base_offset
    first_ts = header.first_ts
    # Records [lo, hi) of the batch are returned.
    lo = min(max(first - offset, 0), header.count)
    hi = header.count if limit < 0 else min(lo + limit, header.count)
    out: list[tuple[int, int, bytes]] = []
    for i in range(header.count):
        if pos + RECORD_HEADER_LEN > end:
            raise ValueError("record header past the end of its batch")
        delta, size = unpack(view, pos)
        pos += RECORD_HEADER_LEN
        if pos + size > end:
            raise ValueError("record payload past the end of its batch")
        if lo <= i < hi:
            out.append((offset + i, first_ts + delta, bytes(view[pos : pos + size])))
        pos += size
    if pos != end:
        raise ValueError("bytes left over after the last record of a batch")
    return out


def _decode_compacted(
    header: BatchHeader, batch: bytes | memoryview, first: int, limit: int
) -> list[tuple[int, int, bytes]]:
    view = memoryview(batch)
    unpack = _compacted_header.unpack_from
    pos = BATCH_HEADER_LEN
    end = header.size
    base = header.base_offset
    first_ts = header.first_ts
    last = -1
    out: list[tuple[int, int, bytes]] = []
    for _ in range(header.records):
        if pos + COMPACTED_RECORD_HEADER_LEN > end:
            raise ValueError("record header past the end of its batch")
        delta, ts_delta, size = unpack(view, pos)
        pos += COMPACTED_RECORD_HEADER_LEN
        if delta <= last or delta >= header.count:
            raise ValueError(f"record offset {base + delta} out of order or outside its batch")
        if pos + size > end:
            raise ValueError("record payload past the end of its batch")
        if base + delta >= first and len(out) != limit:
            out.append((base + delta, first_ts + ts_delta, bytes(view[pos : pos + size])))
        pos += size
        last = delta
    if pos != end:
        raise ValueError("bytes left over after the last record of a batch")
    return out
