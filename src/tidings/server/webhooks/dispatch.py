"""One endpoint's delivery: pumps lease records from its groups, workers POST them.

Per topic of the endpoint a pump fetches from the endpoint's consumer group, as
many records as there are free workers (``concurrency``), fewer under a rate
limit, and one probe at a time while the endpoint fails (the rules are in
:mod:`tidings.core.webhooks.schedule`). Workers send, feed the outcome to the
endpoint's health and carry out its decision: ack (batched), nack with the
retry delay, dead-letter, or release back to the cursor. A lease is held only
while its attempt runs; a record waiting for its next attempt sits in the group
as a nacked record, so the group's ``ordering: key`` holds its key back and its
position is not committed until it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Literal

from tidings.core.groups import Delivery
from tidings.core.webhooks.schedule import (
    Decision,
    Outcome,
    State,
    TokenBucket,
)
from tidings.core.webhooks.store import WebhookDeadLetter
from tidings.errors import (
    GroupNotFound,
    NotFound,
    StaleLease,
    StorageUnavailable,
    TidingsError,
    TopicNotFound,
)

if TYPE_CHECKING:
    from tidings.core.webhooks.config import Endpoint
    from tidings.server.webhooks.service import WebhookService

logger = logging.getLogger("tidings.webhooks")

FETCH_WAIT_S = 1.0
IDLE_LOOK_S = 1.0
# How long the acks of an endpoint without ordering gather before one call saves
# them: a few ms of answers, not the one or two of a loop turn, per position save.
ACK_GATHER_S = 0.005


@dataclass(slots=True)
class _Job:
    topic: str
    delivery: Delivery
    ahead: bool = False  # leased ahead of a free worker, while the endpoint was up
    leased_ms: int = 0  # hub time of the fetch that leased it


class EndpointDispatcher:
    def __init__(self, service: WebhookService, endpoint: Endpoint) -> None:
        self.service = service
        self.hub = service.hub
        self.ep = endpoint
        self.group = endpoint.group
        self.queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self.in_flight = 0
        self.attempts: dict[tuple[str, int, int], int] = {}  # attempts made, per record
        # Records attempted before a restart: when their last attempt was.
        self._last_attempt: dict[tuple[str, int, int], int] = {}
        rate = endpoint.config.rate_limit
        self.bucket = TokenBucket(rate, burst=max(1.0, rate), tokens=1.0) if rate else None
        self._wakes: dict[str, asyncio.Event] = {}
        self._acks: dict[str, list[str]] = {}
        self._ack_task: asyncio.Task[None] | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._workers: list[asyncio.Task[None]] = []
        self._dead_tasks: dict[int, asyncio.Task[None]] = {}
        self._listing: asyncio.Task[None] | None = None  # of dead letters to send again
        self._relist = False  # a replay asked while the listing was on its way
        self._cut: list[_Job] = []
        # Dead letters sent again go out at most `concurrency` at a time.
        self._resend_slots = asyncio.Semaphore(endpoint.config.concurrency)
        self.running = False

    # -- life ------------------------------------------------------------------------

    def resume(self, state: dict[tuple[str, int, int], tuple[int, int]]) -> None:
        """Take the attempts made before a restart, for records not done yet, so that
        their schedule goes on where it was rather than starting over."""
        for (topic, p, o), (made, last) in state.items():
            try:
                _, g = self.hub.group(topic, self.group)
            except NotFound:
                continue
            if g.undone(p, o):
                self.attempts[(topic, p, o)] = made
                self._last_attempt[(topic, p, o)] = last

    def start(self) -> None:
        self.running = True
        loop = asyncio.get_running_loop()
        for topic in self.ep.config.topics:
            self._wakes[topic] = asyncio.Event()
            self._pumps.append(loop.create_task(self._pump(topic)))
        for _ in range(self.ep.config.concurrency):
            self._workers.append(loop.create_task(self._worker()))
        self.replay_dead_letters()

    async def stop(self, grace_s: float = 2.0, give_back: bool = True) -> None:
        """Stop leasing; give attempts under way ``grace_s`` to finish; release the rest.
        Without ``give_back`` (another node dispatches the endpoint now) nothing is
        acked or released: the groups are that node's to save."""
        self.running = False
        for t in self._pumps:
            t.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        unsent: list[_Job] = []
        while not self.queue.empty():
            job = self.queue.get_nowait()
            if job is not None:
                unsent.append(job)
                self.in_flight -= 1
        for _ in self._workers:
            self.queue.put_nowait(None)
        if self._workers:
            _, late = await asyncio.wait(self._workers, timeout=grace_s)
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._listing is not None:
            self._listing.cancel()
            await asyncio.gather(self._listing, return_exceptions=True)
        resending = list(self._dead_tasks.values())
        for t in resending:
            t.cancel()
        await asyncio.gather(*resending, return_exceptions=True)
        if not give_back:
            if self._ack_task is not None:
                self._ack_task.cancel()
            self._acks.clear()
            return
        if self._ack_task is not None:  # gathering: a few ms at most
            await asyncio.gather(self._ack_task, return_exceptions=True)
        await self._flush_acks()
        for job in unsent:  # leased but never sent: due again at once, not counted
            await self._nack(job, 0, unsent=True)
        for job in self._cut:  # attempts cut short: the receiver may have them; due again
            await self._nack(job, 0)

    def halt(self) -> None:
        """Another node dispatches the endpoint now: lease, send and ack nothing more
        (the acks gathered are dropped: the groups are that node's). :meth:`stop`
        with ``give_back=False`` follows."""
        self.running = False
        self._acks.clear()
        self.notify()

    def _held(self) -> bool:
        """Whether this node may act for the endpoint (it holds its lease, on NATS)."""
        owners = self.service.owners
        return owners is None or owners.holds(self.ep.id)

    def notify(self) -> None:
        for ev in self._wakes.values():
            ev.set()

    # -- pumps -------------------------------------------------------------------------

    def _room(self, topic: str, now_ms: int) -> int:
        health = self.ep.health
        if health.state is State.DISABLED:
            return 0
        concurrency = self.ep.config.concurrency
        if self.bucket is None and not health.down:
            # Up and not rate-limited: lease up to two batches of `concurrency` ahead
            # of the workers, two at a time, once no more than one is left (a fetch
            # walks the group's pending records and reads their log batch whole: its
            # cost barely depends on how many it takes). What is leased ahead is not
            # sent if the endpoint goes down meanwhile.
            free = 3 * concurrency - self.in_flight
            if free < 2 * concurrency:
                return 0
            return health.new_records_allowed(0, free, now_ms)
        free = concurrency - self.in_flight
        # Refill in batches: one fetch per quarter of the workers, not one per
        # finished attempt.
        if free <= 0 or (self.in_flight and free < concurrency // 4):
            return 0
        if self.bucket is not None:
            free = min(free, self.bucket.available(now_ms))
            if free <= 0:
                return 0
        allowed = health.new_records_allowed(self.in_flight, self.ep.config.concurrency, now_ms)
        if allowed:
            return min(free, allowed)
        if self.in_flight:
            return 0
        # Down: the records waiting for a retry go one at a time, as probes too.
        _, g = self.hub.group(topic, self.group)
        return 1 if g.has_due_retry(now_ms) else 0

    def _idle_s(self, topic: str, now_ms: int) -> float:
        """How long a pump with no room may sleep before it looks again (a worker
        finishing, a user's change or a drain wakes it sooner)."""
        wait_ms = IDLE_LOOK_S * 1000
        health = self.ep.health
        if self.bucket is not None:
            wait_ms = min(wait_ms, self.bucket.wait_ms(now_ms))
        if health.down:
            wait_ms = min(wait_ms, max(1, health.probe_at_ms() - now_ms))
            _, g = self.hub.group(topic, self.group)
            due = g.next_due_ms(after_ms=now_ms)
            if due is not None:
                wait_ms = min(wait_ms, due - now_ms)
        return max(wait_ms, 1) / 1000

    async def _pump(self, topic: str) -> None:
        wake = self._wakes[topic]
        clock = self.hub.clock
        topic_gone = False
        owners = self.service.owners
        while self.running and not self.hub.closing:
            if owners is not None and not owners.holds(self.ep.id):
                return  # another node dispatches it now (its lease is lost: see sharing)
            try:
                now = clock.time_ms()
                n = self._room(topic, now)
                if n == 0:
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), self._idle_s(topic, now))
                    continue
                wait = 0.0 if self.ep.health.down else FETCH_WAIT_S
                deliveries = await self.hub.fetch(topic, self.group, n, wait)
            except TopicNotFound:
                # The topic was deleted: wait for it to come back, then follow all of
                # it, as all of it is new. The endpoint does not bring a deleted topic back.
                topic_gone = True
                await asyncio.sleep(IDLE_LOOK_S)
                continue
            except GroupNotFound:
                # The topic is back (then all of it is new), or someone deleted the
                # endpoint's group: follow on from the end, not the whole history again.
                start: Literal["earliest", "latest"] = "earliest" if topic_gone else "latest"
                try:
                    await self.service.follow(self.ep, topic, start=start)
                    topic_gone = False
                except TidingsError:
                    await asyncio.sleep(IDLE_LOOK_S)
                continue
            except StorageUnavailable:
                if self.hub.closing:
                    return
                logger.warning("webhook %s: %s unavailable; trying again", self.ep.id, topic)
                await asyncio.sleep(IDLE_LOOK_S)
                continue
            except Exception:
                logger.exception("webhook %s: leasing from %s failed", self.ep.id, topic)
                await asyncio.sleep(IDLE_LOOK_S)
                continue
            if not deliveries:
                if self.ep.health.down:
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), self._idle_s(topic, clock.time_ms()))
                continue
            if self.bucket is not None:
                self.bucket.take(len(deliveries), clock.time_ms())
            ahead = self.bucket is None and not self.ep.health.down
            leased_ms = clock.time_ms()
            for d in deliveries:
                self.in_flight += 1
                self.queue.put_nowait(_Job(topic, d, ahead, leased_ms))

    # -- workers ---------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            job = await self.queue.get()
            if job is None:
                return
            try:
                await self._deliver(job)
            except asyncio.CancelledError:
                self._cut.append(job)  # stop() gives its lease back
                raise
            except Exception:
                d = job.delivery
                logger.exception(
                    "webhook %s: delivery of %s/%d@%d failed",
                    self.ep.id, job.topic, d.partition, d.offset,
                )
                await self._nack(job, 1000)
            finally:
                self.in_flight -= 1
                # With more than `concurrency` leased, no pump has room to fill (see
                # _room): waking it for every attempt would cost a wake-up each.
                if self.in_flight <= self.ep.config.concurrency:
                    self.notify()

    async def _deliver(self, job: _Job) -> None:
        d = job.delivery
        if not self._held():
            return  # lease lost: the new holder leases the record again
        if job.ahead and (self.ep.health.down or self.ep.health.state is State.DISABLED):
            # Leased ahead while the endpoint was up; it is down now (one probe at a
            # time) or disabled: back to the group unsent, due again at once.
            await self._nack(job, 0, unsent=True)
            return
        if job.ahead and not self._within_lease(job):
            # It waited behind slow attempts: one begun now could outlast its lease,
            # and the group would lease it again while this one is on its way (two
            # deliveries at once). Back to the group unsent, leased anew at once.
            await self._nack(job, 0, unsent=True)
            return
        pos = (job.topic, d.partition, d.offset)
        last = self._last_attempt.pop(pos, None)
        if last is not None:
            # Attempted before a restart: wait out the rest of its delay first.
            wait = self.ep.health.schedule.delays_ms[
                min(self.attempts.get(pos, 0), self.ep.health.schedule.attempts - 1)
            ]
            due = last + wait - self.hub.clock.time_ms()
            if due > 0:
                await self._nack(job, due, unsent=True)
                return
        # The group counts each attempt as a delivery and keeps the count across a
        # restart; the attempts log (written every FLUSH_S) may be behind it.
        made = max(self.attempts.get(pos, 0), d.deliveries - 1) + 1
        before = self.ep.health.state
        outcome, decision = await self.service.attempt(
            self.ep, d.payload, job.topic, d.partition, d.offset, made, event=d.event
        )
        if decision.action == "ack":
            self.attempts.pop(pos, None)
            self._ack(job)
        elif decision.action == "retry":
            self.attempts[pos] = made
            await self._nack(job, decision.delay_ms)
        elif decision.action == "dead":
            self.attempts.pop(pos, None)
            await self.service.dead_letter(self.ep, job.topic, d, made, decision.reason)
            self._ack(job)
        else:  # release: the endpoint is disabled; the record waits in the log
            self.attempts[pos] = made
            await self._nack(job, 0)
        if self._after(before, outcome, decision):
            await self.service.save(self.ep)

    def _after(self, before: State, outcome: Outcome, decision: Decision) -> bool:
        """Carry out what the outcome asks of the endpoint; whether its state changed
        (then the caller saves it)."""
        if decision.disabled:
            logger.warning("webhook %s disabled: %s", self.ep.id, decision.disabled)
        if decision.drain:
            self.drain()
        if self.ep.health.state is not before:
            self.notify()
            return True
        return False

    def drain(self) -> None:
        """The endpoint is back: what waits for a retry goes now, in order."""
        for topic in self.ep.config.topics:
            with contextlib.suppress(NotFound):
                self.hub.hurry(topic, self.group)
        self.notify()

    def _ack(self, job: _Job) -> None:
        self._acks.setdefault(job.topic, []).append(job.delivery.lease)
        if self._ack_task is None:
            self._ack_task = asyncio.get_running_loop().create_task(self._gather_acks())

    async def _gather_acks(self) -> None:
        # Under ordering: key the next record of a key waits for this ack: it goes
        # at the next loop turn. Otherwise the acks of ACK_GATHER_S go in one call
        # (at least once: a crash in between sends them again).
        await asyncio.sleep(0 if self.ep.config.ordering == "key" else ACK_GATHER_S)
        self._ack_task = None
        await self._flush_acks()

    async def _flush_acks(self) -> None:
        """The acks gathered so far in one call per topic: one position save, not one each."""
        acks, self._acks = self._acks, {}
        if not self._held():
            return  # lease lost: the groups are the new holder's to ack
        for topic, leases in acks.items():
            try:
                await self.hub.ack(topic, self.group, leases)
            except StaleLease as exc:
                # A replay moved the cursor, or a lease ran out: ack the others.
                stale = set(exc.fields.get("stale", ()))
                rest = [x for x in leases if x not in stale]
                if rest:
                    with contextlib.suppress(StaleLease, NotFound):
                        await self.hub.ack(topic, self.group, rest)
            except NotFound:
                pass
            except Exception:
                # Not acked: the records come again after ack_wait (at least once).
                logger.exception("webhook %s: acking %d on %s failed",
                                 self.ep.id, len(leases), topic)

    def _within_lease(self, job: _Job) -> bool:
        """Whether an attempt begun now, at its longest, ends before the job's lease."""
        topic = self.hub.topics.get(job.topic)
        group = topic.groups.get(self.group) if topic is not None else None
        if group is None:
            return True  # gone: the attempt's ack will say so
        longest = round(self.service.policy.timeout_s * 1000)
        return self.hub.clock.time_ms() + longest < job.leased_ms + group.config.ack_wait_ms

    async def _nack(self, job: _Job, delay_ms: int, unsent: bool = False) -> None:
        with contextlib.suppress(StaleLease, NotFound, StorageUnavailable):
            await self.hub.nack(job.topic, self.group, [job.delivery.lease], delay_ms, unsent)

    # -- dead letters sent again ------------------------------------------------------------

    def replay_dead_letters(self) -> None:
        """Send again, soon, every dead letter marked for replay that is not on its way."""
        if self._listing is None or self._listing.done():
            self._listing = asyncio.get_running_loop().create_task(self._replay_dead_letters())
        else:  # one listing is on its way: it may have read before this mark, so again
            self._relist = True

    async def _replay_dead_letters(self) -> None:
        self._relist = True
        while self._relist:
            self._relist = False
            await self._list_and_resend()

    async def _list_and_resend(self) -> None:
        try:
            marked = await self.service.store.dead_letters(
                self.ep.id, 10_000, None, replaying=True
            )
        except Exception:
            logger.exception("webhook %s: listing dead letters to send failed", self.ep.id)
            return
        if not self.running:
            return
        loop = asyncio.get_running_loop()
        for dead in marked:
            if dead.id is None or dead.id in self._dead_tasks:
                continue
            task = loop.create_task(self._resend(dead))
            self._dead_tasks[dead.id] = task
            task.add_done_callback(partial(self._resent, dead.id))

    def _resent(self, dead_id: int, _task: asyncio.Task[None]) -> None:
        self._dead_tasks.pop(dead_id, None)

    async def _resend(self, dead: WebhookDeadLetter) -> None:
        try:
            await self._resend_until_done(dead)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The row stays marked: the next start or replay request sends it again.
            logger.exception("webhook %s: sending dead letter %s again failed",
                             self.ep.id, dead.id)

    async def _resend_until_done(self, dead: WebhookDeadLetter) -> None:
        made = 0
        while self.running:
            if self.ep.health.state is State.DISABLED:
                return  # stays marked; sent when the endpoint is enabled again
            made += 1
            before = self.ep.health.state
            async with self._resend_slots:
                outcome, decision = await self.service.attempt(
                    self.ep, dead.payload, dead.topic, dead.partition, dead.offset, made,
                    trigger="dead-letter",
                )
            if self._after(before, outcome, decision):
                await self.service.save(self.ep)
            if decision.action == "ack":
                await self.service.store.remove_dead_letter(dead.id or 0)
                return
            if decision.action == "retry":
                await asyncio.sleep(decision.delay_ms / 1000)
                continue
            if decision.action == "dead":
                await self.service.store.update_dead_letter(
                    WebhookDeadLetter(
                        dead.endpoint, self.hub.clock.time_ms(), dead.topic, dead.partition,
                        dead.offset, dead.msg_id, dead.payload, dead.attempts + made,
                        decision.reason, replaying=False, id=dead.id,
                    )
                )
            return


__all__ = ["EndpointDispatcher"]
