"""The hub's storage (the ``Storage`` seam of ``tidings.core.storage``) on JetStream.

Partitions are ``NatsPartition`` over one stream each (``log``); metadata lives in KV
buckets of the same replicas:

- ``td_topics``: each topic's record (``NatsLog``'s partition count and retention,
  which make its streams) with the hub's own configuration under ``"hub"``; written
  by compare-and-set, so two nodes that save the same topic at once both land, the
  second over the first.
- ``td_groups``: one key per consumer group (``<topic>.<group>``, encoded as in
  ``names``) holding its configuration, positions and counters; ``save_group`` and
  ``save_positions`` change their part by compare-and-set, so neither undoes the
  other. A client's group is served by one node (its owner, see ``grouprouter``),
  whose saves are compare-and-sets on its own last write (:meth:`take_group`).
- ``td_schemas``: one key per event type; the last write wins.
- ``td_hub``: the hub id, created once by compare-and-set: every node that shares
  the cluster answers the same one.
- ``td_links``: the decisions of linked appends (see ``linked``).

The event index is node-local (in memory): its rows are hints, which each node
rebuilds from the log when it starts. Compaction by key is not done: a compacted
topic keeps every record, a superset of what compaction promises.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from tidings.backends.nats import names
from tidings.backends.nats.connection import NatsSettings
from tidings.backends.nats.linked import DEFAULT_TIMEOUT_S, LINK_HEADER, LINKS_BUCKET, Links
from tidings.backends.nats.log import NatsLog
from tidings.backends.nats.meta import MetaBucket
from tidings.backends.nats.partition import NatsPartition
from tidings.core.storage import Deduplicated
from tidings.errors import BadRequest, Conflict, StorageUnavailable, TopicNotFound
from tidings.log.config import GroupRow, GroupStats, Positions, Retention
from tidings.log.memory import MemoryIndex

CAS_ATTEMPTS = 20


class GroupMoved(StorageUnavailable):
    """A save of a group this node served was refused: another node serves it now."""


_GROUP_WRITES_KEPT = 10_000  # groups whose last write this node remembers


class NatsStorage:
    """Partitions and metadata in a NATS JetStream cluster, shared by every node.

    Made unconnected (the hub is built before its event loop runs); :meth:`start`
    connects within the loop, and every async method starts it first. ``hub_id`` is
    known before: given (read by :func:`read_hub_id` beforehand), or set by ``start``.
    """

    # Appends given event ids carry them as ``Nats-Msg-Id`` (see ``NatsPartition``):
    # JetStream's duplicate window, shared by every node, answers a retry.
    shared_dedupe = True

    def __init__(
        self,
        settings: NatsSettings,
        *,
        replicas: int = 1,
        link_timeout_s: float = DEFAULT_TIMEOUT_S,
        hub_id: str = "",
    ) -> None:
        self.settings = settings
        self.replicas = replicas
        self.link_timeout_s = link_timeout_s
        self.hub_id = hub_id
        self.log: NatsLog
        self.links: Links
        self.groups: MetaBucket
        self.schemas: MetaBucket
        self._started = False
        self._starting: asyncio.Lock | None = None
        self._parts: dict[tuple[str, int], NatsPartition] = {}
        self._not_ours: set[str] = set()  # topics whose creation save_topic refused
        self._known: set[str] = set()  # topics loaded or saved here: saves change them
        # group key -> (revision, value) of this node's last write of it
        self._group_writes: dict[str, tuple[int, dict[str, Any]]] = {}
        # group key -> (revision, value or None) of the groups this node serves as their
        # owner: each save is a compare-and-set on it, and a refusal is GroupMoved;
        # (-1, None) for one let go or written by another node: every save is refused
        self._fenced: dict[str, tuple[int, dict[str, Any] | None]] = {}
        #: Called with (topic, group) when a save of a group served here is refused.
        self.on_group_moved: Callable[[str, str], None] | None = None
        #: Awaited with the topic when it is dropped, here or by another node.
        self.on_topic_gone: Callable[[str], Awaitable[None]] | None = None
        self._topics_seen: int | None = None  # td_topics revision topic_changes reached

    @classmethod
    async def connect(
        cls,
        servers: Sequence[str],
        *,
        replicas: int = 1,
        link_timeout_s: float = DEFAULT_TIMEOUT_S,
        settings: NatsSettings | None = None,
    ) -> NatsStorage:
        """A started storage on ``servers``."""
        if settings is None:
            settings = NatsSettings(servers=tuple(servers))
        store = cls(settings, replicas=replicas, link_timeout_s=link_timeout_s)
        await store.start()
        return store

    async def start(self) -> None:
        """Connect, make the buckets that are missing, and read (or make) the hub id;
        once: later calls return at once."""
        if self._started:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._started:
                return
            log = await NatsLog.connect(self.settings, replicas=self.replicas)
            try:
                links = Links(await log.bucket(LINKS_BUCKET), self.link_timeout_s)
                groups = await log.bucket("td_groups")
                schemas = await log.bucket("td_schemas")
                hub_id = await _hub_id(await log.bucket("td_hub"))
                if self.hub_id and hub_id != self.hub_id:
                    raise StorageUnavailable(
                        f"the cluster holds hub {hub_id}, not {self.hub_id} as read before"
                    )
            except BaseException:
                await log.close()
                raise
            self.log, self.links, self.groups, self.schemas = log, links, groups, schemas
            self.hub_id = hub_id
            self._started = True

    # -- partitions ----------------------------------------------------------------

    async def open_partition(
        self, topic: str, partition: int, retention: Retention
    ) -> NatsPartition:
        """The partition's stream, made unless it exists (with ``retention``'s limits
        either way), and its tail followed from now on."""
        await self.start()
        key = (topic, partition)
        part = self._parts.get(key)
        await self.log._ensure_stream(topic, partition, retention)
        if part is not None and not part.closed:
            part.retention = retention
            return part
        part = NatsPartition(self.log, self.links, topic, partition, retention)
        await part.refresh()
        await self.log.follow(topic, partition)
        self._parts[key] = part
        return part

    def append_linked(
        self,
        topic: str,
        parts: Sequence[tuple[int, Sequence[bytes]]],
        ids: Sequence[Sequence[str]] | None = None,
    ) -> asyncio.Future[list[int]]:
        """Each part with the same ``Td-Link`` header, queued now on its partition (in
        call order there), then ``committed`` in ``td_links`` once all are
        acknowledged: no part is read before, and an append whose writer dies between
        parts is aborted by a reader after the links' timeout (see ``linked``).

        With ``ids`` (each part's event ids), records stored before (a retry, through
        any node) are not stored again: they carry the link of the append that stored
        them, which is committed too (the first writer may have died before its
        commit), else the append fails (StorageUnavailable: a reader aborted it)."""
        opened = []
        for p, _ in parts:
            part = self._parts.get((topic, p))
            if part is None or part.closed:
                raise StorageUnavailable(f"partition {p} of {topic!r} is not open")
            opened.append(part)
        for part, (_, payloads) in zip(opened, parts, strict=True):
            part.check(payloads)  # every part, before any is queued
        headers = {LINK_HEADER: uuid.uuid4().hex}
        link = headers[LINK_HEADER]
        part_ids = [None] * len(parts) if ids is None else list(ids)
        pairs = zip(opened, parts, part_ids, strict=True)
        futures = [part.enqueue(payloads, headers, i) for part, (_, payloads), i in pairs]

        async def finish() -> list[int]:
            results = await asyncio.gather(*futures, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    await self._abort_quietly(link)
                    raise r
            bases = [r for r in results if isinstance(r, int)]
            for earlier in await self._links_of_repeats(opened, bases, link):
                await self.links.commit(earlier)
            await self.links.commit(link)
            return bases

        return asyncio.ensure_future(finish())

    async def _links_of_repeats(
        self, opened: list[NatsPartition], bases: list[int], link: str
    ) -> set[str]:
        """The links (other than ``link``) of the records a linked append found stored
        before: read back from where they are."""
        found: set[str] = set()
        for part, base in zip(opened, bases, strict=True):
            if not isinstance(base, Deduplicated):
                continue
            wanted = sorted(o for o, rep in zip(base.offsets, base.repeated, strict=True) if rep)
            while wanted:
                records = await self.log.read_with_headers(
                    part.topic, part.partition, wanted[0], wanted[-1] - wanted[0] + 1
                )
                want = set(wanted)
                for off, _, _, hdrs in records:
                    earlier = hdrs.get(LINK_HEADER)
                    if earlier is not None and earlier != link and off in want:
                        found.add(earlier)
                last = records[-1][0] if records else wanted[-1]
                wanted = [o for o in wanted if o > last]
        return found

    async def _abort_quietly(self, link: str) -> None:
        with contextlib.suppress(Exception):  # else a reader aborts it after the timeout
            await self.links.abort(link)

    async def drop_topic(self, topic: str) -> None:
        """Close the topic's partitions here, delete its streams, its record and its
        groups' keys; after a creation that ``save_topic`` refused because the cluster
        holds the topic larger (made by another node), only close them here."""
        await self.start()
        opened = [k for k in self._parts if k[0] == topic]
        for key in opened:
            await self._parts.pop(key).close()
        self._known.discard(topic)
        if topic in self._not_ours:  # a creation refused by save_topic: keep the topic
            self._not_ours.discard(topic)
            return
        try:
            await self.log.drop_topic(topic)
        except TopicNotFound:  # a creation that failed: streams opened, no record
            for _, p in opened:
                await self.log.drop_stream(topic, p)
        await self._groups_gone(topic)
        prefix = names.key(topic) + "."
        entries, _ = await self.groups.items()
        for k, entry in entries.items():
            if k.startswith(prefix):
                await self.groups.delete(k, entry.revision)

    # -- topics --------------------------------------------------------------------

    async def load_topics(self) -> dict[str, dict[str, Any]]:
        await self.start()
        records = await self.log.load_topics()
        self._known.update(records)
        if self._topics_seen is None:
            self._topics_seen = self.log.topics_revision
        return {t: dict(r.get("hub") or _hub_config(r)) for t, r in records.items()}

    async def topic_changes(self) -> AsyncIterator[str]:
        """The topic of each write of ``td_topics`` after ``load_topics`` read it, by any
        node, from a watch of the bucket (an ordered consumer, pushed each write as it
        is stored). Started again after a failure, it goes on after the last write it
        told."""
        await self.start()
        if self._topics_seen is None:
            await self.load_topics()
        assert self._topics_seen is not None
        async for entry in self.log.topics.watch(self._topics_seen):
            self._topics_seen = entry.revision
            yield names.decode(entry.key)

    async def load_topic(self, topic: str) -> dict[str, Any] | None:
        """The topic's config as the cluster holds it now (read from the leader)."""
        await self.start()
        entry = await self.log.topics.get(names.key(topic))
        if entry is None or entry.value is None:
            return None
        self.log._remember(topic, entry.value)
        self._known.add(topic)
        self._not_ours.discard(topic)
        return dict(entry.value.get("hub") or _hub_config(entry.value))

    async def forget_topic(self, topic: str) -> None:
        """Close the partitions of a topic another node dropped, and stop its tails:
        deleting its streams was the dropping node's."""
        await self._forget_topic(topic)

    async def _forget_topic(self, topic: str) -> None:
        for key in [k for k in self._parts if k[0] == topic]:
            await self._parts.pop(key).close()
        self._known.discard(topic)
        await self.log._forget(topic)
        await self._groups_gone(topic)

    async def _groups_gone(self, topic: str) -> None:
        """Its groups served here let go (``on_topic_gone``), their fences and last
        writes forgotten."""
        if self.on_topic_gone is not None:
            await self.on_topic_gone(topic)
        prefix = names.key(topic) + "."
        for k in [k for k in self._group_writes if k.startswith(prefix)]:
            del self._group_writes[k]
        for k in [k for k in self._fenced if k.startswith(prefix)]:
            del self._fenced[k]

    async def save_topic(self, topic: str, config: dict[str, Any]) -> None:
        await self.start()
        partitions = config.get("partitions")
        if not isinstance(partitions, int) or partitions < 1:
            raise BadRequest(f"topic {topic!r}: partitions {partitions!r}", field="partitions")
        retention = config.get("retention") or {}
        record = {
            "partitions": partitions,
            "max_age_ms": retention.get("max_age_ms"),
            "max_bytes": retention.get("max_bytes"),
            "hub": config,
        }
        key = names.key(topic)
        for _ in range(CAS_ATTEMPTS):
            entry = await self.log.topics.get(key)
            held = entry.value if entry is not None else None
            if held is not None and int(held.get("partitions", 0)) > partitions:
                # another node made it larger than this one knows: never shrink it, and
                # the drop_topic that follows a failed creation must not delete it (a
                # refused change of a topic known here is followed by none)
                if topic not in self._known:
                    self._not_ours.add(topic)
                raise Conflict(
                    f"topic {topic!r} has {held['partitions']} partitions in the cluster, "
                    f"not {partitions}: made or changed by another node",
                    topic=topic,
                )
            try:
                await self.log.topics.put(key, record, 0 if entry is None else entry.revision)
                break
            except Conflict:
                continue  # another node wrote it meanwhile
        else:
            raise StorageUnavailable(f"topic {topic!r} kept changing while it was saved")
        self.log._remember(topic, record)
        self._known.add(topic)
        self._not_ours.discard(topic)

    # -- groups --------------------------------------------------------------------

    async def take_group(self, topic: str, group: str) -> GroupRow | None:
        """Start serving a group as its owner: its saved state (None if there is none),
        written again by compare-and-set so that a save still on its way from the node
        that served it before is refused; from now on each save of it is a
        compare-and-set on this node's last write, and a refusal raises
        :class:`GroupMoved` (another node serves it)."""
        await self.start()
        key = _group_key(topic, group)
        for _ in range(CAS_ATTEMPTS):
            entry = await self.groups.get(key)
            if entry is None or entry.value is None:
                self._fenced[key] = (0 if entry is None else entry.revision, None)
                return None
            try:
                revision = await self.groups.put(key, entry.value, entry.revision)
            except Conflict:
                continue  # the node before was still saving: read its last write
            v = entry.value
            self._fenced[key] = (revision, v)
            return (topic, group, v["config"], _positions(v["positions"]),
                    dict(v.get("stats") or {}))  # fmt: skip
        raise StorageUnavailable(f"group {group!r} of {topic!r} kept changing while taken")

    async def read_group(self, topic: str, group: str) -> GroupRow | None:
        """A group's saved state (None if there is none), without taking it."""
        await self.start()
        entry = await self.groups.get(_group_key(topic, group))
        if entry is None or entry.value is None:
            return None
        v = entry.value
        return topic, group, v["config"], _positions(v["positions"]), dict(v.get("stats") or {})

    def let_go_group(self, topic: str, group: str) -> None:
        """Stop serving a group as its owner (see :meth:`take_group`): a save of it still
        on its way (its lease lapsed meanwhile) raises :class:`GroupMoved` rather than
        write over the next owner's, until this node takes it again or the topic goes."""
        self._fenced[_group_key(topic, group)] = (-1, None)

    async def _change_fenced(
        self, key: str, fenced: tuple[int, dict[str, Any] | None], change: dict[str, Any]
    ) -> None:
        revision, old = fenced
        if revision < 0:
            raise GroupMoved(f"group {key} was written by another node: it serves it")
        if old is None and "config" not in change:
            return  # positions of a group never saved (or deleted): nothing to keep
        value = {"positions": {}, "stats": {}, **(old or {}), **change}
        try:
            self._fenced[key] = (await self.groups.put(key, value, revision), value)
        except Conflict:
            self._moved(key)
            raise GroupMoved(f"group {key} was written by another node: it serves it") from None

    def _moved(self, key: str) -> None:
        """Every later save of the group is refused too, until taken again."""
        self._fenced[key] = (-1, None)
        if self.on_group_moved is not None:
            t, _, g = key.partition(".")
            self.on_group_moved(names.decode(t), names.decode(g))

    async def _change_group(self, topic: str, group: str, change: dict[str, Any]) -> None:
        key = _group_key(topic, group)
        fenced = self._fenced.get(key)
        if fenced is not None:
            await self._change_fenced(key, fenced, change)
            return
        # This node's last write of the key, if any: one put, no get, unless another
        # node (or a deletion) wrote it since (Conflict: read it, as without).
        last = self._group_writes.pop(key, None)
        if last is not None:
            revision, written = last
            value = {**written, **change}
            try:
                self._group_writes[key] = (await self.groups.put(key, value, revision), value)
                return
            except Conflict:
                pass
        for _ in range(CAS_ATTEMPTS):
            entry = await self.groups.get(key)
            old = entry.value if entry is not None and entry.value is not None else None
            if old is None and "config" not in change:
                return  # positions of a group never saved (or deleted): nothing to keep
            value = {"positions": {}, "stats": {}, **(old or {}), **change}
            try:
                revision = await self.groups.put(key, value, 0 if entry is None else entry.revision)
            except Conflict:
                continue
            if len(self._group_writes) >= _GROUP_WRITES_KEPT:
                self._group_writes.clear()
            self._group_writes[key] = (revision, value)
            return
        raise StorageUnavailable(f"group {group!r} of {topic!r} kept changing while saved")

    async def load_groups(self) -> list[GroupRow]:
        await self.start()
        entries, _ = await self.groups.items()
        out: list[GroupRow] = []
        for k, entry in sorted(entries.items()):
            t, _, g = k.partition(".")
            v = entry.value
            out.append(
                (names.decode(t), names.decode(g), v["config"], _positions(v["positions"]),
                 dict(v.get("stats") or {}))
            )  # fmt: skip
        return out

    async def save_group(self, topic: str, group: str, config: dict[str, Any]) -> None:
        await self.start()
        await self._change_group(topic, group, {"config": config})

    async def save_positions(
        self, topic: str, group: str, positions: Positions, stats: GroupStats | None = None
    ) -> None:
        await self.start()
        change: dict[str, Any] = {"positions": {str(p): v for p, v in positions.items()}}
        if stats is not None:
            change["stats"] = stats
        await self._change_group(topic, group, change)

    async def delete_group(self, topic: str, group: str) -> None:
        await self.start()
        key = _group_key(topic, group)
        self._group_writes.pop(key, None)
        fenced = self._fenced.get(key)
        if fenced is not None:
            if fenced[0] < 0:
                raise GroupMoved(f"group {key} was written by another node: it serves it")
            if fenced[1] is not None:
                try:
                    self._fenced[key] = (await self.groups.delete(key, fenced[0]), None)
                except Conflict:
                    self._moved(key)
                    raise GroupMoved(f"group {key} was written by another node") from None
            return
        entry = await self.groups.get(key)
        if entry is not None and entry.value is not None:
            await self.groups.delete(key)

    # -- schemas -------------------------------------------------------------------

    async def load_schemas(self) -> dict[str, dict[str, Any]]:
        await self.start()
        entries, _ = await self.schemas.items()
        return {names.decode(k): dict(e.value) for k, e in entries.items()}

    async def save_schemas(self, etype: str, entry: dict[str, Any]) -> None:
        await self.start()
        await self.schemas.put(names.key(etype), entry)

    # -- the rest ------------------------------------------------------------------

    def open_index(self) -> MemoryIndex:
        """Node-local rows in memory: hints, rebuilt from the log on each start."""
        return MemoryIndex()

    async def compact(self, now_ms: int) -> int:
        """Not done on NATS: a topic compacted by key keeps every record (a superset of
        the latest per key, all that compaction promises). Removes nothing."""
        return 0

    async def close(self) -> None:
        """Let queued appends finish, then close the connection."""
        if not self._started:
            return
        for part in list(self._parts.values()):
            await part.close()
        self._parts.clear()
        await self.log.close()


