"""Consumer groups, sans I/O: records and commands in, deliveries and dead letters out.

Rules, per partition of the group's topic:

- ``committed`` is the group's durable position: every offset below it is done
  (acknowledged or dead-lettered). Offsets done above it wait in ``done_above``
  until the gap closes, so an acknowledgement out of order is never lost (see
  :mod:`tidings.core.cursors`, a partition's position).
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
- The durable state (:meth:`ConsumerGroup.positions`) holds, beside the
  positions, each undone record's delivery count and when it is due, so
  ``max_deliver`` and nack delays hold across restarts. The hub saves it before
  it hands out a fetch's leases, and before it applies an ack, nack or seek:
  the ``*_positions`` methods give the state a change would leave, changing
  nothing, so a change that cannot be saved is never applied.
- The group's counters (:meth:`ConsumerGroup.stats`: delivered, redelivered,
  acked, dead-lettered, skipped) are saved with those positions, in the same
  write, so after a restart they read what they read when it was last saved.

Nothing here touches a socket or a file; the hub pumps it (a fetch awaits only
the read it is given).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from tidings.core.cursors import DEAD, Cursor, Pending
from tidings.core.deadletters import DeadLetter, DeadLettering
from tidings.core.patterns import TypeFilter
from tidings.core.positions import is_decimal
from tidings.errors import BadRequest, Forbidden, StaleLease
from tidings.log.config import GroupStats, Positions

ReadFn = Callable[[int, int, int], Awaitable[Sequence[tuple[int, int, bytes]]]]
"""read(partition, offset, max_records) -> [(offset, timestamp_ms, payload)]"""

# The hub's own groups, by the prefix of their name, and what keeps each: no client
# reaches them (the server refuses every group route and WebSocket join), whatever
# its token. A webhook's cursor is ``webhook.{id}`` (tidings.core.webhooks.config),
# a re-drive cursor ``redrive.…`` (tidings.core.consuming.redrive_cursor); groups
# the hub keeps for anything else (view processors) are named ``tidings.…``.
INTERNAL_GROUP_PREFIXES: Mapping[str, str] = {
    "webhook.": "a webhook's delivery cursor",
    "redrive.": "a re-drive cursor",
    "tidings.": "one of the hub's own groups",
}


def internal_group(name: str) -> str | None:
    """What keeps the group ``name`` if it is one of the hub's own, else None."""
    for prefix, what in INTERNAL_GROUP_PREFIXES.items():
        if name.startswith(prefix):
            return what
    return None


def check_client_group(name: str) -> None:
    """Forbidden if ``name`` is in the hub's own namespace (:data:`INTERNAL_GROUP_PREFIXES`)."""
    what = internal_group(name)
    if what is None:
        return
    reserved = ", ".join(repr(p + "*") for p in INTERNAL_GROUP_PREFIXES)
    detail = (
        f"group {name!r} is {what}: the hub keeps it, and no client may use or change it"
        f" (the names {reserved} are reserved)"
    )
    if name.startswith("webhook."):
        detail += f"; see or replay the webhook at /v1/webhooks/{name.removeprefix('webhook.')}"
    raise Forbidden(detail, group=name)


# A record being appended to the dead-letter topic (its lease is DEAD) never expires;
# it is done only once that append is durable (settle()).
_NEVER = 1 << 62

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True, slots=True)
class Delivery:
    partition: int
    offset: int
    payload: bytes
    lease: str
    deliveries: int
    # The payload as parsed when the fetch read it from the log (the group reads each
    # event's type and key), for a consumer in this process: the fetch that made it
    # hands it over, no one else holds it. None on a redelivery (parse ``payload``).
    event: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Acked:
    """Leases :meth:`ConsumerGroup.ack_positions` checked, for :meth:`ConsumerGroup.ack`."""

    found: list[tuple[int, Cursor, Pending]]


