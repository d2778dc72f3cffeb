"""The hub: topics, publish with dedupe, reads, and consumer groups over a Storage.

This is the broker without sockets. The server and the SDK's in-memory harness
drive it; it reaches disk only through :class:`~tidings.core.storage.Storage`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any

from tidings.core.catalog import Catalog
from tidings.core.consuming import find_dead_letters, group_config
from tidings.core.dedupe import DedupeWindow
from tidings.core.eventindex import EventIndex
from tidings.core.grouprouting import GroupRouter, GroupRouting
from tidings.core.groups import ConsumerGroup, internal_group
from tidings.core.metrics import Metrics
from tidings.core.patterns import MAX_TYPE_PATTERNS
from tidings.core.positions import (
    check_client_topic,
    check_name,
    is_decimal,
    parse_time_ms,
    parse_token,
)
from tidings.core.publishing import PublishOps, _Claim
from tidings.core.reading import ReadOps
from tidings.core.refill import refill
from tidings.core.schemas.registry import TOPIC_MODES, SchemaRegistry
from tidings.core.storage import Damage, PartitionStore, Retention, Storage
from tidings.core.topicsync import apply_change, follow_topics
from tidings.core.views import Views
from tidings.errors import (
    BadPosition,
    BadRequest,
    Conflict,
    OffsetOutOfRange,
    StorageUnavailable,
    TopicNotFound,
)
from tidings.log.config import COMPACTION_MODES, DELETE_RETENTION_MS, Clock, SystemClock

logger = logging.getLogger("tidings.hub")

MAX_PARTITIONS = 1024
MAX_TOPICS = 10_000


@dataclass(frozen=True, slots=True)
class HubOptions:
    auto_create: bool = True
    max_type_patterns: int = MAX_TYPE_PATTERNS  # per read, fetch, group, subscription, webhook
    max_event_bytes: int = 1 << 20
    dedupe_window_ms: int = 120_000
    retention_check_s: float = 30.0
    compaction_check_s: float = 5.0  # a round of compaction of the topics by key
    sweep_s: float = 1.0
    max_topics: int = MAX_TOPICS  # created by PUT, a publish or a group; dead-letter topics aside
    max_partitions: int = MAX_PARTITIONS  # per topic


@dataclass(slots=True)
class Topic:
    name: str
    partitions: list[PartitionStore]
    retention: Retention
    groups: dict[str, ConsumerGroup] = field(default_factory=dict)
    rr: int = 0
    schemas: str = "off"  # off | validate | required: checks of event data at publish

    def info(self) -> dict[str, Any]:
        parts = [
            {
                "partition": i,
                "first_offset": p.start_offset,
                "next_offset": p.end_offset,
                "events": p.end_offset - p.start_offset,
                "bytes": p.size_bytes,
                "damage": [_damage(d) for d in p.damage],
            }
            for i, p in enumerate(self.partitions)
        ]
        return {
            "name": self.name,
            "partitions": parts,
            "retention": {
                "max_age": None
                if self.retention.max_age_ms is None
                else self.retention.max_age_ms / 1000,
                "max_bytes": self.retention.max_bytes,
            },
            "events": sum(p["events"] for p in parts),
            "bytes": sum(p["bytes"] for p in parts),
            "schemas": self.schemas,
            "compaction": self.retention.compaction,
            "delete_retention": self.retention.delete_retention_ms / 1000,
        }


class Hub(ReadOps, PublishOps, GroupRouting):
    def __init__(
        self,
        storage: Storage,
        options: HubOptions | None = None,
        clock: Clock | None = None,
        group_router: GroupRouter | None = None,
    ) -> None:
        self.storage = storage
        #: Where client groups are served when several nodes share the storage (see
        #: :mod:`tidings.core.grouprouting`); None: here.
        self.group_router = group_router
        #: The hub's identity: its storage's (see ``Storage.hub_id``).
        self.id = storage.hub_id
        self.options = options or HubOptions()
        self.clock = clock or SystemClock()
        self.topics: dict[str, Topic] = {}
        self.index = EventIndex(storage.open_index(), self.topics)  # by id, by correlationid
        self.dedupe = DedupeWindow(self.options.dedupe_window_ms)
        self.catalog = Catalog()  # event types per topic, for /asyncapi.json
        self.schemas = SchemaRegistry(storage)  # data schemas per event type
        self.metrics = Metrics()
        self._tasks: list[asyncio.Task[None]] = []
        self._group_changed: dict[tuple[str, str], asyncio.Event] = {}
        self._redriving: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )  # one re-drive of a group at a time
        # dedupe key -> the append that carries it, until it is durable.
        self._appending: dict[str, _Claim] = {}
        self._deleting: set[str] = set()  # topics whose files are being removed
        # Held while a topic is made or changed, and while a deletion starts: each
        # finds the topics as the one before left them, though the storage is awaited.
        self._creating = asyncio.Lock()
        self._discarding: set[asyncio.Task[None]] = set()  # topics whose creation failed
        # Topics whose partitions could not be opened at start, and why.
        self.unavailable: dict[str, str] = {}
        self._read_turn = 0
        self.closing = False
        self._closing = asyncio.Event()  # wakes long polls when shutdown begins
        # Clear while start() refills the dedupe window from the log: publishes wait.
        self._refilled = asyncio.Event()
        self._refilled.set()
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop it runs on, once started
        self.views = Views(self)  # stream processing results, kept in __view.* topics

    # -- life ----------------------------------------------------------------------

    async def start(self, *, wait_ready: bool = True) -> None:
        """Open every topic and group, and refill the dedupe window from the log.

        ``wait_ready=False`` returns before the refill is done (it goes on in the
        background; see :attr:`ready`), so a server can answer ``/healthz`` at once.
        """
        self.loop = asyncio.get_running_loop()
        await self.schemas.load()
        for name, cfg in (await self.storage.load_topics()).items():
            try:
                (
                    await self._open_topic(
                        name, int(cfg["partitions"]), _retention(cfg.get("retention")), save=False
                    )
                ).schemas = cfg.get("schemas", "off")
            except StorageUnavailable as exc:
                # The hub starts all the same; this topic answers 503 until it is deleted.
                logger.error("topic %r is unavailable: %s", name, exc.detail)
                self.unavailable[name] = exc.detail
        if self.group_router is not None:
            await self.group_router.start(self)
        for topic, name, cfg, positions, stats in await self.storage.load_groups():
            t = self.topics.get(topic)
            if t is None or (self.group_router is not None and internal_group(name) is None):
                continue  # a client group shared by several nodes: served once taken
            group = ConsumerGroup(topic, name, group_config(cfg), positions, stats)
            self._fill_positions(t, group)
            t.groups[name] = group
            dlq = group.config.dead_letter_topic or f"{topic}.dlq"
            await find_dead_letters(t, group, self.topics.get(dlq))
        await self.index.start()
        await self.views.start()
        loop = asyncio.get_running_loop()
        self._refilled.clear()
        self._tasks = [
            loop.create_task(self._maintain()),
            loop.create_task(self._refill_dedupe()),
            loop.create_task(self._compact()),
            loop.create_task(follow_topics(self)),  # other nodes' changes, if any
        ]
        if wait_ready:
            await self._refilled.wait()

    async def _refill_dedupe(self) -> None:
        """Refill the dedupe window from the log (see :mod:`tidings.core.refill`): a
        producer that retries across a restart gets its first position back."""
        started = self.loop.time() if self.loop is not None else 0.0
        try:
            n = await refill(
                self.dedupe,
                {name: list(t.partitions) for name, t in self.topics.items()},
                self.clock.time_ms(),
            )
            if self.loop is not None:
                logger.info(
                    "dedupe window refilled: %d ids in %.2fs", n, self.loop.time() - started
                )
        except Exception:
            logger.exception("dedupe window not refilled")
        finally:
            self._refilled.set()

    @property
    def ready(self) -> bool:
        """Whether the dedupe window is refilled: until then, publishes wait."""
        return self._refilled.is_set()

    def begin_shutdown(self) -> None:
        """Refuse new publishes and answer every long poll now, with what it has."""
        self.closing = True
        self._closing.set()

    async def close(self) -> None:
        self.begin_shutdown()
        for discarding in list(self._discarding):
            with contextlib.suppress(Exception):
                await discarding
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for ev in self._group_changed.values():
            ev.set()
        if self.group_router is not None:
            with contextlib.suppress(Exception):  # its leases then run out
                await self.group_router.close()
        await self.views.close()
        try:
            await self.index.close()
        finally:
            await self.storage.close()

    async def _maintain(self) -> None:
        """Retention, and leases that ran out with nobody fetching."""
        last_retention = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.options.sweep_s)
            now = self.clock.time_ms()
            try:
                for topic in list(self.topics.values()):
                    for group in list(topic.groups.values()):
                        if self.topics.get(topic.name) is not topic:
                            break  # deleted while an earlier group was swept
                        due = group.next_due_ms()
                        if due is not None and due <= now:
                            async with group.changing:
                                if topic.groups.get(group.name) is not group:
                                    continue  # deleted while the lock was awaited
                                dead = group.expire(now)
                                if dead:
                                    await self._dead_letter(topic, group, dead)
                                    await self.storage.save_positions(
                                        topic.name, group.name, group.positions(), group.stats()
                                    )
                if loop.time() - last_retention >= self.options.retention_check_s:
                    last_retention = loop.time()
                    await self.apply_retention(now)
            except Exception:
                logger.exception("maintenance failed")

    async def _compact(self) -> None:
        """Compaction of the topics by key, a bounded round at a time (see
        :mod:`tidings.log.compaction`): a task of its own, so that a long round
        never delays the lease sweep."""
        while True:
            await asyncio.sleep(self.options.compaction_check_s)
            try:
                await self.storage.compact(self.clock.time_ms())
            except Exception:
                logger.exception("compaction failed")

    def failed_partitions(self) -> list[tuple[str, int, str]]:
        """(topic, partition, why) for each partition refusing appends now."""
        return [
            (t.name, i, why)
            for t in self.topics.values()
            for i, p in enumerate(t.partitions)
            if (why := p.failure) is not None
        ]

    async def apply_retention(self, now_ms: int | None = None) -> int:
        removed = 0
        # Copies: topics, partitions and groups may come and go while a removal is awaited.
        for topic in list(self.topics.values()):
            for i, part in enumerate(list(topic.partitions)):
                if self.topics.get(topic.name) is not topic:
                    break  # deleted while an earlier partition was worked on
                try:
                    removed += await part.apply_retention(now_ms)
                except Exception:  # one partition's fault does not hold up the others
                    logger.exception("retention of %s/%d failed", topic.name, i)
                    continue
                for group in list(topic.groups.values()):
                    async with group.changing:  # not inside a fetch that awaits a read
                        group.clamp(i, part.start_offset)
        return removed

    # -- topics --------------------------------------------------------------------

    async def _open_topic(
        self,
        name: str,
        partitions: int,
        retention: Retention,
        save: bool = True,
        schemas: str = "off",
        room: bool = False,
    ) -> Topic:
        """Open (with ``save``: create) a topic. Its partitions open first and its
        metadata is saved last, so a creation that fails records nothing; what it
        opened is closed and its directory removed.

        One creation at a time: one that finds the topic made while it waited
        answers it, and a name being deleted meanwhile is refused (Conflict). With
        ``room``, a new topic past ``max_topics`` is refused (Conflict), judged
        under the same lock, so creations at once never pass the limit together."""
        async with self._creating:
            return await self._open_topic_now(name, partitions, retention, save, schemas, room)

    async def _open_topic_now(
        self,
        name: str,
        partitions: int,
        retention: Retention,
        save: bool = True,
        schemas: str = "off",
        room: bool = False,
    ) -> Topic:
        """:meth:`_open_topic` for a caller that holds ``_creating``."""
        t = self.topics.get(name)
        if t is not None:
            return t
        self._check_not_deleting(name)
        if room:
            self._check_room_for_topic()
        return await self._make_topic(name, partitions, retention, save, schemas)

    async def _make_topic(
        self, name: str, partitions: int, retention: Retention, save: bool, schemas: str
    ) -> Topic:
        parts: list[PartitionStore] = []
        try:
            for i in range(partitions):
                parts.append(await self.storage.open_partition(name, i, retention))
            if save:
                await self.storage.save_topic(name, _topic_dict(partitions, retention, schemas))
        except BaseException:
            if save:
                self._discard(name)
            raise
        topic = self.topics[name] = Topic(name, parts, retention, schemas=schemas)
        return topic

    def _discard(self, name: str) -> None:
        """Remove what a failed creation of ``name`` left; the name is busy until then."""
        self._deleting.add(name)

        async def discard() -> None:
            try:
                await self.storage.drop_topic(name)
            except Exception:
                logger.exception("could not remove what the failed creation of %r left", name)
            finally:
                self._deleting.discard(name)

        task = asyncio.get_running_loop().create_task(discard())
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)

    async def learn_topic(self, name: str) -> None:
        """Open a topic that the storage holds and this hub does not know yet (another
        node of a shared storage made it, and the change has not reached this one yet);
        else nothing."""
        if name not in self.topics:
            await apply_change(self, name)

    def _check_available(self, name: str) -> None:
        why = self.unavailable.get(name)
        if why is not None:
            raise StorageUnavailable(
                f"topic {name!r} could not be opened when the hub started ({why}); "
                "repair its files and restart, or delete it",
                topic=name,
            )

    def _check_room_for_topic(self) -> None:
        limit = self.options.max_topics
        count = len(self.topics) + len(self.unavailable)
        if count >= limit:
            raise Conflict(
                f"the hub has {count} topics, its limit (--max-topics {limit}); "
                "delete a topic or raise the limit",
                limit="max_topics",
                max_topics=limit,
            )

    def topic(self, name: str) -> Topic:
        t = self.topics.get(name)
        if t is None:
            check_name("topic", name)
            self._check_available(name)
            raise TopicNotFound(f"topic {name!r} does not exist", topic=name)
        return t

    async def create_topic(
        self,
        name: str,
        partitions: int | None = None,
        retention: Retention | None = None,
        schemas: str | None = None,
    ) -> tuple[Topic, bool]:
        """Create ``name`` or change its partitions (up only), retention and schema checks
        (``off``, ``validate``, ``required``); True if created.

        What is left out (None) keeps its value: one partition, no retention
        limits and no schema checks for a new topic.
        """
        check_name("topic", name)
        if schemas is not None and schemas not in TOPIC_MODES:
            raise BadRequest(f"schemas must be one of {', '.join(TOPIC_MODES)}", field="schemas")
        if retention is not None:
            _check_compaction(retention)
        async with self._creating:
            return await self._create_or_change(name, partitions, retention, schemas)

    async def _create_or_change(
        self, name: str, partitions: int | None, retention: Retention | None, schemas: str | None
    ) -> tuple[Topic, bool]:
        self._check_not_deleting(name)
        self._check_available(name)
        t = self.topics.get(name)
        if partitions is None:
            partitions = 1 if t is None else len(t.partitions)
        if retention is None:
            retention = Retention() if t is None else t.retention
        most = self.options.max_partitions
        if (
            isinstance(partitions, bool)
            or not isinstance(partitions, int)
            or not (1 <= partitions <= most)
        ):
            raise BadRequest(
                f"partitions must be an integer from 1 to {most} (--max-partitions)",
                field="partitions",
                max_partitions=most,
            )
        if t is not None and partitions < len(t.partitions):
            raise Conflict(
                f"topic {name!r} has {len(t.partitions)} partitions; they can grow, not shrink",
                field="partitions",
            )
        if t is None:
            self._check_room_for_topic()
            made = await self._make_topic(name, partitions, retention, True, schemas or "off")
            return made, True
        if schemas is None:
            schemas = t.schemas
        # Partitions first, metadata last: a partition that cannot open records nothing.
        parts = [await self.storage.open_partition(name, i, retention) for i in range(partitions)]
        await self.storage.save_topic(name, _topic_dict(partitions, retention, schemas))
        t.retention = retention
        t.schemas = schemas
        for i, part in enumerate(parts):
            if i >= len(t.partitions):
                t.partitions.append(part)
                for group in t.groups.values():
                    group.add_partitions({i: part.start_offset})
        return t, False

    async def delete_topic(self, name: str) -> None:
        if self.unavailable.pop(name, None) is not None:
            self._deleting.add(name)
            try:
                await self.storage.drop_topic(name)
            finally:
                self._deleting.discard(name)
            return
        async with self._creating:  # not while a change of it is half done
            self.topic(name)
            # Until its files are gone, the name is not free: a publish meanwhile would
            # open the directory being deleted and be acknowledged into nothing.
            self._deleting.add(name)
            del self.topics[name]
        try:
            self.dedupe.drop_topic(name)
            self.catalog.drop(name)
            await self.index.forget(name)  # before the files: no row outlives its topic
            await self.storage.drop_topic(name)
        finally:
            self._deleting.discard(name)
        for key in [k for k in self._group_changed if k[0] == name]:
            self._group_changed.pop(key).set()

    def _check_not_deleting(self, name: str) -> None:
        if name in self._deleting:
            raise Conflict(f"topic {name!r} is being deleted; try again", topic=name)

    async def _dead_letter_topic(self, name: str) -> Topic:
        """Where a group's dead letters go, made on first use by the hub on the group's
        behalf: never refused by ``max_topics``, though it counts. A topic that could
        not be opened at start, or one being deleted, is never made again over what
        is there: the dead letters wait (StorageUnavailable) and are copied later."""
        t = self.topics.get(name)
        if t is not None:
            return t
        if name in self._deleting or name in self.unavailable:
            raise StorageUnavailable(
                f"dead-letter topic {name!r} is being deleted or could not be opened",
                topic=name,
            )
        return await self._open_topic(name, 1, Retention())

    async def _topic_for_publish(self, name: str) -> Topic:
        """The topic a publish (or a client's group) writes to, made if it may be;
        Forbidden for the hub's own topics (``_...``: view changelogs)."""
        check_client_topic(name)
        t = self.topics.get(name)
        if t is not None:
            return t
        self._check_publishable(name)
        self._check_room_for_topic()  # at once, without waiting on the lock; again under it
        return await self._open_topic(name, 1, Retention(), room=True)

    def _check_publishable(self, name: str) -> None:
        """Raise what a publish to ``name`` would raise before it makes the topic."""
        check_client_topic(name)
        if name in self.topics:
            return
        check_name("topic", name)
        self._check_not_deleting(name)
        self._check_available(name)
        if not self.options.auto_create:
            raise TopicNotFound(
                f"topic {name!r} does not exist and the hub runs with auto-create off",
                topic=name,
            )

    # -- read ------------------------------------------------------------------------

    async def positions(
        self,
        topic: Topic,
        partition: int | None,
        start: str | None,
        from_time: str | None,
    ) -> dict[int, int]:
        """Where a read starts, per partition: from ``partition``, ``from`` or ``from_time``."""
        n = len(topic.partitions)
        if partition is not None and not (0 <= partition < n):
            raise BadPosition(
                f"partition {partition} does not exist; topic {topic.name!r} has {n}",
                field="partition",
            )
        chosen = [partition] if partition is not None else list(range(n))
        if from_time is not None:
            if start is not None:
                raise BadRequest("give from or from_time, not both", field="from_time")
            ts = parse_time_ms(from_time, "from_time")
            return {p: await topic.partitions[p].offset_for_time(ts) for p in chosen}
        if start is None or start == "earliest":
            return {p: topic.partitions[p].start_offset for p in chosen}
        if start == "latest":
            return {p: topic.partitions[p].end_offset for p in chosen}
        if is_decimal(start):
            if partition is None and n > 1:
                raise BadPosition(
                    "an offset in from needs partition= on a topic with several partitions",
                    field="from",
                )
            pos = {chosen[0]: int(start)}
        else:
            pos = parse_token(start, n)
            if partition is not None:
                pos = {p: o for p, o in pos.items() if p == partition}
            else:
                # Partitions added since the token was made start at their beginning.
                for p in chosen:
                    pos.setdefault(p, topic.partitions[p].start_offset)
        for p, o in pos.items():
            part = topic.partitions[p]
            if o < part.start_offset and not is_decimal(start):
                # A resume token older than retention: go on from what is kept.
                pos[p] = part.start_offset
            elif not (part.start_offset <= o <= part.end_offset):
                raise OffsetOutOfRange(
                    f"offset {o} of partition {p} is outside [{part.start_offset}, "
                    f"{part.end_offset}]",
                    field="from",
                    first_offset=part.start_offset,
                    next_offset=part.end_offset,
                )
        return pos


def _damage(d: Damage) -> dict[str, Any]:
    """A bad range as the API shows it: offsets lost, where, and why."""
    return {
        "from": d.first_offset,
        "to": d.end_offset,
        "events": d.records,
        "segment": d.segment,
        "position": d.position,
        "bytes": d.length,
        "why": d.why,
    }


def _check_compaction(r: Retention) -> None:
    if r.compaction not in COMPACTION_MODES:
        raise BadRequest(
            f"compaction {r.compaction!r} is not one of {', '.join(map(repr, COMPACTION_MODES))}",
            field="compaction",
        )
    dr = r.delete_retention_ms
    if isinstance(dr, bool) or not isinstance(dr, int) or dr < 0:
        raise BadRequest(
            "delete_retention must be a duration of 0 or more", field="delete_retention"
        )


def _retention(raw: object) -> Retention:
    if not isinstance(raw, dict):
        return Retention()
    return Retention(
        raw.get("max_age_ms"),
        raw.get("max_bytes"),
        raw.get("compaction", "none"),
        raw.get("delete_retention_ms", DELETE_RETENTION_MS),
    )


def _topic_dict(partitions: int, r: Retention, schemas: str = "off") -> dict[str, Any]:
    d: dict[str, Any] = {
        "partitions": partitions,
        "retention": {"max_age_ms": r.max_age_ms, "max_bytes": r.max_bytes},
    }
    if r.compaction != "none" or r.delete_retention_ms != DELETE_RETENTION_MS:
        d["retention"]["compaction"] = r.compaction
        d["retention"]["delete_retention_ms"] = r.delete_retention_ms
    if schemas != "off":
        d["schemas"] = schemas
    return d
