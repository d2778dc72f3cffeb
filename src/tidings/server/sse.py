"""``GET /v1/topics/{topic}/sse``: the topic as Server-Sent Events (HTML Living Standard 9.2).

Query: ``types`` (comma-separated type patterns), ``from`` (earliest, latest,
a resume token or a time; default latest), ``ticket`` (from ``POST
/v1/ws/ticket``, for ``EventSource``, which cannot set headers; see
:mod:`.tickets`). The stream opens with ``retry:``; then each message
is::

    id: 0:16,1:7
    data: {"topic":"orders","partition":0,"offset":15,"event":{...}}

``id`` is the resume token after the event (its partition at ``offset + 1``,
the others unchanged), so the browser's automatic reconnect, which sends it
back as ``Last-Event-ID``, continues with no gap and no duplicate.
``Last-Event-ID`` wins over ``from``. ``data`` is the record, as the HTTP read
gives it, so the position is in the message as well as in ``id``.

Messages carry no ``event:`` field: they are all ``message`` events, which
``EventSource.onmessage`` receives. Naming them by CloudEvent type would need
one ``addEventListener`` per type and drop the types nobody listens for
without a word; filter with ``types=`` instead and read ``data.event.type``.

A comment line (``: ping``) goes out after ``sse_heartbeat_s`` without
events, so proxies keep the stream open and a dead peer is noticed. The
stream writes with the server's flow control: a slow reader holds its read
of the log back, not memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tidings.core.hub import Hub
from tidings.core.patterns import TypeFilter
from tidings.core.positions import format_token, is_token
from tidings.errors import BadRequest, Forbidden
from tidings.server.auth import Auth
from tidings.server.live import LiveOptions, allows, caller
from tidings.server.tickets import Tickets

_QUERY = frozenset({"types", "from", "ticket"})


class SseEndpoint:
    def __init__(self, hub: Hub, auth: Auth, options: LiveOptions, tickets: Tickets) -> None:
        self.hub = hub
        self.auth = auth
        self.options = options
        self.tickets = tickets
        self.streams = 0  # open now, for /metrics

    async def handle(self, request: Request) -> Response:
        name = request.path_params["topic"]
        q = request.query_params
        token = caller(self.auth, self.tickets, request.headers, q)
        if not allows(token, "subscribe", name):
            raise Forbidden(f"this token may not subscribe on topic {name!r}")
        unknown = sorted(set(q.keys()) - _QUERY)
        if unknown:
            raise BadRequest(
                f"unknown parameter {unknown[0]!r}; expected one of {sorted(_QUERY)}",
                field=unknown[0],
            )
        topic = self.hub.topic(name)
        last = request.headers.get("last-event-id", "").strip()
        if last:
            if not is_token(last):
                raise BadRequest(
                    f"Last-Event-ID {last!r} is not a resume token like '0:15,1:7'",
                    field="Last-Event-ID",
                )
            positions = await self.hub.positions(topic, None, last, None)
        else:
            start = q.get("from", "latest")
            if start in ("earliest", "latest") or is_token(start):
                positions = await self.hub.positions(topic, None, start, None)
            else:
                positions = await self.hub.positions(topic, None, None, start)
        types = TypeFilter.parse(q.get("types"), limit=self.hub.options.max_type_patterns) or None
        return StreamingResponse(
            self._stream(name, positions, types),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    async def _stream(
        self, name: str, positions: dict[int, int], types: TypeFilter | None
    ) -> AsyncIterator[bytes]:
        self.streams += 1
        try:
            async with contextlib.aclosing(self._messages(name, positions, types)) as messages:
                async for chunk in messages:
                    yield chunk
        finally:
            self.streams -= 1

    async def _messages(
        self, name: str, positions: dict[int, int], types: TypeFilter | None
    ) -> AsyncGenerator[bytes, None]:
        hub, options = self.hub, self.options
        yield b"retry: %d\n\n" % options.sse_retry_ms
        head = b'data: {"topic":' + orjson.dumps(name) + b',"partition":'
        pos = dict(positions)
        while not hub.closing:
            result = await hub.read(
                name, pos, limit=options.read_batch, wait_s=options.sse_heartbeat_s, types=types
            )
            if not result.records:
                if not hub.closing:
                    yield b": ping\n\n"
                pos = result.next
                continue
            chunks = []
            for p, o, payload in result.records:
                pos[p] = o + 1
                chunks.append(
                    b"id: "
                    + format_token(pos).encode()
                    + b"\n"
                    + head
                    + b'%d,"offset":%d,"event":' % (p, o)
                    + payload
                    + b"}\n\n"
                )
            pos.update(result.next)
            yield b"".join(chunks)


__all__ = ["SseEndpoint"]
