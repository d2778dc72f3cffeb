"""One segment: a ``.log`` file of batches and its sparse offset and time indexes.

A segment knows bytes and offsets only. It is written by one writer (its
partition) and read with ``pread``, so reads never move the write position. Its
files are opened through :class:`~tidings.log.files.OpenFiles`, which may close
them while they are idle: every use asks for the descriptor again.
"""

from __future__ import annotations

import os
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

from tidings.log import format as fmt
from tidings.log.config import disk
from tidings.log.damage import Damage, batch_at, find_next_batch
from tidings.log.files import OpenFiles, SegmentFile, shared_files

_index_entry = struct.Struct(fmt.INDEX_ENTRY)
_time_entry = struct.Struct(fmt.TIME_INDEX_ENTRY)

# How much to read ahead when a read starts: enough for many small batches.
_READ_CHUNK = 256 * 1024


def fsync_dir(path: Path) -> None:
    disk().fsync_dir(path)


def make_dirs(path: Path, levels: int) -> None:
    """Create ``path`` and its missing parents, and fsync the ``levels`` directories
    above it: a directory is an entry in its parent, and one made and not synced there
    may be gone after a power loss, with every file in it. Synced even when it was
    there already: a crash may have come between the ``mkdir`` and the sync."""
    path.mkdir(parents=True, exist_ok=True)
    for made in [path, *path.parents][:levels]:
        fsync_dir(made.parent)


