"""One handler's consumer: fetch a batch of leases, run the handler on each, settle them.

Per batch, in this order:

1. Each event is handled: skipped if its id was handled before (idempotency),
   dead-lettered at once if its data does not validate, else the handler runs
   and what it returns is published, chained to it.
2. The ids handled are made durable (:class:`~tidings.sdk.remembering.HandledIds`).
3. One ack for every lease settled; nacks grouped by their backoff delay. An
   event that fails after ``retries`` retries is published to the dead-letter
   topic with the last lines of its traceback, then acked.

A batch runs inline in the fetch loop (``concurrency=1``) or on at most
``concurrency`` worker coroutines; with ``ordering="key"`` events of one
``partitionkey`` share a worker and keep their order (the hub also leases no
event while an earlier one of its key is in flight, so order holds across
workers and retries). No task is made per event, acks go one call per batch,
and nothing is logged per event unless DEBUG is on.

Stopping: no new fetch; the batch in flight finishes (or is cut at the
deadline, its unfinished events nacked); then acks are sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tidings.errors import TidingsError
from tidings.sdk.handlers import (
    BadPayload,
    Context,
    Envelope,
    HandlerSpec,
    Middleware,
    chain,
    emitted,
)
from tidings.sdk.remembering import HandledIds
from tidings.sdk.transport import GroupSpec, Incoming, Transport

if TYPE_CHECKING:
    from tidings.sdk.handlers import Next

__all__ = ["Consumer"]

logger = logging.getLogger("tidings.app")

_TRACEBACK_LINES = 6
_RETRY_PAUSE_S = 0.5  # after a failed fetch (hub unreachable, restarting)


class _Settled:
    """What a batch's events came to: leases to ack, leases to nack by delay."""

    __slots__ = ("acks", "nacks", "open")

    def __init__(self, batch: Sequence[Incoming]) -> None:
        self.acks: list[str] = []
        self.nacks: dict[float, list[str]] = {}
        self.open = {m.lease for m in batch}  # not yet settled either way

    def ack(self, lease: str) -> None:
        self.acks.append(lease)
        self.open.discard(lease)

    def nack(self, lease: str, delay: float) -> None:
        self.nacks.setdefault(delay, []).append(lease)
        self.open.discard(lease)


