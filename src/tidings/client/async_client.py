"""The asyncio client of the hub's HTTP API (``/v1``), on aiohttp.

One :class:`aiohttp.ClientSession` per client keeps connections alive (up to
``max_connections``); bodies are written and read with orjson. Every error the
hub answers is raised as its :mod:`tidings.errors` class (see
:mod:`tidings.client.problems`); a hub that cannot be reached raises
:class:`~tidings.errors.TidingsError` naming the address.

A client given several nodes of a hub sends each request to the current node
and moves to the next one when that node fails (no connection, no answer in
time, 502/503/504), as :mod:`tidings.client.nodes` says; a 4xx never moves it.

Events follow CloudEvents 1.0: structured mode for one event, batch mode for
several, binary mode on request
(https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Literal, overload

import aiohttp
import orjson

from tidings.client.batching import PublishBatcher
from tidings.client.groups import AsyncGroupCalls, Leases, Seek
from tidings.client.live import LiveStart, LiveSubscription
from tidings.client.nodes import HubNodes, HubUrls, Reconnect
from tidings.client.receiving import AsyncConsumer, AsyncSubscription
from tidings.client.schemas import AsyncSchemaCalls
from tidings.client.sending import NodeRequests
from tidings.client.topics import AsyncTopicCalls, topic_path
from tidings.client.views import AsyncViewCalls
from tidings.client.webhooks import AsyncWebhookCalls
from tidings.events.envelope import Event, Record, new_event_id
from tidings.events.http import to_binary

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "EventLike",
    "HubUrls",
    "Leases",
    "Seek",
    "Start",
    "Types",
]

DEFAULT_URL: Final = "http://127.0.0.1:8700"

STRUCTURED: Final = "application/cloudevents+json"
BATCH: Final = "application/cloudevents-batch+json"
_JSON: Final = {"Content-Type": "application/json"}

EventLike = Event | Mapping[str, Any]
"""A :class:`~tidings.Event`, or a dict of CloudEvents attributes with at least ``type``."""
Start = Literal["earliest", "latest"] | int | str
"""Where a read starts: earliest, latest, an offset (with ``partition``) or a position token."""
Types = str | Iterable[str] | None
"""Event-type patterns (``order.*``, ``order.>``), as a list or comma-separated."""


class AsyncClient(
    NodeRequests,
    AsyncWebhookCalls,
    AsyncSchemaCalls,
    AsyncViewCalls,
    AsyncGroupCalls,
    AsyncTopicCalls,
):
    """A connection to one hub, for use from asyncio.

    ::

        async with AsyncClient("http://127.0.0.1:8700") as hub:
            await hub.publish("orders", type="order.placed", data={"order_id": "o-1"}, key="o-1")

    ``url`` is the hub's URL, or the URLs of several nodes of one hub as a list
    or a comma-separated string (``"http://a:8700,http://b:8700"``): requests go
    to the current node (:attr:`url`, the first to begin with) and move to the
    next one when it fails, as :mod:`tidings.client.nodes` says; a publish sent
    again goes under the same event ids. A URL without ``http(s)://`` or host,
    an empty list or a node named twice raises ValueError.

    ``token`` is sent as ``Authorization: Bearer …``. ``timeout`` (seconds) bounds
    each request; a long poll (``wait``) gets its wait on top. ``reconnect`` is
    the backoff between node switches of a request, and of a live subscription
    that is given none. With ``batch_linger_ms`` > 0, concurrent :meth:`publish`
    calls are sent together (see :class:`~tidings.client.batching.PublishBatcher`),
    trading up to that many milliseconds of latency for far fewer requests.
    """

    def __init__(
        self,
        url: HubUrls = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float = 30,
        max_connections: int = 100,
        batch_linger_ms: float = 0,
        batch_max: int = 500,
        reconnect: Reconnect | None = None,
    ) -> None:
        #: The hub's nodes and the current one, shared with live subscriptions.
        self.nodes = HubNodes(url)
        self._reconnect = reconnect or Reconnect()
        self._timeout = timeout
        self._max_connections = max_connections
        self._token = token
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._live: set[LiveSubscription] = set()  # closed with the client
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        #: The producer-side batcher, when ``batch_linger_ms`` > 0.
        self.batcher: PublishBatcher | None = None
        if batch_linger_ms > 0:
            self.batcher = PublishBatcher(
                self._publish_batch_body, linger_ms=batch_linger_ms, max_events=batch_max
            )

    @property
    def url(self) -> str:
        """The URL of the node requests go to now (read-only: it moves as nodes fail;
        the whole list is :attr:`nodes`)."""
        return self.nodes.current

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Send what the batcher holds, then close every connection. Safe to call twice."""
        if self._closed:
            return
        if self.batcher is not None:
            await self.batcher.flush()
        self._closed = True
        for sub in list(self._live):
            await sub.aclose()
        self._live.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- HTTP --------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            if self._closed:
                raise RuntimeError("this client is closed")
            # Made on first use, inside the running loop, as aiohttp wants.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=self._timeouts(0),
                headers=self._headers,
            )
            # aiohttp sends a PUT or DELETE once more, to the same node, when the
            # connection drops; what is sent again, and where, is decided in
            # _request (a DELETE's 404 must be known as coming after a lost attempt).
            self._session._retry_connection = False
        return self._session

    async def _call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        params: Mapping[str, str] | None = None,
        wait: float = 0,
        resend: bool | None = None,
    ) -> Any:
        """A JSON request (``body`` None sends none) and its decoded JSON answer, if any."""
        data = None if body is None else orjson.dumps(body)
        raw = await self._request(
            method,
            path,
            body=data,
            headers=None if data is None else _JSON,
            params=params,
            wait=wait,
            resend=resend,
        )
        return orjson.loads(raw) if raw else None

    # -- operations --------------------------------------------------------------------

    async def healthz(self) -> dict[str, Any]:
        """``GET /healthz``: ``{"status": "ok", "hub_id": ...}`` while the hub serves."""
        answer: dict[str, Any] = await self._call("GET", "/healthz")
        return answer

    async def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text exposition."""
        return (await self._request("GET", "/metrics")).decode()

    # -- publish -----------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        type: str | None = None,
        data: Any = None,
        *,
        event: EventLike | None = None,
        key: str | None = None,
        id: str | None = None,
        subject: str | None = None,
        source: str | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Publish one event; answer ``{"id", "partition", "offset"}`` once it is durable.

        Give ``type`` and ``data``, or a whole ``event`` (a :class:`~tidings.Event` or a
        dict of CloudEvents attributes); the keywords add to either. ``key`` becomes the
        ``partitionkey`` extension: same key, same partition, same order. ``data=None``
        sends no data. The hub fills ``id``, ``source`` and ``time`` when they are
        missing. Give your own ``id`` to make a retry safe: within the hub's dedupe
        window a repeated id appends nothing and is answered ``"duplicate": True``.
        """
        ev = self._with_id(event_dict(type, data, event, key, id, subject, source, extensions))
        payload = orjson.dumps(ev)
        if self.batcher is not None:
            return await self.batcher.publish(topic, payload)
        raw = await self._request(
            "POST",
            _events_path(topic),
            body=payload,
            headers={"Content-Type": STRUCTURED},
            resend=self.nodes.several,  # then every event has an id (see _with_id)
        )
        return _published(raw)[0]

    async def publish_many(self, topic: str, events: Iterable[EventLike]) -> list[dict[str, Any]]:
        """Publish several events in one batch request: all of them are appended or none.

        Answers one ``{"id", "partition", "offset"}`` per event, in order. A bad event
        refuses the whole batch with an error naming its ``index``.
        """
        payloads = [
            orjson.dumps(self._with_id(event_dict(None, None, e, None, None, None, None, None)))
            for e in events
        ]
        if not payloads:
            return []
        return await self._publish_batch_body(topic, b"[" + b",".join(payloads) + b"]")

    def _with_id(self, ev: dict[str, Any]) -> dict[str, Any]:
        # Sent again on another node, an event must keep its id for the hub to
        # see the repeat; one node is never sent a request twice.
        if self.nodes.several and ev.get("id") is None:
            ev["id"] = new_event_id()
        return ev

    async def _publish_batch_body(self, topic: str, body: bytes) -> list[dict[str, Any]]:
        raw = await self._request(
            "POST",
            _events_path(topic),
            body=body,
            headers={"Content-Type": BATCH},
            resend=self.nodes.several,  # then every event has an id (see _with_id)
        )
        return _published(raw)

    async def publish_binary(self, topic: str, event: EventLike) -> dict[str, Any]:
        """Publish one event in binary mode: attributes as ``ce-*`` headers, data as the body.

        The body is ``data`` as the ``datacontenttype`` says (JSON when none is given),
        or the bytes of ``data_base64``.
        """
        headers, body = to_binary(
            self._with_id(event_dict(None, None, event, None, None, None, None, None))
        )
        # Without a datacontenttype there must be no Content-Type, or aiohttp's
        # application/octet-stream would become the event's datacontenttype.
        raw = await self._request(
            "POST",
            _events_path(topic),
            body=body or None,
            headers=headers,
            skip_auto_headers=("Content-Type",),
            resend=self.nodes.several,  # then the event has an id (see _with_id)
        )
        return _published(raw)[0]

    # -- read --------------------------------------------------------------------------

    @overload
    async def read(
        self,
        topic: str,
        *,
        partition: int | None = ...,
        start: Start = ...,
        from_time: str | datetime | int | None = ...,
        limit: int = ...,
        wait: float = ...,
        types: Types = ...,
        appended: Literal[False] = ...,
    ) -> tuple[list[Record], str]: ...

    @overload
    async def read(
        self,
        topic: str,
        *,
        partition: int | None = ...,
        start: Start = ...,
        from_time: str | datetime | int | None = ...,
        limit: int = ...,
        wait: float = ...,
        types: Types = ...,
        appended: Literal[True],
    ) -> tuple[list[Record], str, int]: ...

    async def read(
        self,
        topic: str,
        *,
        partition: int | None = None,
        start: Start = "earliest",
        from_time: str | datetime | int | None = None,
        limit: int = 100,
        wait: float = 0,
        types: Types = None,
        appended: bool = False,
    ) -> tuple[list[Record], str] | tuple[list[Record], str, int]:
        """Read records in offset order; answer them and the token the next read starts from.

        ``start`` is earliest, latest, an offset (with ``partition`` on a topic of
        several) or a position token from an earlier read. ``from_time`` (RFC 3339, a
        datetime or ms since the epoch) starts at the first event at or after it
        instead. ``wait`` (seconds) long-polls until a record arrives.

        ``appended=True`` gives each record its append time (``Record.appended``, ms)
        and answers a third item, the read's horizon (ms): every record of the
        partitions read that this read did not answer was appended at or after it.
        """
        params: dict[str, str] = {"limit": str(limit)}
        if appended:
            params["appended"] = "true"
        if from_time is not None:
            params["from_time"] = _time(from_time)
            if start != "earliest":
                params["from"] = str(start)  # both: the hub says which one to drop
        else:
            params["from"] = str(start)
        if partition is not None:
            params["partition"] = str(partition)
        if wait > 0:
            params["wait"] = _ms(wait)
        if types is not None:
            params["types"] = _types_query(types)
        raw = await self._request("GET", _events_path(topic), params=params, wait=wait)
        answer = orjson.loads(raw)
        records = [Record.from_dict(r) for r in answer["records"]]
        if appended:
            return records, str(answer["next"]), int(answer["horizon"])
        return records, str(answer["next"])

    def subscribe(
        self,
        topic: str,
        *,
        types: Types = None,
        start: Start | LiveStart = "latest",
        partition: int | None = None,
        wait: float = 10,
        live: bool = True,
        reconnect: Reconnect | None = None,
    ) -> LiveSubscription | AsyncSubscription:
        """Follow ``topic`` for ever: an async iterator of its records, as they arrive.

        ``start`` is earliest, latest, a position token from an earlier
        subscription's ``position``, or a time (``{"time": ...}`` or a datetime).
        ``start="latest"`` begins at the end of the topic when the subscription
        reaches the hub (``await sub.start()`` makes that happen at once on a
        live subscription).

        With ``live`` (the default) and no ``partition``, records are pushed over
        the WebSocket (:class:`~tidings.client.live.LiveSubscription`): a dropped
        connection or a restarted hub is reconnected as ``reconnect`` says and
        resumed with no gap and no repeat. Otherwise, or with ``start`` an
        offset, it long-polls with :meth:`read` (``wait`` seconds per poll), and
        an error ends the iteration. Either way ``position`` is where another
        subscription resumes. With several nodes both kinds follow the client's
        current node: a node that dies is left for the next one, and the records
        go on there from the position.
        """
        if live and partition is None and not isinstance(start, int):
            self._live = {s for s in self._live if not s.closed}
            sub = LiveSubscription(
                self.nodes,
                topic,
                types=types,
                start=start,
                token=self._token,
                reconnect=reconnect or self._reconnect,
                open_timeout=self._timeout,
            )
            self._live.add(sub)
            return sub
        from_time: str | None = None
        first: Start
        if isinstance(start, datetime):
            first, from_time = "earliest", start.isoformat()
        elif isinstance(start, Mapping):
            first, from_time = "earliest", str(start["time"])
        else:
            first = start
        return AsyncSubscription(
            self.read,
            topic,
            types=types,
            start=first,
            partition=partition,
            wait=wait,
            from_time=from_time,
        )

    def consume(
        self,
        topic: str,
        group: str,
        *,
        max: int = 10,
        wait: float = 10,
        types: Iterable[str] | None = None,
    ) -> AsyncConsumer:
        """Work through a group's events for ever: an async iterator of messages.

        ::

            async for msg in hub.consume("orders", "payments"):
                async with msg:
                    await charge(msg.event)

        A block that ends normally acknowledges its message; one that raises
        nacks it for redelivery at once and the exception propagates, ending the
        loop. Events fetched and not yet handed out are nacked when the consumer
        is closed (``async with hub.consume(...) as messages`` or ``aclose()``);
        otherwise they come back after the group's ``ack_wait``.
        """
        return AsyncConsumer(self, topic, group, max=max, wait=wait, types=types)


# -- helpers ----------------------------------------------------------------------------


def _events_path(topic: str) -> str:
    return topic_path(topic) + "/events"


def _published(raw: bytes) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = orjson.loads(raw)["events"]
    return events


def event_dict(
    type: str | None,
    data: Any,
    event: EventLike | None,
    key: str | None,
    id: str | None,
    subject: str | None,
    source: str | None,
    extensions: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The event a ``publish(topic, type, data, event=, key=, ...)`` call names."""
    if event is not None:
        if type is not None or data is not None:
            raise TypeError("give type and data, or event, not both")
        ev = event.to_dict() if isinstance(event, Event) else dict(event)
    elif type is None:
        raise TypeError("an event needs a type: publish(topic, type, data) or event=")
    else:
        ev = {"specversion": "1.0", "type": type}
        if data is not None:
            ev["data"] = data
    if extensions:
        ev.update(extensions)
    given = {"partitionkey": key, "id": id, "subject": subject, "source": source}
    ev.update((name, value) for name, value in given.items() if value is not None)
    return ev


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def _time(value: str | datetime | int) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _types_query(types: str | Iterable[str]) -> str:
    return types if isinstance(types, str) else ",".join(types)

