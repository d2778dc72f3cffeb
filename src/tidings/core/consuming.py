"""Consumer groups on the hub: the I/O around the sans-I/O :mod:`tidings.core.groups`.

The hub pumps each :class:`~tidings.core.groups.ConsumerGroup`: it reads the
log for it, waits for new records, appends its dead letters, and saves its
durable state (positions, delivery counts, due times) once per fetch that
leases, before answering it, and before it applies an ack, nack or seek: a
save that fails (a full disk) answers 503 with nothing changed, so a retry
once there is room succeeds. :class:`Hub` takes these methods from
:class:`GroupOps`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from tidings.core.deadletters import DeadLetter
from tidings.core.groups import ConsumerGroup, Delivery, GroupConfig, internal_group
from tidings.core.patterns import TypeFilter
from tidings.core.positions import check_name, is_token
from tidings.core.skipping import Skipped, find_gaps, read_past_damage
from tidings.core.storage import Retention
from tidings.errors import BadPosition, BadRequest, Conflict, GroupNotFound, StorageUnavailable
from tidings.events.envelope import rfc3339_ms

if TYPE_CHECKING:
    from tidings.core.hub import Topic
    from tidings.core.metrics import Metrics
    from tidings.core.storage import Storage
    from tidings.log.config import Clock

logger = logging.getLogger("tidings.hub")

MAX_WAIT_S = 60.0
# A group made or deleted while put_group waited on a lock: how many looks before a 409.
_PUT_GROUP_TRIES = 3
_DLQ_ATTRIBUTES = (
    "dlqtopic", "dlqpartition", "dlqoffset", "dlqgroup", "dlqreason", "dlqdeliveries",
    "dlqtime",
)  # fmt: skip


class GroupOps:
    """The consumer-group half of :class:`~tidings.core.hub.Hub`, which provides these."""

    topics: dict[str, Topic]
    storage: Storage
    _creating: asyncio.Lock
    clock: Clock
    metrics: Metrics
    closing: bool
    _closing: asyncio.Event
    _group_changed: dict[tuple[str, str], asyncio.Event]
    _redriving: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock]

    def topic(self, name: str) -> Topic:
        raise NotImplementedError

    async def positions(
        self, topic: Topic, partition: int | None, start: str | None, from_time: str | None
    ) -> dict[int, int]:
        raise NotImplementedError

    async def _topic_for_publish(self, name: str) -> Topic:
        raise NotImplementedError

    async def _open_topic(
        self,
        name: str,
        partitions: int,
        retention: Retention,
        save: bool = True,
        schemas: str = "off",
    ) -> Topic:
        raise NotImplementedError

    async def _dead_letter_topic(self, name: str) -> Topic:
        raise NotImplementedError

    def group(self, topic_name: str, name: str) -> tuple[Topic, ConsumerGroup]:
        topic = self.topic(topic_name)
        g = topic.groups.get(name)
        if g is None:
            check_name("group", name)
            raise GroupNotFound(
                f"group {name!r} does not exist on topic {topic_name!r}",
                topic=topic_name,
                group=name,
            )
        return topic, g

    def _still(self, topic_name: str, name: str, g: ConsumerGroup) -> None:
        """GroupNotFound if ``g`` was deleted (or made again) while its lock was awaited:
        nothing is saved for a group that is gone."""
        if self.group(topic_name, name)[1] is not g:
            raise GroupNotFound(
                f"group {name!r} of topic {topic_name!r} was deleted", topic=topic_name, group=name
            )

    async def put_group(
        self, topic_name: str, name: str, config: GroupConfig
    ) -> tuple[ConsumerGroup, bool]:
        check_name("group", name)
        if config.dead_letter_topic is not None:
            check_name("dead_letter_topic", config.dead_letter_topic)
        topic = await self._topic_for_publish(topic_name)  # Forbidden for the hub's own topics
        for _ in range(_PUT_GROUP_TRIES):
            existing = topic.groups.get(name)
            if existing is not None:
                # A change: after any fetch, ack or deletion of it under way (their lock
                # first, then the topics' lock, as a dead-letter copy takes them).
                async with existing.changing, self._creating:
                    self._topic_still(topic_name, topic)
                    if topic.groups.get(name) is not existing:
                        continue  # deleted meanwhile: made anew
                    await self.storage.save_group(topic_name, name, config.to_dict())
                    existing.reconfigure(config)
                    return existing, False
            # With topic changes held off: a deletion of the topic meanwhile would leave
            # this group's row behind, for a topic of the same name made later to find.
            async with self._creating:
                self._topic_still(topic_name, topic)
                if topic.groups.get(name) is not None:
                    continue  # made meanwhile: changed under its own lock
                await self.storage.save_group(topic_name, name, config.to_dict())
                if config.start == "latest":
                    start = {i: p.end_offset for i, p in enumerate(topic.partitions)}
                else:
                    start = {i: p.start_offset for i, p in enumerate(topic.partitions)}
                group = ConsumerGroup(
                    topic_name, name, config, {p: (o, []) for p, o in start.items()}
                )
                await self.storage.save_positions(
                    topic_name, name, group.positions(), group.stats()
                )
                topic.groups[name] = group
                return group, True
        raise Conflict(
            f"group {name!r} was made and deleted meanwhile; try again",
            topic=topic_name,
            group=name,
        )

    def _topic_still(self, topic_name: str, topic: Topic) -> None:
        if self.topics.get(topic_name) is not topic:
            raise Conflict(f"topic {topic_name!r} was deleted meanwhile", topic=topic_name)

    def _fill_positions(self, topic: Topic, group: ConsumerGroup) -> None:
        known = set(group.partitions)
        fresh = {i: p.start_offset for i, p in enumerate(topic.partitions) if i not in known}
        group.add_partitions(fresh)
        for i, p in enumerate(topic.partitions):
            if group.clamp(i, p.start_offset, p.end_offset):
                logger.warning(
                    "group %s of %s/%d was outside the log [%d, %d]: moved to its edge",
                    group.name, topic.name, i, p.start_offset, p.end_offset,
                )

    async def delete_group(self, topic_name: str, name: str) -> None:
        topic, g = self.group(topic_name, name)
        async with g.changing:  # after any save of it under way
            self._still(topic_name, name, g)
            await self.storage.delete_group(topic_name, name)  # saved first, as every change
        if topic.groups.get(name) is g:
            del topic.groups[name]
        ev = self._group_changed.pop((topic_name, name), None)
        if ev is not None:
            ev.set()

    def list_groups(self) -> list[dict[str, Any]]:
        return [self.group_info(t.name, g) for t in self.topics.values() for g in sorted(t.groups)]

    def group_info(self, topic_name: str, name: str) -> dict[str, Any]:
        topic, g = self.group(topic_name, name)
        return self._group_info(topic_name, name, topic, g)

    def _group_info(
        self, topic_name: str, name: str, topic: Topic, g: ConsumerGroup
    ) -> dict[str, Any]:
        parts = []
        for i, p in enumerate(topic.partitions):
            committed = max(g.committed(i), p.start_offset)
            parts.append(
                {
                    "partition": i,
                    "committed": committed,
                    "next_offset": p.end_offset,
                    "lag": p.end_offset - committed,
                    "pending": g.in_flight(i),
                }
            )
        return {
            "topic": topic_name,
            "name": name,
            "config": g.config.to_dict(),
            "partitions": parts,
            "lag": sum(x["lag"] for x in parts),
            "pending": sum(x["pending"] for x in parts),
            "delivered": g.delivered,
            "redelivered": g.redelivered,
            "acked": g.acked,
            "dead_lettered": g.dead_lettered,
            "skipped_events": g.skipped_events,
            "skipped": [
                {"partition": p, "from": first, "to": end, "why": why}
                for p, first, end, why in g.skipped
            ],
            "internal": internal_group(name) is not None,  # the hub's own: read-only
        }

    async def fetch(
        self,
        topic_name: str,
        name: str,
        max_records: int = 10,
        wait_s: float = 0.0,
        types: TypeFilter | None = None,
    ) -> list[Delivery]:
        out, _ = await self.fetch_reporting(topic_name, name, max_records, wait_s, types)
        return out

    async def fetch_reporting(
        self,
        topic_name: str,
        name: str,
        max_records: int = 10,
        wait_s: float = 0.0,
        types: TypeFilter | None = None,
    ) -> tuple[list[Delivery], list[Skipped]]:
        """:meth:`fetch`, and the ranges lost to damage that this fetch moved the group past."""
        noted: list[Skipped] = []
        topic, g = self.group(topic_name, name)
        if (
            isinstance(max_records, bool)
            or not isinstance(max_records, int)
            or not (1 <= max_records <= 10_000)
        ):
            raise BadRequest("max must be an integer from 1 to 10000", field="max")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(wait_s, 0.0), MAX_WAIT_S)

        skipped: list[Skipped] = []
        gaps: list[tuple[int, int, int]] = []  # (partition, first, end) with no record

        async def read(p: int, offset: int, n: int) -> list[tuple[int, int, bytes]]:
            part = topic.partitions[p]
            if offset >= part.end_offset:
                return []
            start = max(offset, part.start_offset)
            got, nxt, lost = await read_past_damage(part, p, start, n)
            skipped.extend(lost)
            gaps.extend(find_gaps(p, start, nxt, got, lost))
            return got

        while True:
            # Cleared before the fetch looks: a change from now on wakes the wait below.
            changed = self._group_changed.setdefault((topic_name, name), asyncio.Event())
            changed.clear()
            async with g.changing:  # the fetch, its dead letters and its save, as one
                self._still(topic_name, name, g)
                now = self.clock.time_ms()
                try:
                    out, dead = await g.fetch(now, max_records, read, types)
                finally:  # records after a gap may be leased already: the gap is done too
                    for p, first, end in gaps:
                        g.pass_gap(p, first, end)
                    gaps.clear()
                    moved = self._skip_damage(topic, g, skipped) if skipped else []
                    skipped.clear()
                noted.extend(moved)
                if dead:
                    try:
                        await self._dead_letter(topic, g, dead)
                    except StorageUnavailable as exc:
                        # Due again: the next fetch or sweep copies them. The leases
                        # still go out if their save below succeeds.
                        logger.warning("dead letters of %s/%s wait: %s", topic_name, name, exc)
                    except BaseException:
                        g.unlease(out)
                        raise
                if out or dead or moved:
                    # One save per fetch, before its leases go out: delivery counts
                    # outlive a restart, so max_deliver holds across any number of them.
                    try:
                        await self.storage.save_positions(
                            topic_name, name, g.positions(), g.stats()
                        )
                    except BaseException:
                        g.unlease(out)
                        raise
            remaining = deadline - loop.time()
            if out or remaining <= 0 or self.closing:
                self.metrics.delivered(topic_name, len(out))
                return out, noted
            timeout = remaining
            # A record already due and still not leased waits on a key or on this fetch's
            # types: an append, ack, nack or seek wakes the fetch, not the clock.
            due = g.next_due_ms(after_ms=now)
            if due is not None:
                timeout = min(timeout, (due - now) / 1000)
            # A partition with no room for more pending records is not read: waiting
            # on it would return at once and spin until an ack makes room.
            waits = [
                loop.create_task(topic.partitions[p].wait(g.fetched(p), timeout))
                for p in g.partitions
                if g.can_read(p)
            ]
            waits.append(loop.create_task(_wait_event(changed, timeout)))
            waits.append(loop.create_task(self._closing.wait()))
            _, rest = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in rest:
                w.cancel()
            topic, g = self.group(topic_name, name)

    def _skip_damage(
        self, topic: Topic, g: ConsumerGroup, skipped: list[Skipped]
    ) -> list[Skipped]:
        """Offsets the log lost to damage: the group moves past them, and says so.

        Returns the ranges that moved it (not those it was past already); the
        caller saves the positions."""
        changed: list[Skipped] = []
        for s in skipped:
            n = g.skip(s.partition, s.first, s.end, s.why)
            if n:
                changed.append(s)
                self.metrics.skipped(topic.name, n)
                logger.warning(
                    "group %s of %s/%d skipped offsets %d to %d, lost to damage on disk (%s)",
                    g.name, topic.name, s.partition, s.first, s.end - 1, s.why,
                )
        return changed  # the fetch saves the group's positions once, with its leases

    async def ack(self, topic_name: str, name: str, leases: Sequence[str]) -> int:
        _, g = self.group(topic_name, name)
        leases = _leases(leases)
        async with g.changing:
            self._still(topic_name, name, g)
            positions, acked = g.ack_positions(leases)
            await self.storage.save_positions(
                topic_name, name, positions, g.stats(acked=len(acked.found))
            )
            n = g.ack(acked)
        # An ack may free a key that ordering=key held back: wake waiting fetches.
        ev = self._group_changed.get((topic_name, name))
        if ev is not None:
            ev.set()
        return n

    async def nack(
        self,
        topic_name: str,
        name: str,
        leases: Sequence[str],
        delay_ms: int = 0,
        unsent: bool = False,
    ) -> int:
        """Make leased records due after ``delay_ms``; ``unsent``: they were released
        without being handed to anyone, so the delivery does not count."""
        topic, g = self.group(topic_name, name)
        leases = _leases(leases)
        async with g.changing:
            self._still(topic_name, name, g)
            now = self.clock.time_ms()
            await self.storage.save_positions(
                topic_name, name, g.nack_positions(leases, now, delay_ms, unsent), g.stats()
            )
            dead = g.nack(leases, now, delay_ms, unsent)
            if dead:
                # The nack stands (it is saved): a dead letter that cannot be copied now
                # is due again, and the next fetch or sweep copies it.
                try:
                    await self._dead_letter(topic, g, dead)
                    await self.storage.save_positions(topic_name, name, g.positions(), g.stats())
                except StorageUnavailable as exc:
                    logger.warning("dead letters of %s/%s wait: %s", topic_name, name, exc)
        ev = self._group_changed.get((topic_name, name))
        if ev is not None:
            ev.set()
        return len(leases)

    def hurry(self, topic_name: str, name: str) -> int:
        """Records of the group waiting out a nack's delay are due now (wakes fetches)."""
        _, g = self.group(topic_name, name)
        n = g.hurry(self.clock.time_ms())
        ev = self._group_changed.get((topic_name, name))
        if ev is not None and n:
            ev.set()
        return n

    async def seek(self, topic_name: str, name: str, to: object) -> dict[int, int]:
        topic, g = self.group(topic_name, name)
        if to == "earliest":
            pos = {i: p.start_offset for i, p in enumerate(topic.partitions)}
        elif to == "latest":
            pos = {i: p.end_offset for i, p in enumerate(topic.partitions)}
        elif isinstance(to, dict) and set(to) == {"partition", "offset"}:
            pos = await self.positions(
                topic,
                _int(to["partition"], "to.partition"),
                str(_int(to["offset"], "to.offset")),
                None,
            )
        elif isinstance(to, dict) and set(to) == {"time"}:
            pos = await self.positions(topic, None, None, to["time"])
        elif isinstance(to, str) and is_token(to):
            pos = await self.positions(topic, None, to, None)
        elif isinstance(to, str | int) and not isinstance(to, bool):
            pos = await self.positions(topic, None, None, str(to))
        else:
            raise BadPosition(
                "to must be earliest, latest, a time, a position token or "
                '{"partition": p, "offset": o}',
                field="to",
            )
        async with g.changing:
            self._still(topic_name, name, g)
            await self.storage.save_positions(topic_name, name, g.positions(reset=pos), g.stats())
            g.seek(pos)
        ev = self._group_changed.get((topic_name, name))
        if ev is not None:
            ev.set()
        return pos

    async def redrive(
        self, topic_name: str, name: str, max_records: int = 10_000
    ) -> dict[str, Any]:
        """Publish a group's dead letters again on its topic, each one once.

        The dead-letter topic is read from a cursor of its own, a group on it
        (:func:`redrive_cursor`), so a second call sends only what was dead-lettered
        since. Each event goes back as it was published (same id, the ``dlq*``
        attributes removed) to the partition its key chooses, past the dedupe
        window: a re-drive is asked for, not a producer's retry. Re-drives of one
        group take turns: a second call that came while one ran reads the cursor
        the first one moved, so it sends nothing twice.
        """
        self.group(topic_name, name)  # an unknown group is refused without waiting
        key = (topic_name, name)
        lock = self._redriving.get(key)
        if lock is None:
            # Kept while a call holds or waits on it (the local name), dropped after.
            lock = self._redriving[key] = asyncio.Lock()
        async with lock:
            return await self._redrive(topic_name, name, max_records)

    async def _redrive(self, topic_name: str, name: str, max_records: int) -> dict[str, Any]:
        topic, g = self.group(topic_name, name)
        target = g.config.dead_letter_topic or f"{topic_name}.dlq"
        dlq = self.topics.get(target)
        answer: dict[str, Any] = {"dead_letter_topic": target, "redriven": 0, "skipped": 0}
        if dlq is None:
            return answer
        cursor_name = redrive_cursor(topic_name, name, target)
        cursor = dlq.groups.get(cursor_name)
        if cursor is None:
            cursor, _ = await self.put_group(target, cursor_name, GroupConfig(start="earliest"))
        self._fill_positions(dlq, cursor)
        moved: dict[int, int] = {}
        by_part: dict[int, list[bytes]] = {}
        n = len(topic.partitions)
        budget = max_records
        for i, part in enumerate(dlq.partitions):
            offset = max(cursor.committed(i), part.start_offset)
            while budget > 0 and offset < part.end_offset:
                batch, nxt, _ = await read_past_damage(part, i, offset, min(budget, 1000))
                if nxt == offset:
                    break
                for _, _, payload in batch:
                    event = orjson.loads(payload)
                    if event.get("dlqtopic") != topic_name or event.get("dlqgroup") != name:
                        answer["skipped"] += 1
                        continue
                    p = event.get("dlqpartition")
                    if not isinstance(p, int) or not 0 <= p < n:
                        key = event.get("partitionkey")
                        p = zlib.crc32(key.encode()) % n if isinstance(key, str) and n > 1 else 0
                    for attr in _DLQ_ATTRIBUTES:
                        event.pop(attr, None)
                    by_part.setdefault(p, []).append(orjson.dumps(event))
                budget -= len(batch)
                offset = nxt
            moved[i] = offset
        for p, payloads in sorted(by_part.items()):
            await topic.partitions[p].append(payloads)
            self.metrics.published(topic_name, len(payloads), sum(map(len, payloads)))
            answer["redriven"] += len(payloads)
        # Only now: a crash before this line sends them again, never zero times.
        async with cursor.changing:
            cursor.seek(moved)
            await self.storage.save_positions(
                target, cursor_name, cursor.positions(), cursor.stats()
            )
        return answer

    async def _dead_letter(self, topic: Topic, g: ConsumerGroup, dead: list[DeadLetter]) -> None:
        """Copy ``dead`` to the group's dead-letter topic (the caller holds ``g.changing``)."""
        target = g.config.dead_letter_topic or f"{topic.name}.dlq"
        dlq = await self._dead_letter_topic(target)
        payloads = []
        when = rfc3339_ms(self.clock.time_ms())
        for d in dead:
            event = orjson.loads(d.payload)
            event.update(
                dlqtopic=topic.name,
                dlqpartition=d.partition,
                dlqoffset=d.offset,
                dlqgroup=g.name,
                dlqreason=d.reason,
                dlqdeliveries=d.deliveries,
                dlqtime=when,
            )
            payloads.append(orjson.dumps(event))
        # Saved first, with where the copies will land: a crash after the append
        # finds them there at start-up and does not copy them twice.
        g.mark_dead_letters(dead, dlq.partitions[0].end_offset)
        try:
            await self.storage.save_positions(topic.name, g.name, g.positions(), g.stats())
            await dlq.partitions[0].append(payloads)
        except BaseException:
            g.unsettle(dead)  # due again: the next fetch or sweep tries once more
            raise
        g.settle(dead)  # only now, so that no saved position passes an event not yet copied
        self.metrics.dead_lettered(topic.name, len(payloads))


