"""Linked parts held in one partition until their publish is whole.

A part of a linked batch (one publish over several partitions, see
:mod:`tidings.log.linked`), queued by
:meth:`~tidings.log.partition.PartitionLog.append_held`, is held: it and every
record after it stay unreadable, and the appends after it unacknowledged, until
the publish is whole in every partition and :meth:`LinkedHolds.release` is
called. A failure drops every hold (see :mod:`tidings.log.healing`).

Segments rolled with a part in them that may yet be torn are marked ``.linked``
for recovery to look at; the marks go once every linked batch recovery found is
whole or cut, or, under ``interval``, once a flush round has synced every
partition (:meth:`LinkedHolds.take_linked_marks`).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from pathlib import Path

from tidings.log import format as fmt
from tidings.log.partstate import PartitionState
from tidings.log.recovery import linked_marker
from tidings.log.segment import fsync_dir


class LinkedHolds(PartitionState):
    """Holding and releasing linked parts: a part of
    :class:`~tidings.log.partition.PartitionLog`."""

    def holding(self, base: int) -> bool:
        """Whether the part at ``base`` is still held on a healthy partition: released,
        it would be readable (a failure drops every hold and refuses the part)."""
        return self._failed is None and base in self._holds

    def release(self, base: int) -> bool:
        """The linked batch whose part starts at ``base`` is whole: let it be read.

        False if the hold was gone or the partition failed: nothing was released.
        """
        if self._holds.pop(base, None) is None or self._failed is not None:
            return False
        self._settle_held()
        return True


    def _settle_held(self) -> None:
        """Acknowledge what is written before the first held part, and that part once
        it is written (its records stay unreadable until :meth:`release`).

        A held part after it waits: its publish, released, would be acknowledged
        while the part stood behind one that a crash (or a failure) can still cut,
        and recovery cuts what follows a torn part, so it must never have been
        acknowledged. Offsets are taken in call order in every partition, so the
        first held part never waits on a later one.
        """
        if self._failed is not None:
            return
        written = self._written_end
        holds = self._holds
        first = min(holds) if holds else written
        visible = min(written, first)
        keep: list[tuple[asyncio.Future[int], int]] = []
        for fut, base in self._blocked:
            held = holds.get(base) if base == first else None
            if base < visible or (held is not None and held[1] is fut and held[0] <= written):
                if not fut.done():
                    fut.set_result(base)
            else:
                keep.append((fut, base))
        self._blocked = keep
        if visible > self._end_offset:
            self._end_offset = visible
            self._wake_readers()


    def link_at(self, offset: int) -> fmt.Link | None:
        """The link of the linked batch that starts at ``offset``, if one does."""
        if not (self.start_offset <= offset < self._next_offset):
            return None
        return self._segments[bisect_right(self._bases, offset) - 1].link_at(offset)

    def take_linked_marks(self) -> list[Path]:
        """The marks of segments rolled under ``interval`` with released linked parts in
        them, handed to a flush round that starts now: once it has fsynced every dirty
        partition, every part written before it is durable, and the marks may go."""
        marks, self._marks_to_clear = self._marks_to_clear, []
        return marks

    def forget_linked_markers(self) -> None:
        """Every linked batch recovery found is whole or cut: drop the segments' marks."""
        marks = [linked_marker(seg) for seg in self._segments]
        if any(m.exists() for m in marks):
            for m in marks:
                m.unlink(missing_ok=True)
            fsync_dir(self.directory)
        self.report.linked = []