class Segment:
    """A ``.log`` file, open for append and ``pread``, with its indexes in memory."""

    def __init__(
        self,
        directory: Path,
        base_offset: int,
        *,
        index_interval: int,
        files: OpenFiles | None = None,
    ) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.path = directory / fmt.segment_name(base_offset, ".log")
        self.index_path = directory / fmt.segment_name(base_offset, ".index")
        self.time_index_path = directory / fmt.segment_name(base_offset, ".timeindex")
        self.index_interval = index_interval
        self._files = shared_files() if files is None else files
        # Reopened without O_CREAT: a file that went missing is an error, not a new file.
        self._file = self._files.file(self.path, os.O_RDWR | os.O_APPEND)
        self.size = os.fstat(self._file.open(os.O_RDWR | os.O_CREAT | os.O_APPEND)).st_size
        self.next_offset = base_offset
        self.max_ts = -1
        self.created_ms: int | None = None  # append time of the first record
        # In-memory sparse indexes: parallel lists, relative offsets and positions.
        self._idx_offsets: list[int] = []
        self._idx_positions: list[int] = []
        self._tidx_ts: list[int] = []
        self._tidx_offsets: list[int] = []
        self._bytes_since_index = 0
        self._index: SegmentFile | None = None  # open for append while active
        self._time_index: SegmentFile | None = None
        self.sealed = False
        # Damage found in this file, by byte position; on_damage hears of each new one.
        self.damage: dict[int, Damage] = {}
        self.on_damage: Callable[[Damage], None] | None = None

    # -- writing ---------------------------------------------------------------

    def open_indexes_for_append(self) -> None:
        """Truncate and reopen the index files, then write the in-memory entries."""
        first = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        self._index = self._files.file(self.index_path, os.O_WRONLY | os.O_APPEND)
        self._time_index = self._files.file(self.time_index_path, os.O_WRONLY | os.O_APPEND)
        self._index.open(first)
        self._time_index.open(first)
        self._write_all(
            self._index.get(),
            b"".join(
                _index_entry.pack(o, p)
                for o, p in zip(self._idx_offsets, self._idx_positions, strict=True)
            ),
        )
        self._write_all(
            self._time_index.get(),
            b"".join(
                _time_entry.pack(t, o)
                for t, o in zip(self._tidx_ts, self._tidx_offsets, strict=True)
            ),
        )

    @staticmethod
    def _write_all(fd: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    def append_batches(self, run: list[tuple[bytes, int, int, int]]) -> None:
        """Write whole batches ``(frame, base_offset, count, timestamp)`` in one write."""
        position = self.size
        data = b"".join([item[0] for item in run]) if len(run) > 1 else run[0][0]
        self._write_all(self._file.get(), data)
        for frame, base, count, ts in run:
            self.note_batch(position, base, count, ts, ts, len(frame))
            position += len(frame)
        self.size = position

    def note_batch(
        self, position: int, base_offset: int, count: int, first_ts: int, last_ts: int, size: int
    ) -> None:
        """Account for a batch at ``position``: offsets, timestamps, index entries."""
        if self.created_ms is None:
            self.created_ms = first_ts
        if last_ts > self.max_ts:
            self.max_ts = last_ts
        if not self._idx_offsets or self._bytes_since_index >= self.index_interval:
            rel = base_offset - self.base_offset
            self._idx_offsets.append(rel)
            self._idx_positions.append(position)
            self._tidx_ts.append(self.max_ts)
            self._tidx_offsets.append(rel)
            self._bytes_since_index = 0
            if self._index is not None and self._time_index is not None:
                os.write(self._index.get(), _index_entry.pack(rel, position))
                os.write(self._time_index.get(), _time_entry.pack(self.max_ts, rel))
        self._bytes_since_index += size
        self.next_offset = base_offset + count

    @property
    def fd(self) -> int:
        """The ``.log`` file's descriptor, for use before the next await."""
        return self._file.get()

    @property
    def file(self) -> SegmentFile:
        """The ``.log`` file: pin it to use its descriptor from another thread."""
        return self._file

    def seal(self) -> None:
        """Make the segment read-only: final time entry, indexes and data on disk."""
        rel = self.next_offset - 1 - self.base_offset
        # Always end the time index on the last record, so a load can check it.
        if self._time_index is not None and self._tidx_offsets and (
            self._tidx_offsets[-1] != rel
        ):
            self._tidx_ts.append(self.max_ts)
            self._tidx_offsets.append(rel)
            os.write(self._time_index.get(), _time_entry.pack(self.max_ts, rel))
        sync = disk().fsync
        sync(self._file.get())
        for f in (self._index, self._time_index):
            if f is not None:
                sync(f.get())
                f.close()
        self._index = self._time_index = None
        self.sealed = True

    def truncate(self, position: int) -> None:
        fd = self._file.get()
        os.ftruncate(fd, position)
        disk().fsync(fd)
        self.size = position

    def close_indexes(self) -> None:
        for f in (self._index, self._time_index):
            if f is not None:
                f.close()
        self._index = self._time_index = None

    def close(self) -> None:
        self.close_indexes()
        self._file.close()

    def delete(self) -> None:
        self.close()
        # Indexes first: a crash halfway leaves a .log whose indexes are rebuilt,
        # never index files that nothing would ever remove.
        for path in (self.index_path, self.time_index_path, self.path):
            path.unlink(missing_ok=True)

    # -- indexes ---------------------------------------------------------------

    def load_indexes(self, next_offset: int) -> bool:
        """Load the index files of a sealed segment; False if they fail a check."""
        try:
            raw = self.index_path.read_bytes()
            traw = self.time_index_path.read_bytes()
        except FileNotFoundError:
            return False
        if not raw or len(raw) % fmt.INDEX_ENTRY_LEN or len(traw) % fmt.TIME_INDEX_ENTRY_LEN:
            return False
        entries = list(_index_entry.iter_unpack(raw))
        tentries = list(_time_entry.iter_unpack(traw))
        offsets = [o for o, _ in entries]
        positions = [p for _, p in entries]
        if offsets[0] != 0 or positions[0] != 0:
            return False
        for a, b in pairwise(entries):
            if b[0] <= a[0] or b[1] <= a[1]:
                return False
        if positions[-1] >= self.size or self.base_offset + offsets[-1] >= next_offset:
            return False
        if not tentries or any(b[0] < a[0] or b[1] <= a[1] for a, b in pairwise(tentries)):
            return False
        # Sealing ends the time index on the last record (see seal()).
        if self.base_offset + tentries[-1][1] != next_offset - 1:
            return False
        # The last entry must point at a batch whose header agrees with it.
        header = self._header_at(positions[-1])
        if header is None or header.base_offset != self.base_offset + offsets[-1]:
            return False
        self._idx_offsets, self._idx_positions = offsets, positions
        self._tidx_ts = [t for t, _ in tentries]
        self._tidx_offsets = [o for _, o in tentries]
        self.max_ts = self._tidx_ts[-1]
        self.next_offset = next_offset
        self.created_ms = self._header_at(0).first_ts if self.size else None  # type: ignore[union-attr]
        return True

    def adopt_indexes(
        self,
        next_offset: int,
        offsets: list[int],
        positions: list[int],
        tidx_ts: list[int],
        tidx_offsets: list[int],
        created_ms: int | None,
    ) -> None:
        """Take the index entries of a sealed segment written whole elsewhere (a
        compaction's rewrite, see :mod:`tidings.log.compaction`)."""
        self._idx_offsets, self._idx_positions = offsets, positions
        self._tidx_ts, self._tidx_offsets = tidx_ts, tidx_offsets
        self.max_ts = tidx_ts[-1] if tidx_ts else -1
        self.next_offset = next_offset
        self.created_ms = created_ms
        self.sealed = True

    def reset_indexes(self) -> None:
        self._idx_offsets, self._idx_positions = [], []
        self._tidx_ts, self._tidx_offsets = [], []
        self._bytes_since_index = 0
        self.max_ts = -1
        self.created_ms = None
        self.next_offset = self.base_offset

    def _header_at(self, position: int) -> fmt.BatchHeader | None:
        raw = os.pread(self._file.get(), fmt.BATCH_HEADER_LEN, position)
        if len(raw) < fmt.BATCH_HEADER_LEN:
            return None
        try:
            return fmt.BatchHeader(raw)
        except ValueError:
            return None

    # -- scanning and reading ----------------------------------------------------

    def scan(
        self, position: int = 0, expected: int | None = None
    ) -> Iterator[tuple[int, fmt.BatchHeader | None, str]]:
        """Walk the batches from ``position``, checking each one whole.

        Yields ``(position, header, "")`` for each good batch, then, if the file
        does not end on a good batch, one ``(position, None, why)``. The first
        batch must have base offset ``expected`` (the segment's base at 0).
        """
        if expected is None and position == 0:
            expected = self.base_offset
        size = self.size
        while position < size:
            # The file again each batch: the caller may open files between.
            header, why = batch_at(self._file.get(), position, size, expected)
            if header is None:
                yield position, None, why
                return
            expected = header.next_offset
            yield position, header, ""
            position += header.size

    def offset_for_time(self, ts: int) -> int:
        """An indexed offset from which a scan finds the first record at or after ``ts``."""
        # The entry before the first whose max_ts >= ts: everything before it is older.
        i = bisect_left(self._tidx_ts, ts) - 1
        return self.base_offset + (self._tidx_offsets[i] if i >= 0 else 0)

    def read(
        self, offset: int, end_offset: int, max_records: int, max_bytes: int
    ) -> list[tuple[int, int, bytes]]:
        """Records from ``offset`` up to (not including) ``end_offset``.

        A bad batch is skipped over to the next good one and noted as a
        :class:`~tidings.log.damage.Damage` (see :meth:`damaged_at`).
        """
        out: list[tuple[int, int, bytes]] = []
        i = bisect_right(self._idx_offsets, offset - self.base_offset) - 1
        position = self._idx_positions[i] if i >= 0 else 0
        # Each batch must start where the one before ended: a whole batch in the
        # wrong place, or a short segment, is damage, not a gap to skip over.
        expected = self.base_offset + (self._idx_offsets[i] if i >= 0 else 0)
        budget = max_bytes
        size = self.size
        chunk = b""
        chunk_start = position
        while position < size and len(out) < max_records:
            rel = position - chunk_start
            if rel < 0 or rel + fmt.BATCH_HEADER_LEN > len(chunk):
                # The file again each read: stepping over damage may note it between.
                want = max(_READ_CHUNK, min(budget, 1 << 24))
                chunk = os.pread(self._file.get(), want, position)
                chunk_start, rel = position, 0
            header, batch, why = self._batch_in(chunk, rel, position, expected)
            if header is None or batch is None:
                damage = self.damaged_at(position, expected, why)
                position, expected = damage.position + damage.length, damage.end_offset
                continue
            if rel + header.size > len(chunk):  # _batch_in read a chunk of its own from here
                chunk, chunk_start = batch.obj, position  # type: ignore[assignment]
            expected = header.next_offset
            if header.base_offset >= end_offset:
                break
            if header.next_offset <= offset:
                position += header.size
                continue
            try:
                records = fmt.decode_records(header, batch, offset, max_records - len(out))
            except ValueError as exc:
                damage = self.damaged_at(position, header.base_offset, str(exc))
                position, expected = damage.position + damage.length, damage.end_offset
                continue
            for rec in records:
                if rec[0] < offset:
                    continue
                if rec[0] >= end_offset or len(out) >= max_records:
                    break
                if out and len(rec[2]) > budget:
                    return out
                out.append(rec)
                budget -= len(rec[2])
            if budget <= 0:
                break
            position += header.size
        if position >= size and len(out) < max_records and expected < self.next_offset:
            self._short(expected)
        return out

    def _batch_in(
        self, chunk: bytes, rel: int, position: int, expected: int
    ) -> tuple[fmt.BatchHeader | None, memoryview | None, str]:
        """The batch at ``position`` (``rel`` into ``chunk``), checked: framing, CRC, offset."""
        if len(chunk) - rel < fmt.BATCH_HEADER_LEN:
            return None, None, "torn batch header"
        try:
            header = fmt.BatchHeader(chunk[rel : rel + fmt.BATCH_HEADER_LEN])
        except ValueError as exc:
            return None, None, str(exc)
        # Check the batch before its header decides to stop or skip: a flipped
        # offset, count or length must not read as the end or as a gap.
        if rel + header.size > len(chunk):
            chunk = os.pread(self._file.get(), max(_READ_CHUNK, header.size), position)
            rel = 0
        batch = memoryview(chunk)[rel : rel + header.size]
        if len(batch) < header.size or not fmt.check_crc(header, batch):
            return None, None, "batch fails its CRC"
        if header.base_offset != expected:
            return None, None, f"batch offset {header.base_offset}, expected {expected}"
        return header, batch, ""

    # -- damage ------------------------------------------------------------------

    def damaged_at(
        self, position: int, expected: int, why: str, limit: int | None = None
    ) -> Damage:
        """The damage starting with the bad batch at ``position``, found once and kept.

        It reaches the next good batch after it, or the end of the file; its
        offsets run from ``expected`` to that batch's base (or to ``limit``, the
        segment's end offset, by default :attr:`next_offset` once sealed).
        """
        known = self.damage.get(position)
        if known is not None:
            return known
        if limit is None and self.sealed:
            limit = self.next_offset
        found = find_next_batch(self._file.get(), position, self.size, expected, limit)
        if found is None:
            end = self.next_offset if limit is None else limit
            damage = Damage(self.path.name, position, self.size - position, expected, end, why)
        else:
            at, header = found
            length, end = at - position, header.base_offset
            damage = Damage(self.path.name, position, length, expected, end, why)
        self.note_damage(damage)
        return damage

    def _short(self, expected: int) -> None:
        """The file ends before the segment's last offset: those offsets are damage."""
        if self.size not in self.damage:
            why = f"segment ends at offset {expected}, not {self.next_offset}"
            self.note_damage(
                Damage(self.path.name, self.size, 0, expected, self.next_offset, why)
            )

    def note_damage(self, damage: Damage) -> None:
        self.damage[damage.position] = damage
        if self.on_damage is not None:
            self.on_damage(damage)

    def batches(
        self, position: int = 0, expected: int | None = None
    ) -> Iterator[tuple[int, fmt.BatchHeader]]:
        """``(position, header)`` of every good batch from ``position``, stepping over
        damage to the next good batch (and noting it: see :meth:`damaged_at`)."""
        if expected is None:
            expected = self.base_offset
        while position < self.size:
            bad: tuple[int, str] | None = None
            for at, header, why in self.scan(position, expected):
                if header is None:
                    bad = at, why
                    break
                expected = header.next_offset
                yield at, header
            if bad is None:
                return
            damage = self.damaged_at(bad[0], expected, bad[1])
            position, expected = damage.position + damage.length, damage.end_offset

    def position_of(self, offset: int) -> int | None:
        """The byte position of the batch that starts at ``offset``, if one does (a
        batch after damage too)."""
        i = bisect_right(self._idx_offsets, offset - self.base_offset) - 1
        position = self._idx_positions[i] if i >= 0 else 0
        expected = self.base_offset + (self._idx_offsets[i] if i >= 0 else 0)
        for at, header in self.batches(position, expected):
            if header.base_offset > offset:
                return None
            if header.base_offset == offset:
                return at
        return None

    def link_at(self, offset: int) -> fmt.Link | None:
        """The link of the linked batch that starts at ``offset``, if one does."""
        position = self.position_of(offset)
        if position is None:
            return None
        header = self._header_at(position)
        if header is None or not header.linked:
            return None
        return fmt.decode_link(header, os.pread(self._file.get(), header.size, position))
