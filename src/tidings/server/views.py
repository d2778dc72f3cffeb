"""``/v1/views``: declare, commit and rebuild views, and serve them (streams design 4).

A stream processor declares its view (``PUT``), commits into its changelog
(``POST .../commit``: compare and set on the changelog's end offset and the
generation) and may be told to start over (``POST .../rebuild``); clients read
what it computed: one key, a page of keys in order, the view's description with
its lag, and a live feed (SSE here; the WebSocket ``subscribe`` with ``"view"``
in :mod:`.ws`), a snapshot of every key then each change, with resume tokens.

Scopes: declaring, committing and rebuilding need ``manage`` on every input
topic of the view (a declaration that makes a topic, an input or a window view's
result topic, also needs ``publish`` on it); reading it (and its changelog
``__view.{name}`` through the topic routes) needs ``subscribe`` on every input.
``min_position`` on the key routes waits (``wait``, default 10 s, at most 60)
until the view reflects every event at or before those offsets of an input
(``topic`` names which when there are several; ``latest``: every event of every
input appended before the request); if it does not in time, 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tidings.core.positions import (
    check_name,
    format_token,
    is_decimal,
    is_token,
    parse_duration_ms,
    parse_token,
)
from tidings.core.viewreads import MAX_SCAN
from tidings.core.viewrecords import parse_resume, result_topics, resume_token
from tidings.core.views import Views
from tidings.errors import BadRequest, Forbidden, ViewBehind
from tidings.server.auth import Action, Token
from tidings.server.live import allows, caller

if TYPE_CHECKING:
    from tidings.core.hub import Hub
    from tidings.server.app import Api

class KeyConvertor(Convertor[str]):
    """A view key in a path: the rest of it, ``/`` (sent as ``%2F``) and newlines too
    (Starlette's ``path`` stops at a newline, so such a key would find no route)."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("viewkey", KeyConvertor())

DEFAULT_WAIT_S = 10.0
MAX_WAIT_S = 60.0
SNAPSHOT_CHUNK = 1000
_SSE_QUERY = frozenset({"from", "ticket"})


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _only(params: Iterable[str], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(
            f"unknown parameter {unknown[0]!r}; expected one of {sorted(allowed)}",
            field=unknown[0],
        )


def check_view_scope(token: Token | None, inputs: Iterable[str], action: Action, name: str) -> None:
    """Forbidden unless ``token`` (None: an open hub) has ``action`` on every input."""
    for topic in inputs:
        if not allows(token, action, topic):
            verb = {"manage": "manage", "publish": "make the inputs of"}.get(action, "read")
            raise Forbidden(
                f"this token may not {verb} view {name!r}: it needs {action} on its input "
                f"topic {topic!r}",
                view=name,
            )


def authorize_view(api: Api, request: Request, name: str, action: Action) -> None:
    """:func:`check_view_scope` for a request to view ``name``; 404 if there is none."""
    api.hub.views.view(name)
    if api.auth.enabled:
        token = api.auth.token(request.headers.get("authorization"))
        check_view_scope(token, api.hub.views.view(name).inputs, action, name)


class ViewRoutes:
    """The ``/v1/views`` routes over ``hub.views`` (:mod:`tidings.core.views`)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.streams = 0  # open SSE streams of views, for /metrics

    @property
    def views(self) -> Views:
        return self.api.hub.views

    def routes(self) -> list[Route]:
        V = "/v1/views/{view}"
        return [
            Route("/v1/views", self.list, methods=["GET"]),
            Route(V, self.put, methods=["PUT"]),
            Route(V, self.get, methods=["GET"]),
            Route(V + "/commit", self.commit, methods=["POST"]),
            Route(V + "/members", self.members, methods=["POST"]),
            Route(V + "/rebuild", self.rebuild, methods=["POST"]),
            Route(V + "/keys", self.keys, methods=["GET"]),
            Route(V + "/keys/{key:viewkey}", self.key, methods=["GET"]),
            Route(V + "/sse", self.sse, methods=["GET"]),
        ]

    # -- the processor's side ----------------------------------------------------------

    async def put(self, request: Request) -> Response:
        name = request.path_params["view"]
        api = self.api
        if api.auth.enabled:
            api.auth.token(request.headers.get("authorization"))  # 401 before the body
        body = await api._json_body(request, allow_empty=False)
        inputs = body.get("inputs")
        if api.auth.enabled and isinstance(inputs, list):
            token = api.auth.token(request.headers.get("authorization"))
            named = [t for t in inputs if isinstance(t, str)]
            check_view_scope(token, named, "manage", name)
            # An input the declaration makes is published to: as a group's PUT that makes it.
            check_view_scope(token, [t for t in named if t not in api.hub.topics], "publish", name)
            if body.get("kind") == "window" and check_name("view", name):
                # So is each result topic it makes: a declaration makes no topic its
                # token could not make by publishing.
                for topic in result_topics(name):
                    if topic not in api.hub.topics and not allows(token, "publish", topic):
                        raise Forbidden(
                            f"this token may not declare window view {name!r}: it makes the "
                            f"result topic {topic!r}, which needs publish on it",
                            view=name, topic=topic,
                        )  # fmt: skip
        await self.views.ready(name=name)
        if name in self.views.views:
            authorize_view(api, request, name, "manage")  # the inputs it has now, too
        info, created = await self.views.put(name, body)
        return _json(info, 201 if created else 200)

    async def commit(self, request: Request) -> Response:
        name = request.path_params["view"]
        await self.views.ready(name=name)
        authorize_view(self.api, request, name, "manage")
        body = await self.api._json_body(request, allow_empty=False)
        _only(body, {"generation", "expect", "events", "partition", "route"})
        for field in ("generation", "expect", "events"):
            if field not in body:
                raise BadRequest(f"a commit needs {field!r}", field=field)
        answer = await self.views.commit(
            name, body["generation"], body["expect"], body["events"], body.get("partition", 0),
            body.get("route"),
        )
        return _json(answer)

    async def members(self, request: Request) -> Response:
        """A process running the view joins or heartbeats (``{"member"}``), or leaves
        (``{"member", "leave": true}``): the tasks it runs."""
        name = request.path_params["view"]
        await self.views.ready(name=name)
        authorize_view(self.api, request, name, "manage")
        body = await self.api._json_body(request, allow_empty=False)
        _only(body, {"member", "leave"})
        if "member" not in body:
            raise BadRequest("a heartbeat needs 'member', the process's id", field="member")
        return _json(await self.views.members(name, body["member"], body.get("leave", False)))

    async def rebuild(self, request: Request) -> Response:
        name = request.path_params["view"]
        await self.views.ready(name=name)
        authorize_view(self.api, request, name, "manage")
        body = await self.api._json_body(request)
        _only(body, {"partitioned", "repartition"})
        for field in ("partitioned", "repartition"):
            if field in body and body[field] is None:
                raise BadRequest(f"{field} must not be null (leave it out)", field=field)
        return _json(
            await self.views.rebuild(name, body.get("partitioned"), body.get("repartition"))
        )

    # -- reads -------------------------------------------------------------------------

    async def list(self, request: Request) -> Response:
        await self.views.ready()
        _only(request.query_params.keys(), set())
        token = None
        if self.api.auth.enabled:
            token = self.api.auth.token(request.headers.get("authorization"))
        shown = [
            info
            for info in self.views.list()
            if token is None or all(token.allows("subscribe", t) for t in info["inputs"])
        ]
        return _json({"views": shown})

    async def get(self, request: Request) -> Response:
        name = request.path_params["view"]
        await self.views.ready(name=name)
        authorize_view(self.api, request, name, "subscribe")
        _only(request.query_params.keys(), set())
        return _json(self.views.info(name))

    async def key(self, request: Request) -> Response:
        name, key = request.path_params["view"], request.path_params["key"]
        await self.views.ready(name=name)
        authorize_view(self.api, request, name, "subscribe")
        _only(request.query_params.keys(), {"min_position", "topic", "wait"})
        await self._caught_up(name, request)
        value, partition, offset = self.views.get(name, key)
        return _json({"key": key, "value": value, "position": f"{partition}:{offset}"})

    async def keys(self, request: Request) -> Response:
        name = request.path_params["view"]
        await self.views.ready(name=name)
        authorize_view(self.api, request, name, "subscribe")
        q = request.query_params
        _only(q.keys(), {"prefix", "after", "limit", "min_position", "topic", "wait"})
        raw = q.get("limit", "100")
        if not is_decimal(raw) or not 1 <= int(raw) <= MAX_SCAN:
            raise BadRequest(f"limit must be an integer from 1 to {MAX_SCAN}", field="limit")
        await self._caught_up(name, request)
        page, nxt = self.views.scan(name, q.get("prefix", ""), q.get("after"), int(raw))
        entries = [{"key": k, "value": v, "position": f"{p}:{o}"} for k, v, p, o in page]
        return _json({"keys": entries, "next": nxt})

    async def _caught_up(self, name: str, request: Request) -> None:
        """Wait for ``min_position`` if the request gives one; 503 if not reached."""
        q = request.query_params
        raw = q.get("min_position")
        wait = DEFAULT_WAIT_S
        if "wait" in q:
            wait = min(parse_duration_ms(q["wait"], "wait") / 1000, MAX_WAIT_S)
        if "topic" in q:
            check_name("topic", q["topic"])
        if raw is None:
            return  # topic and wait say nothing without it
        hub = self.api.hub
        if raw == "latest":
            if "topic" in q:
                raise BadRequest(
                    "min_position=latest is about every input: no topic", field="topic"
                )
            wanted = _latest(hub, self.views.view(name).inputs)
        else:
            topic = self.views.input_of(name, q.get("topic"))
            if not is_token(raw):
                raise BadRequest(
                    f"min_position {raw!r} is not a position like '0:15,1:7' (partition:offset "
                    "of events the view must reflect) nor latest",
                    field="min_position",
                )
            parts = hub.topic(topic).partitions
            wanted = {topic: parse_token(raw, len(parts), "min_position")}
            for p, o in wanted[topic].items():
                if o >= parts[p].end_offset:
                    raise BadRequest(
                        f"min_position {p}:{o} is past the last event of {topic!r} partition "
                        f"{p} (its next offset is {parts[p].end_offset}): no view reflects it",
                        field="min_position",
                    )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait  # one wait for every input
        for topic, positions in wanted.items():
            if not await self.views.wait_for(name, topic, positions, deadline - loop.time()):
                raise ViewBehind(
                    f"view {name!r} does not reflect {format_token(positions)} of {topic!r} "
                    f"after {wait:g} s; its processor is behind or stopped",
                    retry_after_s=1,
                    view=name,
                    topic=topic,
                )

    # -- live ---------------------------------------------------------------------------

    async def sse(self, request: Request) -> Response:
        """A snapshot of every key (``event: snapshot``, in chunks), then each change
        (``event: change``); each message's ``id`` is the resume token after it,
        ``G@0:N,1:M`` (generation G, the next offset of each changelog partition)."""
        name = request.path_params["view"]
        api = self.api
        q = request.query_params
        token = caller(api.auth, api.tickets, request.headers, q)
        await self.views.ready(name=name)
        check_view_scope(token, self.views.view(name).inputs, "subscribe", name)
        _only(q.keys(), set(_SSE_QUERY))
        resume = request.headers.get("last-event-id", "").strip() or q.get("from")
        field = "Last-Event-ID" if request.headers.get("last-event-id") else "from"
        check_resume(self.api.hub, name, resume, field)
        return StreamingResponse(
            self._sse(name, resume),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    async def _sse(self, name: str, resume: str | None) -> AsyncIterator[bytes]:
        live = self.api.options.live
        self.streams += 1
        try:
            yield b"retry: %d\n\n" % live.sse_retry_ms
            feed = follow(self.api.hub, name, resume, live.sse_heartbeat_s)
            async with contextlib.aclosing(feed) as messages:
                async for message in messages:
                    if message is None:
                        yield b": ping\n\n"
                        continue
                    head = b"event: %s\n" % message.kind.encode()
                    if message.resume is not None:
                        head += b"id: " + message.resume.encode() + b"\n"
                    yield head + b"data: " + orjson.dumps(message.data) + b"\n\n"
        finally:
            self.streams -= 1


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a view's live feed: ``snapshot`` or ``change``."""

    kind: str
    data: dict[str, Any]
    resume: str | None  # the resume token after it, G@0:N,1:M (None: mid-snapshot)


async def follow(
    hub: Hub, name: str, resume: str | None, heartbeat_s: float
) -> AsyncGenerator[Message | None, None]:
    """View ``name`` live: a snapshot (unless ``resume`` is a token ``G@0:N,1:M`` of
    the current generation ``G``), then each change; None after ``heartbeat_s``
    without one. A rebuild, meanwhile or since ``resume``, gives a new snapshot; so
    does a token that does not name every partition of the changelog. Ends when the
    hub shuts down."""
    views = hub.views
    generation = views.view(name).generation
    given = None if resume is None else parse_resume(resume)
    # A token of another generation (or of none) points into a changelog that is gone.
    offset = given[1] if given is not None and given[0] == generation else None
    while not hub.closing:
        if offset is None:
            generation, offset, entries = views.snapshot(name)
            chunks = range(0, max(len(entries), 1), SNAPSHOT_CHUNK)
            for i in chunks:
                last = i + SNAPSHOT_CHUNK >= len(entries)
                yield Message(
                    "snapshot",
                    {
                        "view": name,
                        "generation": generation,
                        "entries": [
                            {"key": k, "value": v, "position": f"{p}:{o}"}
                            for k, v, p, o in entries[i : i + SNAPSHOT_CHUNK]
                        ],
                        "first": i == 0,
                        "last": last,
                    },
                    resume_token(generation, offset) if last else None,
                )
        feed = await views.changes(name, generation, offset, wait_s=heartbeat_s)
        if feed.reset:
            offset = None
            continue
        if not feed.changes:
            offset = feed.next
            yield None
        for change in feed.changes:
            offset = {**offset, change.partition: change.offset + 1}
            yield Message("change", change.to_dict(), resume_token(generation, offset))
        offset = feed.next


def _latest(hub: Hub, inputs: list[str]) -> dict[str, dict[int, int]]:
    """Every event appended to ``inputs`` so far, as the offsets of the last ones."""
    out: dict[str, dict[int, int]] = {}
    for topic in inputs:
        t = hub.topics.get(topic)
        if t is not None:
            out[topic] = {
                p: part.end_offset - 1 for p, part in enumerate(t.partitions) if part.end_offset
            }
    return out


def ws_follow(
    hub: Hub, token: Token | None, sub: str, name: str, resume: str | None, heartbeat_s: float
) -> AsyncGenerator[bytes, None]:
    """The WebSocket frames of a view subscription (``view.snapshot``, ``view.change``),
    once the token's scope and ``resume`` are checked (raised here, not when iterated)."""
    check_view_scope(token, hub.views.view(name).inputs, "subscribe", name)
    check_resume(hub, name, resume, "from")
    return _ws_frames(hub, sub, name, resume, heartbeat_s)


def check_resume(hub: Hub, name: str, resume: str | None, field: str) -> None:
    """BadRequest unless ``resume`` is None or parses as a resume token. One of
    another generation, or naming partitions the changelog no longer has (its
    layout changed, which bumps the generation), starts over with a snapshot."""
    if resume is None:
        return
    if parse_resume(resume) is None:
        tasks = hub.views.view(name).tasks
        raise BadRequest(
            f"{field} {resume!r} is not a resume token of view {name!r} like '3@0:42' "
            f"(generation 3, then the next offset of each of its {tasks} changelog "
            "partition(s): '3@0:42,1:7,...')",
            field=field,
        )


async def _ws_frames(
    hub: Hub, sub: str, name: str, resume: str | None, heartbeat_s: float
) -> AsyncGenerator[bytes, None]:
    async with contextlib.aclosing(follow(hub, name, resume, heartbeat_s)) as messages:
        async for message in messages:
            if message is None:
                continue
            frame: dict[str, Any] = {"type": f"view.{message.kind}", "sub": sub}
            if message.kind == "change":
                frame["view"] = name
            frame.update(message.data)
            if message.resume is not None:
                frame["resume"] = message.resume
            yield orjson.dumps(frame)


__all__ = ["ViewRoutes", "authorize_view", "check_view_scope", "follow", "ws_follow"]
