"""Producer-side batching: concurrent single-event publishes share one batch request.

A hub answers a batch of 500 events about as fast as one event, so a producer
that publishes from many tasks at once gains most by sending them together, as
Kafka's ``linger.ms`` and ``batch.size`` do. :class:`PublishBatcher` holds each
topic's events for at most ``linger_ms`` after the first one arrives, or until
``max_events`` (or ``max_bytes``) are waiting, then sends them as one
``application/cloudevents-batch+json`` request
(https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/formats/json-format.md#4-json-batch-format).

Each caller gets the answer for its own event. A batch is all or nothing at the
hub, so when it is refused for one event (an error with ``index``), that event's
caller gets the error, as a single publish would have, and the rest are sent
again without it; any other error goes to every caller of the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tidings.client.problems import unbatched
from tidings.errors import InvalidEvent, TidingsError, TooLarge

__all__ = ["PublishBatcher", "SendBatch"]

SendBatch = Callable[[str, bytes], Awaitable[list[dict[str, Any]]]]
"""send(topic, body) -> one result per event: the client's batch request."""

# Well under the hub's default 16 MiB request limit.
DEFAULT_MAX_BYTES = 8 << 20


@dataclass(slots=True)
class _Batch:
    timer: asyncio.TimerHandle | None
    payloads: list[bytes] = field(default_factory=list)
    waiters: list[asyncio.Future[dict[str, Any]]] = field(default_factory=list)
    size: int = 2  # the brackets


class PublishBatcher:
    """Coalesces the single-event publishes of one client into batch requests, per topic.

    ``requests_sent`` and ``events_sent`` count what went to the hub, so a caller
    (or a test) can see how well publishes were coalesced.
    """

    def __init__(
        self,
        send: SendBatch,
        *,
        linger_ms: float,
        max_events: int = 500,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if linger_ms <= 0:
            raise ValueError(f"linger_ms must be more than 0, not {linger_ms}")
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}")
        self._send = send
        self._linger_s = linger_ms / 1000
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._open: dict[str, _Batch] = {}
        self._in_flight: set[asyncio.Task[None]] = set()
        self.requests_sent = 0
        self.events_sent = 0

    async def publish(self, topic: str, payload: bytes) -> dict[str, Any]:
        """Queue one serialized event; answer its ``{"id", "partition", "offset"}``."""
        loop = asyncio.get_running_loop()
        batch = self._open.get(topic)
        if batch is not None and batch.size + len(payload) + 1 > self._max_bytes:
            self._flush(topic)
            batch = None
        if batch is None:
            batch = self._open[topic] = _Batch(loop.call_later(self._linger_s, self._flush, topic))
        waiter: asyncio.Future[dict[str, Any]] = loop.create_future()
        batch.payloads.append(payload)
        batch.waiters.append(waiter)
        batch.size += len(payload) + 1
        if len(batch.payloads) >= self._max_events:
            self._flush(topic)
        return await waiter

    async def flush(self) -> None:
        """Send every waiting event now and wait until every batch is answered."""
        for topic in list(self._open):
            self._flush(topic)
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _flush(self, topic: str) -> None:
        batch = self._open.pop(topic, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        task = asyncio.get_running_loop().create_task(
            self._deliver(topic, batch.payloads, batch.waiters)
        )
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _deliver(
        self,
        topic: str,
        payloads: list[bytes],
        waiters: list[asyncio.Future[dict[str, Any]]],
    ) -> None:
        while payloads:
            self.requests_sent += 1
            try:
                results = await self._send(topic, b"[" + b",".join(payloads) + b"]")
            except (InvalidEvent, TooLarge) as err:
                index = err.fields.get("index")
                if not isinstance(index, int) or not 0 <= index < len(payloads):
                    _fail(waiters, err)
                    return
                # Nothing of the batch was written: fail the one event, send the rest again.
                _fail([waiters.pop(index)], unbatched(err))
                del payloads[index]
                continue
            except BaseException as err:
                _fail(waiters, err)
                if not isinstance(err, Exception):
                    raise
                return
            if len(results) != len(payloads):
                _fail(
                    waiters,
                    TidingsError(
                        f"the hub answered {len(results)} results for a batch of {len(payloads)}"
                    ),
                )
                return
            self.events_sent += len(payloads)
            for waiter, result in zip(waiters, results, strict=True):
                if not waiter.done():
                    waiter.set_result(result)
            return


def _fail(waiters: list[asyncio.Future[dict[str, Any]]], err: BaseException) -> None:
    for waiter in waiters:
        if not waiter.done():
            if isinstance(err, asyncio.CancelledError):
                waiter.cancel()
            else:
                waiter.set_exception(err)