class Consumer:
    """Runs one :class:`~tidings.sdk.handlers.HandlerSpec` against a transport."""

    def __init__(
        self,
        app_name: str,
        spec: HandlerSpec,
        transport: Transport,
        handled: HandledIds,
        *,
        fetch_max: int,
        poll_wait: float,
        consume_middleware: Sequence[Middleware] = (),
        publish_middleware: Sequence[Middleware] = (),
    ) -> None:
        self.app_name = app_name
        self.spec = spec
        self.transport = transport
        self.handled = handled
        self.fetch_max = fetch_max
        self.poll_wait = poll_wait
        self._consume_mw = tuple(consume_middleware)
        self._publish_mw = tuple(publish_middleware)
        self._publish: Next = chain(self._publish_mw, self._publish_last)
        self._stopping = False
        self._fetching: asyncio.Task[list[Incoming]] | None = None
        self.handled_count = 0
        self.failed_count = 0
        self.dead_lettered = 0

    def group_spec(self) -> GroupSpec:
        s = self.spec
        return GroupSpec(
            start=s.start,
            ack_wait=s.ack_wait,
            # The framework dead-letters after `retries`; the hub's limit is a safety
            # net for a process that dies on the same event again and again.
            max_deliver=s.retries + 2,
            dead_letter_topic=s.dead_letter_topic,
            ordering=s.ordering,
            types=s.types,
        )

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        spec = self.spec
        transport = self.transport
        while not self._stopping:
            self._fetching = asyncio.ensure_future(
                transport.fetch(spec.topic, spec.group, self.fetch_max, self.poll_wait)
            )
            try:
                batch = await self._fetching
            except asyncio.CancelledError:
                if self._stopping:
                    break
                raise
            except TidingsError as exc:
                logger.warning(
                    "fetch failed: %s", exc.detail, extra={"topic": spec.topic, "group": spec.group}
                )
                await asyncio.sleep(_RETRY_PAUSE_S)
                continue
            finally:
                self._fetching = None
            if batch:
                await self.process(batch)

    def stop(self) -> None:
        """Take no new leases: a fetch waiting for events is given up."""
        self._stopping = True
        if self._fetching is not None:
            self._fetching.cancel()

    async def process(self, batch: list[Incoming]) -> None:
        settled = _Settled(batch)
        try:
            if self.spec.concurrency == 1:
                handle = self._handle
                for msg in batch:
                    await handle(msg, settled)
            else:
                await self._run_lanes(batch, settled)
        finally:
            # Also when cut short at the shutdown deadline: what finished is acked,
            # what did not is handed back for redelivery.
            await self._settle(settled)

    async def _run_lanes(self, batch: list[Incoming], settled: _Settled) -> None:
        lanes: deque[list[Incoming]] = deque()
        if self.spec.ordering == "key":
            by_key: dict[str, list[Incoming]] = {}
            for msg in batch:
                key = msg.event.get("partitionkey")
                if key is None:
                    lanes.append([msg])
                else:
                    lane = by_key.get(key)
                    if lane is None:
                        lane = by_key[key] = []
                        lanes.append(lane)
                    lane.append(msg)
        else:
            lanes.extend([m] for m in batch)

        async def worker() -> None:
            while lanes:
                for msg in lanes.popleft():
                    await self._handle(msg, settled)

        workers = [worker() for _ in range(min(self.spec.concurrency, len(lanes)))]
        await asyncio.gather(*workers)

    async def _settle(self, settled: _Settled) -> None:
        spec = self.spec
        transport = self.transport
        if self.handled.dirty:
            self.handled.flush()
        try:
            if settled.open:
                await transport.nack(spec.topic, spec.group, list(settled.open), 0)
            if settled.acks:
                await transport.ack(spec.topic, spec.group, settled.acks)
            for delay, leases in settled.nacks.items():
                await transport.nack(spec.topic, spec.group, leases, delay)
        except TidingsError as exc:
            # The leases run out and the events come again: at-least-once holds.
            logger.warning(
                "settling a batch failed: %s", exc.detail,
                extra={"topic": spec.topic, "group": spec.group},
            )

    # -- one event -----------------------------------------------------------------------

    async def _handle(self, msg: Incoming, settled: _Settled) -> None:
        spec = self.spec
        ev = msg.event
        eid = ev.get("id")
        handled = self.handled
        if handled.enabled and eid is not None and handled.seen(spec.group, eid):
            settled.ack(msg.lease)
            return
        ctx = Context(self, msg.topic, msg.partition, msg.offset, msg.lease, msg.deliveries, ev)
        try:
            if self._consume_mw:
                call = chain(self._consume_mw, self._call_handler)
                result = await call(
                    Envelope("consume", msg.topic, ev, self.app_name, spec.group, ctx)
                )
            else:
                payload = spec.decode(ev)
                if spec.wants_ctx:
                    result = await spec.func(payload, ctx)
                else:
                    result = await spec.func(payload)
            if result is not None:
                out = emitted(result, ev, msg.topic, spec.group)
                await self._publish_all(out, ctx)
        except BadPayload as exc:
            await self._dead_letter(msg, str(exc), None, settled)
            return
        except Exception as exc:
            self.failed_count += 1
            if msg.deliveries > spec.retries:
                lines = "".join(traceback.format_exception(exc)).strip().splitlines()
                # An extension attribute holds no control characters: lines joined by " | ".
                tail = [line.strip() for line in lines[-_TRACEBACK_LINES:]]
                reason = (
                    f"handler {spec.name} raised {type(exc).__name__}: {exc} "
                    f"(delivery {msg.deliveries}, retries {spec.retries})"
                )
                await self._dead_letter(msg, reason, " | ".join(tail)[-2000:], settled)
            else:
                delay = spec.backoff.delay(msg.deliveries)
                logger.warning(
                    "handler %s failed on delivery %d, retrying in %gs: %r",
                    spec.name, msg.deliveries, delay, exc,
                    extra={"topic": msg.topic, "group": spec.group, "event_id": eid},
                )
                settled.nack(msg.lease, delay)
            return
        if eid is not None and handled.enabled:
            handled.add(spec.group, eid)
        self.handled_count += 1
        settled.ack(msg.lease)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "handled %s", eid, extra={"topic": msg.topic, "group": spec.group, "event_id": eid}
            )

    async def _call_handler(self, envelope: Envelope) -> Any:
        spec = self.spec
        payload = spec.decode(envelope.event)
        if spec.wants_ctx:
            return await spec.func(payload, envelope.ctx)
        return await spec.func(payload)

    async def _dead_letter(
        self, msg: Incoming, reason: str, trace: str | None, settled: _Settled
    ) -> None:
        spec = self.spec
        ev = dict(msg.event)
        ev.update(
            dlqtopic=msg.topic,
            dlqpartition=msg.partition,
            dlqoffset=msg.offset,
            dlqgroup=spec.group,
            dlqreason=reason[:4000],
            dlqdeliveries=msg.deliveries,
        )
        if trace:
            ev["dlqtraceback"] = trace
        try:
            await self.transport.publish(spec.dead_letter_topic, [ev])
        except TidingsError as exc:
            logger.error(
                "dead-lettering failed, the event comes again: %s", exc.detail,
                extra={"topic": msg.topic, "group": spec.group, "event_id": ev.get("id")},
            )
            settled.nack(msg.lease, spec.backoff.delay(msg.deliveries))
            return
        self.dead_lettered += 1
        logger.error(
            "dead-lettered to %s: %s", spec.dead_letter_topic, reason,
            extra={"topic": msg.topic, "group": spec.group, "event_id": ev.get("id")},
        )
        settled.ack(msg.lease)

    # -- publishing --------------------------------------------------------------------

    async def _publish_all(self, out: list[tuple[str, dict[str, Any]]], ctx: Context) -> None:
        if not out:
            return
        if not self._publish_mw:
            by_topic: dict[str, list[dict[str, Any]]] = {}
            for topic, ev in out:
                by_topic.setdefault(topic, []).append(ev)
            for topic, evs in by_topic.items():
                await self.transport.publish(topic, evs)
            return
        for topic, ev in out:
            await self._publish(Envelope("publish", topic, ev, self.app_name, self.spec.group, ctx))

    async def publish_from(self, ctx: Context, topic: str, events: list[dict[str, Any]]) -> None:
        await self._publish_all([(topic, ev) for ev in events], ctx)

    async def _publish_last(self, envelope: Envelope) -> None:
        await self.transport.publish(envelope.topic, [envelope.event])


async def cancel_quietly(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
