"""``GET /v1/ws``: the WebSocket gateway, the asyncio pump around :mod:`tidings.core.session`.

Each connection runs a receive loop (client frames into the session), one reader
task per subscription and one sender draining a :class:`SendBuffer`. A log
subscription near a partition's end follows that partition's shared tail
(:mod:`tidings.core.fanout`: one read and one frame body per record for every
connection); behind it, or after its buffer filled, its reader reads the log
itself (``Hub.read``) until it catches up. A group subscription reads with
``Hub.fetch``; joining a group needs ``subscribe`` on its topic, a join that
creates the group ``manage`` as well, and the hub's own groups are refused
(:func:`tidings.core.groups.check_client_group`). Close codes (RFC 6455 section 7.4):

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
from collections.abc import Coroutine, Sequence
from typing import Any

import orjson
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketState

from tidings.core.fanout import SharedRecord, TailRegistry
from tidings.core.groups import GroupConfig, check_client_group
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
    SubscribeView,
    Subscription,
    Unsubscribe,
    error_frame,
    event_body,
    event_frame,
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
from tidings.server.tickets import Tickets
from tidings.server.views import ws_follow

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
        self.push(frame)

    async def get(self) -> bytes:
        while not self._frames:
            self._ready.clear()
            await self._ready.wait()
        frame = self._frames.popleft()
        self.bytes -= len(frame)
        self._space.set()
        return frame

    def offer(self, frame: bytes) -> bool:
        """Add ``frame`` now if it fits (or the buffer is empty); False if it does not."""
        if self._frames and self.bytes + len(frame) > self.max_bytes:
            return False
        self.push(frame)
        return True

    def push(self, frame: bytes) -> None:
        """Add ``frame`` whatever the bound (after :meth:`room` made space for it)."""
        self._frames.append(frame)
        self.bytes += len(frame)
        if self.bytes > self.peak:
            self.peak = self.bytes
        self._ready.set()

    async def room(self, nbytes: int) -> None:
        """Wait until ``nbytes`` more fit; :class:`SlowConsumer` as :meth:`put` does."""
        while self._frames and self.bytes + nbytes > self.max_bytes:
            self._space.clear()
            try:
                await asyncio.wait_for(self._space.wait(), self.slow_after_s)
            except TimeoutError:
                raise SlowConsumer(
                    f"{self.bytes} bytes waiting and none sent for {self.slow_after_s} s"
                ) from None

    def clear(self) -> None:
        self._frames.clear()
        self.bytes = 0
        self._space.set()


class Connection:
    """One accepted WebSocket: its session, readers, publishes and send buffer."""

    def __init__(
        self,
        ws: WebSocket,
        hub: Hub,
        token: Token | None,
        options: LiveOptions,
        tails: TailRegistry | None = None,
    ) -> None:
        self.ws = ws
        self.hub = hub
        self.tails = tails or TailRegistry(hub)
        self.cursors: dict[str, LiveCursor] = {}  # log subscriptions, by id
        self.token = token
        self.options = options
        self.session = Session(max_type_patterns=hub.options.max_type_patterns)
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
            for cursor in list(self.cursors.values()):
                cursor.close()
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
            try:
                if action.group is not None:
                    check_client_group(action.group)  # the hub's own: out of reach
                if not allows(self.token, "subscribe", action.topic):
                    raise _forbidden("subscribe", action.topic)
            except Forbidden as exc:
                await self._put(self.session.failed(action.id, exc))
                return
            self.readers[action.id] = asyncio.create_task(self._guard(self._reader(action)))
        elif isinstance(action, SubscribeView):
            self.readers[action.id] = asyncio.create_task(self._guard(self._view_reader(action)))
        elif isinstance(action, Unsubscribe):
            task = self.readers.pop(action.id, None)
            if task is not None:
                task.cancel()
            cursor = self.cursors.pop(action.id, None)
            if cursor is not None:
                cursor.close()  # now: no tail may offer it a frame after "unsubscribed"
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
                positions = await self.hub.positions(topic, None, action.start, action.from_time)
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

    async def _view_reader(self, action: SubscribeView) -> None:
        """Follow a view: ``subscribed``, a snapshot, then each change (.views)."""
        try:
            await self.hub.views.ready(name=action.view)
            frames = ws_follow(
                self.hub, self.token, action.id, action.view, action.resume,
                self.options.sse_heartbeat_s,
            )  # fmt: skip
        except TidingsError as exc:
            await self._put(self.session.failed(action.id, exc))
            return
        started = self.session.started(action.id, {})
        if started is None:
            await frames.aclose()
            return  # unsubscribed meanwhile
        try:
            await self.buffer.put(started)
            async for frame in frames:
                await self.buffer.put(frame)
        except TidingsError as exc:
            await self._put(self.session.failed(action.id, exc))
        finally:
            await frames.aclose()
        self.readers.pop(action.id, None)

    async def _join_group(self, action: Subscribe) -> None:
        assert action.group is not None
        try:
            await self.hub.describe_group(action.topic, action.group)
        except GroupNotFound:
            if not allows(self.token, "manage", action.topic):
                raise Forbidden(
                    f"group {action.group!r} does not exist on topic {action.topic!r}, and "
                    f"this token may not manage groups there to create it"
                ) from None
            config = GroupConfig(start="latest" if action.start == "latest" else "earliest")
            # where the group is served, on a hub of several nodes (as the HTTP route)
            await self.hub.configure_group(action.topic, action.group, config)

    async def _read_log(
        self, action: Subscribe, positions: dict[int, int], types: TypeFilter | None
    ) -> None:
        """Follow the partitions' shared tails; read on its own where it is behind them."""
        hub, buffer, tails = self.hub, self.buffer, self.tails
        sub = self.session.cursor(action.id)
        if sub is None:
            return
        cursor = self.cursors[action.id] = LiveCursor(sub, buffer, types)
        pos = sub.positions
        topic = action.topic
        wait_s = 0.0
        try:
            while True:
                if cursor.hub_closing:
                    self.end((CLOSE_GOING_AWAY, "the hub is shutting down"))
                    return
                if cursor.ended is not None:
                    raise cursor.ended
                own = {p: o for p, o in pos.items() if p not in cursor.following}
                for p in list(own):
                    if tails.join(cursor, topic, p, own[p]):
                        cursor.following.add(p)
                        del own[p]
                if not own:
                    cursor.wake.clear()
                    await cursor.wake.wait()
                    continue
                # Behind the tails: there is something to read, so no long poll
                # (one that found nothing waits, in case no tail can be joined).
                result = await hub.read(
                    topic, own, limit=self.options.read_batch, wait_s=wait_s, types=types
                )
                if hub.closing:
                    self.end((CLOSE_GOING_AWAY, "the hub is shutting down"))
                    return
                wait_s = 0.0 if result.records or result.next != own else READ_WAIT_S
                for p, o, payload in result.records:
                    body = event_body(p, o, payload)
                    if not buffer.offer(event_frame(sub, p, o, body)):
                        # Wait for room, then build the frame again: a tail may have
                        # moved another partition's position into the token meanwhile.
                        await buffer.room(len(sub.head) + len(body) + 32)
                        buffer.push(event_frame(sub, p, o, body))
                pos.update(result.next)
        finally:
            cursor.close()
            if self.cursors.get(action.id) is cursor:
                del self.cursors[action.id]

    async def _read_group(self, action: Subscribe, group: str, types: TypeFilter | None) -> None:
        hub = self.hub
        loop = asyncio.get_running_loop()
        settled = self._settled[action.id] = asyncio.Event()
        in_flight = self._in_flight[action.id] = {}
        ack_wait_s: float | None = None
        while True:
            room = await self._room(in_flight, settled)
            deliveries = await hub.fetch(
                action.topic, group, max_records=room, wait_s=READ_WAIT_S, types=types
            )
            if hub.closing:
                self.end((CLOSE_GOING_AWAY, "the hub is shutting down"))
                return
            if hub.group_router is None:
                _, g = hub.group(action.topic, group)
                ack_wait_s = g.config.ack_wait_ms / 1000
            elif ack_wait_s is None:  # served by another node: its configuration once
                info = await hub.describe_group(action.topic, group)
                ack_wait_s = float(info["config"]["ack_wait"])
            expiry = loop.time() + ack_wait_s
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


