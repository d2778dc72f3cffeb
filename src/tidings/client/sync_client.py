"""The blocking client: :class:`Client` mirrors :class:`~tidings.client.async_client.AsyncClient`.

Each client runs a private event loop in a daemon thread and hands every call
to it (:func:`asyncio.run_coroutine_threadsafe`), so it may be used from any
number of threads at once, and concurrent publishes from several threads are
coalesced like concurrent tasks when ``batch_linger_ms`` > 0.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

from tidings.client.async_client import (
    DEFAULT_URL,
    AsyncClient,
    EventLike,
    HubUrls,
    Leases,
    Seek,
    Start,
    Types,
)
from tidings.client.batching import PublishBatcher
from tidings.client.live import LiveStart, LiveSubscription
from tidings.client.nodes import HubNodes, Reconnect
from tidings.client.receiving import AsyncConsumer, AsyncMessage, AsyncSubscription, Delivery
from tidings.client.schemas import SchemaCalls
from tidings.client.views import ViewCalls
from tidings.client.webhooks import WebhookCalls
from tidings.events.envelope import Event, Record

__all__ = ["Client", "Consumer", "Message", "Subscription"]

T = TypeVar("T")


class _Runner:
    """An event loop in a thread of its own, running coroutines for other threads."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="tidings-client", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a sync Client cannot be called from its own event loop")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt: stop the work, not only the wait
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class Client(WebhookCalls, SchemaCalls, ViewCalls):
    """A blocking connection to one hub, with the methods and arguments of ``AsyncClient``.

    ::

        with Client("http://127.0.0.1:8700") as hub:
            hub.publish("orders", type="order.placed", data={"order_id": "o-1"}, key="o-1")
            for record in hub.subscribe("orders", start="earliest"):
                ...

    ``url`` may name several nodes of one hub (a list, or comma-separated):
    requests go to the current node and move to the next when it fails, as
    :class:`AsyncClient` says.
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
        self._async = AsyncClient(
            url,
            token=token,
            timeout=timeout,
            max_connections=max_connections,
            batch_linger_ms=batch_linger_ms,
            batch_max=batch_max,
            reconnect=reconnect,
        )
        self._runner = _Runner()
        self._closed = False

    @property
    def url(self) -> str:
        """The URL of the node requests go to now."""
        return self._async.url

    @property
    def nodes(self) -> HubNodes:
        """The hub's nodes and the current one."""
        return self._async.nodes

    @property
    def batcher(self) -> PublishBatcher | None:
        """The producer-side batcher, when ``batch_linger_ms`` > 0."""
        return self._async.batcher

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Send what the batcher holds, close every connection and stop the loop thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self._async.close())
        finally:
            self._runner.stop()

    def _schema_calls(self) -> AsyncClient:
        return self._async

    def _view_calls(self) -> AsyncClient:
        return self._async

    def _hooks(self) -> AsyncClient:
        return self._async

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("this client is closed")
        return self._runner.run(coro)

    # -- operations --------------------------------------------------------------------

    def healthz(self) -> dict[str, Any]:
        """``GET /healthz``: ``{"status": "ok", "hub_id": ...}`` while the hub serves."""
        return self._run(self._async.healthz())

    def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text exposition."""
        return self._run(self._async.metrics())

    # -- publish and read --------------------------------------------------------------

    def publish(
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
        """Publish one event; see :meth:`AsyncClient.publish`."""
        return self._run(
            self._async.publish(
                topic,
                type,
                data,
                event=event,
                key=key,
                id=id,
                subject=subject,
                source=source,
                extensions=extensions,
            )
        )

    def publish_many(self, topic: str, events: Iterable[EventLike]) -> list[dict[str, Any]]:
        """Publish events in one all-or-nothing batch; see :meth:`AsyncClient.publish_many`."""
        return self._run(self._async.publish_many(topic, list(events)))

    def publish_binary(self, topic: str, event: EventLike) -> dict[str, Any]:
        """Publish one event in binary mode; see :meth:`AsyncClient.publish_binary`."""
        return self._run(self._async.publish_binary(topic, event))

    @overload
    def read(
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
    def read(
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

    def read(
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
        """Read records and the token to continue from (and, with ``appended``, the
        read's horizon); see :meth:`AsyncClient.read`."""
        if appended:
            return self._run(
                self._async.read(
                    topic, partition=partition, start=start, from_time=from_time, limit=limit,
                    wait=wait, types=types, appended=True,
                )
            )
        return self._run(
            self._async.read(
                topic, partition=partition, start=start, from_time=from_time, limit=limit,
                wait=wait, types=types,
            )
        )

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
    ) -> Subscription:
        """Follow ``topic`` for ever: an iterator of records; see :meth:`AsyncClient.subscribe`.

        Live by default: pushed over the WebSocket and resumed by itself after a drop.
        """
        sub = self._async.subscribe(
            topic,
            types=types,
            start=start,
            partition=partition,
            wait=wait,
            live=live,
            reconnect=reconnect,
        )
        return Subscription(self, sub)

    # -- topics ------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        max_age: float | str | None = None,
        max_bytes: int | None = None,
        schemas: Literal["off", "validate", "required"] | None = None,
        compaction: Literal["none", "key"] | None = None,
        delete_retention: float | str | None = None,
    ) -> dict[str, Any]:
        """Create a topic or change it; see :meth:`AsyncClient.create_topic`."""
        return self._run(
            self._async.create_topic(
                name, partitions, max_age, max_bytes, schemas, compaction, delete_retention
            )
        )

    def topics(self) -> list[dict[str, Any]]:
        """Every topic."""
        return self._run(self._async.topics())

    def topic(self, name: str) -> dict[str, Any]:
        """One topic: partitions, offsets, events, bytes, retention."""
        return self._run(self._async.topic(name))

    def delete_topic(self, name: str) -> None:
        """Delete a topic, its events and its groups."""
        self._run(self._async.delete_topic(name))

    # -- finding events ------------------------------------------------------------------

    def get_event(self, event_id: str) -> Record:
        """The record of an event by its id; see :meth:`AsyncClient.get_event`."""
        return self._run(self._async.get_event(event_id))

    def events_by_correlation(
        self, correlation_id: str, *, limit: int = 100, after: str | None = None
    ) -> tuple[list[Record], str | None]:
        """One page of a correlationid's records; see :meth:`AsyncClient.events_by_correlation`."""
        return self._run(
            self._async.events_by_correlation(correlation_id, limit=limit, after=after)
        )

    def trace(self, correlation_id: str) -> list[Record]:
        """Every record of ``correlationid``; see :meth:`AsyncClient.trace`."""
        return self._run(self._async.trace(correlation_id))

    # -- consumer groups ---------------------------------------------------------------

    def create_group(
        self,
        topic: str,
        group: str,
        *,
        start: Literal["earliest", "latest"] = "earliest",
        ack_wait: float | str = 30,
        max_deliver: int = 5,
        dead_letter_topic: str | None = None,
        ordering: Literal["none", "key"] = "none",
        types: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Create a consumer group or change it; see :meth:`AsyncClient.create_group`."""
        return self._run(
            self._async.create_group(
                topic,
                group,
                start=start,
                ack_wait=ack_wait,
                max_deliver=max_deliver,
                dead_letter_topic=dead_letter_topic,
                ordering=ordering,
                types=None if types is None else list(types),
            )
        )

    def group(self, topic: str, group: str) -> dict[str, Any]:
        """One group: settings, lag, pending, delivered, redelivered, dead-lettered."""
        return self._run(self._async.group(topic, group))

    def groups(self) -> list[dict[str, Any]]:
        """Every consumer group."""
        return self._run(self._async.groups())

    def delete_group(self, topic: str, group: str) -> None:
        """Delete a consumer group and its positions."""
        self._run(self._async.delete_group(topic, group))

    def fetch(
        self,
        topic: str,
        group: str,
        max: int = 10,
        wait: float = 0,
        types: Iterable[str] | None = None,
    ) -> list[Delivery]:
        """Lease up to ``max`` events; see :meth:`AsyncClient.fetch`."""
        return self._run(
            self._async.fetch(topic, group, max, wait, None if types is None else list(types))
        )

    def ack(self, topic: str, group: str, leases: Leases) -> int:
        """Mark leased events done; see :meth:`AsyncClient.ack`."""
        return self._run(self._async.ack(topic, group, _materialize(leases)))

    def nack(self, topic: str, group: str, leases: Leases, delay: float = 0) -> int:
        """Hand leased events back; see :meth:`AsyncClient.nack`."""
        return self._run(self._async.nack(topic, group, _materialize(leases), delay))

    def seek(self, topic: str, group: str, to: Seek) -> str:
        """Move the group; see :meth:`AsyncClient.seek`."""
        return self._run(self._async.seek(topic, group, to))

    def redrive(self, topic: str, group: str) -> int:
        """Publish the group's dead letters again; see :meth:`AsyncClient.redrive`."""
        return self._run(self._async.redrive(topic, group))

    def consume(
        self,
        topic: str,
        group: str,
        *,
        max: int = 10,
        wait: float = 10,
        types: Iterable[str] | None = None,
    ) -> Consumer:
        """Work through a group's events for ever: an iterator of messages.

        ::

            for msg in hub.consume("orders", "payments"):
                with msg:
                    charge(msg.event)

        ``with msg:`` acks when the block ends normally, nacks and re-raises when it
        raises; see :meth:`AsyncClient.consume`.
        """
        consumer = self._async.consume(
            topic, group, max=max, wait=wait, types=None if types is None else list(types)
        )
        return Consumer(self, consumer)


class Subscription:
    """A topic's records as they arrive: a blocking live or long-poll subscription."""

    def __init__(self, client: Client, subscription: LiveSubscription | AsyncSubscription) -> None:
        self._client = client
        self._async = subscription

    @property
    def position(self) -> str | None:
        """The token to resume from with nothing missed and nothing repeated."""
        return self._async.position

    def __iter__(self) -> Iterator[Record]:
        return self

    def __next__(self) -> Record:
        try:
            return self._client._run(_anext(self._async))
        except StopAsyncIteration:
            raise StopIteration from None

    def start(self) -> str | None:
        """Reach the hub now rather than at the first record; answers ``position``.

        A live subscription connects and subscribes (``start="latest"`` then holds
        every record written after this returns); a long-poll one does nothing.
        """
        if isinstance(self._async, LiveSubscription):
            return self._client._run(self._async.start())
        return self._async.position

    def close(self) -> None:
        """End the iteration."""
        self._client._run(self._async.aclose())

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Message:
    """One delivery from :meth:`Client.consume`: ``with msg:`` acks it, or nacks and re-raises."""

    __slots__ = ("_async", "_client")

    def __init__(self, client: Client, message: AsyncMessage) -> None:
        self._client = client
        self._async = message

    @property
    def delivery(self) -> Delivery:
        """The leased delivery."""
        return self._async.delivery

    @property
    def record(self) -> Record:
        """The delivered record: topic, partition, offset, event."""
        return self._async.record

    @property
    def event(self) -> Event:
        """The delivered event."""
        return self._async.event

    @property
    def lease(self) -> str:
        """The lease that acks or nacks this delivery."""
        return self._async.lease

    @property
    def deliveries(self) -> int:
        """How many times the event was delivered, this time included."""
        return self._async.deliveries

    @property
    def settled(self) -> bool:
        """True once acked or nacked."""
        return self._async.settled

    def ack(self) -> None:
        """Mark the event done."""
        self._client._run(self._async.ack())

    def nack(self, delay: float = 0) -> None:
        """Hand the event back, to be delivered again after ``delay`` seconds."""
        self._client._run(self._async.nack(delay))

    def __enter__(self) -> Message:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client._run(self._async.__aexit__(exc_type, exc, tb))


class Consumer:
    """A consumer group's events as :class:`Message` objects; a blocking ``AsyncConsumer``."""

    def __init__(self, client: Client, consumer: AsyncConsumer) -> None:
        self._client = client
        self._async = consumer

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        try:
            message = self._client._run(_anext(self._async))
        except StopAsyncIteration:
            raise StopIteration from None
        return Message(self._client, message)

    def close(self) -> None:
        """Stop, and hand back the events fetched and not yet handed out."""
        self._client._run(self._async.aclose())

    def __enter__(self) -> Consumer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _anext(iterator: AsyncIterator[T]) -> T:
    return await iterator.__anext__()


def _materialize(leases: Leases) -> Leases:
    # A generator must be consumed in the caller's thread, not in the loop's.
    return leases if isinstance(leases, str | Delivery) else list(leases)
