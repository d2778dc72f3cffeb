"""A partition that failed a write: it refuses appends until it heals.

A write or fsync that fails (a full disk, say) fails the appends it carried, and
every append waiting or held, and the partition refuses appends (503) while it
is *failed*; it then tries every ``HEAL_S`` to cut itself back to what it
acknowledged and to find room for more, and takes appends again once it can,
with no restart.

The cuts start-up owes are made here too: a torn linked batch
(:meth:`Healing.cut_from`, from :func:`tidings.log.linked.resolve`), or a torn
tail whose side copy found no room. A cut that cannot be made yet leaves the
partition failed, read up to the cut, until healing makes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from bisect import bisect_right
from pathlib import Path

from tidings.errors import CorruptLog, StorageUnavailable
from tidings.log.partstate import PartitionState
from tidings.log.recovery import cut_back, cut_tail, linked_marker, recover_active
from tidings.log.segment import fsync_dir

logger = logging.getLogger("tidings.log")

HEAL_S = 0.5
"""How often a failed partition tries to heal."""

_ROOM_BYTES = 1 << 20
"""The free space a failed partition must find (by reserving it) before it takes appends."""


class Healing(PartitionState):
    """Failing, healing and the cuts start-up owes: a part of
    :class:`~tidings.log.partition.PartitionLog`."""

    @property
    def failure(self) -> str | None:
        """Why appends are refused now (a write that failed); None when healthy."""
        return None if self._failed is None else str(self._failed) or type(self._failed).__name__

    def fail(self, exc: BaseException) -> None:
        """Refuse appends and fail every append waiting or held here: a linked batch
        with a part here could not be written whole. Healing (every ``HEAL_S``) cuts
        the partition back to what it acknowledged, the part with it."""
        self._fail(exc)

    def _refuse(self, waiting: list[tuple[asyncio.Future[int], int]], exc: BaseException) -> None:
        err = StorageUnavailable(f"write to {self.directory} failed: {exc}")
        for fut, _ in waiting:
            if not fut.done():
                fut.set_exception(err)

    def _fail(self, exc: BaseException) -> None:
        self._failed = exc
        self._refuse(self._waiting + self._blocked, exc)
        self._waiting = []
        self._blocked = []
        self._holds.clear()
        self._queue = []
        self._times.refused()  # never readable, cut by healing
        logger.error(
            "partition %s failed: %s; refusing appends until it heals", self.directory, exc
        )
        self._start_healing()

    # -- healing -----------------------------------------------------------------

    def _heal_later(self) -> None:
        """Heal in the background if a loop runs (else :meth:`heal` is called by hand)."""
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
            self._start_healing()

    def _start_healing(self) -> None:
        if self._healer is None and not self._closing and self._loop is not None:
            self._healer = self._loop.create_task(self._heal_until_healed())

    async def _heal_until_healed(self) -> None:
        try:
            while self._failed is not None and not self._closing:
                await asyncio.sleep(HEAL_S)
                if self._writer is None and not self._closing:
                    self.heal()
        finally:
            self._healer = None

    def heal(self) -> bool:
        """Try once to leave the failed state; True if the partition takes appends again.

        Everything past the acknowledged end was refused to its appenders (503),
        so it is cut off without a side copy; a torn tail found at open, or a torn
        linked batch :meth:`cut_from` could not cut, is cut with its side copy. Then
        room for more is reserved and released: only a partition that can write
        again says it is healthy.
        """
        if self._failed is None:
            return True
        if self._closing or self._writer is not None or self._handle is not None or self._queue:
            return False  # a write is still under way: its outcome first
        try:
            if self._owed_link_cut is not None:  # a torn linked batch found at start-up
                self._cut_from(*self._owed_link_cut)
                self._owed_link_cut = None
            end = self._end_offset
            # Segments a failed write rolled to hold nothing acknowledged, and the
            # files of one whose roll failed halfway.
            while len(self._segments) > 1 and self._bases[-1] > end:
                gone = self._segments.pop()
                gone.delete()
                linked_marker(gone).unlink(missing_ok=True)
                self._bases.pop()
            kept = set(self._bases)
            for path in self.directory.glob("*.log"):
                base = int(path.stem) if path.stem.isascii() and path.stem.isdigit() else -1
                if base > end and base not in kept:
                    for suffix in (".index", ".timeindex", ".log"):
                        path.with_suffix(suffix).unlink(missing_ok=True)
            seg = self._segments[-1]
            if self._owed_cut:
                cut_tail(seg, seg.size, "torn tail found at open", self.report, keep=True)
                self._owed_cut = False
            else:
                cut_tail(seg, cut_back(seg, end), "refused appends", self.report, keep=False)
            seg.sealed = False
            seg.close_indexes()
            seg.open_indexes_for_append()
            fsync_dir(self.directory)
            _reserve_room(self.directory)
        except OSError as exc:
            logger.debug("partition %s not healed yet: %s", self.directory, exc)
            self._failed = exc
            return False
        self._next_offset = self._written_end = end
        self.dirty = False
        self._failed = None
        logger.warning("partition %s healed: taking appends again from offset %d",
                       self.directory, end)
        return True

    # -- cuts owed ---------------------------------------------------------------

    def cut_from(self, offset: int, why: str) -> None:
        """Cut the batch that starts at ``offset`` and everything after it, keeping the
        bytes in side files: a torn linked batch, found at start-up before any append.

        If the cut cannot be made (a full disk: no room for a side copy), the
        partition reads up to ``offset`` only, refuses appends (failed), and healing
        finishes the cut once there is room.
        """
        if offset >= self._next_offset:
            return
        try:
            self._cut_from(offset, why)
        except OSError as exc:
            self._owed_link_cut = (offset, why)
            self._end_offset = min(self._end_offset, offset)
            self._failed = exc
            logger.error(
                "linked batch at offset %d of %s not cut yet (%s): %s; reads stop before it",
                offset, self.directory, why, exc,
            )
            self._heal_later()

    def _cut_from(self, offset: int, why: str) -> None:
        """:meth:`cut_from`, which may stop at any step with OSError and be called again."""
        i = bisect_right(self._bases, offset) - 1
        seg = self._segments[i]
        position = seg.position_of(offset)
        if position is None and self._owed_link_cut == (offset, why):
            position = os.fstat(seg.fd).st_size  # a retry: this segment was cut already
        if position is None:
            raise CorruptLog(
                f"no batch starts at offset {offset}", file=str(seg.path), position=0
            )
        while len(self._segments) > i + 1:  # the last first: each step may be retried
            later = self._segments[-1]
            cut_tail(later, 0, why, self.report, keep=True)
            later.delete()
            linked_marker(later).unlink(missing_ok=True)
            self._segments.pop()
            self._bases.pop()
        cut_tail(seg, position, why, self.report, keep=True)
        # Damage in what was cut went with it (the bytes are in the side files).
        seg.damage = {at: d for at, d in seg.damage.items() if at < position}
        kept = [found for found in self.report.linked if found[0] < offset]
        seg.sealed = False
        # Rebuilds its indexes, open for appends again; a tail it cannot cut is owed.
        owed = recover_active(seg, self.report)
        self.report.linked = kept
        fsync_dir(self.directory)
        if owed:
            self._owed_cut = True
            self._failed = OSError("a torn tail waits for room for its side copy")
            self._heal_later()
        self._next_offset = self._end_offset = self._written_end = seg.next_offset
        self._damage.cut(seg.path.name, position, {later.path.name for later in self._segments})


def _reserve_room(directory: Path) -> None:
    """Raise OSError unless ``_ROOM_BYTES`` can be allocated in ``directory``."""
    probe = directory / ".room"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, _ROOM_BYTES)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