async def _hub_id(bucket: MetaBucket) -> str:
    """The hub id in ``bucket``, made unless there (the first node's wins)."""
    entry = await bucket.get("id")
    if entry is None or not isinstance(entry.value, str):
        with contextlib.suppress(Conflict):  # another node made it first: theirs
            await bucket.put("id", uuid.uuid4().hex, 0)
        entry = await bucket.get("id")
    if entry is None or not isinstance(entry.value, str):
        raise StorageUnavailable("the hub id in bucket td_hub is missing")
    return entry.value


def read_hub_id(servers: Sequence[str], replicas: int = 1) -> str:
    """The cluster's hub id (made unless there), over a connection of its own in an
    event loop of its own: for a server that needs it before its loop runs."""

    async def read() -> str:
        log = await NatsLog.connect(NatsSettings(servers=tuple(servers)), replicas=replicas)
        try:
            return await _hub_id(await log.bucket("td_hub"))
        finally:
            await log.close()

    return asyncio.run(read())


def _hub_config(record: dict[str, Any]) -> dict[str, Any]:
    """The hub's configuration of a topic made by ``NatsLog.create_topic``."""
    return {
        "partitions": record["partitions"],
        "retention": {"max_age_ms": record.get("max_age_ms"), "max_bytes": record.get("max_bytes")},
    }


def _group_key(topic: str, group: str) -> str:
    return f"{names.key(topic)}.{names.key(group)}"


def _positions(raw: dict[str, Any]) -> Positions:
    return {
        int(p): (
            v[0],
            [o if isinstance(o, int) else tuple(o) for o in v[1]],
            [tuple(r) for r in v[2]] if len(v) > 2 else [],
        )
        for p, v in raw.items()
    }
