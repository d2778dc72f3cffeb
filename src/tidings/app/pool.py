"""A consumer with ``concurrency`` > 1: fetch while workers handle, ack as they finish.

Three kinds of coroutine, made once per consumer, never per event:

- the fetcher leases events once at most half of ``limit`` are held, up to
  ``limit``, and queues them;
- ``concurrency`` workers take events from the queue and handle them
  (:meth:`Consumer._handle <tidings.app.runner.Consumer>`);
- the acker sends, in one call, the acks of every event finished since its
  last call, and the nacks grouped by delay.

So a slow event holds up its own worker only, never the fetch nor the others.
With ``ordering="key"`` an event whose ``partitionkey`` is already being
handled waits behind it, and the worker that finishes one event of a key goes
on with the next of the same key. (The hub's group, made with ``ordering: key``,
leases no event while an earlier one of its key is in flight; this keeps the
order if it ever did.)

Stopping: no new fetch (a poll already out to a hub over HTTP is let finish),
events leased and not started are handed back (nacked at once), the handlers
running finish, and the last acks are sent. If the app's deadline cuts that
short, what did not finish is nacked.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from tidings.app.handlers import BadPayload, Context, bad_payload, data_validator, emitted
from tidings.errors import TidingsError

if TYPE_CHECKING:
    from tidings.app.runner import Consumer, _Settled
    from tidings.app.transport import Incoming

__all__ = ["WorkerPool"]

logger = logging.getLogger("tidings.app")


class WorkerPool:
    """The fetcher, workers and acker of one consumer with ``concurrency`` > 1."""

    def __init__(self, consumer: Consumer, settled: type[_Settled]) -> None:
        self.consumer = consumer
        self.spec = consumer.spec
        self.limit = max(consumer.fetch_max, self.spec.concurrency)
        # Refill once half the limit is free, not after each event: a fetch costs
        # about the same for one event as for a hundred (the log reads a whole batch).
        self.refill_at = self.limit - max(1, self.limit // 2)
        self._new_settled = settled
        self.clock = consumer.transport.clock
        self.settled = settled([], self.clock.time_ms())
        self.queue: deque[Incoming] = deque()
        self.waiting_keys: dict[str, deque[Incoming]] = {}  # keys being handled -> next ones
        self.leased: dict[str, Incoming] = {}  # lease -> event, until settled
        self.stopping = False
        self.returned: list[Incoming] = []  # leased after stop(): handed back unhandled
        self._fetcher: asyncio.Task[None] | None = None
        self._idle: deque[asyncio.Future[None]] = deque()  # workers waiting for work
        self._waking = 0  # workers woken that have not run yet
        self._room = asyncio.Event()
        self._room.set()
        # Something finished since the acker last looked; the acker's wait, if it waits.
        self._finished = False
        self._acker_wait: asyncio.Future[None] | None = None
        self._acker_done = False
        self._stop = asyncio.Event()

    # -- the three loops ---------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        c, spec = self.consumer, self.spec
        fetch = c.transport.fetch
        while not self.stopping:
            await self._room.wait()
            if self.stopping:
                return
            if len(self.leased) > self.refill_at:
                self._room.clear()
                continue
            want = self.limit - len(self.leased)
            try:
                batch = await fetch(spec.topic, spec.group, want, c.poll_wait)
            except TidingsError as exc:
                logger.warning(
                    "fetch failed: %s", exc.detail,
                    extra={"topic": spec.topic, "group": spec.group},
                )
                await asyncio.sleep(0.5)
                continue
            if batch:
                self.settled.now_ms = self.clock.time_ms()
                c._debug = logger.isEnabledFor(logging.DEBUG)
                if self.stopping or self.spec.ordering == "key":
                    for msg in batch:
                        self._queue(msg)
                else:  # _queue's steps for a whole batch, one wake per idle worker
                    leased = self.leased
                    for msg in batch:
                        leased[msg.lease] = msg
                    self.queue.extend(batch)
                    self._wake_one()  # who takes an event wakes the next (see _worker)
                if len(self.leased) >= self.limit:
                    self._room.clear()

    def _queue(self, msg: Incoming) -> None:
        self.leased[msg.lease] = msg
        if self.stopping:  # brought by a poll that was out when stop() came
            self.returned.append(msg)
            return
        if self.spec.ordering == "key":
            key = msg.event.get("partitionkey")
            if key is not None:
                behind = self.waiting_keys.get(key)
                if behind is not None:  # one of this key is being handled: wait for it
                    behind.append(msg)
                    return
                self.waiting_keys[key] = deque()
        self.queue.append(msg)
        self._wake_one()

    def _wake_one(self) -> None:
        """Wake one idle worker (an Event would wake them all, each to find nothing)."""
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._waking += 1
                return

    def _wake_all(self) -> None:
        while self._idle:
            self._wake_one()

    async def _worker(self) -> None:
        c = self.consumer
        # With middleware, Consumer._handle; without, its steps written out below.
        handle = c._handle if c._consume_mw else None
        spec = self.spec
        func, decode, wants_ctx = spec.func, spec.decode, spec.wants_ctx
        new_context = object.__new__
        # A plain model's validator, called here on the data (see data_validator):
        # read again each time this worker wakes.
        validate, invalid = data_validator(spec)
        unset: Any = object()
        handled = c.handled
        window, ids, pending = handled.window_ms, c._ids, c._pending
        loop = asyncio.get_running_loop()
        queue, leased, settled = self.queue, self.leased, self.settled
        room, refill_at = self._room, self.refill_at
        by_key = spec.ordering == "key"
        while True:
            while not queue or self.stopping:
                if self.stopping:
                    return
                waiter: asyncio.Future[None] = loop.create_future()
                self._idle.append(waiter)
                await waiter
                self._waking -= 1
                validate, invalid = data_validator(spec)
            msg: Incoming | None = queue.popleft()
            if queue and not self._waking:
                # More to do: another worker is woken to take the next while this
                # one handles, one at a time: when handlers finish without waiting,
                # this worker empties the queue and at most one wakes to nothing.
                self._wake_one()
            while msg is not None:
                if handle is not None:
                    await handle(msg, settled)
                else:
                    # Consumer._handle without middleware, inline: no coroutine of
                    # ours per event, only the handler's.
                    ev = msg.event
                    eid: str = ev.get("id") or ""
                    remember = window > 0 and eid != ""
                    at = ids.get(eid) if remember else None
                    if at is not None and at >= settled.now_ms - window:
                        settled.acks.append(msg.lease)  # handled before: acked, not run
                    else:
                        if at is not None:
                            del ids[eid]  # re-inserted at the end, in time order
                        ctx = None
                        payload = unset
                        try:
                            payload = (
                                decode(ev) if validate is None else validate(ev.get("data"))
                            )
                            if wants_ctx:
                                # Context(c, msg) without its __init__'s call.
                                ctx = new_context(Context)
                                ctx._consumer, ctx._msg = c, msg
                                result = await func(payload, ctx)
                            else:
                                result = await func(payload)
                            if result is not None:
                                out = emitted(result, ev, msg.topic, spec.group, source=c.source)
                                await c._publish_all(out, ctx or Context(c, msg))
                        except BadPayload as exc:
                            await c._dead_letter(msg, str(exc), None, settled)
                        except Exception as exc:
                            if payload is unset and isinstance(exc, invalid):  # the data
                                await c._dead_letter(msg, bad_payload(spec, exc), None, settled)
                            else:
                                await c._failed(msg, exc, settled)
                        else:
                            if remember:
                                ids[eid] = settled.now_ms
                                if pending is not None:
                                    pending.append(eid)
                            c.handled_count += 1
                            settled.acks.append(msg.lease)
                            if c._debug:
                                logger.debug("handled %s", eid, extra={
                                    "topic": msg.topic, "group": spec.group, "event_id": eid})
                # Done: room for the fetcher, acks for the acker. Workers take leases
                # out one at a time, so the fetcher, which waits only with more than
                # refill_at leased, is woken as the count comes down to refill_at
                # (stop() wakes it too): no call per event.
                leased.pop(msg.lease, None)
                if len(leased) == refill_at:
                    room.set()
                if not self._finished:
                    self._wake_acker()
                msg = self._next_of_key(msg) if by_key else None

    def _next_of_key(self, msg: Incoming) -> Incoming | None:
        if self.spec.ordering != "key":
            return None
        key = msg.event.get("partitionkey")
        if key is None:
            return None
        behind = self.waiting_keys.get(key)
        if behind and not self.stopping:
            return behind.popleft()
        self.waiting_keys.pop(key, None)
        return None

    async def _ack_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._acker_done:
            if not self._finished:
                self._acker_wait = loop.create_future()
                await self._acker_wait
                continue
            # One turn first: the fetch that the same finished events made room for
            # goes out before their acks (a hub over HTTP answers the next batch
            # without it waiting behind the acks' save).
            await asyncio.sleep(0)
            self._finished = False
            await self._flush()

    def _wake_acker(self) -> None:
        self._finished = True
        waiter, self._acker_wait = self._acker_wait, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _flush(self) -> None:
        # Taken out of the one _Settled the workers hold, not swapped for a new one:
        # a handler running now appends to it when it ends, after this flush.
        now = self.settled
        if not now.acks and not now.nacks:
            return
        out = self._new_settled([], now.now_ms)
        out.acks, now.acks = now.acks, []
        out.nacks, now.nacks = now.nacks, {}
        await self.consumer._settle(out)

    # -- life ----------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._fetcher = loop.create_task(self._fetch_loop())
        acker = loop.create_task(self._ack_loop())
        workers = [loop.create_task(self._worker()) for _ in range(self.spec.concurrency)]
        try:
            await self._stop.wait()
            # No new leases; what was leased and not started goes back at once.
            await self._end_fetch()
            back = self.returned + list(self.queue)
            back += [m for q in self.waiting_keys.values() for m in q]
            self.returned, self.queue = [], deque()
            for q in self.waiting_keys.values():
                q.clear()
            self._wake_all()
            if back:
                await self._hand_back(back)
            await asyncio.gather(*workers)  # the handlers running finish
        finally:
            # Also when cut short at the app's deadline: cancelled handlers' events
            # are handed back, and every ack gathered is sent.
            await self._end_fetch()
            for task in workers:
                await _cancel(task)
            # The acker is asked to end, not cancelled: cut in the middle of a request,
            # the acks it had taken would be neither sent nor handed back.
            self._acker_done = True
            self._wake_acker()
            await asyncio.wait({acker}, timeout=self.consumer.poll_wait + 30)
            await _cancel(acker)
            await self._flush()
            if self.leased:
                await self._hand_back(list(self.leased.values()))

    async def _end_fetch(self) -> None:
        """Stop fetching. A poll of a hub over the network is let finish (its leases are
        handed back): given up, the hub would go on with it and lease events to no one
        until their ack_wait ran out."""
        fetcher = self._fetcher
        if fetcher is None or fetcher.done():
            return
        if self.consumer.transport.remote:
            await asyncio.wait({fetcher}, timeout=self.consumer.poll_wait + 5)
        await _cancel(fetcher)

    async def _hand_back(self, msgs: list[Incoming]) -> None:
        spec = self.spec
        for m in msgs:
            self.leased.pop(m.lease, None)
        try:
            await self.consumer.transport.nack(spec.topic, spec.group, [m.lease for m in msgs], 0)
        except TidingsError as exc:
            logger.warning(
                "handing back %d event(s) failed: %s", len(msgs), exc.detail,
                extra={"topic": spec.topic, "group": spec.group},
            )

    def stop(self) -> None:
        self.stopping = True
        self._room.set()
        self._wake_all()
        self._stop.set()


async def _cancel(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        logger.exception("a consumer's loop failed")
