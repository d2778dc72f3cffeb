"""The hub's HTTP/1.1 connections: uvicorn's httptools protocol, bounded before the app sees them.

uvicorn bounds neither a request's head nor how long a client may take to send
it, and accepts connections until the process runs out of descriptors. Here,
per connection (:class:`HttpLimits`):

- the request line and header fields may hold ``max_header_bytes`` and
  ``max_headers`` fields; past either the hub answers 431 (RFC 6585 section 5)
  and closes, holding no more than that (and one read) of an endless header;
- the head must arrive within ``header_timeout_s`` of the connection opening or
  of the request's first byte, and the body within ``body_timeout_s`` of the
  head (the clock starts again when it runs out while the hub itself has paused
  reading): else 408 and close, so slow clients (slowloris) cannot hold
  connections;
- past ``max_connections`` open connections (HTTP, WebSocket and SSE alike) a new
  one is answered 503 with ``Retry-After`` and closed at once.

Idle keep-alive connections are closed after uvicorn's ``timeout_keep_alive``, as
the connection's deadline (below), not a timer of its own made and cancelled each
request.

A response with a ``content-length`` goes out in one write: its head is held until
the body's first bytes, and both are written together (one send to the socket, one
packet for a small answer, where uvicorn writes twice). A response without one (a
stream: SSE, chunked) writes its head at once, as uvicorn does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

logger = logging.getLogger("tidings.http")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one HTTP connection may take from the hub; see the module docstring."""

    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_connections: int = 1024
    retry_after_s: int = 1  # told to a client refused for too many connections


