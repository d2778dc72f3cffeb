"""The partition's side of a compaction: which segments it may rewrite, and the switch.

A pass (see :mod:`tidings.log.compaction`) rewrites only segments that are sealed
(fsynced whole), every record in them acknowledged, and below any segment with a
linked part recovery may yet cut; a failed or closing partition offers none. Its
rewrite is renamed over the old segment on the event loop, together with the
switch of the partition's :class:`~tidings.log.segment.Segment`, so no read sees
the new file through the old indexes.
"""

from __future__ import annotations

import os

from tidings.log.compaction import Rewritten
from tidings.log.partstate import PartitionState
from tidings.log.recovery import linked_marker, recover_sealed
from tidings.log.segment import Segment


class CompactionHooks(PartitionState):
    """What a compaction asks of a partition: a part of
    :class:`~tidings.log.partition.PartitionLog`."""

    def compactable(self) -> list[Segment]:
        """The sealed segments a compaction may rewrite now (see
        :mod:`tidings.log.compaction`): fsynced whole, every record in them
        acknowledged, and below any segment with a linked part recovery may yet cut."""
        if self._closing or self._closed or self._failed is not None:
            return []
        if self.owes_cut or self.report.linked:
            return []
        first_hold = min(self._holds, default=self._end_offset)
        out: list[Segment] = []
        for seg in self._segments[:-1]:
            if seg.next_offset > min(self._end_offset, first_hold):
                break
            if linked_marker(seg).exists():
                break
            out.append(seg)
        return out

    def replace_segment(self, old: Segment, done: Rewritten) -> bool:
        """Rename a compaction's rewrite of ``old`` over it and read the new file from
        now on; False (nothing done) if ``old`` is gone (retention, a close)."""
        if self._closing or self._closed or not any(s is old for s in self._segments):
            return False
        os.replace(done.tmp_log, old.path)
        i = self._segments.index(old)
        old.close()
        try:
            new = Segment(
                self.directory, old.base_offset,
                index_interval=self.config.index_interval, files=self.files,
            )  # fmt: skip
        except BaseException:
            # The old object must not read the new file through the old indexes.
            recover_sealed(old, old.next_offset, self.report)
            raise
        new.adopt_indexes(
            old.next_offset, done.idx_offsets, done.idx_positions,
            done.tidx_ts, done.tidx_offsets, done.created_ms,
        )  # fmt: skip
        new.damage = {d.position: d for d in done.damage}
        new.on_damage = self._damage.found
        self._segments[i] = new
        self._damage.rewritten(old.path.name, done.damage)
        return True
