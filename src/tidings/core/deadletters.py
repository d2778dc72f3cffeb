"""A consumer group's dead letters: copied to the dead-letter topic, then done.

A record that runs out of deliveries is held for the dead-letter topic (its
lease is :data:`~tidings.core.cursors.DEAD`): neither leased again nor done
until its copy there is durable (:meth:`DeadLettering.settle`); a copy that
fails makes it due again (:meth:`DeadLettering.unsettle`). Before the append the
hub marks the records with the dead-letter topic's end offset, which the group
saves; after a restart the hub reads that topic from there
(:meth:`DeadLettering.dying_since`), and the records it finds copied are done,
the others copied again (:meth:`DeadLettering.dead_lettered_before`), so none
is copied twice or lost.

Sans I/O, a part of :class:`~tidings.core.groups.ConsumerGroup`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from tidings.core.cursors import DEAD, Cursor


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    payload: bytes
    deliveries: int
    reason: str



class DeadLettering:
    """Marking, settling and finding again a group's dead letters."""

    _cursors: dict[int, Cursor]
    dead_lettered: int  # the records copied to the dead-letter topic, and so done

    def mark_dead_letters(self, dead: Sequence[DeadLetter], dlq_from: int) -> None:
        """``dead`` are about to be appended to the dead-letter topic, at ``dlq_from`` or later."""
        for d in dead:
            c = self._cursors.get(d.partition)
            rec = c.pending.get(d.offset) if c else None
            if rec is not None and rec.lease == DEAD:
                rec.dlq_from = dlq_from

    def dying_since(self) -> int | None:
        """The lowest dead-letter offset a copy saved before a restart may be at."""
        marks = [-1 - t for c in self._cursors.values() for _, t in c.restored.values() if t < 0]
        return min(marks) if marks else None

    def dead_lettered_before(self, copied: Collection[tuple[int, int]]) -> None:
        """Of the records saved as being copied to the dead-letter topic, those
        ``(partition, offset)`` in ``copied`` made it: they are done. The others are
        due at once, to be copied again."""
        for p, c in self._cursors.items():
            for o, (n, t) in list(c.restored.items()):
                if t >= 0:
                    continue
                if (p, o) in copied:
                    del c.restored[o]
                    c.done(o)
                    self.dead_lettered += 1
                else:
                    c.restored[o] = (n, 0)
            c.fetched = max(c.fetched, c.committed)

    def settle(self, dead: Sequence[DeadLetter]) -> None:
        """The dead letters are durable in the dead-letter topic: their records are done."""
        for d in dead:
            c = self._cursors.get(d.partition)
            rec = c.pending.get(d.offset) if c else None
            if c is not None and rec is not None and rec.lease == DEAD:
                c.done(d.offset)
                self.dead_lettered += 1

    def unsettle(self, dead: Sequence[DeadLetter]) -> None:
        """The dead-letter append failed: the records are due again (to be tried again)."""
        for d in dead:
            c = self._cursors.get(d.partition)
            rec = c.pending.get(d.offset) if c else None
            if rec is not None and rec.lease == DEAD:
                rec.lease = None
                rec.due_ms = 0
                rec.dlq_from = None
