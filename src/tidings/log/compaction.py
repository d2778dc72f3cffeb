"""Compaction of a topic by key: only the latest record of each ``partitionkey`` stays.

A partition of a topic with ``compaction="key"`` is compacted in the background
(:class:`Compactor`, run by a task of the hub). A pass over a partition:

1. takes the *compactable* segments (:meth:`~tidings.log.partition.PartitionLog.compactable`):
   sealed ones (so fsynced whole), every record in them acknowledged, and below the
   first segment marked ``.linked`` or holding a linked part not yet whole, so no
   batch that recovery may still cut decides what is removed;
2. reads them, in a worker thread through descriptors of its own, and maps each
   key (the CloudEvent ``partitionkey`` extension of the stored JSON) to the offset
   of its latest record there (see :mod:`tidings.log.keymap`): a newer record in the
   active segment does not count yet, so one older record per key may stay until
   that segment rolls;
3. rewrites, oldest first, each segment that holds a record to remove: a record
   stays if it has no key, or is the latest of its key. A tombstone (an event with
   neither ``data`` nor ``data_base64``) stays too, until ``delete_retention_ms``
   after its append, and then only goes once no older record of its key is left
   (so the key cannot come back) and if it is not the partition's last record.

Offsets never change. Kept records are written as compacted batches (see
:mod:`tidings.log.format`) that cover the offsets of the batches they replace, so
batches still follow each other offset by offset and the removed offsets are gaps:
a read from one answers the next record kept. A linked batch (one publish over
several partitions) is copied as it is while another partition's recovery may still
look it up: until every part it names is in a compactable segment of its partition
(sealed and unmarked, so never checked again); then it is compacted like any batch.
A bad byte range (damage) is copied as it is: nothing is decoded out of it, and its
new place is recorded in ``damage.json``.

Every step is safe to die at. The new segment and its two indexes are written to
``<name>.compacting`` files and fsynced; the old indexes are removed (and the
directory synced), then the new ``.log`` is renamed over the old one, then the new
indexes are renamed into place, the directory synced after each. A crash before the
rename of the ``.log`` leaves the old segment, whose missing indexes recovery
rebuilds; after it, the new one, the same. Recovery removes ``.compacting``
leftovers (:func:`remove_leftovers`). The rename of the ``.log`` is made on the
event loop, together with the switch of the partition's segment, so no read sees
the new file through the old indexes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tidings.log import format as fmt
from tidings.log.config import disk
from tidings.log.damage import Damage
from tidings.log.keymap import Rules, Settled, Span, is_fixed, never, read_span, scan_keys, units
from tidings.log.segment import fsync_dir

if TYPE_CHECKING:
    from tidings.log.partition import PartitionLog

logger = logging.getLogger("tidings.log")

TMP_SUFFIX = ".compacting"

MAX_BATCH_BYTES = 64 << 10
"""A rewritten batch gathers kept records up to about this many bytes: a read decodes
a whole batch to answer any record of it, so small reads stay cheap."""

ROUND_BYTES = 256 << 20
"""Bytes of segments a round of :class:`Compactor` reads, about; the rest waits for the next."""

_MAX_DELTA = 0xFFFFFFFF  # a record's ts_delta is a u32
_index_entry = struct.Struct(fmt.INDEX_ENTRY)
_time_entry = struct.Struct(fmt.TIME_INDEX_ENTRY)


def remove_leftovers(directory: Path) -> list[Path]:
    """Remove the ``.compacting`` files a compaction cut short left in ``directory``."""
    gone = sorted(directory.glob("*" + TMP_SUFFIX))
    for path in gone:
        path.unlink(missing_ok=True)
    if gone:
        fsync_dir(directory)
        logger.warning("removed %d files of a compaction cut short in %s", len(gone), directory)
    return gone


# -- rewriting one segment ------------------------------------------------------------


@dataclass(slots=True)
class Rewritten:
    """A segment rewritten into ``.compacting`` files, fsynced, not yet in place."""

    part: Span
    size: int
    kept: int
    removed: int
    damage: list[Damage]
    idx_offsets: list[int]
    idx_positions: list[int]
    tidx_ts: list[int]
    tidx_offsets: list[int]
    created_ms: int | None

    @property
    def tmp_log(self) -> Path:
        return _tmp(self.part.path)

    @property
    def tmp_index(self) -> Path:
        return _tmp(self.part.path.with_suffix(".index"))

    @property
    def tmp_time_index(self) -> Path:
        return _tmp(self.part.path.with_suffix(".timeindex"))

    def discard(self) -> None:
        for path in (self.tmp_log, self.tmp_index, self.tmp_time_index):
            path.unlink(missing_ok=True)


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + TMP_SUFFIX)


class _Writer:
    """The new segment's bytes and index entries, built batch by batch."""

    def __init__(self, part: Span, index_interval: int) -> None:
        self.part = part
        self.interval = index_interval
        self.chunks: list[bytes] = []
        self.size = 0
        self.since_index = 0
        self.max_ts = -1
        self.created_ms: int | None = None
        self.idx_offsets: list[int] = []
        self.idx_positions: list[int] = []
        self.tidx_ts: list[int] = []
        self.tidx_offsets: list[int] = []
        self.damage: list[Damage] = []
        # The compacted batch being gathered: first offset it covers, its records.
        self.start = part.base
        self.records: list[tuple[int, int, bytes]] = []
        self.bytes = 0
        self.first_ts = -1
        self.last_ts = -1

    def batch(self, frame: bytes, base: int, first_ts: int, last_ts: int) -> None:
        """Write a whole good batch, noting it in the indexes as a segment does."""
        if self.created_ms is None:
            self.created_ms = first_ts
        self.max_ts = max(self.max_ts, last_ts)
        if not self.idx_offsets or self.since_index >= self.interval:
            rel = base - self.part.base
            self.idx_offsets.append(rel)
            self.idx_positions.append(self.size)
            self.tidx_ts.append(self.max_ts)
            self.tidx_offsets.append(rel)
            self.since_index = 0
        self.since_index += len(frame)
        self.chunks.append(frame)
        self.size += len(frame)

    def raw(self, data: bytes, damage: Damage) -> None:
        """Copy a bad range as it is, and note where it now is."""
        self.damage.append(
            Damage(damage.segment, self.size, len(data), damage.first_offset,
                   damage.end_offset, damage.why)
        )  # fmt: skip
        self.chunks.append(data)
        self.size += len(data)

    def add(self, offset: int, ts: int, payload: bytes) -> None:
        """A kept record, gathered into the batch under way (flushed first if full)."""
        if self.records and (
            ts < self.first_ts
            or ts - self.first_ts > _MAX_DELTA
            or len(self.records) >= fmt.MAX_COMPACTED_RECORDS
            or self.bytes >= MAX_BATCH_BYTES
        ):
            self.flush(offset)
        if not self.records:
            self.first_ts = ts
        self.last_ts = max(self.last_ts, ts)
        self.records.append((offset, ts, payload))
        self.bytes += len(payload) + fmt.COMPACTED_RECORD_HEADER_LEN

    def cover(self, last_ts: int) -> None:
        """The batch under way covers offsets up to here, whose newest ``last_ts``."""
        if self.first_ts < 0:
            self.first_ts = last_ts
        self.last_ts = max(self.last_ts, last_ts)

    def flush(self, end: int) -> None:
        """Write the batch under way, covering offsets up to ``end``."""
        if end > self.start:
            first = self.first_ts if self.first_ts >= 0 else self.last_ts
            last = max(self.last_ts, first)
            frame = fmt.encode_compacted(self.start, end - self.start, self.records, first, last)
            self.batch(frame, self.start, first, last)
        self.start = end
        self.records = []
        self.bytes = 0
        self.first_ts = self.last_ts = -1

    def finish(self, end: int) -> None:
        self.flush(end)
        # A sealed segment's time index ends on its last offset (see Segment.seal).
        rel = self.part.end - 1 - self.part.base
        if self.tidx_offsets and self.tidx_offsets[-1] != rel:
            self.tidx_ts.append(self.max_ts)
            self.tidx_offsets.append(rel)