class ConsumerGroup(DeadLettering):
    """One group's state over the partitions of one topic."""

    def __init__(
        self,
        topic: str,
        name: str,
        config: GroupConfig,
        positions: Mapping[int, Sequence[Any]],
        stats: GroupStats | None = None,
    ) -> None:
        """``positions``: per partition ``(committed, done_above)`` or, as saved by
        :meth:`positions`, ``(committed, done_above, [(offset, deliveries, due_ms)])``,
        ``done_above`` as :meth:`OffsetRanges.saved` gives it or, as older versions
        saved it, a list of offsets; ``stats``: the counters as :meth:`stats` saved
        them (all 0 when None)."""
        self.topic = topic
        self.name = name
        self.config = config
        self.epoch = secrets.token_hex(4)
        # Held by each change of the group that is saved (fetch, ack, nack, seek, expiry,
        # dead letters): the storage is awaited, and a change made from positions another
        # is about to replace would save a state that loses that one.
        self.changing = asyncio.Lock()
        self._filter = TypeFilter(config.types)
        self._cursors = {p: Cursor.load(saved) for p, saved in positions.items()}
        self._rotate = 0
        counts = stats or {}
        self.skipped: list[tuple[int, int, int, str]] = [  # the latest (p, first, end, why)
            (int(p), int(first), int(end), str(why))
            for p, first, end, why in counts.get("skipped", ())
        ][-_SKIPPED_KEPT:]
        self.skipped_events = _count(counts, "skipped_events")
        self.redelivered = _count(counts, "redelivered")
        self.dead_lettered = _count(counts, "dead_lettered")
        self.delivered = _count(counts, "delivered")
        self.acked = _count(counts, "acked")

    # -- state for the hub -------------------------------------------------------

    @property
    def partitions(self) -> list[int]:
        return sorted(self._cursors)

    def positions(
        self,
        *,
        done: Collection[tuple[int, int]] = (),
        due: Mapping[tuple[int, int], tuple[int, int]] | None = None,
        reset: Mapping[int, int] | None = None,
    ) -> Positions:
        """The durable state: per partition ``committed``, the offsets done above it
        (as :meth:`OffsetRanges.saved` lists them: ints, and ``(first, end)`` for
        runs), and ``(offset, deliveries, due_ms)`` of each record delivered and not
        done.

        A leased record is saved as due at once: after a restart its lease is stale.
        A record being copied to the dead-letter topic from offset ``n`` on is saved
        with ``due_ms`` ``-1 - n``: after a crash the hub looks there for its copy
        (:meth:`dying_since`, :meth:`dead_lettered_before`) rather than copy it twice.
        The arguments give the state a change would leave without making it: the
        ``(partition, offset)`` records in ``done`` done, those in ``due`` with
        these ``(deliveries, due_ms)``, the partitions in ``reset`` moved there.
        """
        out: Positions = {}
        gone: dict[int, set[int]] = {}
        for p, o in done:
            gone.setdefault(p, set()).add(o)
        for p, c in self._cursors.items():
            if reset is not None and p in reset:
                out[p] = (reset[p], [], [])
                continue
            out[p] = c.saved(p, gone.get(p), due)
        return out

    def stats(self, *, acked: int = 0) -> GroupStats:
        """The counters, to be saved with :meth:`positions`; ``acked`` more acks counted
        (an ack's save comes before the ack is applied)."""
        return {
            "delivered": self.delivered,
            "redelivered": self.redelivered,
            "acked": self.acked + acked,
            "dead_lettered": self.dead_lettered,
            "skipped_events": self.skipped_events,
            "skipped": [list(s) for s in self.skipped],
        }

    def ack_positions(self, leases: Sequence[str]) -> tuple[Positions, Acked]:
        """The durable state once ``leases`` are acked, and the records to pass to
        :meth:`ack` then (with no other change in between); changes nothing."""
        found = self._resolve(leases)
        return self.positions(done=[(p, rec.offset) for p, _, rec in found]), Acked(found)

    def nack_positions(
        self, leases: Sequence[str], now_ms: int, delay_ms: int = 0, unsent: bool = False
    ) -> Positions:
        """The durable state once ``leases`` are nacked; checks them, changes nothing."""
        return self.positions(
            due={
                (p, rec.offset): (rec.deliveries - unsent, now_ms + delay_ms)
                for p, _, rec in self._resolve(leases)
            }
        )

    def committed(self, partition: int) -> int:
        return self._cursors[partition].committed

    def fetched(self, partition: int) -> int:
        return self._cursors[partition].fetched

    def undone(self, partition: int, offset: int) -> bool:
        """Whether the group still owes the record at ``offset`` of ``partition``
        (False for a partition the group does not read)."""
        c = self._cursors.get(partition)
        return c is not None and c.undone(offset)

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
            self._cursors.setdefault(p, Cursor(committed=start, fetched=start))

    def clamp(self, partition: int, start_offset: int, end_offset: int | None = None) -> bool:
        """Move past offsets that retention deleted, and back from beyond the log's end
        (its tail lost to a power cut, say; as Kafka's reset). True if it moved."""
        return self._cursors[partition].clamp(start_offset, end_offset)

    def can_read(self, partition: int) -> bool:
        """Whether a fetch would read new records of ``partition`` (room for them)."""
        return len(self._cursors[partition].pending) < _READY_LIMIT

    def reconfigure(self, config: GroupConfig) -> None:
        """Take a new config; records already read are indexed by key as it needs."""
        self.config = config
        self._filter = TypeFilter(config.types)
        for c in self._cursors.values():
            c.index_keys(config.ordering == "key")

    # -- fetch -------------------------------------------------------------------

    async def fetch(
        self, now_ms: int, max_records: int, read: ReadFn, types: TypeFilter | None = None
    ) -> tuple[list[Delivery], list[DeadLetter]]:
        """Lease up to ``max_records``; also return records that ran out of deliveries.

        A partition whose read raises is passed over (the others are read); its error
        is raised only if nothing was leased and no record ran out of deliveries."""
        if max_records < 1:
            raise BadRequest("max must be at least 1", field="max")
        dead = self.expire(now_ms)
        out: list[Delivery] = []
        parts = self.partitions
        if not parts:
            return out, dead
        self._rotate = (self._rotate + 1) % len(parts)
        failed: Exception | None = None
        try:
            for p in parts[self._rotate :] + parts[: self._rotate]:
                if len(out) >= max_records:
                    break
                try:
                    await self._fetch_partition(
                        p, now_ms, max_records - len(out), read, types, out, dead
                    )
                except Exception as exc:  # a partition that cannot be read now
                    logger.warning(
                        "group %s/%s: partition %d not read: %r", self.topic, self.name, p, exc
                    )
                    failed = failed or exc
        except BaseException:  # cancelled in a read: as if this fetch leased nothing
            self.delivered += len(out)
            self.unlease(out)
            self.unsettle(dead)
            raise
        self.delivered += len(out)
        # What was leased or expired before and after a failed read goes to the caller,
        # which saves it: raised alone, it would stay leased with no holder, or dead
        # and never copied to the dead-letter topic.
        if failed is not None and not out and not dead:
            raise failed
        return out, dead

    async def _fetch_partition(
        self,
        p: int,
        now_ms: int,
        want: int,
        read: ReadFn,
        types: TypeFilter | None,
        out: list[Delivery],
        dead: list[DeadLetter],
    ) -> None:
        c = self._cursors[p]
        start = len(out)
        # Records already read: due redeliveries and ones left by earlier fetches.
        for rec in list(c.pending.values()):
            if len(out) - start >= want:
                return
            if rec.lease is None and rec.due_ms <= now_ms and self._may_lease(c, rec, types):
                if rec.deliveries >= self.config.max_deliver:
                    dead.append(self._dead(c, rec, "delivered too often"))
                    continue
                out.append(self._lease(p, rec, now_ms))
        # New records from the log.
        while len(out) - start < want and len(c.pending) < _READY_LIMIT:
            batch = await read(p, c.fetched, max(want - (len(out) - start), 100))
            if not batch:
                return
            for offset, _ts, payload in batch:
                if offset < c.fetched:
                    continue
                c.fetched = offset + 1
                if offset in c.done_above:
                    continue  # done out of order before a restart: never deliver it again
                event = orjson.loads(payload)
                event_type, key = _type_and_key(event)
                if not self._filter.matches(event_type):
                    c.done(offset)
                    continue
                rec = Pending(offset, payload, event_type, key, due_ms=now_ms)
                if c.restored:
                    rec.deliveries, due = c.restored.pop(offset, (0, now_ms))
                    rec.due_ms = max(due, 0)
                c.pending[offset] = rec
                if self.config.ordering == "key" and key is not None:
                    c.keys.setdefault(key, []).append(offset)
                if rec.due_ms > now_ms:
                    continue  # nacked with a delay before a restart
                if rec.deliveries >= self.config.max_deliver:
                    dead.append(self._dead(c, rec, "delivered too often"))
                elif len(out) - start < want and self._may_lease(c, rec, types):
                    out.append(self._lease(p, rec, now_ms, event))

    def _may_lease(self, c: Cursor, rec: Pending, types: TypeFilter | None) -> bool:
        if types is not None and not types.matches(rec.type):
            return False
        if self.config.ordering == "key" and rec.key is not None:
            return c.keys[rec.key][0] == rec.offset
        return True

    def _lease(
        self, p: int, rec: Pending, now_ms: int, event: dict[str, Any] | None = None
    ) -> Delivery:
        if rec.deliveries:
            self.redelivered += 1
        rec.deliveries += 1
        rec.lease = f"{p}.{rec.offset}.{rec.deliveries}.{self.epoch}"
        rec.expires_ms = now_ms + self.config.ack_wait_ms
        return Delivery(p, rec.offset, rec.payload, rec.lease, rec.deliveries, event)

    # -- ack, nack, expiry -------------------------------------------------------

    def unlease(self, deliveries: Sequence[Delivery]) -> None:
        """Take back a fetch's leases that could not be saved: as if never delivered."""
        for d in deliveries:
            c = self._cursors.get(d.partition)
            rec = c.pending.get(d.offset) if c else None
            if rec is not None and rec.lease == d.lease:
                rec.lease = None
                rec.deliveries -= 1
                self.delivered -= 1
                if rec.deliveries:
                    self.redelivered -= 1

    def _resolve(self, leases: Sequence[str]) -> list[tuple[int, Cursor, Pending]]:
        """Look up every lease; refuse them all if any is stale or malformed."""
        found: list[tuple[int, Cursor, Pending]] = []
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
                found.append((int(parts[0]), c, rec))
        if stale:
            raise StaleLease(
                f"{len(stale)} lease(s) expired, were re-leased or are unknown; "
                "nothing was changed",
                stale=stale,
            )
        return found

    def ack(self, leases: Sequence[str] | Acked) -> int:
        found = leases.found if isinstance(leases, Acked) else self._resolve(leases)
        for _, c, rec in found:
            c.done(rec.offset)
        self.acked += len(found)
        return len(found)

    def nack(
        self, leases: Sequence[str], now_ms: int, delay_ms: int = 0, unsent: bool = False
    ) -> list[DeadLetter]:
        """Make leased records due after ``delay_ms``; ``unsent``: they were never
        handed to anyone (released), so this delivery does not count."""
        found = self._resolve(leases)
        dead: list[DeadLetter] = []
        for _, c, rec in found:
            rec.lease = None
            rec.due_ms = now_ms + delay_ms
            rec.deliveries -= unsent
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

    def _dead(self, c: Cursor, rec: Pending, why: str) -> DeadLetter:
        """Hold ``rec`` for the dead-letter topic: neither leased again nor done yet."""
        p = next(p for p, cur in self._cursors.items() if cur is c)
        rec.lease = DEAD
        rec.expires_ms = _NEVER
        reason = f"{why} after {rec.deliveries} deliveries (max_deliver {self.config.max_deliver})"
        return DeadLetter(p, rec.offset, rec.payload, rec.deliveries, reason)

    # -- damage --------------------------------------------------------------------

    def skip(self, partition: int, first: int, end: int, why: str) -> int:
        """Offsets ``first`` to ``end`` of ``partition`` are lost: done, never delivered.

        Returns how many were not done already; a range that changed something is
        noted in :attr:`skipped` (the latest ``_SKIPPED_KEPT``).
        """
        n = self._mark_done(partition, first, end)
        if n:
            self.skipped = [*self.skipped, (partition, first, end, why)][-_SKIPPED_KEPT:]
            self.skipped_events += n
        return n

    def pass_gap(self, partition: int, first: int, end: int) -> None:
        """Offsets ``first`` to ``end`` of ``partition`` hold no record (a topic compacted
        by key removed them): done, like damage, but nothing was lost."""
        self._mark_done(partition, first, end)

    def _mark_done(self, partition: int, first: int, end: int) -> int:
        """Mark the range done in ``partition`` (see :meth:`Cursor.mark_done`); how many."""
        c = self._cursors.get(partition)
        return 0 if c is None else c.mark_done(first, end)

    # -- seek ----------------------------------------------------------------------

    def seek(self, positions: dict[int, int]) -> None:
        """Start the given partitions over at the given offsets; leases there go stale."""
        for p, offset in positions.items():
            self._cursors[p].reset(offset)


def _count(saved: GroupStats, name: str) -> int:
    value = saved.get(name, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _type_and_key(event: dict[str, Any]) -> tuple[str, str | None]:
    key = event.get("partitionkey")
    return str(event.get("type", "")), (key if isinstance(key, str) else None)
