"""Consumer groups, sans I/O: records and commands in, deliveries and dead letters out.

Rules, per partition of the group's topic:

- ``committed`` is the group's durable position: every offset below it is done
  (acknowledged or dead-lettered). Offsets done above it wait in ``done_above``
  until the gap closes, so an acknowledgement out of order is never lost.
- A fetch leases records: first those due for redelivery, then new ones read
  from the log through the ``read`` function it is given. A lease lasts
  ``ack_wait``; one that runs out is due for redelivery at once.
- ``ack`` marks a leased record done. ``nack`` makes it due after ``delay``.
- A record delivered ``max_deliver`` times that runs out or is nacked again is
  not delivered once more: it is handed out as a :class:`DeadLetter` and done.
- With ``ordering: key`` a record is not leased while an earlier record with the
  same ``partitionkey`` is still pending.
- Every lease names its partition, offset, delivery and the group's epoch, so an
  ack of a lease that expired, was re-leased or came from before a restart is
  refused as stale.
- Offsets lost to damage on disk are never delivered: the hub hands them to
  ``skip``, which makes them done and keeps a note of the range in ``skipped``.

Nothing here awaits or touches a socket or a file; the hub pumps it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from tidings.core.patterns import TypeFilter
from tidings.core.positions import is_decimal
from tidings.errors import BadRequest, StaleLease

ReadFn = Callable[[int, int, int], Sequence[tuple[int, int, bytes]]]
"""read(partition, offset, max_records) -> [(offset, timestamp_ms, payload)]"""

# The lease of a record being appended to the dead-letter topic: never acked by a
# client, never expiring; done only once that append is durable (settle()).
_DEAD = ""
_NEVER = 1 << 62

# How many records a partition may hold read but not leased (filtered out by a
# fetch's types, or waiting behind their key).
_READY_LIMIT = 10_000

# How many skipped ranges a group remembers for its status.
_SKIPPED_KEPT = 100


@dataclass(frozen=True, slots=True)
class GroupConfig:
    start: Literal["earliest", "latest"] = "earliest"
    ack_wait_ms: int = 30_000
    max_deliver: int = 5
    dead_letter_topic: str | None = None
    ordering: Literal["none", "key"] = "none"
    types: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "ack_wait": self.ack_wait_ms / 1000,
            "max_deliver": self.max_deliver,
            "dead_letter_topic": self.dead_letter_topic,
            "ordering": self.ordering,
            "types": list(self.types),
        }


@dataclass(slots=True)
class _Pending:
    """A record read from the log and not yet done."""

    offset: int
    payload: bytes
    type: str
    key: str | None
    deliveries: int = 0
    due_ms: int = 0  # when it may be leased (again)
    lease: str | None = None  # the live lease, if leased
    expires_ms: int = 0


@dataclass(frozen=True, slots=True)
class Delivery:
    partition: int
    offset: int
    payload: bytes
    lease: str
    deliveries: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    payload: bytes
    deliveries: int
    reason: str


@dataclass(slots=True)
class _Cursor:
    committed: int
    fetched: int
    done_above: set[int] = field(default_factory=set)
    pending: dict[int, _Pending] = field(default_factory=dict)
    keys: dict[str, list[int]] = field(default_factory=dict)  # key -> pending offsets, in order


class ConsumerGroup:
    """One group's state over the partitions of one topic."""

    def __init__(
        self,
        topic: str,
        name: str,
        config: GroupConfig,
        positions: Mapping[int, tuple[int, Iterable[int]]],
    ) -> None:
        self.topic = topic
        self.name = name
        self.config = config
        self.epoch = secrets.token_hex(4)
        self._filter = TypeFilter(config.types)
        self._cursors = {
            p: _Cursor(committed=c, fetched=c, done_above={o for o in above if o >= c})
            for p, (c, above) in positions.items()
        }
        self._rotate = 0
        self.skipped: list[tuple[int, int, int, str]] = []  # the latest (p, first, end, why)
        self.skipped_events = 0
        self.redelivered = 0
        self.dead_lettered = 0
        self.delivered = 0

    # -- state for the hub -------------------------------------------------------

    @property
    def partitions(self) -> list[int]:
        return sorted(self._cursors)

    def positions(self) -> dict[int, tuple[int, list[int]]]:
        """The durable state: per partition, ``committed`` and the offsets done above it."""
        return {p: (c.committed, sorted(c.done_above)) for p, c in self._cursors.items()}

    def committed(self, partition: int) -> int:
        return self._cursors[partition].committed

    def fetched(self, partition: int) -> int:
        return self._cursors[partition].fetched

    def in_flight(self, partition: int | None = None) -> int:
        cursors = self._cursors.values() if partition is None else [self._cursors[partition]]
        return sum(1 for c in cursors for r in c.pending.values() if r.lease is not None)

    def next_due_ms(self, after_ms: int | None = None) -> int | None:
        """The earliest time a lease runs out or a nacked record comes due (after ``after_ms``)."""
        due = [
            r.expires_ms if r.lease is not None else r.due_ms
            for c in self._cursors.values()
            for r in c.pending.values()
            if r.lease is not None or r.deliveries
        ]
        if after_ms is not None:
            due = [d for d in due if d > after_ms]
        return min(due) if due else None

    def has_due_retry(self, now_ms: int) -> bool:
        """Whether a record delivered before and not leased now is due again."""
        return any(
            r.lease is None and r.deliveries and r.due_ms <= now_ms
            for c in self._cursors.values()
            for r in c.pending.values()
        )

    def hurry(self, now_ms: int) -> int:
        """Make every record waiting out a nack's delay due now; how many there were."""
        n = 0
        for c in self._cursors.values():
            for r in c.pending.values():
                if r.lease is None and r.due_ms > now_ms:
                    r.due_ms = now_ms
                    n += 1
        return n

    def add_partitions(self, positions: dict[int, int]) -> None:
        for p, start in positions.items():
            self._cursors.setdefault(p, _Cursor(committed=start, fetched=start))

    def clamp(self, partition: int, start_offset: int, end_offset: int | None = None) -> bool:
        """Move past offsets that retention deleted, and back from beyond the log's end
        (its tail lost to a power cut, say; as Kafka's reset). True if it moved."""
        c = self._cursors[partition]
        if c.committed < start_offset:
            self._reset(c, start_offset)
            return True
        if end_offset is not None and c.committed > end_offset:
            self._reset(c, end_offset)
            return True
        return False

    def can_read(self, partition: int) -> bool:
        """Whether a fetch would read new records of ``partition`` (room for them)."""
        return len(self._cursors[partition].pending) < _READY_LIMIT

    def reconfigure(self, config: GroupConfig) -> None:
        """Take a new config; records already read are indexed by key as it needs."""
        self.config = config
        self._filter = TypeFilter(config.types)
        for c in self._cursors.values():
            c.keys.clear()
            if config.ordering == "key":
                for offset, rec in sorted(c.pending.items()):
                    if rec.key is not None:
                        c.keys.setdefault(rec.key, []).append(offset)

    # -- fetch -------------------------------------------------------------------

    def fetch(
        self, now_ms: int, max_records: int, read: ReadFn, types: TypeFilter | None = None
    ) -> tuple[list[Delivery], list[DeadLetter]]:
        """Lease up to ``max_records``; also return records that ran out of deliveries."""
        if max_records < 1:
            raise BadRequest("max must be at least 1", field="max")
        dead = self.expire(now_ms)
        out: list[Delivery] = []
        parts = self.partitions
        if not parts:
            return out, dead
        self._rotate = (self._rotate + 1) % len(parts)
        for p in parts[self._rotate :] + parts[: self._rotate]:
            if len(out) >= max_records:
                break
            self._fetch_partition(p, now_ms, max_records - len(out), read, types, out)
        self.delivered += len(out)
        return out, dead

    def _fetch_partition(
        self,
        p: int,
        now_ms: int,
        want: int,
        read: ReadFn,
        types: TypeFilter | None,
        out: list[Delivery],
    ) -> None:
        c = self._cursors[p]
        start = len(out)
        # Records already read: due redeliveries and ones left by earlier fetches.
        for rec in list(c.pending.values()):
            if len(out) - start >= want:
                return
            if rec.lease is None and rec.due_ms <= now_ms and self._may_lease(c, rec, types):
                out.append(self._lease(p, rec, now_ms))
        # New records from the log.
        while len(out) - start < want and len(c.pending) < _READY_LIMIT:
            batch = read(p, c.fetched, max(want - (len(out) - start), 100))
            if not batch:
                return
            for offset, _ts, payload in batch:
                if offset < c.fetched:
                    continue
                c.fetched = offset + 1
                if offset in c.done_above:
                    continue  # done out of order before a restart: never deliver it again
                event_type, key = _type_and_key(payload)
                if not self._filter.matches(event_type):
                    self._done(c, offset)
                    continue
                rec = _Pending(offset, payload, event_type, key, due_ms=now_ms)
                c.pending[offset] = rec
                if self.config.ordering == "key" and key is not None:
                    c.keys.setdefault(key, []).append(offset)
                if len(out) - start < want and self._may_lease(c, rec, types):
                    out.append(self._lease(p, rec, now_ms))

    def _may_lease(self, c: _Cursor, rec: _Pending, types: TypeFilter | None) -> bool:
        if types is not None and not types.matches(rec.type):
            return False
        if self.config.ordering == "key" and rec.key is not None:
            return c.keys[rec.key][0] == rec.offset
        return True

    def _lease(self, p: int, rec: _Pending, now_ms: int) -> Delivery:
        if rec.deliveries:
            self.redelivered += 1
        rec.deliveries += 1
        rec.lease = f"{p}.{rec.offset}.{rec.deliveries}.{self.epoch}"
        rec.expires_ms = now_ms + self.config.ack_wait_ms
        return Delivery(p, rec.offset, rec.payload, rec.lease, rec.deliveries)

    # -- ack, nack, expiry -------------------------------------------------------

    def _resolve(self, leases: Sequence[str]) -> list[tuple[_Cursor, _Pending]]:
        """Look up every lease; refuse them all if any is stale or malformed."""
        found: list[tuple[_Cursor, _Pending]] = []
        stale: list[str] = []
        for lease in leases:
            if not isinstance(lease, str):
                raise BadRequest("each lease must be a string", field="leases")
            parts = lease.split(".")
            c = rec = None
            if len(parts) == 4 and is_decimal(parts[0]) and is_decimal(parts[1]):
                c = self._cursors.get(int(parts[0]))
                rec = c.pending.get(int(parts[1])) if c else None
            if c is None or rec is None or rec.lease != lease:
                stale.append(lease)
            else:
                found.append((c, rec))
        if stale:
            raise StaleLease(
                f"{len(stale)} lease(s) expired, were re-leased or are unknown; "
                "nothing was changed",
                stale=stale,
            )
        return found

    def ack(self, leases: Sequence[str]) -> int:
        found = self._resolve(leases)
        for c, rec in found:
            self._done(c, rec.offset)
        return len(found)

    def nack(self, leases: Sequence[str], now_ms: int, delay_ms: int = 0) -> list[DeadLetter]:
        found = self._resolve(leases)
        dead: list[DeadLetter] = []
        for c, rec in found:
            rec.lease = None
            rec.due_ms = now_ms + delay_ms
            if rec.deliveries >= self.config.max_deliver:
                dead.append(self._dead(c, rec, "nacked"))
        return dead

    def expire(self, now_ms: int) -> list[DeadLetter]:
        """Leases that ran out become due again, or dead letters after ``max_deliver``."""
        dead: list[DeadLetter] = []
        limit = self.config.max_deliver
        for c in self._cursors.values():
            for rec in list(c.pending.values()):
                if rec.lease is not None and rec.expires_ms <= now_ms:
                    rec.lease = None
                    rec.due_ms = now_ms
                    if rec.deliveries >= limit:
                        dead.append(self._dead(c, rec, "ack_wait expired"))
                elif rec.lease is None and rec.deliveries >= limit and rec.due_ms <= now_ms:
                    # nacked for the last time with a delay, or a dead-letter append that failed
                    dead.append(self._dead(c, rec, "delivered too often"))
        return dead

    def _dead(self, c: _Cursor, rec: _Pending, why: str) -> DeadLetter:
        """Hold ``rec`` for the dead-letter topic: neither leased again nor done yet."""
        p = next(p for p, cur in self._cursors.items() if cur is c)
        rec.lease = _DEAD
        rec.expires_ms = _NEVER
        reason = f"{why} after {rec.deliveries} deliveries (max_deliver {self.config.max_deliver})"
        return DeadLetter(p, rec.offset, rec.payload, rec.deliveries, reason)

    def settle(self, dead: Sequence[DeadLetter]) -> None:
        """The dead letters are durable in the dead-letter topic: their records are done."""
        for d in dead:
            c = self._cursors.get(d.partition)
            rec = c.pending.get(d.offset) if c else None
            if c is not None and rec is not None and rec.lease == _DEAD:
                self._done(c, d.offset)
                self.dead_lettered += 1

    def unsettle(self, dead: Sequence[DeadLetter]) -> None:
        """The dead-letter append failed: the records are due again (to be tried again)."""
        for d in dead:
            c = self._cursors.get(d.partition)
            rec = c.pending.get(d.offset) if c else None
            if rec is not None and rec.lease == _DEAD:
                rec.lease = None
                rec.due_ms = 0

    def _done(self, c: _Cursor, offset: int) -> None:
        rec = c.pending.pop(offset, None)
        if rec is not None and rec.key is not None and rec.key in c.keys:
            offsets = c.keys[rec.key]
            offsets.remove(offset)
            if not offsets:
                del c.keys[rec.key]
        if offset == c.committed:
            c.committed += 1
            while c.committed in c.done_above:
                c.done_above.discard(c.committed)
                c.committed += 1
        elif offset > c.committed:
            c.done_above.add(offset)

    # -- damage --------------------------------------------------------------------

    def skip(self, partition: int, first: int, end: int, why: str) -> int:
        """Offsets ``first`` to ``end`` of ``partition`` are lost: done, never delivered.

        Returns how many were not done already; a range that changed something is
        noted in :attr:`skipped` (the latest ``_SKIPPED_KEPT``).
        """
        c = self._cursors.get(partition)
        if c is None:
            return 0
        lo = max(first, c.committed)
        if lo >= end:
            return 0
        if lo == c.committed and not any(lo <= o < end for o in c.pending):
            c.committed = end
            c.done_above = {o for o in c.done_above if o >= end}
            while c.committed in c.done_above:
                c.done_above.discard(c.committed)
                c.committed += 1
            n = end - lo
        else:  # a record read from the range stays pending: only the others are done
            n = 0
            for o in range(lo, end):
                if o not in c.pending and o not in c.done_above:
                    self._done(c, o)
                    n += 1
        c.fetched = max(c.fetched, end)
        if n:
            self.skipped = [*self.skipped, (partition, first, end, why)][-_SKIPPED_KEPT:]
            self.skipped_events += n
        return n

    # -- seek ----------------------------------------------------------------------

    def seek(self, positions: dict[int, int]) -> None:
        """Start the given partitions over at the given offsets; leases there go stale."""
        for p, offset in positions.items():
            self._reset(self._cursors[p], offset)

    @staticmethod
    def _reset(c: _Cursor, offset: int) -> None:
        c.committed = c.fetched = offset
        c.done_above.clear()
        c.pending.clear()
        c.keys.clear()


def _type_and_key(payload: bytes) -> tuple[str, str | None]:
    event = orjson.loads(payload)
    key = event.get("partitionkey")
    return str(event.get("type", "")), (key if isinstance(key, str) else None)
