"""``GET /v1/ws``: the WebSocket gateway, the asyncio pump around :mod:`tidings.core.session`.

Each connection runs a receive loop (client frames into the session), one reader
task per subscription (``Hub.read``, or ``Hub.fetch`` for a group) and one sender
draining a :class:`SendBuffer`. Close codes (RFC 6455 section 7.4):

- 1001: the hub is shutting down; resume from the last token elsewhere or later.
- 4008: too slow: the send buffer stayed full for ``slow_after_s``. Frames still
  buffered are dropped; the client resumes from the last token it got.
- 1011: keepalive ping timeout (uvicorn sends RFC 6455 pings every 20 s and
  closes a peer silent 20 s more; see :func:`tidings.server.serve.build`).

A handshake that fails auth or the Origin check is refused with an HTTP
problem+json response (401, 403) instead of an upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any

import orjson
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketState

from tidings.core.groups import GroupConfig
from tidings.core.hub import Hub
from tidings.core.patterns import TypeFilter
from tidings.core.session import (
    SUBPROTOCOL,
    Position,
    Publish,
    Send,
    Session,
    Settle,
    Subscribe,
    Unsubscribe,
    error_frame,
)
from tidings.errors import (
    Forbidden,
    GroupNotFound,
    StorageUnavailable,
    TidingsError,
    Unauthorized,
)
from tidings.server.auth import Auth, Token
from tidings.server.live import LiveOptions, allows, caller, origin_allowed

logger = logging.getLogger("tidings.ws")

CLOSE_GOING_AWAY = 1001
CLOSE_SLOW = 4008
CLOSE_TIMEOUT_S = 5.0
READ_WAIT_S = 30.0


class SlowConsumer(Exception):
    """The send buffer stayed full: the client does not read fast enough."""


class SendBuffer:
    """Frames waiting for one connection's socket, bounded in bytes.

    A put that finds the buffer full waits for the sender to take a frame; if
    none is taken for ``slow_after_s`` it raises :class:`SlowConsumer`. Readers
    thus pause (the log holds what they have not read yet) instead of growing
    memory. A frame larger than the bound is let in when the buffer is empty.
    ``peak`` is the most bytes it ever held.
    """

    def __init__(self, max_bytes: int, slow_after_s: float) -> None:
        self.max_bytes = max_bytes
        self.slow_after_s = slow_after_s
        self.bytes = 0
        self.peak = 0
        self._frames: deque[bytes] = deque()
        self._space = asyncio.Event()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._frames)

    async def put(self, frame: bytes) -> None:
        while self._frames and self.bytes + len(frame) > self.max_bytes:
            self._space.clear()
            try:
                await asyncio.wait_for(self._space.wait(), self.slow_after_s)
            except TimeoutError:
                raise SlowConsumer(
                    f"{self.bytes} bytes waiting and none sent for {self.slow_after_s} s"
                ) from None
        self._frames.append(frame)
        self.bytes += len(frame)
        self.peak = max(self.peak, self.bytes)
        self._ready.set()

    async def get(self) -> bytes:
        while not self._frames:
            self._ready.clear()
            await self._ready.wait()
        frame = self._frames.popleft()
        self.bytes -= len(frame)
        self._space.set()
        return frame

    def clear(self) -> None:
        self._frames.clear()
        self.bytes = 0
        self._space.set()


class Connection:
    """One accepted WebSocket: its session, readers, publishes and send buffer."""

    def __init__(self, ws: WebSocket, hub: Hub, token: Token | None, options: LiveOptions) -> None:
        self.ws = ws
        self.hub = hub
        self.token = token
        self.options = options
        self.session = Session()
        self.buffer = SendBuffer(options.send_buffer_bytes, options.slow_after_s)
        self.readers: dict[str, asyncio.Task[None]] = {}
        self.publishing: set[asyncio.Task[None]] = set()
        self._publish_slots = asyncio.Semaphore(options.max_publishes_in_flight)
        self._settled: dict[str, asyncio.Event] = {}  # group sub -> set on ack/nack
        self._in_flight: dict[str, dict[str, float]] = {}  # group sub -> lease -> expiry
        self._end: asyncio.Future[tuple[int, str] | None] = (
            asyncio.get_running_loop().create_future()
        )
        #: The code and reason the hub closes with, once it decided to.
        self.closed_with: tuple[int, str] | None = None

    def end(self, close: tuple[int, str] | None) -> None:
        """Finish the connection; ``close`` is the code and reason to send (None: peer left)."""
        if not self._end.done():
            self.closed_with = close
            self._end.set_result(close)

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._guard(self._send_loop())),
            asyncio.create_task(self._guard(self._receive_loop())),
        ]
        try:
            close = await self._end
        finally:
            for task in [*tasks, *self.readers.values(), *self.publishing]:
                task.cancel()
            for task in [*tasks, *self.readers.values(), *self.publishing]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if close is not None and self.ws.application_state == WebSocketState.CONNECTED:
            self.buffer.clear()
            # The close frame waits behind what the transport holds; a peer that reads
            # nothing never takes it, so give up after a while (uvicorn then drops it).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(*close), CLOSE_TIMEOUT_S)

    async def _guard(self, work: Coroutine[Any, Any, None]) -> None:
        """Run one of the connection's tasks; a failure in it ends the connection."""
        try:
            await work
        except SlowConsumer as exc:
            self.end((CLOSE_SLOW, f"too slow: {exc}"[:120]))
        except (ConnectionError, RuntimeError):
            self.end(None)  # the socket is gone
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("websocket connection failed")
            self.end((1011, "internal error"))

    async def _send_loop(self) -> None:
        while True:
            frame = await self.buffer.get()
            await self.ws.send_text(frame.decode())

    async def _receive_loop(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                self.end(None)
                return
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            for action in self.session.receive(data):
                await self._apply(action)

    async def _apply(self, action: object) -> None:
        if isinstance(action, Send):
            await self.buffer.put(action.frame)
        elif isinstance(action, Subscribe):
            if not allows(self.token, "subscribe", action.topic):
                frame = self.session.failed(action.id, _forbidden("subscribe", action.topic))
                await self._put(frame)
                return
            self.readers[action.id] = asyncio.create_task(self._guard(self._reader(action)))
        elif isinstance(action, Unsubscribe):
            task = self.readers.pop(action.id, None)
            if task is not None:
                task.cancel()
            self._settled.pop(action.id, None)
            self._in_flight.pop(action.id, None)
            await self.buffer.put(action.frame)
        elif isinstance(action, Publish):
            await self._publish_slots.acquire()
            task = asyncio.create_task(self._guard(self._publish(action)))
            self.publishing.add(task)
            task.add_done_callback(self.publishing.discard)
        elif isinstance(action, Settle):
            await self._settle(action)

    async def _put(self, frame: bytes | None) -> None:
        if frame is not None:
            await self.buffer.put(frame)

    # -- publish and settle ------------------------------------------------------------

    async def _publish(self, action: Publish) -> None:
        try:
            if not allows(self.token, "publish", action.topic):
                raise _forbidden("publish", action.topic)
            if self.hub.closing:
                raise StorageUnavailable("the hub is shutting down")
            results = await self.hub.publish(action.topic, [action.event])
            frame = self.session.published(action.ref, [Position(*r) for r in results])
        except TidingsError as exc:
            frame = error_frame(action.ref, exc)
        finally:
            self._publish_slots.release()
        await self.buffer.put(frame)

    async def _settle(self, action: Settle) -> None:
        try:
            leases = list(action.leases)
            if action.nack:
                n = await self.hub.nack(action.topic, action.group, leases, action.delay_ms)
            else:
                n = await self.hub.ack(action.topic, action.group, leases)
        except TidingsError as exc:
            await self.buffer.put(error_frame(action.ref, exc, action.sub))
            return
        in_flight = self._in_flight.get(action.sub)
        if in_flight is not None:
            for lease in leases:
                in_flight.pop(lease, None)
            self._settled[action.sub].set()
        await self._put(self.session.settled(action, n))

    # -- readers -----------------------------------------------------------------------

    async def _reader(self, action: Subscribe) -> None:
        types = TypeFilter(action.types) or None
        try:
            topic = self.hub.topic(action.topic)
            if action.group is None:
                positions = self.hub.positions(topic, None, action.start, action.from_time)
            else:
                await self._join_group(action)
                positions = {}
        except TidingsError as exc:
            await self._put(self.session.failed(action.id, exc))
            return
        frame = self.session.started(action.id, positions)
        if frame is None:
            return  # unsubscribed meanwhile
        await self.buffer.put(frame)
        try:
            if action.group is None:
                await self._read_log(action, positions, types)
            else:
                await self._read_group(action, action.group, types)
        except TidingsError as exc:  # the topic or group was deleted
            await self._put(self.session.failed(action.id, exc))
        self.readers.pop(action.id, None)

    async def _join_group(self, action: Subscribe) -> None:
        assert action.group is not None
        try:
            self.hub.group(action.topic, action.group)
        except GroupNotFound:
            config = GroupConfig(start="latest" if action.start == "latest" else "earliest")
            await self.hub.put_group(action.topic, action.group, config)

    async def _read_log(
        self, action: Subscribe, positions: dict[int, int], types: TypeFilter | None
    ) -> None:
        hub, session, put = self.hub, self.session, self.buffer.put
        pos = positions
        while True:
            result = await hub.read(
                action.topic, pos, limit=self.options.read_batch, wait_s=READ_WAIT_S, types=types
            )
            if hub.closing:
                self.end((CLOSE_GOING_AWAY, "the hub is shutting down"))
                return
            for frame in session.events(action.id, result.records, result.next):
                await put(frame)
            pos = result.next

    async def _read_group(self, action: Subscribe, group: str, types: TypeFilter | None) -> None:
        hub = self.hub
        loop = asyncio.get_running_loop()
        settled = self._settled[action.id] = asyncio.Event()
        in_flight = self._in_flight[action.id] = {}
        while True:
            room = await self._room(in_flight, settled)
            deliveries = await hub.fetch(
                action.topic, group, max_records=room, wait_s=READ_WAIT_S, types=types
            )
            if hub.closing:
                self.end((CLOSE_GOING_AWAY, "the hub is shutting down"))
                return
            _, g = hub.group(action.topic, group)
            expiry = loop.time() + g.config.ack_wait_ms / 1000
            for d in deliveries:
                in_flight[d.lease] = expiry
            for frame in self.session.leased(action.id, deliveries):
                await self.buffer.put(frame)

    async def _room(self, in_flight: dict[str, float], settled: asyncio.Event) -> int:
        """How many more leases the subscription may take; waits while it holds too many."""
        loop = asyncio.get_running_loop()
        limit = min(self.options.max_in_flight, self.options.read_batch)
        while True:
            now = loop.time()
            for lease in [k for k, t in in_flight.items() if t <= now]:
                del in_flight[lease]  # expired: the group will deliver it again
            room = self.options.max_in_flight - len(in_flight)
            if room > 0:
                return min(room, limit)
            settled.clear()
            wake = min(in_flight.values()) - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), max(wake, 0.01))


