"""What the async client hands out when events come in: subscriptions, deliveries, messages.

- :class:`AsyncSubscription` follows a topic with long-poll reads and knows the
  position to resume from.
- :class:`Delivery` is one event leased to a consumer group.
- :class:`AsyncConsumer` fetches a group's deliveries for ever, as
  :class:`AsyncMessage` objects whose ``async with`` block acks or nacks them.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tidings.errors import TidingsError
from tidings.events.envelope import Event, Record

if TYPE_CHECKING:
    from tidings.client.async_client import AsyncClient, Start, Types

__all__ = ["AsyncConsumer", "AsyncMessage", "AsyncSubscription", "Delivery"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event leased to a consumer group: the record, its lease, how often it was delivered."""

    record: Record
    lease: str
    deliveries: int

    @property
    def event(self) -> Event:
        """The delivered event."""
        return self.record.event

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Delivery:
        """From a fetch answer's record: ``topic``, ``partition``, ``offset``, ``lease``,
        ``deliveries``, ``event``."""
        lease, deliveries = d.get("lease"), d.get("deliveries")
        if not isinstance(lease, str) or not isinstance(deliveries, int):
            raise ValueError("a delivery needs a string 'lease' and an integer 'deliveries'")
        return cls(Record.from_dict(d), lease, deliveries)


ReadFn = Callable[..., Awaitable[tuple[list[Record], str]]]


class AsyncSubscription:
    """Records of one topic as they arrive, read with long polls, for ever.

    ``position`` is the token from which a new subscription (or
    :meth:`~tidings.client.async_client.AsyncClient.read`) continues with the first record
    not yet handed out: after an error, or in another process, nothing is missed
    and nothing repeated.
    """

    def __init__(
        self,
        read: ReadFn,
        topic: str,
        *,
        types: Types,
        start: Start,
        partition: int | None,
        wait: float,
        limit: int = 100,
        from_time: str | None = None,
    ) -> None:
        self.topic = topic
        self._read = read
        self._types = types
        self._from: Start = start
        self._from_time = from_time  # for the first read only
        self._partition = partition
        self._wait = wait
        self._limit = limit
        self._buffer: deque[Record] = deque()
        self._next: str | None = None
        self._closed = False

    @property
    def position(self) -> str | None:
        """Where to resume: a position token, or None before the first read answered."""
        if self._next is None:
            return None
        ahead: dict[int, int] = {}
        for rec in self._buffer:  # records in offset order per partition: keep the first
            ahead.setdefault(rec.partition, rec.offset)
        pos = _parse_token(self._next)
        pos.update(ahead)
        return ",".join(f"{p}:{o}" for p, o in sorted(pos.items()))

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> Record:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            records, token = await self._read(
                self.topic,
                partition=self._partition,
                start=self._from,
                from_time=self._from_time,
                limit=self._limit,
                wait=self._wait,
                types=self._types,
            )
            self._from_time = None
            self._buffer.extend(records)
            self._from = self._next = token
        return self._buffer.popleft()

    async def aclose(self) -> None:
        """End the iteration; records already read and not handed out are dropped."""
        self._closed = True
        self._buffer.clear()


class AsyncMessage:
    """One delivery from :meth:`~tidings.client.async_client.AsyncClient.consume`, settled once.

    ``async with msg:`` acknowledges it when the block ends normally; when the
    block raises, it is nacked (delivered again at once, counting towards the
    group's ``max_deliver``) and the exception propagates. :meth:`ack` and
    :meth:`nack` inside the block settle it early; the block then does nothing.
    An ack of a lease that ran out raises :class:`~tidings.StaleLease`: the event
    will be, or was, delivered again.
    """

    __slots__ = ("_client", "delivery", "group", "settled", "topic")

    def __init__(self, client: AsyncClient, topic: str, group: str, delivery: Delivery) -> None:
        self._client = client
        self.topic = topic
        self.group = group
        self.delivery = delivery
        #: True once acked or nacked.
        self.settled = False

    @property
    def record(self) -> Record:
        """The delivered record: topic, partition, offset, event."""
        return self.delivery.record

    @property
    def event(self) -> Event:
        """The delivered event."""
        return self.delivery.record.event

    @property
    def lease(self) -> str:
        """The lease that acks or nacks this delivery."""
        return self.delivery.lease

    @property
    def deliveries(self) -> int:
        """How many times the event was delivered, this time included."""
        return self.delivery.deliveries

    async def ack(self) -> None:
        """Mark the event done."""
        self.settled = True
        await self._client.ack(self.topic, self.group, self.delivery.lease)

    async def nack(self, delay: float = 0) -> None:
        """Hand the event back, to be delivered again after ``delay`` seconds."""
        self.settled = True
        await self._client.nack(self.topic, self.group, self.delivery.lease, delay)

    async def __aenter__(self) -> AsyncMessage:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.settled:
            return
        if exc is None:
            await self.ack()
            return
        # The handler's exception is the one to see; a failed nack only means the
        # event comes back after ack_wait instead of at once.
        with contextlib.suppress(TidingsError):
            await self.nack()


class AsyncConsumer:
    """A consumer group's events, fetched with long polls, as :class:`AsyncMessage` objects.

    Closing it (``aclose()``, or leaving ``async with``) nacks the events fetched
    and not yet handed out, so that other consumers get them at once.
    """

    def __init__(
        self,
        client: AsyncClient,
        topic: str,
        group: str,
        *,
        max: int,
        wait: float,
        types: Iterable[str] | None,
    ) -> None:
        self._client = client
        self.topic = topic
        self.group = group
        self._max = max
        self._wait = wait
        self._types = None if types is None else [types] if isinstance(types, str) else list(types)
        self._buffer: deque[Delivery] = deque()
        self._closed = False

    def __aiter__(self) -> AsyncConsumer:
        return self

    async def __anext__(self) -> AsyncMessage:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            fetched = await self._client.fetch(
                self.topic, self.group, max=self._max, wait=self._wait, types=self._types
            )
            if self._closed:  # closed from another task while fetching
                self._buffer.extend(fetched)
                await self.aclose()
                raise StopAsyncIteration
            self._buffer.extend(fetched)
        return AsyncMessage(self._client, self.topic, self.group, self._buffer.popleft())

    async def aclose(self) -> None:
        """Stop, and hand back the events fetched and not yet handed out."""
        self._closed = True
        leases = [d.lease for d in self._buffer]
        self._buffer.clear()
        if leases:
            with contextlib.suppress(TidingsError):
                await self._client.nack(self.topic, self.group, leases)

    async def __aenter__(self) -> AsyncConsumer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _parse_token(token: str) -> dict[int, int]:
    """``"0:15,1:7"`` as ``{0: 15, 1: 7}``."""
    out: dict[int, int] = {}
    for part in token.split(","):
        p, sep, o = part.partition(":")
        if sep and p.isdigit() and o.isdigit():
            out[int(p)] = int(o)
    return out
