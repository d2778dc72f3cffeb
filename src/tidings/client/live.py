"""A topic followed over the hub's WebSocket (``GET /v1/ws``, subprotocol ``tidings.v1``).

:class:`LiveSubscription` sends one ``subscribe`` frame and yields each ``event``
frame as a :class:`~tidings.Record`; the frames are those of
:mod:`tidings.core.session`. Every event carries a ``resume`` token: the
subscription keeps the token of the last event it handed out, and when the
connection drops (a network error, a hub restart, any close but a normal one)
it connects again with backoff and subscribes ``from`` that token, so the
records go on with no gap and no duplicate.

Given several nodes of a hub (:mod:`tidings.client.nodes`), each connection
goes to the current node; a connection that cannot be opened, is lost without
a close frame (which websockets reports as code 1006, a code no close frame
carries), is closed as the node goes away (1001, 1011-1014) or is refused with
502, 504 or a 503 saying the node is unavailable moves the current node to the
next one, and the subscription resumes there from the same token. A close the
hub sends about this subscription (4008, a slow consumer) reconnects to the
same node. The handshake's ``Tidings-Hub-Id`` is checked as every answer of
the client is: a node that is another hub is refused
(:class:`~tidings.errors.NotOneHub`), so a resume token of one hub's log is
never used on another's.

Frames are read only when the caller asks for the next record: a consumer that
falls behind leaves frames in the socket, the hub's bounded send buffer fills,
and the hub closes with 4008, after which the subscription resumes where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Final

import orjson
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from tidings.client.nodes import (
    HUB_ID_HEADER,
    UNKNOWN_STATUSES,
    HubNodes,
    HubUrls,
    Reconnect,
    node_unavailable,
)
from tidings.client.problems import build_error, error_from_response
from tidings.errors import TidingsError, ViewBehind
from tidings.events.envelope import Record

__all__ = ["LiveStart", "LiveSubscription", "Reconnect"]

SUBPROTOCOL: Final = websockets.Subprotocol("tidings.v1")
_SUB_ID: Final = "s1"
_NORMAL_CLOSE: Final = 1000
# Closes that say the node is going away or broken, not that this subscription is.
# A connection lost without a close frame (websockets' 1006) is handled apart.
_NODE_GONE_CLOSES: Final = frozenset({1001, 1011, 1012, 1013, 1014})
# The same said as 4000 + an HTTP status: a gateway's or an unavailable node's.
_NODE_GONE_STATUSES: Final = frozenset({502, 503, 504})
# Answers that mean "not now" rather than "never": worth a reconnect.
_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_VIEW_BEHIND: Final = ViewBehind.__new__(ViewBehind).type_uri
_MAX_FRAME_BYTES: Final = 4 << 20  # an event may be 1 MiB as stored; its frame adds a little

LiveStart = str | Mapping[str, Any] | datetime
"""Where a live subscription starts: earliest, latest, a resume token such as
``"0:15,1:7"``, or a time as ``{"time": <RFC 3339 or ms>}`` or a datetime."""


class _Retry(Exception):
    """The connection is gone for a reason worth a reconnect."""

    def __init__(self, cause: str, node_failed: bool = True) -> None:
        super().__init__(cause)
        self.cause = cause
        self.node_failed = node_failed  # the next connection goes to the next node


class LiveSubscription:
    """A topic's records as the hub writes them, over a WebSocket, resumed across drops.

    ::

        async with hub.subscribe("orders", types=["order.*"], start="earliest") as sub:
            async for record in sub:
                ...

    ``position`` is the resume token after the last record handed out (before
    any, where the subscription started, once the hub said so): a new
    subscription from it continues with nothing missed and nothing repeated.
    Errors the hub gives for good (a missing topic, a refused token, a bad
    position) are raised as :mod:`tidings.errors`; anything else is a reason to
    reconnect, within ``reconnect``.

    ``url`` is one hub URL, several (a list or a comma-separated string), or the
    :class:`~tidings.client.nodes.HubNodes` of a client, whose current node it
    then shares; which node each connection goes to is said in the module's
    docstring. ``sleep`` waits out each backoff (a seam: tests record the delays).
    """

    def __init__(
        self,
        url: HubUrls | HubNodes,
        topic: str,
        *,
        types: str | Iterable[str] | None = None,
        start: LiveStart = "latest",
        token: str | None = None,
        reconnect: Reconnect | None = None,
        open_timeout: float = 30,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.topic = topic
        self._sleep = sleep
        self.nodes = url if isinstance(url, HubNodes) else HubNodes(url)
        self._types = _type_list(types)
        self._from: str | dict[str, Any] = _from(start)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._policy = reconnect or Reconnect()
        self._open_timeout = open_timeout
        self._ws: websockets.ClientConnection | None = None
        self._node: str | None = None  # the node self._ws is connected to
        self._epoch = 0  # the node list's epoch when it was picked
        self._position: str | None = None
        self._closed = False
        self._opened = 0  # connections that got as far as ``subscribed``
        self._opened_at = 0.0
        self._streak = 0  # reconnects since the last record or long-lived connection

    @property
    def reconnects(self) -> int:
        """How many times the subscription connected again after its first connection."""
        return max(0, self._opened - 1)

    @property
    def position(self) -> str | None:
        """The resume token after the last record handed out, or None before the hub said."""
        return self._position

    @property
    def closed(self) -> bool:
        """True once the iteration has ended (``aclose``, or the hub closed normally)."""
        return self._closed

    # -- iteration -----------------------------------------------------------------------

    def __aiter__(self) -> LiveSubscription:
        return self

    async def __anext__(self) -> Record:
        while True:
            if self._closed:
                raise StopAsyncIteration
            ws = self._ws or await self._connect()
            try:
                raw = await ws.recv()
            except ConnectionClosed as exc:
                self._dropped()
                if self._closed:
                    raise StopAsyncIteration from None
                self._on_close(exc)
                continue
            try:
                record = self._handle(raw)
            except _Retry as exc:
                self._dropped()
                if exc.node_failed:
                    self._node_failed()
                await ws.close()
                continue
            if record is not None:
                self._streak = 0
                return record

    def _dropped(self) -> None:
        self._ws = None
        if asyncio.get_running_loop().time() - self._opened_at >= self._policy.max_delay:
            self._streak = 0  # it lived a while: come back at once, as after the first drop

    async def start(self) -> str:
        """Connect and subscribe now rather than at the first record; answers ``position``.

        With ``start="latest"`` the subscription then holds every record written
        after this returns.
        """
        if self._ws is None:
            await self._connect()
        assert self._position is not None
        return self._position

    async def aclose(self) -> None:
        """End the iteration and close the socket (a normal close). Safe to call twice.

        Frames the hub sent before it saw the close are read and dropped meanwhile:
        left unread, they would stop the hub's close frame behind them, and the
        close would wait out its timeout.
        """
        self._closed = True
        ws, self._ws = self._ws, None
        if ws is None:
            return
        drain = asyncio.create_task(_discard(ws))
        try:
            await ws.close()
        finally:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain

    async def __aenter__(self) -> LiveSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- frames --------------------------------------------------------------------------

    def _handle(self, raw: str | bytes) -> Record | None:
        frame = orjson.loads(raw)
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "event" and frame.get("sub") == _SUB_ID:
            record = Record.from_dict(frame)
            self._position = str(frame["resume"])
            return record
        if kind == "error":
            raise _frame_error(frame)
        return None  # a frame this client does not use

    def _on_close(self, exc: ConnectionClosed) -> None:
        """Decide after a close: raise for good, or return to reconnect (where)."""
        close = exc.rcvd
        if close is None:
            # No close frame: the network or the node's process went away.
            self._node_failed()
            return
        if close.code == _NORMAL_CLOSE:
            self._closed = True
            return
        if 4400 <= close.code < 4500 and close.code - 4000 not in _RETRY_STATUSES:
            raise build_error(_class_of(close.code - 4000), close.reason or str(exc), {})
        if close.code in _NODE_GONE_CLOSES or close.code - 4000 in _NODE_GONE_STATUSES:
            self._node_failed()

    def _node_failed(self) -> None:
        if self._node is not None:
            self.nodes.failed(self._node, self._epoch)

    # -- connecting ----------------------------------------------------------------------

    async def _connect(self) -> websockets.ClientConnection:
        """Connect and subscribe from the position, retrying by the policy."""
        failed = 0
        while True:
            # The first attempt after a drop goes at once; a drop soon after a
            # reconnect, or a failed attempt, waits longer each time.
            if self._streak:
                await self._sleep(self._policy.delay(self._streak - 1))
            if self._closed:
                raise StopAsyncIteration
            try:
                ws = await self._open()
            except _Retry as exc:
                if self._closed:
                    raise StopAsyncIteration from None
                limit = self._policy.max_reconnects
                if limit is not None and failed >= limit:
                    where = ", ".join(_ws_url(u) for u in self.nodes.urls)
                    raise TidingsError(
                        f"gave up on {where} after {failed} reconnects: {exc.cause}"
                    ) from None
                failed += 1
                self._streak += 1  # whether or not it ever connected
                continue
            if self._closed:  # closed by another task while connecting
                await ws.close()
                raise StopAsyncIteration
            if self._opened:
                self._streak += 1  # a reconnect: reset by a record or a long life
            self._opened += 1
            self._opened_at = asyncio.get_running_loop().time()
            self._ws = ws
            return ws

    async def _open(self) -> websockets.ClientConnection:
        """One connection to the current node with its subscription started, or
        :class:`_Retry` (having moved to the next node when this one is to blame)."""
        node, epoch = self.nodes.pick()
        try:
            ws = await self._open_on(node)
        except _Retry as exc:
            if exc.node_failed:
                self.nodes.failed(node, epoch)
            raise
        self._node, self._epoch = node, epoch  # what a drop of this connection blames
        return ws

    async def _open_on(self, node: str) -> websockets.ClientConnection:
        ws_url = _ws_url(node)
        try:
            ws = await websockets.connect(
                ws_url,
                subprotocols=[SUBPROTOCOL],
                additional_headers=self._headers,
                open_timeout=self._open_timeout,
                max_size=_MAX_FRAME_BYTES,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            err = error_from_response(status, bytes(exc.response.body or b""), ws_url)
            if status in _RETRY_STATUSES:
                gone = status in UNKNOWN_STATUSES or node_unavailable(err)
                raise _Retry(f"handshake answered {status}: {err.detail}", gone) from None
            raise err from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise _Retry(f"cannot connect: {exc}") from None
        try:
            hub_id = ws.response.headers.get(HUB_ID_HEADER) if ws.response else None
            if hub_id is None and self.nodes.hub_id is not None:
                # It cannot show it is this hub: no position of ours is sent to it.
                raise _Retry(f"the node names no hub id ({HUB_ID_HEADER})", True)
            self.nodes.answered(node, hub_id)  # NotOneHub before anything is asked
        except BaseException:
            await ws.close()
            raise
        try:
            start = self._from if self._position is None else self._position
            await ws.send(
                orjson.dumps(
                    {
                        "type": "subscribe",
                        "id": _SUB_ID,
                        "topic": self.topic,
                        "types": self._types,
                        "from": start,
                    }
                ).decode()
            )
            while True:
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), self._open_timeout))
                if frame.get("type") == "subscribed" and frame.get("id") == _SUB_ID:
                    break
                if frame.get("type") == "error":
                    raise _frame_error(frame)
        except (ConnectionClosed, TimeoutError) as exc:
            await ws.close()
            raise _Retry(f"lost while subscribing: {exc}") from None
        except BaseException:
            await ws.close()
            raise
        if self._position is None:
            # Where "latest" or a time landed: a reconnect goes on from here.
            self._position = str(frame["resume"])
        return ws


async def _discard(ws: websockets.ClientConnection) -> None:
    """Read and drop frames until the connection closes."""
    # Another task may be in recv() already (ConcurrencyError): then it drains.
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


def _frame_error(frame: Mapping[str, Any]) -> Exception:
    """An ``error`` frame as the error to raise; :class:`_Retry` when worth another try."""
    status = frame.get("status")
    status = status if isinstance(status, int) else 500
    if status in _RETRY_STATUSES:
        gone = status in _NODE_GONE_STATUSES and frame.get("problem") != _VIEW_BEHIND
        return _Retry(f"hub answered {status}: {frame.get('detail')}", gone)
    problem = {k: v for k, v in frame.items() if k not in ("type", "ref", "sub", "problem")}
    problem["type"] = frame.get("problem")
    return error_from_response(status, orjson.dumps(problem), "/v1/ws")


def _class_of(status: int) -> type[TidingsError]:
    err = error_from_response(status, b"", "/v1/ws")
    return type(err)


def _ws_url(url: str) -> str:
    base = url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base.removeprefix("https://")
    elif base.startswith("http://"):
        base = "ws://" + base.removeprefix("http://")
    return base + "/v1/ws"


def _type_list(types: str | Iterable[str] | None) -> list[str]:
    if types is None:
        return []
    if isinstance(types, str):
        return [t.strip() for t in types.split(",") if t.strip()]
    return list(types)


def _from(start: LiveStart) -> str | dict[str, Any]:
    if isinstance(start, datetime):
        return {"time": start.isoformat()}
    if isinstance(start, Mapping):
        return dict(start)
    return start