LINGER_S = 2.0  # how long a refused connection's last bytes are read and dropped
_JOIN_BYTES = 64 * 1024  # a body up to this size is joined to its head and written once


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request the hub refuses."""


class HubHttpProtocol(HttpToolsProtocol):
    """uvicorn's :class:`HttpToolsProtocol` under :class:`HttpLimits`."""

    limits: ClassVar[HttpLimits] = HttpLimits()

    @classmethod
    def under(cls, limits: HttpLimits) -> type[HubHttpProtocol]:
        """This protocol class with ``limits``: uvicorn makes one instance per connection."""
        return type(cls.__name__, (cls,), {"limits": limits})

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_head = True  # between requests or reading a head: not reading a body
        self._heads = 0  # heads completed on this connection
        self._head_bytes = 0  # of whole reads within one head
        self._head_parsed = 0  # of the head the parser delivered: line and fields
        self._header_count = 0
        self._refusal: tuple[int, str] | None = None
        self._refused = False  # answered and closing: what still comes is dropped
        # One deadline at a time, and one timer that wakes at or before it: moving the
        # deadline (twice a request) is an assignment, not a timer made and cancelled.
        self._deadline: float | None = None
        self._on_deadline: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._keep_alive = self._keep_alive_expired  # bound once: compared by identity

    # -- the connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.limits
        if len(self.connections) > limits.max_connections:
            self._refuse(
                503,
                f"the hub holds its limit of {limits.max_connections} connections "
                "(max_connections); try again later",
                [(b"retry-after", b"%d" % limits.retry_after_s)],
                linger=False,  # its descriptor is wanted back at once
            )
            return
        self._arm(limits.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's, but a refusal from a callback is answered as such, not as a 400.
        if self._refused:
            return
        self._unset_keepalive_if_required()
        was_in_head, heads = self._in_head, self._heads
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
            else:
                self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_head and was_in_head and heads == self._heads:
            # All of ``data`` is head: count it, whether or not the parser delivered it
            # yet (httptools keeps an unfinished header to itself until it ends).
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(*self._head_too_large())

    def handle_websocket_upgrade(self) -> None:
        self._stop_timer()  # the WebSocket protocol keeps the connection alive from here
        super().handle_websocket_upgrade()

    # -- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = self._head_parsed = self._header_count = 0
        if self._deadline is None:  # a keep-alive connection's next request
            self._arm(self.limits.header_timeout_s, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        self._count_parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refusal = (
                431,
                f"the request has more than {self.limits.max_headers} header fields "
                "(max_headers)",
            )
            raise _Refused
        self._count_parsed(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _count_parsed(self, nbytes: int) -> None:
        self._head_parsed += nbytes
        if self._head_parsed > self.limits.max_header_bytes:
            self._refusal = self._head_too_large()
            raise _Refused

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads += 1
        self._disarm()
        self._arm(self.limits.body_timeout_s, self._body_timed_out)
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before:  # a request's cycle (an upgrade makes none): its task has not run
            cycle.__class__ = _Cycle
            cycle.transport = cast(asyncio.Transport, _HeadWithBody(self.transport))

    def on_message_complete(self) -> None:
        self._in_head = True
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and not self.pipeline:
            # Answered before its body ended: from here the connection idles.
            self._arm(self.timeout_keep_alive, self._keep_alive)
        else:
            self._disarm()
        super().on_message_complete()

    # -- keep-alive -----------------------------------------------------------------------

    def on_response_complete(self) -> None:
        # uvicorn's, but the wait for the next request is the connection's deadline.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._deadline is None:
            # Between requests. Else the request's body is still coming, under its own
            # deadline, and on_message_complete starts this wait.
            self._arm(self.timeout_keep_alive, self._keep_alive)

    def _unset_keepalive_if_required(self) -> None:
        if self._on_deadline is self._keep_alive:
            self._disarm()

    def _keep_alive_expired(self) -> None:
        self.timeout_keep_alive_handler()

    # -- refusals -------------------------------------------------------------------------

    def _head_too_large(self) -> tuple[int, str]:
        return (
            431,
            f"the request line and header fields are over {self.limits.max_header_bytes} "
            "bytes (max_header_bytes)",
        )

    def _head_timed_out(self) -> None:
        self._refuse(
            408,
            f"the request's head did not arrive within {self.limits.header_timeout_s:g} s "
            "(header_timeout)",
        )

    def _body_timed_out(self) -> None:
        if self.flow.read_paused:
            # The hub stopped reading (the app has not taken what came, or a pipelined
            # request waits its turn): the client is not the slow one.
            self._arm(self.limits.body_timeout_s, self._body_timed_out)
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            self.transport.close()  # the app has answered; nothing more to say
            return
        self._refuse(
            408,
            f"the request's body did not arrive within {self.limits.body_timeout_s:g} s "
            "(body_timeout)",
        )

    def _refuse(
        self,
        status: int,
        detail: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        linger: bool = True,
    ) -> None:
        """Answer ``status`` as problem+json and close: the request never reaches the app.

        The hub stops sending, then drops what the client still sends for a moment
        before it closes: closing on unread bytes would reset the connection, and
        the client could lose the answer. Without ``linger`` it closes at once.
        """
        self._disarm()
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app is reading this request: it now sees the client gone, and what it
            # sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        logger.debug("refused %s: %d %s", self.client, status, detail)
        body = orjson.dumps(
            {
                "type": "about:blank",
                "title": STATUS_LINE[status].decode().split(" ", 2)[2].strip(),
                "status": status,
                "detail": detail,
            }
        )
        head = [STATUS_LINE[status]]
        for name, value in [
            *self.server_state.default_headers,
            (b"content-type", b"application/problem+json"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
            *(headers or []),
        ]:
            head += [name, b": ", value, b"\r\n"]
        self.transport.write(b"".join([*head, b"\r\n", body]))
        if not linger or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self._arm(LINGER_S, self.transport.close)

    def _arm(self, delay_s: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` in ``delay_s`` unless disarmed or armed again first."""
        deadline = self.loop.time() + delay_s
        self._deadline = deadline
        self._on_deadline = callback
        timer = self._timer
        if timer is None or self._timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(deadline, self._wake)
            self._timer_at = deadline

    def _disarm(self) -> None:
        # The timer stays: it wakes, finds nothing due, and stops.
        self._deadline = self._on_deadline = None

    def _wake(self) -> None:
        self._timer = None
        deadline, callback = self._deadline, self._on_deadline
        if deadline is None or callback is None:
            return
        if self.loop.time() < deadline:  # moved on since the timer was set
            self._timer = self.loop.call_at(deadline, self._wake)
            self._timer_at = deadline
            return
        self._disarm()
        callback()

    def _stop_timer(self) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _HeadWithBody:
    """The transport as a response cycle sees it: while ``holding``, a write (the
    response head) is kept, and goes out with the next write (the body) as one."""

    __slots__ = ("held", "holding", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.holding = False
        self.held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self.holding:
            self.held = data
            return
        held = self.held
        if held is None:
            self.transport.write(data)
        elif len(data) <= _JOIN_BYTES:
            self.held = None
            self.transport.write(held + data)
        else:  # a large body: copying it would cost more than a second write
            self.held = None
            self.transport.write(held)
            self.transport.write(data)

    def flush(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class _Cycle(RequestResponseCycle):
    """uvicorn's request-response cycle, writing a response with a content-length in
    one write (see the module docstring)."""

    async def send(self, message: Any) -> None:
        out = cast(_HeadWithBody, self.transport)
        if message["type"] != "http.response.start" or self.response_started:
            await super().send(message)
            out.flush()  # a HEAD answer writes no body: its head goes now
            return
        out.holding = True
        try:
            await super().send(message)  # writes the head: held
        finally:
            out.holding = False
        if self.chunked_encoding is not False:  # no content-length: a stream, or no body
            out.flush()


__all__ = ["HttpLimits", "HubHttpProtocol"]
