"""The seam between the App framework and a hub: one protocol, three implementations.

- :class:`HttpTransport`: a running hub, over :class:`~tidings.client.async_client.AsyncClient`.
- :class:`CoreTransport`: the hub's core in this process (``embedded:PATH``), on
  the same data directory format as ``tidings serve``; no server, no sockets.
- the test harness (:mod:`tidings.app.harness`) extends :class:`CoreTransport`
  with an in-memory log and a virtual clock.

Every method takes and answers plain dicts and lists: a delivered event is an
:class:`Incoming` whose ``event`` is the dict of its CloudEvents attributes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import orjson

from tidings.client.async_client import AsyncClient, _events_path, _ms
from tidings.client.groups import group_path
from tidings.client.nodes import parse_hub_urls
from tidings.core.groups import GroupConfig
from tidings.core.hub import Hub
from tidings.core.patterns import TypeFilter
from tidings.core.positions import parse_token
from tidings.errors import NotFound, StaleLease, StorageUnavailable
from tidings.events.envelope import normalize_event, now_rfc3339
from tidings.log.config import Clock, SystemClock

__all__ = [
    "CoreTransport",
    "GroupSpec",
    "HttpTransport",
    "Incoming",
    "TimedBatch",
    "Transport",
    "open_transport",
    "parse_hub_url",
]


class Incoming(NamedTuple):
    """One leased event: where it sits, its lease, its delivery count, its attributes.

    A named tuple: the transports make one per event with ``tuple.__new__`` (no
    ``__init__`` of ours runs), and its fields read through C getters."""

    topic: str
    partition: int
    offset: int
    lease: str
    deliveries: int
    event: dict[str, Any]


_new_tuple = tuple.__new__


@dataclass(frozen=True, slots=True)
class GroupSpec:
    start: Literal["earliest", "latest"]
    ack_wait: float
    max_deliver: int
    dead_letter_topic: str
    ordering: Literal["none", "key"]
    types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TimedBatch:
    """One read with append times (streams design, section 1).

    ``records``: ``(partition, offset, appended_ms, event)`` in offset order per
    partition; ``next``: where the next read starts, per partition; ``horizon``:
    every record of these partitions not received yet has ``appended_ms >= horizon``.
    """

    records: list[tuple[int, int, int, dict[str, Any]]]
    next: dict[int, int]
    horizon: int


class Transport(Protocol):
    """What the App framework needs of a hub; the runner and the pool use it.

    What an implementation owes: ``put_group`` creates the group, or sets an
    existing group's configuration and keeps its positions; ``fetch`` leases up
    to ``max`` events, waiting at most ``wait`` seconds for the first, each
    leased to this caller alone until it is acked, nacked or its ``ack_wait``
    runs out (then it is delivered again); ``ack`` settles the leases that are
    still this caller's, even when others in the call went stale; ``publish``
    is all or nothing and deduplicates by event id, so a retry after a failure
    stores nothing twice; ``read_all`` and ``group_state`` answer what is
    acknowledged now.
    """

    clock: Clock
    #: True when a fetch is a request to another process: one given up half-way
    #: goes on there (and may lease events), so it is let finish instead.
    remote: bool

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def put_group(self, topic: str, group: str, spec: GroupSpec) -> None: ...
    async def fetch(self, topic: str, group: str, max: int, wait: float) -> list[Incoming]: ...
    async def ack(self, topic: str, group: str, leases: Sequence[str]) -> None: ...
    async def nack(
        self, topic: str, group: str, leases: Sequence[str], delay: float
    ) -> None: ...
    async def publish(self, topic: str, events: Sequence[dict[str, Any]]) -> None: ...
    async def seek(self, topic: str, group: str, to: str) -> None: ...
    async def read_all(self, topic: str) -> list[dict[str, Any]]:
        """Every record of ``topic``, ``{"topic", "partition", "offset", "event"}``."""
        ...

    async def put_schema(self, etype: str, schema: Any, producer: str) -> None:
        """Register ``schema`` as what app ``producer`` emits as ``etype`` (Conflict if not)."""
        ...

    async def put_schema_consumer(self, etype: str, name: str, schema: Any) -> None:
        """Record that app ``name`` reads ``etype`` with ``schema`` (Conflict if it cannot)."""
        ...

    async def check_schema(self, etype: str, schema: Any, producer: str) -> dict[str, Any]:
        """What registering ``schema`` would meet, changing nothing."""
        ...

    async def latest_schema(self, etype: str) -> tuple[int, Any] | None:
        """The latest version of ``etype``'s schema and its number; None if it has none."""
        ...

    async def group_state(self, topic: str, group: str) -> tuple[int, int]:
        """(lag, pending) of a group."""
        ...

    async def read_timed(
        self, topic: str, start: str, limit: int, wait: float, types: Sequence[str] = (),
        partition: int | None = None,
    ) -> TimedBatch:
        """Records from ``start`` (earliest or a position token) with append times and
        the read's horizon; ``wait`` long-polls for the first record; ``partition``
        reads that partition alone."""
        ...

    async def put_view(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Declare view ``name`` (kind, inputs, app, window, emit); its info, with
        ``generation``. Conflict if it exists with other inputs."""
        ...

    async def view_info(self, name: str) -> dict[str, Any]:
        """The view's info (kind, inputs, generation, positions, lag)."""
        ...

    async def commit_view(
        self, name: str, generation: int, expect: int, events: Sequence[dict[str, Any]],
        partition: int = 0, route: Sequence[dict[str, Any]] | None = None,
    ) -> int:
        """Append ``events`` to partition ``partition`` (the task's) of the view's
        changelog as one append, only if its end offset is ``expect`` and its
        generation ``generation`` (else Conflict); answer the partition's new end.
        ``route``: a routing task's copies, published to the repartition topic first."""
        ...

    async def view_members(self, name: str, member: str, leave: bool = False) -> dict[str, Any]:
        """Heartbeat (or leave) as ``member`` of the processes running view ``name``:
        ``{"tasks": [...], "heartbeat_ms", ...}``, the tasks it runs now."""
        ...

    async def view_get(
        self, name: str, key: str, min_position: str | None = None, topic: str | None = None
    ) -> dict[str, Any] | None:
        """``{"key", "value", "position"}`` of view ``name``; None if the key has no value.
        With ``min_position`` (a token of input ``topic``), first wait until the view
        reflects every event at or before it (503 StorageUnavailable if not in time)."""
        ...

    async def end_positions(self, topic: str) -> dict[int, int]:
        """The next offset of each partition of ``topic`` now."""
        ...


_MAX_PARTITIONS = 1 << 20  # parse_token's bound; the hub checks the real one


_VIEW_WAIT_S = 10.0  # the hub's default wait for min_position


def _key_missing(exc: NotFound) -> bool:
    """Whether a 404 of a view key route is about the key (not the view)."""
    return "key" in exc.fields


def parse_hub_url(url: object) -> tuple[Literal["http", "embedded"], str]:
    """``http://…``/``https://…`` (one node, or several nodes of one hub as a list
    or comma-separated) or ``embedded:PATH``; ValueError names what is wrong.

    Answers the kind and, for ``http``, the node URLs joined by commas."""
    if isinstance(url, str) and not url:
        raise ValueError(f"hub must be a URL string, not {url!r}")
    if isinstance(url, str) and url.startswith("embedded:"):
        # A data directory's path may hold a comma: it names one directory, never nodes.
        path = url[len("embedded:") :]
        if not path:
            raise ValueError("hub 'embedded:' needs a data directory: embedded:./tidings-data")
        return "embedded", path
    if isinstance(url, str) and "," not in url:
        if url.startswith("nats://"):
            raise ValueError(f"hub {url!r}: the NATS JetStream backend is not available yet")
        if not url.startswith(("http://", "https://")):
            raise ValueError(
                f"hub {url!r} is not understood: give http://HOST:PORT (a running hub) "
                "or embedded:PATH (the hub's core in this process)"
            )
    elif not isinstance(url, str | list | tuple):
        raise ValueError(f"hub must be a URL string or a list of them, not {url!r}")
    return "http", ",".join(parse_hub_urls(url))


def open_transport(url: str, token: str | None = None) -> Transport:
    kind, where = parse_hub_url(url)
    if kind == "http":
        return HttpTransport(where, token)
    return EmbeddedTransport(Path(where))


async def _ack_live(
    ack: Any, topic: str, group: str, leases: Sequence[str]
) -> None:
    """Ack ``leases``; if some went stale (expired, re-leased), ack the others."""
    try:
        await ack(topic, group, list(leases))
    except StaleLease as exc:
        stale = set(exc.fields.get("stale") or ())
        rest = [lease for lease in leases if lease not in stale]
        if rest and len(rest) < len(leases):
            await _ack_live(ack, topic, group, rest)


class HttpTransport:
    """A hub at ``http://…``, over the SDK's async client: ``url`` may name several
    nodes, comma-separated, between which the client fails over."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.client = AsyncClient(url, token=token, timeout=30)
        self.clock: Clock = SystemClock()
        self.remote = True

    async def open(self) -> None:
        await self.client.healthz()

    async def close(self) -> None:
        await self.client.close()

    async def put_group(self, topic: str, group: str, spec: GroupSpec) -> None:
        await self.client.create_group(
            topic,
            group,
            start=spec.start,
            ack_wait=spec.ack_wait,
            max_deliver=spec.max_deliver,
            dead_letter_topic=spec.dead_letter_topic,
            ordering=spec.ordering,
            types=spec.types or None,
        )

    async def fetch(self, topic: str, group: str, max: int, wait: float) -> list[Incoming]:
        # The answer's records as dicts: no Record or Event objects on the hot path.
        answer = await self.client._call(
            "POST", group_path(topic, group) + "/fetch", {"max": max, "wait": wait}, wait=wait
        )
        records: list[dict[str, Any]] = answer["records"]
        new, cls = _new_tuple, Incoming
        return [
            new(cls, (
                r["topic"], r["partition"], r["offset"], r["lease"], r["deliveries"], r["event"]
            ))
            for r in records
        ]

    async def ack(self, topic: str, group: str, leases: Sequence[str]) -> None:
        await _ack_live(self.client.ack, topic, group, leases)

    async def nack(self, topic: str, group: str, leases: Sequence[str], delay: float) -> None:
        await self.client.nack(topic, group, list(leases), delay)

    async def publish(self, topic: str, events: Sequence[dict[str, Any]]) -> None:
        await self.client.publish_many(topic, events)

    async def seek(self, topic: str, group: str, to: str) -> None:
        await self.client.seek(topic, group, to)

    async def read_all(self, topic: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        position = "earliest"
        while True:
            records, nxt = await self.client.read(topic, start=position, limit=1000)
            out.extend(r.to_dict() for r in records)
            if not records or nxt == position:
                return out
            position = nxt

    async def group_state(self, topic: str, group: str) -> tuple[int, int]:
        info = await self.client.group(topic, group)
        return int(info["lag"]), int(info["pending"])

    async def read_timed(
        self, topic: str, start: str, limit: int, wait: float, types: Sequence[str] = (),
        partition: int | None = None,
    ) -> TimedBatch:
        params = {"from": start, "limit": str(limit), "appended": "true"}
        if partition is not None:
            params["partition"] = str(partition)
        if wait > 0:
            params["wait"] = _ms(wait)
        if types:
            params["types"] = ",".join(types)
        raw = await self.client._request(
            "GET", _events_path(topic), params=params, wait=wait
        )
        answer = orjson.loads(raw)
        records = [
            (r["partition"], r["offset"], r["appended"], r["event"]) for r in answer["records"]
        ]
        nxt = parse_token(answer["next"], _MAX_PARTITIONS) if answer["next"] else {}
        return TimedBatch(records, nxt, int(answer["horizon"]))

    async def put_view(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return await self.client.put_view(name, spec)

    async def view_info(self, name: str) -> dict[str, Any]:
        return await self.client.view(name)

    async def commit_view(
        self, name: str, generation: int, expect: int, events: Sequence[dict[str, Any]],
        partition: int = 0, route: Sequence[dict[str, Any]] | None = None,
    ) -> int:
        answer = await self.client.commit_view(
            name, generation, expect, events, partition, route
        )
        return int(answer["next"])

    async def view_members(self, name: str, member: str, leave: bool = False) -> dict[str, Any]:
        return await self.client.view_members(name, member, leave)

    async def view_get(
        self, name: str, key: str, min_position: str | None = None, topic: str | None = None
    ) -> dict[str, Any] | None:
        try:
            return await self.client.view_get(name, key, min_position, topic=topic)
        except NotFound as exc:
            if _key_missing(exc):
                return None
            raise

    async def end_positions(self, topic: str) -> dict[int, int]:
        info = await self.client.topic(topic)
        return {int(p["partition"]): int(p["next_offset"]) for p in info["partitions"]}

    async def put_schema(self, etype: str, schema: Any, producer: str) -> None:
        await self.client.put_schema(etype, schema, producer=producer)

    async def put_schema_consumer(self, etype: str, name: str, schema: Any) -> None:
        await self.client.put_schema_consumer(etype, name, schema)

    async def check_schema(self, etype: str, schema: Any, producer: str) -> dict[str, Any]:
        return await self.client.check_schema(etype, schema, producer=producer)

    async def latest_schema(self, etype: str) -> tuple[int, Any] | None:
        try:
            got = await self.client.schema_version(etype)
        except NotFound:
            return None
        return int(got["version"]), got["schema"]


class CoreTransport:
    """The hub's core in this process: the same calls the server makes, without HTTP."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.clock: Clock = hub.clock
        self.remote = False

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def put_group(self, topic: str, group: str, spec: GroupSpec) -> None:
        config = GroupConfig(
            start=spec.start,
            ack_wait_ms=round(spec.ack_wait * 1000),
            max_deliver=spec.max_deliver,
            dead_letter_topic=spec.dead_letter_topic,
            ordering=spec.ordering,
            types=spec.types,
        )
        await self.hub.put_group(topic, group, config)

    async def fetch(self, topic: str, group: str, max: int, wait: float) -> list[Incoming]:
        got = await self.hub.fetch(topic, group, max, wait)
        # The hub parsed each event it read from the log (for its type and key) and
        # hands that over: parsed here only when it did not (a redelivery).
        loads, new, cls = orjson.loads, _new_tuple, Incoming
        return [
            new(cls, (
                topic, d.partition, d.offset, d.lease, d.deliveries,
                loads(d.payload) if d.event is None else d.event,
            ))
            for d in got
        ]

    async def ack(self, topic: str, group: str, leases: Sequence[str]) -> None:
        await _ack_live(self.hub.ack, topic, group, leases)

    async def nack(self, topic: str, group: str, leases: Sequence[str], delay: float) -> None:
        await self.hub.nack(topic, group, list(leases), round(delay * 1000))

    async def publish(self, topic: str, events: Sequence[dict[str, Any]]) -> None:
        now = now_rfc3339()
        await self.hub.publish(topic, [normalize_event(ev, topic=topic, now=now) for ev in events])

    async def seek(self, topic: str, group: str, to: str) -> None:
        await self.hub.seek(topic, group, to)

    async def read_all(self, topic: str) -> list[dict[str, Any]]:
        t = self.hub.topics.get(topic)
        if t is None:
            return []
        out: list[dict[str, Any]] = []
        for p, part in enumerate(t.partitions):
            offset = part.start_offset
            while offset < part.end_offset:
                got = await part.read(offset, 1000)
                if not got:
                    break
                out.extend(
                    {"topic": topic, "partition": p, "offset": o, "event": orjson.loads(b)}
                    for o, _, b in got
                )
                offset = got[-1][0] + 1
        return out

    async def group_state(self, topic: str, group: str) -> tuple[int, int]:
        info = self.hub.group_info(topic, group)
        return int(info["lag"]), int(info["pending"])

    async def read_timed(
        self, topic: str, start: str, limit: int, wait: float, types: Sequence[str] = (),
        partition: int | None = None,
    ) -> TimedBatch:
        hub = self.hub
        positions = await hub.positions(hub.topic(topic), partition, start, None)
        got = await hub.read(
            topic, positions, limit, wait, TypeFilter.parse(list(types)) if types else None,
            appended=True,
        )
        loads = orjson.loads
        return TimedBatch(
            [(p, o, t, loads(b)) for p, o, t, b in got.records], got.next, got.horizon
        )

    async def put_view(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        info, _ = await self.hub.views.put(name, spec)
        return info

    async def view_info(self, name: str) -> dict[str, Any]:
        await self.hub.views.ready()
        return self.hub.views.info(name)

    async def commit_view(
        self, name: str, generation: int, expect: int, events: Sequence[dict[str, Any]],
        partition: int = 0, route: Sequence[dict[str, Any]] | None = None,
    ) -> int:
        answer = await self.hub.views.commit(
            name, generation, expect, list(events), partition,
            None if route is None else list(route),
        )
        return int(answer["next"])

    async def view_members(self, name: str, member: str, leave: bool = False) -> dict[str, Any]:
        return await self.hub.views.members(name, member, leave)

    async def view_get(
        self, name: str, key: str, min_position: str | None = None, topic: str | None = None
    ) -> dict[str, Any] | None:
        views = self.hub.views
        await views.ready()  # never a state read halfway from the changelog
        if min_position is not None:
            topic = views.input_of(name, topic)
            t = self.hub.topic(topic)
            positions = parse_token(min_position, len(t.partitions), "min_position")
            if not await views.wait_for(name, topic, positions, _VIEW_WAIT_S):
                raise StorageUnavailable(
                    f"view {name!r} has not reached {min_position} of {topic!r} within "
                    f"{_VIEW_WAIT_S:g} s", retry_after=1,
                )
        try:
            value, partition, offset = views.get(name, key)
        except NotFound as exc:
            if _key_missing(exc):
                return None
            raise
        return {"key": key, "value": value, "position": f"{partition}:{offset}"}

    async def end_positions(self, topic: str) -> dict[int, int]:
        return {p: part.end_offset for p, part in enumerate(self.hub.topic(topic).partitions)}

    async def put_schema(self, etype: str, schema: Any, producer: str) -> None:
        await self.hub.schemas.put(etype, schema, producer)

    async def put_schema_consumer(self, etype: str, name: str, schema: Any) -> None:
        await self.hub.schemas.put_consumer(etype, name, schema)

    async def check_schema(self, etype: str, schema: Any, producer: str) -> dict[str, Any]:
        return self.hub.schemas.check(etype, schema, producer)

    async def latest_schema(self, etype: str) -> tuple[int, Any] | None:
        ts = self.hub.schemas.types.get(etype)
        latest = ts.latest if ts is not None else None
        return None if latest is None else (latest.number, latest.schema)


# -- embedded: one core per data directory in this process -----------------------------

_OPEN: dict[tuple[int, Path], tuple[Hub, int]] = {}


class EmbeddedTransport(CoreTransport):
    """``embedded:PATH``: the hub's core on the data directory ``PATH``.

    Apps of one process that name the same directory share one core: a data
    directory is opened once.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.clock = SystemClock()
        self.remote = False

    async def open(self) -> None:
        from tidings.backends.embedded.storage import EmbeddedStorage

        key = (id(asyncio.get_running_loop()), self.data_dir)
        found = _OPEN.get(key)
        if found is None:
            hub = Hub(EmbeddedStorage(self.data_dir))
            await hub.start()
            found = (hub, 0)
        _OPEN[key] = (found[0], found[1] + 1)
        self.hub = found[0]
        self.clock = self.hub.clock

    async def close(self) -> None:
        key = (id(asyncio.get_running_loop()), self.data_dir)
        found = _OPEN.get(key)
        if found is None:
            return
        hub, users = found
        if users > 1:
            _OPEN[key] = (hub, users - 1)
            return
        del _OPEN[key]
        await hub.close()
