"""The test harness: apps against the real core, on an in-memory log, in virtual time.

::

    async with TestHub(payments, shipping) as hub:
        await hub.publish("orders", type="order.placed", data={"order_id": "o-1"})
        await hub.drain()
        assert [e.type for e in await hub.events("shipments")] == ["shipment.created"]

The hub is :class:`~tidings.core.hub.Hub` itself, on
:class:`~tidings.log.memory.MemoryStorage` and a :class:`VirtualClock`: leases,
``ack_wait``, backoff delays and dead-lettering follow the same code as in
``tidings serve``. Time moves only when every app is waiting for events and no
lease is out: then the clock jumps to the next moment something is due (a nack's
delay ends, a lease runs out), so a retry after an hour's backoff happens at
once, and in the same order every run. :meth:`TestHub.advance` moves it by hand
(to let a lease of a handler that hangs run out, or a window close). Events
published get the virtual time as their ``time`` unless they carry one, and
:meth:`TestHub.drain` also waits for the apps' views (``tidings.streams``) to
catch up.

``TestHub(app, hub="http://127.0.0.1:8700")`` or ``hub="embedded:PATH"`` runs the
same apps and the same test against a real hub, in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from tidings.app.app import App
from tidings.app.transport import (
    CoreTransport,
    Incoming,
    TimedBatch,
    Transport,
    open_transport,
)
from tidings.client.async_client import event_dict
from tidings.core.hub import Hub, HubOptions
from tidings.events.envelope import Event, Record, normalize_event, rfc3339_ms
from tidings.log.memory import MemoryStorage

__all__ = ["TestHub", "VirtualClock"]

# 2026-01-01T00:00:00Z: virtual time starts at a fixed instant, so runs repeat.
_EPOCH_MS = 1_767_225_600_000


class VirtualClock:
    """A clock that moves only when told to."""

    def __init__(self, start_ms: int = _EPOCH_MS) -> None:
        self.now_ms = start_ms

    def time_ms(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time moves forward only")
        self.now_ms += round(seconds * 1000)


class _VirtualTransport(CoreTransport):
    """The core, with fetches that wait in virtual time.

    A fetch that finds nothing waits; when every consumer waits and no lease is
    out, the clock jumps to the next due time of any group and every fetch tries
    again. With nothing due anywhere the hub is idle: :meth:`TestHub.drain` returns.
    """

    def __init__(self, hub: Hub, clock: VirtualClock) -> None:
        super().__init__(hub)
        self.vclock = clock
        self.consumers = 0
        self.outstanding = 0  # leases handed out and not yet acked or nacked
        self._waiting = 0
        self._wake = asyncio.Event()
        self.idle = asyncio.Event()

    def changed(self) -> None:
        """Something happened (a publish, an ack, a step of the clock): fetch again."""
        self._waiting = 0
        self.idle.clear()
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    def _next_due(self) -> int | None:
        now = self.vclock.now_ms
        dues = [
            due
            for topic in self.hub.topics.values()
            for group in topic.groups.values()
            if (due := group.next_due_ms(after_ms=now)) is not None
        ]
        return min(dues) if dues else None

    def _check_idle(self) -> None:
        if self._waiting < self.consumers or self.outstanding > 0:
            return
        due = self._next_due()
        if due is None:
            self.idle.set()
            return
        self.vclock.now_ms = due
        self.changed()

    async def fetch(self, topic: str, group: str, max: int, wait: float) -> list[Incoming]:
        while True:
            got = await super().fetch(topic, group, max, 0)
            if got:
                self.outstanding += len(got)
                return got
            wake = self._wake
            self._waiting += 1
            self._check_idle()
            await wake.wait()

    async def ack(self, topic: str, group: str, leases: Sequence[str]) -> None:
        self.outstanding -= len(leases)
        try:
            await super().ack(topic, group, leases)
        finally:
            self.changed()

    async def nack(self, topic: str, group: str, leases: Sequence[str], delay: float) -> None:
        self.outstanding -= len(leases)
        try:
            await super().nack(topic, group, leases, delay)
        finally:
            self.changed()

    async def publish(self, topic: str, events: Sequence[dict[str, Any]]) -> None:
        # An event's time, where the hub fills it, is the virtual clock's: windows on
        # event time then close as the harness moves the clock.
        now = rfc3339_ms(self.vclock.now_ms)
        await self.hub.publish(topic, [normalize_event(ev, topic=topic, now=now) for ev in events])
        self.changed()

    async def read_timed(
        self, topic: str, start: str, limit: int, wait: float, types: Sequence[str] = (),
        partition: int | None = None,
    ) -> TimedBatch:
        """A view's read: in virtual time the clock stands still while apps work, so a
        record appended now would wait for ever below a horizon of now; the clock steps
        1 ms past the newest record instead (no other effect: nothing is due sooner)."""
        now = self.vclock.now_ms
        for part in self.hub.topic(topic).partitions:
            end = part.end_offset
            if end > part.start_offset:
                last = await part.read(end - 1, 1)
                if last and last[-1][1] >= now:
                    self.vclock.now_ms = now = last[-1][1] + 1
        got = await super().read_timed(topic, start, limit, 0, types, partition)
        if got.records or wait <= 0:
            return got
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait)
        return await super().read_timed(topic, start, limit, 0, types, partition)


class TestHub:
    """Runs ``apps`` against a hub for a test: in memory and virtual time by default,
    or against ``hub`` (``http://…`` or ``embedded:PATH``) in real time."""

    __test__ = False  # a harness, not a test class for pytest to collect

    def __init__(self, *apps: App, hub: str | None = None, token: str | None = None) -> None:
        for app in apps:
            if not isinstance(app, App):
                raise TypeError(f"TestHub runs App objects, not {type(app).__name__}")
        self.apps = apps
        self.url = hub
        self.clock: VirtualClock | None = None
        self.core: Hub | None = None
        self._token = token
        self._transport: Transport | None = None
        self._virtual: _VirtualTransport | None = None

    @property
    def virtual(self) -> bool:
        """True when time is virtual (no ``hub`` given)."""
        return self.url is None

    async def __aenter__(self) -> TestHub:
        if self.url is None:
            self.clock = VirtualClock()
            # sweep_s: the hub's own sweep runs in real time; fetches here expire leases.
            self.core = Hub(MemoryStorage(self.clock), HubOptions(sweep_s=3600), self.clock)
            await self.core.start()
            self._virtual = _VirtualTransport(self.core, self.clock)
            self._virtual.consumers = sum(len(a.handlers) for a in self.apps)
            self._transport = self._virtual
        else:
            self._transport = open_transport(self.url, self._token)
        await self._transport.open()
        started: list[App] = []
        try:
            for app in self.apps:
                await app._start_on(self._transport)
                started.append(app)
        except BaseException:
            for app in started:
                await app.stop()
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await asyncio.gather(*(app.stop() for app in self.apps))
        finally:
            await self._close()

    async def _close(self) -> None:
        if self._transport is not None:
            await self._transport.close()
        if self.core is not None:
            await self.core.close()

    def _t(self) -> Transport:
        if self._transport is None:
            raise RuntimeError("use the TestHub in 'async with TestHub(...) as hub:'")
        return self._transport

    # -- what a test does ---------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        type: str | None = None,
        data: Any = None,
        *,
        event: Event | Mapping[str, Any] | None = None,
        key: str | None = None,
        id: str | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish one event, as a producer outside the apps would."""
        ev = event_dict(type, data, event, key, id, None, None, extensions)
        await self._t().publish(topic, [ev])

    async def records(self, topic: str) -> list[Record]:
        """Every record of ``topic`` now, by partition and offset."""
        raw = await self._t().read_all(topic)
        return [Record.from_dict(r) for r in raw]

    async def events(self, topic: str) -> list[Event]:
        return [r.event for r in await self.records(topic)]

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until every app's groups have nothing left to handle or to retry, and
        every view's checkpoint covers its inputs.

        In virtual time: until the apps are idle and nothing is due, moving the
        clock over every backoff. Against a real hub: until every group shows no
        lag and nothing pending twice in a row (``timeout`` in real seconds).
        """
        processors = [p for a in self.apps for p in a.processors]
        if not processors:
            await self._drain_groups(timeout)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet = 0
        while quiet < 2:  # handlers and views feed each other: both quiet, twice
            await self._drain_groups(max(deadline - loop.time(), 0.001))
            now = self._t().clock.time_ms()
            done = [await p.caught_up(now) for p in processors]
            quiet = quiet + 1 if all(done) else 0
            if loop.time() > deadline:
                raise TimeoutError(f"the apps' views did not catch up within {timeout:g} s")
            await asyncio.sleep(0.01)

    async def _drain_groups(self, timeout: float) -> None:
        if self._virtual is not None:
            v = self._virtual
            if v.consumers == 0:
                return
            v.changed()
            await asyncio.sleep(0)
            await asyncio.wait_for(v.idle.wait(), timeout)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet = 0
        groups = [(s.topic, s.group) for a in self.apps for s in a.handlers]
        while quiet < 2:
            if loop.time() > deadline:
                raise TimeoutError(f"the apps did not drain within {timeout:g} s")
            states = [await self._t().group_state(t, g) for t, g in groups]
            quiet = quiet + 1 if all(s == (0, 0) for s in states) else 0
            await asyncio.sleep(0.05)

    async def advance(self, seconds: float) -> None:
        """Move time on: the virtual clock at once, or a real sleep against a real hub."""
        if self._virtual is not None and self.clock is not None:
            self.clock.advance(seconds)
            self._virtual.changed()
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(seconds)

    async def group_state(self, topic: str, group: str) -> tuple[int, int]:
        """(lag, pending) of a group."""
        return await self._t().group_state(topic, group)

    async def seek(self, topic: str, group: str, to: str = "earliest") -> None:
        """Move a group (earliest, latest, a time or a position token): its events
        come again, as after a lost ack."""
        await self._t().seek(topic, group, to)
        if self._virtual is not None:
            self._virtual.changed()

    def time_ms(self) -> int:
        """The hub's time now (virtual or real), in ms since the epoch."""
        return self._t().clock.time_ms()
