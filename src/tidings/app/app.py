"""The App: a service written as a few decorated functions.

::

    app = App("payments", hub="http://127.0.0.1:8700")   # or "embedded:./tidings-data"

    @app.on("orders", types=["order.placed"], retries=5)
    async def charge(order: OrderPlaced, ctx: Context) -> PaymentSucceeded | None:
        ...

Each handler consumes through a consumer group (``group``, by default the app's
name): delivery is at least once, an exception nacks with backoff, and after
``retries`` the event goes to the dead-letter topic. What the handler returns
is published, chained to the event it handled (see :mod:`tidings.app.handlers`).
``await app.run()`` runs until SIGINT or SIGTERM (or :meth:`App.stop`) and then
shuts down gracefully: no new leases, handlers in flight finish (up to
``shutdown_timeout``), acks are sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from tidings.app.contracts import register as register_contracts
from tidings.app.handlers import (
    Backoff,
    Envelope,
    HandlerSpec,
    Middleware,
    chain,
    check_name,
    make_spec,
)
from tidings.app.processor import StreamSpec, ViewProcessor
from tidings.app.remembering import HandledIds
from tidings.app.runner import Consumer, cancel_quietly
from tidings.app.streams import enrich_spec, join_spec, view_spec, window_spec
from tidings.app.transport import (
    EmbeddedTransport,
    Transport,
    open_transport,
    parse_hub_url,
)
from tidings.client.async_client import event_dict
from tidings.events.envelope import Event

__all__ = ["App", "run_apps"]

logger = logging.getLogger("tidings.app")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
V = TypeVar("V", bound=Callable[..., Any])

DEFAULT_HUB = "http://127.0.0.1:8700"
DEFAULT_BACKOFF = Backoff()
# How long a read of one of the app's own views waits for its first declaration.
_DECLARED_WAIT_S = 10.0
_collector_settled = False


class App:
    """A named service: handlers registered with :meth:`on`, run against one hub.

    ``hub`` is ``http://HOST:PORT`` (a running hub) or ``embedded:PATH`` (the hub's
    core in this process, on the data directory ``PATH``). Several nodes of one
    hub are given as a list or comma-separated (``"http://a:8700,http://b:8700"``):
    the app talks to one at a time and moves to the next when it fails (see
    :mod:`tidings.client.nodes`). ``fetch_max`` is how
    many events one fetch leases; ``poll_wait`` how long (seconds) a fetch waits
    for events. Handled ids are remembered per group for ``idempotency_window``
    seconds (0: not at all), in the data directory under ``embedded:``, in memory
    otherwise. ``middleware`` wraps every consume and publish (see
    :data:`~tidings.app.handlers.Middleware`). With ``register_schemas`` (the
    default) the app registers the JSON Schemas of the models it emits and
    consumes at start, and does not start (:class:`~tidings.errors.Conflict`)
    when the hub's schema registry finds one incompatible (see
    :mod:`tidings.app.contracts`).

    Run as the process's entry (``tidings run``, or :meth:`run`), an app with views
    freezes what is alive and raises the garbage collector's thresholds for the
    process (:func:`settle_collector`); started with :meth:`start`, as a library or
    under a test harness, it leaves the process's collector alone.
    """

    def __init__(
        self,
        name: str,
        hub: str | Sequence[str] = DEFAULT_HUB,
        *,
        token: str | None = None,
        fetch_max: int = 100,
        poll_wait: float = 5.0,
        idempotency_window: float = 600.0,
        shutdown_timeout: float = 30.0,
        middleware: Iterable[Middleware] = (),
        register_schemas: bool = True,
    ) -> None:
        self.name = check_name("app name", name)
        kind, where = parse_hub_url(hub)
        #: The hub as given, or its node URLs joined by commas.
        self.hub: str = where if kind == "http" else f"embedded:{where}"
        self.token = token
        if isinstance(fetch_max, bool) or not isinstance(fetch_max, int):
            raise ValueError(f"fetch_max must be an integer from 1 to 10000, not {fetch_max!r}")
        if not 1 <= fetch_max <= 10_000:
            raise ValueError(f"fetch_max must be an integer from 1 to 10000, not {fetch_max!r}")
        for label, value in (
            ("poll_wait", poll_wait),
            ("idempotency_window", idempotency_window),
            ("shutdown_timeout", shutdown_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{label} must be a non-negative number, not {value!r}")
        self.fetch_max = fetch_max
        self.poll_wait = float(poll_wait)
        self.idempotency_window = float(idempotency_window)
        self.shutdown_timeout = float(shutdown_timeout)
        self.middleware: list[Middleware] = list(middleware)
        self.register_schemas = register_schemas
        self.handlers: list[HandlerSpec] = []
        self.consumers: list[Consumer] = []
        self.streams: list[StreamSpec] = []  # views and windows (tidings.streams)
        self.processors: list[ViewProcessor] = []
        self._transport: Transport | None = None
        self._owns_transport = False
        self._handled: HandledIds | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None  # handled ids, in a thread
        self._stopped = asyncio.Event()

    def __repr__(self) -> str:
        return f"App({self.name!r}, hub={self.hub!r}, handlers={len(self.handlers)})"

    # -- registration -----------------------------------------------------------------

    def on(
        self,
        topic: str,
        *,
        types: str | Iterable[str] | None = None,
        group: str | None = None,
        retries: int = 3,
        backoff: float | Sequence[float] | Backoff = DEFAULT_BACKOFF,
        concurrency: int = 1,
        ordering: str = "none",
        ack_wait: float = 30.0,
        start: str = "earliest",
        dead_letter_topic: str | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated ``async def handler(payload[, ctx])``; it stays callable.

        ``types``: event-type patterns (``order.*``); by default all types, or the
        payload model's ``event_type``. ``group``: the consumer group (the app's
        name by default). ``retries``: redeliveries after a failure before the
        event is dead-lettered. ``backoff``: delay before a redelivery (seconds,
        a list of seconds, or :class:`Backoff`). ``concurrency``: events handled
        at once; ``ordering="key"`` keeps the order of events of one
        ``partitionkey``. ``ack_wait``: how long a lease lasts. ``start``: where a
        new group begins (earliest | latest). ``dead_letter_topic``: default
        ``{topic}.dlq``.
        """

        def register(func: F) -> F:
            spec = make_spec(
                func,
                app=self.name,
                topic=topic,
                types=types,
                group=group,
                retries=retries,
                backoff=backoff,
                concurrency=concurrency,
                ordering=ordering,
                ack_wait=ack_wait,
                start=start,
                dead_letter_topic=dead_letter_topic,
            )
            for other in self.handlers:
                if (other.topic, other.group) == (spec.topic, spec.group):
                    raise ValueError(
                        f"{spec.name} and {other.name} both consume {spec.topic!r} in group "
                        f"{spec.group!r}: each event would reach only one of them; "
                        "give one a group= of its own"
                    )
            self.handlers.append(spec)
            return func

        return register

    def view(
        self,
        name: str,
        *,
        topics: Sequence[str],
        key: Callable[[Any], str],
        types: str | Iterable[str] | None = None,
        commit_interval: float = 0.1,
        commit_records: int = 20_000,
        partitioned: bool = False,
        repartition: bool | int = False,
    ) -> Callable[[V], V]:
        """Register the decorated ``def fold(current, event) -> new | None`` as view ``name``.

        Each event of ``topics`` (of ``types``, if given), in append-time order,
        sets the value of ``key(event)`` to ``fold(current, event)`` (``current`` is
        None for a new key; None deletes the key). The hub serves the values
        (``GET /v1/views/{name}/keys/{key}``). The state is committed to the hub
        every ``commit_interval`` seconds or ``commit_records`` records; see
        :mod:`tidings.app.processor`. The function stays callable.

        ``partitioned=True`` when ``key(event)`` is the event's ``partitionkey``
        (a key then lives in one partition): the view runs as one task per input
        partition, shared by the processes of the app (an event whose key is not
        its partitionkey stops the view, saying so). Otherwise it is one task,
        unless ``repartition=True`` (or a number of partitions): then one task per
        input partition routes each event by ``key(event)`` into the hub's topic
        ``__view.{name}.by-key``, and one task per partition of that topic folds,
        all shared by the processes of the app (:mod:`tidings.app.repartition`).
        """

        def register(func: V) -> V:
            self._add_stream(view_spec(
                self.name, name, topics, key, func, types=types,
                commit_interval=commit_interval, commit_records=commit_records,
                partitioned=partitioned, repartition=repartition,
            ))
            return func

        return register

    def window(
        self,
        name: str,
        *,
        topic: str,
        window: Any,
        key: Callable[[Any], str],
        agg: Any,
        types: str | Iterable[str] | None = None,
        emit: str = "final",
        commit_interval: float = 0.1,
        commit_records: int = 20_000,
        partitioned: bool = False,
        repartition: bool | int = False,
    ) -> StreamSpec:
        """Register window view ``name``: ``agg`` of ``topic``'s events per ``key(event)``
        in each ``window`` (``Tumbling``, ``Hopping``, ``Sliding``, ``Session`` from
        :mod:`tidings.streams`) on event time.

        Results go to topic ``name`` (``emit="final"``: once, when a window closes;
        ``"updates"``: on every change too) and are served as view keys
        ``{key}@{window start}``; late events go to ``{name}.late``. Answers the
        registration (a window has no function of its own). ``partitioned`` and
        ``repartition``: as for :meth:`view`.
        """
        spec = window_spec(
            self.name, name, topic, window, key, agg, types=types, emit=emit,
            commit_interval=commit_interval, commit_records=commit_records,
            partitioned=partitioned, repartition=repartition,
        )
        self._add_stream(spec)
        return spec

    def join(
        self,
        name: str,
        *,
        left: str,
        right: str,
        within: str | float,
        key: Callable[[Any], str],
        right_key: Callable[[Any], str] | None = None,
        grace: str | float = "0s",
        idle: str | float | None = None,
        partitioned: bool = False,
    ) -> Callable[[V], V]:
        """Register the decorated ``def join(left_event, right_event) -> data | None``:
        each event of ``left`` is matched with every event of ``right`` with the same
        key (``key``, ``right_key`` for the right side, by default ``key``) and an
        event time at most ``within`` away; each pair's data is published once to
        topic ``name`` (type ``tidings.join.result``); late events go to
        ``{name}.late`` as for windows. ``partitioned``: as for :meth:`view` (both
        keys are their events' partitionkey; ``left`` and ``right`` co-partitioned)."""

        def register(func: V) -> V:
            self._add_stream(join_spec(self.name, name, left, right, within, key, func,
                                       right_key=right_key, grace=grace, idle=idle,
                                       partitioned=partitioned))
            return func

        return register

    def enrich(
        self,
        name: str,
        *,
        stream: str,
        table: str,
        key: Callable[[Any], str],
        table_key: Callable[[Any], str],
        table_fold: Callable[[Any, Any], Any] | None = None,
        partitioned: bool = False,
    ) -> Callable[[V], V]:
        """Register the decorated ``def join(event, value) -> data | None``: ``table``'s
        events fold into a value per ``table_key`` (``table_fold(current, event)``, by
        default the latest event's data), served as view ``name``; each event of
        ``stream`` is joined with the value of its ``key`` as of its place in append
        order, and the data published to topic ``name`` (None: nothing).
        ``partitioned``: as for :meth:`join`."""

        def register(func: V) -> V:
            self._add_stream(enrich_spec(self.name, name, stream, table, key, table_key, func,
                                         table_fold=table_fold, partitioned=partitioned))
            return func

        return register

    def _add_stream(self, spec: StreamSpec) -> None:
        for other in self.streams:
            if other.name == spec.name:
                raise ValueError(f"app {self.name!r} already has a view named {spec.name!r}")
        self.streams.append(spec)

    def use(self, middleware: Middleware) -> Middleware:
        """Add a middleware (outermost last added is innermost); usable as a decorator."""
        if not callable(middleware):
            raise TypeError(f"middleware must be an async callable, not {middleware!r}")
        self.middleware.append(middleware)
        return middleware

    # -- life ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def start(self) -> None:
        """Connect, create the groups, and start consuming."""
        await self._start_on(open_transport(self.hub, self.token), owned=True)

    async def _start_on(self, transport: Transport, *, owned: bool = False) -> None:
        if self._tasks:
            raise RuntimeError(f"app {self.name!r} is already running")
        if not self.handlers and not self.streams:
            logger.warning("app %s has no handlers", self.name, extra={"app": self.name})
        if owned:
            await transport.open()
        self._transport, self._owns_transport = transport, owned
        self._stopped = asyncio.Event()
        path = None
        if isinstance(transport, EmbeddedTransport):
            path = transport.data_dir / "apps" / f"{self.name}.handled.sqlite3"
        window_ms = round(self.idempotency_window * 1000)
        self._handled = HandledIds(window_ms, transport.clock, path)
        self.consumers = []
        try:
            if self.register_schemas:
                await register_contracts(self, transport)
            for spec in self.handlers:
                consumer = Consumer(
                    self.name,
                    spec,
                    transport,
                    self._handled,
                    fetch_max=self.fetch_max,
                    poll_wait=self.poll_wait,
                    consume_middleware=self.middleware,
                    publish_middleware=self.middleware,
                )
                await transport.put_group(spec.topic, spec.group, consumer.group_spec())
                self.consumers.append(consumer)
            self.processors = [
                ViewProcessor(self.name, s, transport, poll_wait=min(self.poll_wait, 1.0))
                for s in self.streams
            ]
        except BaseException:
            await self._close_transport()
            raise
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(c.run(), name=f"{self.name}:{c.spec.name}")
                       for c in self.consumers]
        self._tasks += [loop.create_task(p.run(), name=f"{self.name}:view:{p.spec.name}")
                        for p in self.processors]
        self._flusher = loop.create_task(self._flush_handled())
        logger.info(
            "app %s started on %s with %d handler(s), %d view(s)", self.name, self.hub,
            len(self.consumers), len(self.processors), extra={"app": self.name},
        )

    async def _flush_handled(self) -> None:
        """Make handled ids durable within 50 ms (and forget those out of the window)."""
        while True:
            await asyncio.sleep(0.05)
            handled = self._handled
            if handled is None or not handled.dirty:
                continue
            taken = handled.take()
            if taken is None:
                continue
            # The SQLite write (and its checkpoints' fsyncs) off the event loop.
            self._writing = asyncio.ensure_future(asyncio.to_thread(handled.write, taken))
            try:
                await asyncio.shield(self._writing)
            except asyncio.CancelledError:
                raise  # stopping: the write goes on, and is waited for before the close
            except Exception:
                # Kept pending: written at the next turn. Meanwhile a redelivered
                # event may run again after a crash (at least once).
                logger.exception("app %s: writing handled ids failed", self.name)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully: no new leases; in-flight handlers get ``timeout`` seconds
        (``shutdown_timeout`` by default) to finish; then acks are sent."""
        if not self._tasks:
            return
        timeout = self.shutdown_timeout if timeout is None else timeout
        for c in self.consumers:
            c.stop()
        for p in self.processors:
            p.stop()
        tasks, self._tasks = self._tasks, []
        _, late = await asyncio.wait(tasks, timeout=timeout)
        if late:
            logger.warning(
                "app %s: %d handler(s) still running after %gs; their events come again",
                self.name, len(late), timeout, extra={"app": self.name},
            )
            for task in late:
                await cancel_quietly(task)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                logger.error("consumer failed", exc_info=task.exception(),
                             extra={"app": self.name})
        if self._flusher is not None:
            await cancel_quietly(self._flusher)
            self._flusher = None
        await self._close_transport()
        self._stopped.set()
        logger.info("app %s stopped", self.name, extra={"app": self.name})

    async def _close_transport(self) -> None:
        if self._writing is not None:
            await asyncio.wait({self._writing})  # a write of handled ids still out
            self._writing = None
        if self._handled is not None:
            self._handled.close()
            self._handled = None
        transport, self._transport = self._transport, None
        if transport is not None and self._owns_transport:
            await transport.close()

    async def run(self) -> None:
        """Start, run until SIGINT/SIGTERM or :meth:`stop`, then stop gracefully: the
        process's entry (``asyncio.run(app.run())``), which settles the collector as
        ``tidings run`` does (:func:`settle_collector`)."""
        await run_apps([self], own_process=True)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # -- reading views ------------------------------------------------------------------

    async def view_get(
        self,
        name: str,
        key: str,
        *,
        min_position: str | None = None,
        topic: str | None = None,
    ) -> dict[str, Any] | None:
        """The hub's ``{"key", "value", "position"}`` for ``key`` of view ``name``, or None
        if the key has no value (the app must be running; usable from handlers).

        ``min_position``: a position token of input ``topic`` (needed when the view
        has several inputs): wait until the view reflects every event up to it.
        ``"latest"``: wait until it reflects every event appended to its inputs
        before this call (read your own writes).
        """
        transport = self._transport
        if transport is None:
            raise RuntimeError(f"app {self.name!r} is not running: await app.start() first")
        own = next((p for p in self.processors if p.spec.name == name), None)
        if own is not None and not own.declared.is_set():
            # This app's own view, declared as its processor starts: read it once it is
            # (a hub that refuses the declaration answers the read below).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(own.declared.wait(), _DECLARED_WAIT_S)
        if min_position != "latest":
            return await transport.view_get(name, key, min_position, topic)
        inputs: list[str] = next(
            (list(s.inputs) for s in self.streams if s.name == name), []
        ) or list((await transport.view_info(name))["inputs"])
        if topic is not None:
            inputs = [topic]
        waits: list[tuple[str, str]] = []
        for t in inputs:
            ends = await transport.end_positions(t)
            # The view reflects offsets *at or before* the token: the last offsets.
            last = {p: o - 1 for p, o in ends.items() if o > 0}
            if last:
                waits.append((t, ",".join(f"{p}:{o}" for p, o in sorted(last.items()))))
        for t, token in waits[:-1]:
            await transport.view_get(name, key, token, t)
        if not waits:
            return await transport.view_get(name, key)
        t, token = waits[-1]
        return await transport.view_get(name, key, token, t)

    async def end_positions(self, topic: str) -> dict[int, int]:
        """Each partition of ``topic`` and the offset its next event will take: every
        event at or past it was appended after this call began (the app must be running)."""
        transport = self._transport
        if transport is None:
            raise RuntimeError(f"app {self.name!r} is not running: await app.start() first")
        return await transport.end_positions(topic)

    # -- publishing outside handlers ------------------------------------------------------

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
        """Publish one event through the app's middleware (the app must be running)."""
        if self._transport is None:
            raise RuntimeError(f"app {self.name!r} is not running: await app.start() first")
        ev = event_dict(type, data, event, key, id, None, None, extensions)
        transport = self._transport

        async def last(envelope: Envelope) -> None:
            await transport.publish(envelope.topic, [envelope.event])

        await chain(self.middleware, last)(Envelope("publish", topic, ev, self.name))


