"""The state of one partition's log, which every part of a partition shares.

:class:`~tidings.log.partition.PartitionLog` is this state and a part per idea:
the writer, reads and retention (:mod:`tidings.log.partition`), healing after a
failed write and the cuts start-up owes (:mod:`tidings.log.healing`), linked
parts held until their publish is whole (:mod:`tidings.log.holds`), and the
segments compaction may rewrite (:mod:`tidings.log.compactable`).

A partition's offsets, each at most the next: ``start_offset``, the first kept
(retention removes whole segments); ``end_offset``, acknowledged and readable,
so no reader sees a record a crash could take back; the end written (and
fsynced under ``always``), held or not; ``next_offset``, the offset the next
append gets (every one below it is assigned, queued appends included).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tidings.log.appendtimes import AppendTimes
from tidings.log.config import Clock, FsyncPolicy, LogConfig
from tidings.log.files import OpenFiles, shared_files
from tidings.log.knowndamage import KnownDamage
from tidings.log.recovery import RecoveryReport
from tidings.log.segment import Segment


class PartitionState:
    """What a partition knows: its segments, offsets, queue, holds and failure."""

    def __init__(
        self,
        directory: Path,
        config: LogConfig,
        policy: FsyncPolicy,
        clock: Clock,
        files: OpenFiles | None = None,
    ) -> None:
        self.directory = directory
        self.files = shared_files() if files is None else files
        self.config = config
        self.policy = policy
        self.clock = clock
        self.report = RecoveryReport()
        self._segments: list[Segment] = []
        self._bases: list[int] = []
        self._next_offset = 0  # assigned, including queued appends
        self._end_offset = 0  # acknowledged and visible
        self._queue: list[tuple[bytes, int, int, int]] = []  # frame, base, count, ts
        self._waiting: list[tuple[asyncio.Future[int], int]] = []
        # Linked parts not yet whole: base -> (end, the part's future). While any is
        # held, appends written after it wait in _blocked, written but unreadable.
        self._holds: dict[int, tuple[int, asyncio.Future[int]]] = {}
        self._blocked: list[tuple[asyncio.Future[int], int]] = []
        self._written_end = 0  # written (and fsynced under "always"), held or not
        self._times = AppendTimes()
        self._writer: asyncio.Task[None] | None = None  # under "always"
        self._handle: asyncio.Handle | None = None  # under "interval" and "never"
        self._readers: list[asyncio.Future[None]] = []
        self._closed = False
        self._closing = False
        self._failed: BaseException | None = None
        self._owed_cut = False  # a torn tail found at open whose side copy failed
        self._owed_link_cut: tuple[int, str] | None = None  # cut_from that failed: offset, why
        self._healer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dirty = False  # written since the last fsync
        self._damage = KnownDamage(directory)
        # Under "interval": the base offset of the last linked part queued, and the
        # marks of segments rolled with released parts in them, which the next whole
        # flush round makes needless (see take_linked_marks).
        self._last_linked = -1
        self._marks_to_clear: list[Path] = []

    # -- positions ---------------------------------------------------------------

    @property
    def start_offset(self) -> int:
        """The first offset still kept."""
        return self._bases[0]

    @property
    def end_offset(self) -> int:
        """One past the last acknowledged record: the next offset a reader waits for."""
        return self._end_offset

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def next_offset(self) -> int:
        """The offset the next append gets."""
        return self._next_offset

    @property
    def owes_cut(self) -> bool:
        """Whether a cut found needed at start-up is still to be made (see
        :meth:`~tidings.log.healing.Healing.heal`)."""
        return self._owed_cut or self._owed_link_cut is not None

    def _wake_readers(self) -> None:
        readers, self._readers = self._readers, []
        for fut in readers:
            if not fut.done():
                fut.set_result(None)