class LiveCursor:
    """One log subscription as a :class:`~tidings.core.fanout.Follower` of partition tails.

    ``following`` holds the partitions whose records a tail offers it; for the
    others the subscription's reader reads the log itself. A tail's records
    become frames straight into the send buffer, without waking the reader; a
    frame that does not fit sends the partition back to the reader (``wake``),
    which waits for room under the slow-client rule.
    """

    __slots__ = ("buffer", "ended", "following", "hub_closing", "sub", "types", "wake")

    def __init__(self, sub: Subscription, buffer: SendBuffer, types: TypeFilter | None) -> None:
        self.sub = sub
        self.buffer = buffer
        self.types = types
        self.following: set[int] = set()
        self.wake = asyncio.Event()
        self.ended: TidingsError | None = None  # the topic was deleted
        self.hub_closing = False

    def offer(self, partition: int, records: Sequence[SharedRecord]) -> bool:
        if partition not in self.following:
            return False
        sub, types, buffer = self.sub, self.types, self.buffer
        pos = sub.positions
        at = pos[partition]
        for r in records:
            o = r.offset
            if o < at:
                continue  # joined past it
            if o > at:
                return self._leave(partition)  # a gap: never expected; read it from the log
            at = o + 1
            if types is not None and not types.matches(r.type):
                pos[partition] = at
                continue
            frame = event_frame(sub, partition, o, r.body)
            if not buffer.offer(frame):
                pos[partition] = o  # not sent: the reader goes on from here
                return self._leave(partition)
        return True

    def _leave(self, partition: int) -> bool:
        self.following.discard(partition)
        self.wake.set()
        return False

    def stop(self, partition: int, error: TidingsError | None) -> None:
        self.following.discard(partition)
        self.ended = error
        self.hub_closing = error is None
        self.wake.set()

    def close(self) -> None:
        """Leave every tail at once (unsubscribed or the connection ends)."""
        self.following.clear()