def settle_collector() -> None:
    """Once per process, in a process tidings owns (``tidings run``, :meth:`App.run`)
    once its apps with views have started: what is alive then (the code, an
    embedded hub's core) is kept out of the cyclic collector's walks, and
    the collector runs every 50,000 container objects made and still alive, not 700
    (the thresholds ``tidings serve`` takes).

    A view's processor holds a read of thousands of decoded events at a time, so
    under the default thresholds they outlived the young collections, filled the
    old generation and set off a full walk of the heap every read or two: on a
    replay of a million events that was about half the processor's CPU time
    (``docs/benchmarks.md``, the streams benchmark). Reference counting frees them
    whatever the thresholds; the collector is there for cycles.
    """
    global _collector_settled
    if _collector_settled:
        return
    _collector_settled = True
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if young:  # 0: the collector is off, and stays so
        gc.set_threshold(max(young, 50_000), max(middle, 20), max(old, 100))


async def run_apps(
    apps: Sequence[App], *, signals: bool = True, own_process: bool = False
) -> None:
    """Run ``apps`` in this process until SIGINT or SIGTERM, then stop each gracefully.
    ``own_process``: the process is tidings' own (``tidings run``, :meth:`App.run`),
    so, once they have started, the collector is settled for it if one of them
    runs views (:func:`settle_collector`); an app started as a library (``start()``)
    leaves the process's collector as it is."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    if signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
    started: list[App] = []
    try:
        for app in apps:
            await app.start()
            started.append(app)
        if own_process and any(a.streams for a in apps):
            settle_collector()
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
        waits += [asyncio.ensure_future(a.wait_stopped()) for a in apps]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if stop.is_set():
            logger.info("signal received: stopping gracefully")
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await asyncio.gather(*(a.stop() for a in started))