def rewrite(
    part: Span, rules: Rules, index_interval: int, settled: Settled = never
) -> Rewritten | None:
    """Write ``part`` compacted by ``rules`` to ``.compacting`` files, fsynced, and remove
    its old indexes (in a worker thread); None if it has nothing to remove."""
    fd, data, known = read_span(part)
    seen = rules.keys.codes.pop(part.path, None)  # its memory goes once rewritten
    codes = seen[1] if seen is not None and seen[0] == known else None
    names = rules.keys.names
    i = 0  # the record's index in codes
    try:
        w = _Writer(part, index_interval)
        kept = removed = 0
        expected = part.base
        for position, header, records, damage in units(fd, data, part.base, part.end):
            if header is None:
                assert damage is not None
                w.flush(damage.first_offset)
                w.raw(data[position : position + damage.length], damage)
                expected = w.start = damage.end_offset
                continue
            frame = data[position : position + header.size]
            if is_fixed(header, frame, settled):  # another partition's recovery may look it up
                w.flush(header.base_offset)
                w.batch(frame, header.base_offset, header.first_ts, header.last_ts)
                kept += header.records
                i += len(records)
                expected = w.start = header.next_offset
                continue
            for offset, ts, payload in records:
                if codes is None:
                    keep = rules.keep(offset, ts, payload)
                else:
                    code = codes[i]
                    keep = code < 0 or rules.keep_key(offset, ts, names[code >> 1], bool(code & 1))
                i += 1
                if keep:
                    w.add(offset, ts, payload)
                    kept += 1
                else:
                    removed += 1
            w.cover(header.last_ts)
            expected = header.next_offset
        if not removed:
            return None
        w.finish(expected)
        if expected < part.end and not (w.damage and w.damage[-1].end_offset >= part.end):
            why = f"segment ends at offset {expected}, not {part.end}"
            w.damage.append(Damage(part.path.name, w.size, 0, expected, part.end, why))
    finally:
        os.close(fd)
    out = Rewritten(
        part, w.size, kept, removed, w.damage, w.idx_offsets, w.idx_positions,
        w.tidx_ts, w.tidx_offsets, w.created_ms,
    )  # fmt: skip
    try:
        _write_file(out.tmp_log, w.chunks)
        _write_file(
            out.tmp_index,
            [_index_entry.pack(o, p) for o, p in zip(w.idx_offsets, w.idx_positions, strict=True)],
        )
        _write_file(
            out.tmp_time_index,
            [_time_entry.pack(t, o) for t, o in zip(w.tidx_ts, w.tidx_offsets, strict=True)],
        )
        # The old indexes go before the new .log comes: never one with the other's indexes.
        part.path.with_suffix(".index").unlink(missing_ok=True)
        part.path.with_suffix(".timeindex").unlink(missing_ok=True)
        fsync_dir(part.path.parent)
    except BaseException:
        out.discard()
        raise
    return out