def _forbidden(action: str, topic: str) -> Forbidden:
    return Forbidden(f"this token may not {action} on topic {topic!r}")


class WebSocketEndpoint:
    """The ASGI app of ``GET /v1/ws``: checks the handshake, then runs a :class:`Connection`."""

    def __init__(self, hub: Hub, auth: Auth, options: LiveOptions, tickets: Tickets) -> None:
        self.hub = hub
        self.auth = auth
        self.options = options
        self.tickets = tickets
        self.tails = TailRegistry(hub)  # shared by every connection's log subscriptions
        self.connections: set[Connection] = set()
        #: The most bytes any connection's send buffer held: the bound, as measured.
        self.peak_buffer_bytes = 0

    async def handle(self, ws: WebSocket) -> None:
        try:
            host = ws.headers.get("host")
            if not origin_allowed(ws.headers.get("origin"), host, self.options.allowed_origins):
                raise Forbidden(f"origin {ws.headers.get('origin')!r} is not allowed")
            offered = ws.scope.get("subprotocols") or []
            token = caller(self.auth, self.tickets, ws.headers, ws.query_params, offered)
            if self.hub.closing:
                raise StorageUnavailable("the hub is shutting down")
        except (Unauthorized, Forbidden, StorageUnavailable) as exc:
            await _deny(ws, exc)
            return
        # Never the bearer subprotocol: a token is not echoed back in a header.
        await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        conn = Connection(ws, self.hub, token, self.options, self.tails)
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


__all__ = ["LiveCursor", "SendBuffer", "SlowConsumer", "WebSocketEndpoint"]
