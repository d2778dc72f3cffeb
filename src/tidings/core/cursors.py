"""A consumer group's position in one partition: what is done, what is pending.

``committed`` is the durable position: every offset below it is done
(acknowledged or dead-lettered). Offsets done above it wait in ``done_above``
until the gap closes, so an acknowledgement out of order is never lost; they are
kept as ranges (:class:`~tidings.core.offsetranges.OffsetRanges`), so a run of
offsets a compaction removed, or damage lost, costs one range however long it
is. ``pending`` holds the records read and not done, ``restored`` what a save
before a restart said of the records not read again yet.

Sans I/O, like :mod:`tidings.core.groups`, which keeps one :class:`Cursor` per
partition of its topic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidings.core.offsetranges import OffsetRanges

DEAD = ""
"""The lease of a record being appended to the dead-letter topic: never acked by a
client, never expiring; done only once that append is durable."""

SavedCursor = tuple[int, list[int | tuple[int, int]], list[tuple[int, int, int]]]
"""``(committed, done_above, [(offset, deliveries, due_ms)])``, as a group saves it."""


@dataclass(slots=True)
class Pending:
    """A record read from the log and not yet done."""

    offset: int
    payload: bytes
    type: str
    key: str | None
    deliveries: int = 0
    due_ms: int = 0  # when it may be leased (again)
    lease: str | None = None  # the live lease, if leased
    expires_ms: int = 0
    dlq_from: int | None = None  # being copied to the dead-letter topic at this offset or later


@dataclass(slots=True)
class Cursor:
    committed: int
    fetched: int
    done_above: OffsetRanges = field(default_factory=OffsetRanges)
    pending: dict[int, Pending] = field(default_factory=dict)
    keys: dict[str, list[int]] = field(default_factory=dict)  # key -> pending offsets, in order
    # Saved before a restart and not read again yet: offset -> (deliveries, due_ms).
    restored: dict[int, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def load(cls, saved: Sequence[Any]) -> Cursor:
        """A cursor from ``(committed, done_above)`` or, as :meth:`saved` gives it,
        ``(committed, done_above, [(offset, deliveries, due_ms)])``; ``done_above``
        as :meth:`OffsetRanges.saved` gives it or, as older versions saved it, a
        list of offsets."""
        above = OffsetRanges.load(saved[1], at_least=int(saved[0]))
        c = above.pop_run(int(saved[0]))
        retries = saved[2] if len(saved) > 2 else ()
        return cls(
            committed=c,
            fetched=c,
            done_above=above,
            restored={
                int(o): (int(n), int(due))
                for o, n, due in retries
                if o >= c and o not in above and n > 0
            },
        )

    def saved(
        self,
        partition: int,
        finished: set[int] | None = None,
        due: Mapping[tuple[int, int], tuple[int, int]] | None = None,
    ) -> SavedCursor:
        """The durable state of this cursor (of ``partition``), as
        :meth:`~tidings.core.groups.ConsumerGroup.positions` describes it, with the
        offsets in ``finished`` done and the ``(partition, offset)`` records in
        ``due`` given these ``(deliveries, due_ms)``; changes nothing."""
        committed, above = self.committed, self.done_above
        if finished:
            above = above.copy()
            for o in finished:
                above.add(o, o + 1)
            committed = above.pop_run(committed)
        retries = [(o, n, t) for o, (n, t) in self.restored.items()]
        for o, r in self.pending.items():
            if finished and o in finished:
                continue
            if due is not None and (partition, o) in due:
                n, t = due[(partition, o)]
                if n:
                    retries.append((o, n, t))
            elif r.lease == DEAD and r.dlq_from is not None:
                retries.append((o, r.deliveries, -1 - r.dlq_from))
            elif r.deliveries:
                retries.append((o, r.deliveries, r.due_ms if r.lease is None else 0))
        return (committed, above.saved(), sorted(retries))

    def undone(self, offset: int) -> bool:
        """Whether the record at ``offset`` is still owed."""
        return offset >= self.committed and offset not in self.done_above

    def done(self, offset: int) -> None:
        """The record at ``offset`` is done: the position moves past it once every
        offset before it is done too."""
        rec = self.pending.pop(offset, None)
        if rec is not None and rec.key is not None and rec.key in self.keys:
            offsets = self.keys[rec.key]
            offsets.remove(offset)
            if not offsets:
                del self.keys[rec.key]
        if offset == self.committed:
            self.committed = self.done_above.pop_run(offset + 1)
        elif offset > self.committed:
            self.done_above.add(offset, offset + 1)

    def mark_done(self, first: int, end: int) -> int:
        """Mark every offset of the range not done yet done; how many. A record read
        from the range stays pending: the runs between such records are done, each
        as one range (never offset by offset: a gap may span millions)."""
        lo = max(first, self.committed)
        if lo >= end:
            return 0
        n = 0
        for held in [*sorted(o for o in self.pending if lo <= o < end), end]:
            n += self.done_above.add(lo, held)
            lo = held + 1
        self.committed = self.done_above.pop_run(self.committed)
        self.fetched = max(self.fetched, end)
        return n

    def index_keys(self, by_key: bool) -> None:
        """Index the pending records by key if ``by_key`` (``ordering: key``), else not."""
        self.keys.clear()
        if by_key:
            for offset, rec in sorted(self.pending.items()):
                if rec.key is not None:
                    self.keys.setdefault(rec.key, []).append(offset)

    def clamp(self, start_offset: int, end_offset: int | None = None) -> bool:
        """Move past offsets that retention deleted, and back from beyond the log's end
        (its tail lost to a power cut, say; as Kafka's reset). True if it moved."""
        if self.committed < start_offset:
            self.reset(start_offset)
            return True
        if end_offset is not None and self.committed > end_offset:
            self.reset(end_offset)
            return True
        if end_offset is not None and (
            (self.done_above.end or 0) > end_offset or any(o >= end_offset for o in self.restored)
        ):
            # Acked or delivered past an end a power cut took back: the offsets there
            # will hold new records, which this group has never seen.
            self.done_above.drop_from(end_offset)
            self.restored = {o: r for o, r in self.restored.items() if o < end_offset}
            return True
        return False

    def reset(self, offset: int) -> None:
        """Start over at ``offset``: nothing done above it, nothing pending."""
        self.committed = self.fetched = offset
        self.done_above.clear()
        self.pending.clear()
        self.keys.clear()
        self.restored.clear()