def _forbidden(action: str, topic: str) -> Forbidden:
    return Forbidden(f"this token may not {action} on topic {topic!r}")


class WebSocketEndpoint:
    """The ASGI app of ``GET /v1/ws``: checks the handshake, then runs a :class:`Connection`."""

    def __init__(self, hub: Hub, auth: Auth, options: LiveOptions) -> None:
        self.hub = hub
        self.auth = auth
        self.options = options
        self.connections: set[Connection] = set()
        #: The most bytes any connection's send buffer held: the bound, as measured.
        self.peak_buffer_bytes = 0

    async def handle(self, ws: WebSocket) -> None:
        try:
            token = caller(self.auth, ws.headers, ws.query_params)
            host = ws.headers.get("host")
            if not origin_allowed(ws.headers.get("origin"), host, self.options.allowed_origins):
                raise Forbidden(f"origin {ws.headers.get('origin')!r} is not allowed")
            if self.hub.closing:
                raise StorageUnavailable("the hub is shutting down")
        except (Unauthorized, Forbidden, StorageUnavailable) as exc:
            await _deny(ws, exc)
            return
        offered = ws.scope.get("subprotocols") or []
        await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        conn = Connection(ws, self.hub, token, self.options)
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            self.peak_buffer_bytes = max(self.peak_buffer_bytes, conn.buffer.peak)


async def _deny(ws: WebSocket, exc: TidingsError) -> None:
    body = orjson.dumps(exc.to_problem())
    response = Response(body, status_code=exc.status, media_type="application/problem+json")
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(response)
    else:
        await ws.close(exc.close_code, exc.detail[:120])


__all__ = ["SendBuffer", "SlowConsumer", "WebSocketEndpoint"]