async def find_dead_letters(topic: Topic, g: ConsumerGroup, dlq: Topic | None) -> None:
    """At start-up: tell ``g`` which records it was copying to ``dlq`` when the hub
    stopped are there (done), so that no record is dead-lettered twice."""
    since = g.dying_since()
    if since is None:
        return
    copied: set[tuple[int, int]] = set()
    if dlq is not None:
        part = dlq.partitions[0]
        offset = max(since, part.start_offset)
        while offset < part.end_offset:
            batch = await part.read(offset, 1000)
            if not batch:
                break
            for _, _, payload in batch:
                event = orjson.loads(payload)
                if event.get("dlqtopic") == topic.name and event.get("dlqgroup") == g.name:
                    copied.add((event.get("dlqpartition"), event.get("dlqoffset")))
            offset = batch[-1][0] + 1
    g.dead_lettered_before(copied)


def redrive_cursor(topic: str, group: str, dead_letter_topic: str) -> str:
    """The group on the dead-letter topic that keeps a group's re-drive position:
    ``redrive.{group}`` on the default ``{topic}.dlq``, ``redrive.{topic}.{group}`` on
    a dead-letter topic that groups of several topics may share."""
    if dead_letter_topic == f"{topic}.dlq":
        return f"redrive.{group}"
    return f"redrive.{topic}.{group}"


async def _wait_event(ev: asyncio.Event, timeout: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ev.wait(), timeout)
    return ev.is_set()


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadPosition(f"{name} must be a non-negative integer", field=name)
    return value


def _leases(leases: object) -> list[str]:
    if not isinstance(leases, list) or not leases:
        raise BadRequest("leases must be a non-empty list of lease strings", field="leases")
    return leases


def group_config(raw: Mapping[str, Any]) -> GroupConfig:
    return GroupConfig(
        start=raw.get("start", "earliest"),
        ack_wait_ms=round(raw.get("ack_wait", 30) * 1000),
        max_deliver=int(raw.get("max_deliver", 5)),
        dead_letter_topic=raw.get("dead_letter_topic"),
        ordering=raw.get("ordering", "none"),
        types=tuple(raw.get("types", ())),
    )
