"""A partition: ordered segments, one writer with group commit, readers that wait.

Appends are framed at once (offsets are assigned in call order) and queued; a
single writer task writes everything queued in one ``write`` and, under the
``always`` policy, one ``fdatasync`` in a worker thread. Appends that arrive
while that fsync runs queue up and share the next one: group commit.

A record becomes visible to readers when its append is acknowledged, so no
reader ever sees a record that a crash could take back. A part of a linked batch
(one publish over several partitions, see :mod:`tidings.log.linked`) is held:
it and every record after it stay unreadable and unacknowledged until the
publish is whole in every partition and it is released (see :mod:`tidings.log.holds`).

A write or fsync that fails (a full disk, say) fails the appends it carried and
the partition refuses appends (503) until it heals (see :mod:`tidings.log.healing`).
The state every part shares is in :mod:`tidings.log.partstate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_right
from collections.abc import Sequence
from pathlib import Path

from tidings.errors import BadRequest, OffsetOutOfRange, StorageUnavailable
from tidings.log import format as fmt
from tidings.log.compactable import CompactionHooks
from tidings.log.compaction import remove_leftovers
from tidings.log.config import (
    FSYNC_STATS,
    Clock,
    FsyncPolicy,
    LogConfig,
    LogRecord,
    SystemClock,
    WrongEnd,
)
from tidings.log.damage import Damage
from tidings.log.files import OpenFiles, SegmentFile
from tidings.log.healing import Healing
from tidings.log.holds import LinkedHolds
from tidings.log.recovery import (
    linked_marker,
    recover_active,
    recover_sealed,
    scan_links,
)
from tidings.log.segment import Segment, fsync_dir, make_dirs

logger = logging.getLogger("tidings.log")


class PartitionLog(Healing, LinkedHolds, CompactionHooks):
    """One partition's log on disk. Use :meth:`open`; one instance per directory."""

    # -- opening -----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        config: LogConfig | None = None,
        policy: FsyncPolicy | None = None,
        clock: Clock | None = None,
        files: OpenFiles | None = None,
        *,
        synced: bool = False,
    ) -> PartitionLog:
        """Open (creating if needed) and recover the partition in ``directory``.

        Its files are opened through ``files`` (a hub shares one), which closes
        them while idle; on failure every file it opened is closed again. With
        ``synced``, the caller has just made ``directory`` and synced it and its
        topic's directory in their parents.
        """
        log = cls(
            directory, config or LogConfig(), policy or FsyncPolicy(), clock or SystemClock(), files
        )
        if not synced:
            # The partition's directory and its topic's, each synced in its parent.
            make_dirs(directory, 2)
        remove_leftovers(directory)
        stems = [p.stem for p in directory.glob("*.log")]
        bases = sorted(int(s) for s in stems if s.isascii() and s.isdigit())
        if not bases:
            bases = [0]
        segments: list[Segment] = []
        try:
            for b in bases:
                segments.append(
                    Segment(directory, b, index_interval=log.config.index_interval, files=log.files)
                )
            for seg, nxt in zip(segments, bases[1:], strict=False):
                recover_sealed(seg, nxt, log.report)
        except BaseException:
            for seg in segments:
                seg.close()
            raise
        log._segments = segments
        log._bases = bases
        try:
            log._owed_cut = recover_active(segments[-1], log.report)
            fsync_dir(directory)
        except OSError as exc:  # a full disk: serve reads, heal when there is room
            log._failed = exc
        except BaseException:
            for seg in segments:
                seg.close()
            raise
        else:
            if log._owed_cut:
                log._failed = OSError("a torn tail waits for room for its side copy")
        for seg in segments[:-1]:
            if linked_marker(seg).exists():
                log.report.linked.extend(scan_links(seg))
        log._next_offset = log._end_offset = log._written_end = segments[-1].next_offset
        log._times.last = max(seg.max_ts for seg in segments)
        log._damage.track(segments)
        if log._failed is not None:
            with contextlib.suppress(RuntimeError):  # no loop: heal() is called by hand
                log._loop = asyncio.get_running_loop()
                log._start_healing()
        return log

    # -- damage ------------------------------------------------------------------

    @property
    def damage(self) -> list[Damage]:
        """The known bad ranges of this partition's segments, in offset order."""
        return list(self._damage.ranges)

    # -- appending ---------------------------------------------------------------

    def append(
        self,
        payloads: Sequence[bytes],
        timestamp_ms: int | None = None,
        ids: Sequence[str] | None = None,
        expect_end: int | None = None,
    ) -> asyncio.Future[int]:
        """Queue ``payloads`` as one batch; the future gives its base offset once acknowledged.

        Offsets are assigned now, in call order, so two appends made one after
        the other land in that order whatever their futures do. ``ids`` are not kept
        (one process: the hub's dedupe window is all there is). ``expect_end``: only
        at that offset, else :class:`~tidings.log.config.WrongEnd` (a Conflict).
        """
        if self._closing or self._failed is not None:
            raise StorageUnavailable(
                f"partition {self.directory} is {'closed' if self._closing else 'failed'}"
            )
        if not payloads:
            raise BadRequest("an append needs at least one record")
        if expect_end is not None and expect_end != self._next_offset:
            raise WrongEnd(expect_end, self._next_offset)
        ts = self._times.stamp(self.clock.time_ms() if timestamp_ms is None else timestamp_ms)
        base = self._next_offset
        frame = fmt.encode_batch(base, payloads, ts)
        return self._enqueue(frame, base, len(payloads), ts)

    def append_held(
        self, payloads: Sequence[bytes], link: bytes, timestamp_ms: int
    ) -> asyncio.Future[int]:
        """Queue one part of a linked batch (``link`` from :func:`~tidings.log.format.encode_link`).

        The future gives its base offset once written (fsynced under ``always``) and
        every part held before it here is released; it and every later record stay
        unreadable, and later appends unacknowledged, until :meth:`release` of that base.
        """
        self.check_appendable()
        base = self._next_offset
        ts = self._times.stamp(timestamp_ms)
        frame = fmt.encode_batch(base, payloads, ts, link)
        fut = self._enqueue(frame, base, len(payloads), ts)
        self._holds[base] = (base + len(payloads), fut)
        if self.policy.mode == "interval":
            self._last_linked = base
        return fut

    def check_appendable(self) -> None:
        """Raise :class:`~tidings.errors.StorageUnavailable` if an append would be refused."""
        if self._closing or self._failed is not None:
            raise StorageUnavailable(
                f"partition {self.directory} is {'closed' if self._closing else 'failed'}"
            )

    @property
    def last_ts(self) -> int:
        """The append time given last (-1 if none): the next one is at least this."""
        return self._times.last

    def horizon(self, now_ms: int) -> int:
        """A time H such that every record that becomes readable from now on has an
        append time of at least H: ``now_ms`` or the time of the oldest append given
        an offset but not readable yet (queued, unsynced or held), if earlier (see
        :meth:`AppendTimes.horizon <tidings.log.appendtimes.AppendTimes.horizon>`)."""
        return self._times.horizon(now_ms, self._end_offset)

    def _enqueue(self, frame: bytes, base: int, count: int, ts: int) -> asyncio.Future[int]:
        self._next_offset = base + count
        self._times.queued(base + count, ts, self._end_offset)
        self._queue.append((frame, base, count, ts))
        loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._waiting.append((fut, base))
        if self._writer is None and self._handle is None:
            if self.policy.mode == "always":
                self._writer = loop.create_task(self._write_and_sync())
                # A failure has refused the appends and logged itself (see _fail); a
                # flush that awaits the writer still gets it, the loop is not told again.
                self._writer.add_done_callback(_retrieve)
            else:
                # No fsync to wait for: a plain callback is cheaper than a task.
                self._handle = loop.call_soon(self._write_soon)
        return fut

    def _write_queued(self) -> tuple[int, list[tuple[asyncio.Future[int], int]]]:
        """Write everything queued; the end offset and the appends it acknowledges."""
        queue, self._queue = self._queue, []
        waiting, self._waiting = self._waiting, []
        try:
            self._write(queue)
        except BaseException as exc:
            self._waiting = waiting + self._waiting
            self._fail(exc)
            raise
        return queue[-1][1] + queue[-1][2], waiting

    def _acknowledge(self, end: int, waiting: list[tuple[asyncio.Future[int], int]]) -> None:
        if self._failed is not None:
            # Failed while this was written or fsynced (a linked part elsewhere, or
            # the interval fsync): refused, never read; healing cuts it.
            self._refuse(waiting, self._failed)
            return
        self._written_end = end
        if self._holds:
            self._blocked.extend(waiting)
            self._settle_held()
            return
        self._end_offset = end
        for fut, base in waiting:
            if not fut.done():
                fut.set_result(base)
        self._wake_readers()

    def _write_now(self) -> None:
        self._handle = None
        if self._queue:
            self._acknowledge(*self._write_queued())

    def _write_soon(self) -> None:
        """The loop's callback: a failure has refused the appends and logged itself
        (see _fail), so it goes no further (the loop would log it again)."""
        with contextlib.suppress(Exception):
            self._write_now()

    async def _write_and_sync(self) -> None:
        """Group commit: write what is queued, fsync once, acknowledge it all; repeat."""
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                end, waiting = self._write_queued()
                active = self._segments[-1].file
                try:
                    fd = active.pin()  # not closed for room while the thread uses it
                    try:
                        await loop.run_in_executor(None, FSYNC_STATS.fdatasync, fd)
                    finally:
                        active.unpin()
                except BaseException as exc:
                    self._waiting = waiting + self._waiting
                    self._fail(exc)
                    raise
                self.dirty = False
                self._acknowledge(end, waiting)
        finally:
            self._writer = None

    def _write(self, queue: list[tuple[bytes, int, int, int]]) -> None:
        """Write queued frames, rolling to a new segment where one fills up or ages."""
        seg = self._segments[-1]
        run: list[tuple[bytes, int, int, int]] = []
        run_bytes = 0
        for item in queue:
            if (seg.size or run) and self._should_roll(seg, run_bytes + len(item[0]), item[3]):
                if run:
                    seg.append_batches(run)
                    run, run_bytes = [], 0
                seg = self._roll()
            run.append(item)
            run_bytes += len(item[0])
        seg.append_batches(run)
        self.dirty = True

    def _should_roll(self, seg: Segment, adding: int, now: int) -> bool:
        if seg.size + adding > self.config.segment_bytes:
            return True
        age = self.config.segment_ms
        return age is not None and seg.created_ms is not None and now - seg.created_ms >= age

    def _roll(self) -> Segment:
        old = self._segments[-1]
        held = any(base < old.next_offset for base in self._holds)
        # Under "interval" a part released here may have parts elsewhere not yet
        # fsynced, while sealing syncs this one: a power loss then would keep it alone.
        # (Or in a later segment, one write rolling more than once: a mark too many
        # costs nothing, the flusher removes it.)
        unsynced = self._last_linked >= old.base_offset
        if held or unsynced:
            # A linked part in it may yet be torn: recovery must look at this one too.
            # The mark is durable before the segment is sealed and the next one made.
            mark = linked_marker(old)
            mark.touch()
            fsync_dir(self.directory)
            if not held:
                self._marks_to_clear.append(mark)
        old.seal()
        seg = Segment(
            self.directory,
            old.next_offset,
            index_interval=self.config.index_interval,
            files=self.files,
        )
        try:
            seg.on_damage = self._damage.found
            seg.open_indexes_for_append()
            fsync_dir(self.directory)
        except BaseException:
            seg.close()  # its files leave the pool; healing removes what is on disk
            raise
        self._segments.append(seg)
        self._bases.append(seg.base_offset)
        return seg

    def roll(self) -> None:
        """Seal the active segment and start a new one (if it holds anything)."""
        self._check_open()
        if self._segments[-1].size:
            self._roll()

    # -- durability --------------------------------------------------------------

    def pin_active(self) -> SegmentFile | None:
        """On the loop: the active segment's file, pinned open for :meth:`sync` in a
        thread (None if closed). The caller unpins it once the sync is done."""
        if not self._segments or self._closed:
            return None
        active = self._segments[-1].file
        active.pin()
        self.dirty = False  # what is written from now on needs the next sync
        return active

    def sync(self, active: SegmentFile) -> None:
        """fsync ``active`` (from :meth:`pin_active`); the interval flusher calls this
        from a thread.

        A failed fsync may have dropped the written pages: the partition stops
        taking appends (503) rather than acknowledge what may be gone, and fails
        (on the loop) every append waiting or held, as a failed write does.
        """
        try:
            FSYNC_STATS.fdatasync(active.fd)
        except OSError as exc:
            self._failed = exc  # appends are refused from now on
            if self._loop is not None:  # called from a worker thread: fail on the loop
                with contextlib.suppress(RuntimeError):  # the loop is gone: nothing waits
                    self._loop.call_soon_threadsafe(self._fail, exc)
            raise

    async def flush(self) -> None:
        """Wait for queued appends, then fsync whatever they wrote."""
        if self._handle is not None:
            self._handle.cancel()
            self._write_now()
        while self._writer is not None:
            await asyncio.shield(self._writer)
        if self.dirty:
            await self.sync_in_thread()

    async def sync_in_thread(self) -> None:
        """fsync the active segment in a worker thread, its file pinned meanwhile."""
        active = self.pin_active()
        if active is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.sync, active)
            finally:
                active.unpin()

    async def close(self) -> None:
        """Finish queued appends, fsync, seal nothing, close files."""
        if self._closed or self._closing:
            return
        self._closing = True  # appends from now on are refused
        if self._healer is not None:
            self._healer.cancel()
        try:
            await self.flush()
        finally:
            self._closed = True
            for seg in self._segments:
                seg.close()
            self._wake_readers()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageUnavailable(f"partition {self.directory} is closed")

    # -- reading -----------------------------------------------------------------

    async def read(
        self, offset: int, max_records: int = 1000, max_bytes: int = 1 << 20
    ) -> list[LogRecord]:
        """:meth:`read_now` for the storage seam: it never yields to the loop."""
        return self.read_now(offset, max_records, max_bytes)

    def read_now(
        self, offset: int, max_records: int = 1000, max_bytes: int = 1 << 20
    ) -> list[LogRecord]:
        """Acknowledged records from ``offset``, in order, at least one if any."""
        self._check_open()
        if offset < self.start_offset or offset > self._end_offset:
            raise OffsetOutOfRange(
                f"offset {offset} is outside [{self.start_offset}, {self._end_offset}]",
                start=self.start_offset,
                end=self._end_offset,
            )
        out: list[LogRecord] = []
        i = bisect_right(self._bases, offset) - 1
        while i < len(self._segments) and offset < self._end_offset and len(out) < max_records:
            seg = self._segments[i]
            got = seg.read(offset, self._end_offset, max_records - len(out), max_bytes)
            if out and got and len(got[0][2]) > max_bytes:
                break  # a segment always gives one record; only a read's first may overflow
            if got:
                out.extend(got)
                offset = got[-1][0] + 1
                max_bytes -= sum(len(r[2]) for r in got)
                if max_bytes <= 0:
                    break
            if offset < seg.next_offset and got:
                continue  # the segment had more than the budget allowed
            i += 1
        return out

    async def offset_for_time(self, ts_ms: int) -> int:
        """:meth:`offset_for_time_now` for the storage seam: it never yields."""
        return self.offset_for_time_now(ts_ms)

    def offset_for_time_now(self, ts_ms: int) -> int:
        """The first offset whose append time is at or after ``ts_ms`` (the end if none)."""
        self._check_open()
        end = self._end_offset
        for seg in self._segments:
            if seg.max_ts < ts_ms or seg.base_offset >= end:
                continue
            offset = seg.offset_for_time(ts_ms)
            while offset < min(seg.next_offset, end):
                got = seg.read(offset, end, 10_000, 1 << 24)
                if not got:
                    break
                for rec in got:
                    if rec[1] >= ts_ms:
                        return rec[0]
                offset = got[-1][0] + 1
        return end

    async def wait(self, offset: int, timeout: float | None = None) -> bool:
        """Wait until a record at ``offset`` is visible; False on timeout or close."""
        loop = asyncio.get_running_loop()
        # One deadline for the whole wait: appends short of ``offset`` must not restart it.
        deadline = None if timeout is None else loop.time() + timeout
        while self._end_offset <= offset:
            if self._closed:
                return False
            fut: asyncio.Future[None] = loop.create_future()
            self._readers.append(fut)
            try:
                await asyncio.wait_for(fut, None if deadline is None else deadline - loop.time())
            except TimeoutError:
                return self._end_offset > offset
            finally:
                if fut in self._readers and not fut.done():
                    self._readers.remove(fut)
        return True

    # -- retention ---------------------------------------------------------------

    async def apply_retention(self, now_ms: int | None = None) -> int:
        """:meth:`apply_retention_now` for the storage seam: it never yields."""
        return self.apply_retention_now(now_ms)

    def apply_retention_now(self, now_ms: int | None = None) -> int:
        """Delete whole sealed segments past the age or size limits; returns how many.

        The active segment is rolled first if it is old enough, as Kafka's
        ``segment.ms`` does, so that retention by age can reach its records.
        """
        self._check_open()
        now = self.clock.time_ms() if now_ms is None else now_ms
        active = self._segments[-1]
        if active.size and self._should_roll(active, 0, now) and self._writer is None:
            self._roll()
        removed = 0
        total = self.size_bytes
        cfg = self.config
        while len(self._segments) > 1:
            seg = self._segments[0]
            too_old = cfg.retention_ms is not None and seg.max_ts < now - cfg.retention_ms
            too_big = cfg.retention_bytes is not None and total - seg.size >= cfg.retention_bytes
            if not (too_old or too_big):
                break
            total -= seg.size
            seg.delete()
            linked_marker(seg).unlink(missing_ok=True)
            del self._segments[0], self._bases[0]
            removed += 1
        if removed:
            fsync_dir(self.directory)
            self._damage.keep_segments({seg.path.name for seg in self._segments})
        return removed


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a finished writer's exception as seen (see _enqueue)."""
    if not task.cancelled():
        task.exception()
