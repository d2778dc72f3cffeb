"""One handler's consumer: fetch a batch of leases, run the handler on each, settle them.

Per batch, in this order:

1. Each event is handled: skipped if its id was handled before (idempotency),
   dead-lettered at once if its data does not validate, else the handler runs
   and what it returns is published, chained to it.
2. The ids handled are remembered (:class:`~tidings.app.remembering.HandledIds`).
3. One ack for every lease settled; nacks grouped by their backoff delay. An
   event that fails after ``retries`` retries is published to the dead-letter
   topic with the last lines of its traceback, then acked.

With ``concurrency=1`` a batch runs inline in the fetch loop, in order. With
more, :class:`~tidings.app.pool.WorkerPool` fetches while ``concurrency``
workers handle, and acks what finished in one call at a time; with
``ordering="key"`` events of one ``partitionkey`` keep their order (the hub
also leases no event while an earlier one of its key is in flight, so order
holds across workers and retries). No task is made per event, and nothing is
logged per event unless DEBUG is on.

Stopping: no new fetch; the events in flight finish (or are cut at the
deadline, their events nacked); then acks are sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

from tidings.app.handlers import (
    BadPayload,
    Context,
    Envelope,
    HandlerSpec,
    Middleware,
    app_source,
    bad_payload,
    chain,
    data_validator,
    emitted,
)
from tidings.app.outbox import Outbox
from tidings.app.pool import WorkerPool
from tidings.app.remembering import HandledIds
from tidings.app.transport import GroupSpec, Incoming, Transport
from tidings.errors import StaleLease, TidingsError
from tidings.events.envelope import rfc3339_ms
from tidings.log.config import SystemClock

if TYPE_CHECKING:
    from tidings.app.handlers import Next

__all__ = ["Consumer"]

logger = logging.getLogger("tidings.app")

_TRACEBACK_LINES = 6
_RETRY_PAUSE_S = 0.5  # after a failed fetch (hub unreachable, restarting)


class _Settled:
    """What a batch's events came to: leases to ack, leases to nack by delay."""

    __slots__ = ("acks", "batch", "nacks", "now_ms")

    def __init__(self, batch: Sequence[Incoming], now_ms: int) -> None:
        self.batch = batch
        self.now_ms = now_ms  # one reading of the clock for the whole batch
        self.acks: list[str] = []
        self.nacks: dict[float, list[str]] = {}

    def nack(self, lease: str, delay: float) -> None:
        self.nacks.setdefault(delay, []).append(lease)

    def unsettled(self) -> list[str]:
        """Leases neither acked nor nacked (their handlers were cut short)."""
        if len(self.acks) + sum(map(len, self.nacks.values())) == len(self.batch):
            return []
        done = set(self.acks).union(*self.nacks.values())
        return [m.lease for m in self.batch if m.lease not in done]