def _write_file(path: Path, chunks: list[bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        disk().fsync(fd)
    finally:
        os.close(fd)


def place_indexes(done: Rewritten) -> None:
    """After the new ``.log`` is in place: make that durable, then put its indexes there."""
    directory = done.part.path.parent
    fsync_dir(directory)
    os.replace(done.tmp_index, done.part.path.with_suffix(".index"))
    os.replace(done.tmp_time_index, done.part.path.with_suffix(".timeindex"))
    fsync_dir(directory)


# -- passes and rounds ------------------------------------------------------------------


@dataclass(slots=True)
class PassResult:
    """What one pass over a partition did."""

    segments: int = 0
    rewritten: int = 0
    removed: int = 0
    kept: int = 0
    bytes_read: int = 0
    next_expiry: int | None = None
    again: bool = False
    """A tombstone due to go waits for an older record of its key this pass removed."""


async def compact_partition(
    log: PartitionLog, now_ms: int, settled: Settled = never
) -> PassResult:
    """One pass over ``log`` (see the module's docstring); file work in worker threads.
    ``settled`` says which linked batches may be compacted (none by default)."""
    result = PassResult()
    segments = log.compactable()
    if not segments:
        return result
    parts = [Span(seg.path, seg.base_offset, seg.next_offset) for seg in segments]
    result.segments = len(parts)
    result.bytes_read = sum(seg.size for seg in segments)
    keys = await asyncio.to_thread(scan_keys, parts, settled)
    rules = Rules(keys, now_ms, log.config.delete_retention_ms, log.end_offset - 1)
    result.next_expiry = rules.next_expiry()
    for seg, part in zip(segments, parts, strict=True):
        done = await asyncio.to_thread(
            rewrite, part, rules, log.config.index_interval, settled
        )
        if done is None:
            continue
        # On the loop, with no await between: the rename and the switch of segment.
        if not log.replace_segment(seg, done):
            done.discard()
            continue
        await asyncio.to_thread(place_indexes, done)
        result.rewritten += 1
        result.removed += done.removed
        result.kept += done.kept
        result.again = result.again or rules.blocked()
        logger.info(
            "compacted %s: %d records removed, %d kept, %d bytes now",
            part.path, done.removed, done.kept, done.size,
        )
    return result


class Compactor:
    """Compacts partitions a round at a time. A round passes over partitions until it
    has read about ``round_bytes`` (a pass reads all of a partition's compactable
    segments, so one large partition may take more). A partition is passed over again
    when the segments it sealed since its last pass make ``min_dirty_ratio`` of the
    size of those that pass saw (as Kafka's cleaner does: the work stays in proportion
    to what is appended), when a tombstone it keeps is due to go, or right away when a
    tombstone waits for an older record of its key that the pass removed."""

    def __init__(self, round_bytes: int = ROUND_BYTES, min_dirty_ratio: float = 0.5) -> None:
        self.round_bytes = round_bytes
        self.min_dirty_ratio = min_dirty_ratio
        # partition directory -> (end offset of its compactable segments at its last
        # pass, or -1 to pass again; when a tombstone it keeps may go)
        self._seen: dict[Path, tuple[int, int | None]] = {}
        self._lock = asyncio.Lock()
        self.passes = 0
        self.removed = 0

    def _due(self, log: PartitionLog, now_ms: int) -> bool:
        seen = self._seen.get(log.directory)
        if seen is None:
            return True
        end, expiry = seen
        if end < 0 or (expiry is not None and expiry <= now_ms):
            return True
        segments = log.compactable()
        dirty = sum(s.size for s in segments if s.base_offset >= end)
        clean = sum(s.size for s in segments if s.base_offset < end)
        return dirty > 0 and dirty >= self.min_dirty_ratio * clean

    async def run_round(self, topics: Iterable[Mapping[int, PartitionLog]], now_ms: int) -> int:
        """Pass over the partitions of ``topics`` (each the partitions of one topic, by
        number) that are due; how many records went."""
        async with self._lock:
            budget = self.round_bytes
            removed = 0
            # One look at a topic's partitions serves all of them: asking it again per
            # partition made a round quadratic in the partition count (seconds of a
            # blocked event loop for a topic of a thousand partitions).
            live = [
                (log, settled)
                for logs in topics
                for settled in (settled_in(logs),)
                for log in logs.values()
            ]
            alive = {log.directory for log, _ in live}
            self._seen = {k: v for k, v in self._seen.items() if k in alive}
            for log, settled in live:
                if budget <= 0:
                    break
                if not self._due(log, now_ms):
                    continue
                try:
                    result = await compact_partition(log, now_ms, settled)
                except OSError:
                    logger.exception("compaction of %s failed; tried again later", log.directory)
                    continue
                self.passes += 1
                budget -= result.bytes_read
                removed += result.removed
                segments = log.compactable()
                sealed_end = segments[-1].next_offset if segments else 0
                self._seen[log.directory] = (
                    -1 if result.again else sealed_end, result.next_expiry
                )
            self.removed += removed
            return removed


def settled_in(logs: Mapping[int, PartitionLog]) -> Settled:
    """Whether a linked batch of the topic whose partitions are ``logs`` (by number) has
    every part in a compactable segment (so no recovery looks it up again), now."""
    ends: dict[int, int] = {}
    for p, log in logs.items():
        segments = log.compactable()
        ends[p] = segments[-1].next_offset if segments else -1

    def settled(link: fmt.Link) -> bool:
        return all(base + count <= ends.get(p, -1) for p, base, count in link.parts)

    return settled