class Consumer:
    """Runs one :class:`~tidings.app.handlers.HandlerSpec` against a transport."""

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
        self.source = app_source(app_name)  # of the events it emits
        self.spec = spec
        self.transport = transport
        self.handled = handled
        self.fetch_max = fetch_max
        self.poll_wait = poll_wait
        self._consume_mw = tuple(consume_middleware)
        self._publish_mw = tuple(publish_middleware)
        self._publish: Next = chain(self._publish_mw, self._publish_last)
        self._outbox = Outbox(transport.publish)
        self._stopping = False
        self._task: asyncio.Task[Any] | None = None
        self._in_fetch = False
        self._pool: WorkerPool | None = None
        self._ids = handled.group(spec.group)
        self._pending = handled.pending(spec.group)  # ids to be written, or None
        # Read again at each batch: a log line per event only while DEBUG is on.
        self._debug = logger.isEnabledFor(logging.DEBUG)
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
        if self.spec.concurrency > 1:
            self._pool = WorkerPool(self, _Settled)
            if self._stopping:
                return
            await self._pool.run()
            return
        if self.transport.remote:
            await self._run_remote()
            return
        spec = self.spec
        fetch = self.transport.fetch
        self._task = asyncio.current_task()
        while not self._stopping:
            # The fetch is awaited in this task (no task per fetch); stop() cancels
            # this task only while it waits here.
            self._in_fetch = True
            try:
                batch = await fetch(spec.topic, spec.group, self.fetch_max, self.poll_wait)
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
                self._in_fetch = False
            if batch and self._stopping:  # a poll let finish after stop(): hand it back
                await self._settle(_Settled(batch, 0))
            elif batch:
                await self.process(batch)
                # A hub in this process answers a fetch with events at once, without
                # letting the loop run: one turn per batch for everything else on it
                # (the handled ids' writer, other consumers, the hub's own timers).
                await asyncio.sleep(0)

    async def _run_remote(self) -> None:
        """``concurrency=1`` over the network: the next batch is fetched while this one
        is handled, and this one's acks go out while the hub answers that fetch.

        Still one batch handled at a time, in order, each acked only once all its
        handlers are done, one settle out at a time. A poll out when stop() comes
        is let finish (given up, it would go on in the hub and lease events to no
        one until their ``ack_wait`` ran out), and what it brings is handed back."""
        loop = asyncio.get_running_loop()
        fetching: asyncio.Task[tuple[list[Incoming], int]] | None = None
        settling: asyncio.Task[None] | None = None
        try:
            while not self._stopping:
                if fetching is None:
                    fetching = loop.create_task(self._fetch_timed())
                try:
                    batch, fetched_ms = await fetching
                except TidingsError as exc:
                    spec = self.spec
                    logger.warning(
                        "fetch failed: %s", exc.detail,
                        extra={"topic": spec.topic, "group": spec.group},
                    )
                    await asyncio.sleep(_RETRY_PAUSE_S)
                    continue
                finally:
                    fetching = None
                if not batch:
                    continue
                if self._stopping:  # a poll let finish after stop(): hand it back
                    settled = _Settled(batch, 0)
                else:
                    fetching = loop.create_task(self._fetch_timed())
                    settled = await self._run_batch(batch, fetched_ms)
                if settling is not None:
                    await settling
                settling = loop.create_task(self._settle(settled))
        finally:
            if fetching is not None:
                await self._hand_back_fetch(fetching)
            if settling is not None:
                # Not cancelled with this task: its acks go out, or fail and the
                # events come again.
                await asyncio.shield(settling)

    async def _fetch_timed(self) -> tuple[list[Incoming], int]:
        """A fetch, and when it was answered (its leases' ``ack_wait`` runs from then)."""
        spec = self.spec
        batch = await self.transport.fetch(spec.topic, spec.group, self.fetch_max, self.poll_wait)
        return batch, self.transport.clock.time_ms()

    async def _hand_back_fetch(self, fetching: asyncio.Task[tuple[list[Incoming], int]]) -> None:
        """Let a fetch out to the hub finish (within ``poll_wait``), and hand back what it
        leased."""
        await asyncio.wait({fetching}, timeout=self.poll_wait + 5)
        if not fetching.done():
            fetching.cancel()
        with contextlib.suppress(asyncio.CancelledError, TidingsError):
            batch, _ = await fetching
            if batch:
                await self._settle(_Settled(batch, 0))

    def stop(self) -> None:
        """Take no new leases: a fetch waiting for events in this process is given up;
        a poll out to a hub over HTTP is let finish, and what it brings handed back."""
        self._stopping = True
        if self._pool is not None:
            self._pool.stop()
        elif self._in_fetch and self._task is not None and not self.transport.remote:
            self._task.cancel()

    async def process(self, batch: list[Incoming]) -> None:
        """Handle one batch in order (``concurrency=1``), then settle it."""
        await self._settle(await self._run_batch(batch))

    async def _run_batch(self, batch: list[Incoming], now_ms: int | None = None) -> _Settled:
        """Handle one batch in order; what it came to, to be settled.

        The batch's leases were taken together: once half their ``ack_wait`` has gone,
        what is done is settled and the events not yet started are handed back, to be
        fetched again with fresh leases, rather than handled after their leases ran
        out (when the hub may already have given them to another consumer); ``now_ms``
        is when they were leased, by default now. Also
        when cut short (the shutdown deadline cancels the handler), what finished
        is settled: the caller's ``finally`` is this one's."""
        clock = self.transport.clock
        self._debug = logger.isEnabledFor(logging.DEBUG)
        settled = _Settled(batch, clock.time_ms() if now_ms is None else now_ms)
        deadline = settled.now_ms + round(self.spec.ack_wait * 500)
        try:
            if self._consume_mw:
                handle = self._handle
                for msg in batch:
                    if clock.time_ms() > deadline:
                        break
                    await handle(msg, settled)
            else:
                await self._handle_inline(batch, settled, deadline)
        except BaseException:
            # Cut short at the shutdown deadline: what finished is acked, what did
            # not is handed back for redelivery.
            await asyncio.shield(self._settle(settled))
            raise
        return settled

    async def _settle(self, settled: _Settled) -> None:
        """Acks first, then delayed nacks, then what was not handled goes back; each
        step on its own, so one stale lease (run out at a deadline) spoils no other."""
        spec = self.spec
        transport = self.transport
        if settled.acks:
            await self._step("acking", transport.ack(spec.topic, spec.group, settled.acks),
                             settled.acks, retry=True)
        for delay, leases in settled.nacks.items():
            await self._step("nacking", transport.nack(spec.topic, spec.group, leases, delay),
                             leases)
        unsettled = settled.unsettled()
        if unsettled:
            await self._step("handing back",
                             transport.nack(spec.topic, spec.group, unsettled, 0), unsettled)

    async def _step(
        self, what: str, call: Awaitable[object], leases: list[str], retry: bool = False
    ) -> None:
        spec = self.spec
        try:
            await call
        except StaleLease as exc:
            # Some leases ran out (their events come again): settle the others.
            stale = set(exc.fields.get("stale", ()))
            rest = [lease for lease in leases if lease not in stale]
            if retry and rest:
                await self._step(what, self.transport.ack(spec.topic, spec.group, rest), rest)
        except TidingsError as exc:
            # The leases run out and the events come again: at-least-once holds.
            logger.warning(
                "%s %d lease(s) failed: %s", what, len(leases), exc.detail,
                extra={"topic": spec.topic, "group": spec.group},
            )

    # -- one event -----------------------------------------------------------------------

    async def _handle(self, msg: Incoming, settled: _Settled) -> None:
        # One event, as the workers of a pool run it: the idempotency memory's steps
        # and the Context are written out here, not called (this runs per event).
        spec = self.spec
        ev = msg.event
        eid: str = ev.get("id") or ""
        handled = self.handled
        remember = handled.window_ms > 0 and eid != ""
        if remember:
            ids = self._ids
            at = ids.get(eid)
            if at is not None:
                if at >= settled.now_ms - handled.window_ms:
                    settled.acks.append(msg.lease)
                    return
                del ids[eid]  # re-inserted at the end: the dict stays in time order
        ctx = None
        try:
            if self._consume_mw:
                ctx = Context(self, msg)
                call = chain(self._consume_mw, self._call_handler)
                result = await call(
                    Envelope("consume", msg.topic, ev, self.app_name, spec.group, ctx)
                )
            elif spec.wants_ctx:
                ctx = Context(self, msg)
                result = await spec.func(spec.decode(ev), ctx)
            else:
                result = await spec.func(spec.decode(ev))
            if result is not None:
                out = emitted(result, ev, msg.topic, spec.group, source=self.source)
                await self._publish_all(out, ctx or Context(self, msg))
        except BadPayload as exc:
            await self._dead_letter(msg, str(exc), None, settled)
            return
        except Exception as exc:
            await self._failed(msg, exc, settled)
            return
        if remember:  # HandledIds.add, inline (an old entry was taken out above)
            self._ids[eid] = settled.now_ms
            if self._pending is not None:
                self._pending.append(eid)
        self.handled_count += 1
        settled.acks.append(msg.lease)
        if self._debug:
            logger.debug(
                "handled %s", eid, extra={"topic": msg.topic, "group": spec.group, "event_id": eid}
            )

    async def _handle_inline(
        self, batch: list[Incoming], settled: _Settled, deadline_ms: int
    ) -> None:
        """:meth:`_handle` without middleware: the same steps, inline in one loop (no
        coroutine per event). What the handlers return is handed to the outbox as they
        return it, and awaited at the end: the batch's events go as one request per
        topic. An event counts as handled (remembered, acked) only once what it
        returned is stored; if that fails, it is retried as a handler that raised."""
        spec = self.spec
        func, decode, group, wants_ctx = spec.func, spec.decode, spec.group, spec.wants_ctx
        new_context = object.__new__
        # A plain model's validator is called here on the data (see data_validator).
        validate, invalid = data_validator(spec)
        unset: Any = object()
        handled, ids, now = self.handled, self._ids, settled.now_ms
        enabled = handled.enabled
        pending = handled.pending(group)
        window_start = now - handled.window_ms
        acks = settled.acks
        # The deadline is checked before each event: on the system clock in
        # nanoseconds, read without a call of ours around it.
        clock = self.transport.clock
        if type(clock) is SystemClock:
            read_clock, limit = time.time_ns, deadline_ms * 1_000_000
        else:
            read_clock, limit = clock.time_ms, deadline_ms
        waiting: list[tuple[Incoming, str, Awaitable[None]]] = []
        waiting_ids: set[str] = set()
        done = 0

        async def finish() -> int:
            """Await the outbox for the events waiting on it; settle each."""
            ok = 0
            for msg, eid, stored in waiting:
                try:
                    await stored
                except Exception as exc:
                    await self._failed(msg, exc, settled)
                    continue
                if eid:  # HandledIds.add, inline
                    ids.pop(eid, None)
                    ids[eid] = now
                    if pending is not None:
                        pending.append(eid)
                acks.append(msg.lease)
                ok += 1
            waiting.clear()
            waiting_ids.clear()
            return ok

        for msg in batch:
            if read_clock() > limit:
                break  # the rest is handed back (see process)
            ev = msg.event
            eid: str = ev.get("id") or ""
            remember = enabled and eid != ""
            at = None
            if remember:
                if waiting_ids and eid in waiting_ids:  # twice in a batch: the first counts
                    done += await finish()
                at = ids.get(eid)
                if at is not None:
                    if at >= window_start:
                        acks.append(msg.lease)
                        continue
                    del ids[eid]  # re-inserted at the end: the dict stays in time order
            payload = unset
            try:
                payload = decode(ev) if validate is None else validate(ev.get("data"))
                if wants_ctx:
                    # Context(self, msg) without its __init__'s call: two slots set.
                    ctx = new_context(Context)
                    ctx._consumer, ctx._msg = self, msg
                    result = await func(payload, ctx)
                else:
                    result = await func(payload)
                if result is not None:
                    out = emitted(result, ev, msg.topic, group, source=self.source)
                    if out:
                        waiting.append((msg, eid if remember else "", self._submit(out)))
                        if remember:
                            waiting_ids.add(eid)
                        continue
            except BadPayload as exc:
                await self._dead_letter(msg, str(exc), None, settled)
                continue
            except Exception as exc:
                if payload is unset and isinstance(exc, invalid):  # the data, not the handler
                    await self._dead_letter(msg, bad_payload(spec, exc), None, settled)
                else:
                    await self._failed(msg, exc, settled)
                continue
            if remember:  # HandledIds.add, inline (an old entry was taken out above)
                ids[eid] = now
                if pending is not None:
                    pending.append(eid)
            acks.append(msg.lease)
            done += 1
        if waiting:
            done += await finish()
        self.handled_count += done

    def _context(self, msg: Incoming) -> Context:
        return Context(self, msg)

    async def _failed(self, msg: Incoming, exc: Exception, settled: _Settled) -> None:
        spec = self.spec
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
            return
        delay = spec.backoff.delay(msg.deliveries)
        logger.warning(
            "handler %s failed on delivery %d, retrying in %gs: %r",
            spec.name, msg.deliveries, delay, exc,
            extra={"topic": msg.topic, "group": spec.group, "event_id": msg.event.get("id")},
        )
        settled.nack(msg.lease, delay)

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
            dlqtime=rfc3339_ms(self.transport.clock.time_ms()),
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
        settled.acks.append(msg.lease)

    # -- publishing --------------------------------------------------------------------

    def _submit(self, out: list[tuple[str, dict[str, Any]]]) -> Awaitable[None]:
        """Hand ``out`` to the outbox; awaiting the answer raises if it was not stored."""
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for topic, ev in out:
            by_topic.setdefault(topic, []).append(ev)
        submit = self._outbox.submit
        stored = [submit(topic, evs) for topic, evs in by_topic.items()]
        return stored[0] if len(stored) == 1 else _all_stored(stored)

    async def _publish_all(self, out: list[tuple[str, dict[str, Any]]], ctx: Context) -> None:
        if not out:
            return
        if not self._publish_mw:
            await self._submit(out)
            return
        for topic, ev in out:
            await self._publish(Envelope("publish", topic, ev, self.app_name, self.spec.group, ctx))

    async def publish_from(self, ctx: Context, topic: str, events: list[dict[str, Any]]) -> None:
        await self._publish_all([(topic, ev) for ev in events], ctx)

    async def _publish_last(self, envelope: Envelope) -> None:
        await self._outbox.submit(envelope.topic, [envelope.event])


async def _all_stored(stored: list[asyncio.Future[None]]) -> None:
    """Wait for every one; raise the first failure (each one's exception retrieved)."""
    results = await asyncio.gather(*stored, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


async def cancel_quietly(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
