"""The sampler that feeds the hub's metrics history (:mod:`tidings.core.history`).

Every interval, on the interval's grid of wall-clock time, it reads what
``/metrics`` shows (events in and out and dead letters per topic, each group's
lag, webhook attempts and dead letters per endpoint, fsyncs and their time, the
process's CPU and memory, open live connections) and hands it to the history,
which keeps it in memory and in its store. ``GET /v1/metrics/history`` answers
from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from tidings.core.history import (
    DEFAULT_INTERVAL_MS,
    DEFAULT_POINTS,
    MetricsHistory,
    Reading,
    SeriesKey,
)
from tidings.core.hub import Hub
from tidings.log.config import FSYNC_STATS
from tidings.server.metrics import resident_memory_bytes
from tidings.server.webhooks.service import WebhookService

logger = logging.getLogger("tidings.history")

_PAST_THE_MARK_S = 0.005


@dataclass(frozen=True, slots=True)
class HistoryOptions:
    interval_ms: int = DEFAULT_INTERVAL_MS  # one point each
    points: int = DEFAULT_POINTS  # kept: 24 h at 10 s


class HistorySampler:
    """Reads the hub into its :class:`MetricsHistory`, every interval while running."""

    def __init__(
        self,
        hub: Hub,
        history: MetricsHistory,
        webhooks: WebhookService | None = None,
        connections: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.hub = hub
        self.history = history
        self.webhooks = webhooks
        self.connections = connections
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def reading(self) -> Reading:
        """The hub's counters and gauges now."""
        m = self.hub.metrics
        counters: dict[SeriesKey, float] = {}
        gauges: dict[SeriesKey, float] = {}
        for family, values in (
            ("events_in", m.events_in), ("events_out", m.events_out),
            ("dead_letters", m.dead_letters),
        ):  # fmt: skip
            # Every topic, a quiet one too: 0 events/s, not a gap in its line.
            for name in self.hub.topics:
                counters[(family, (name,))] = values.get(name, 0)
        for topic in self.hub.topics.values():
            for group, g in topic.groups.items():
                known = set(g.partitions)
                gauges[("group_lag", (topic.name, group))] = sum(
                    p.end_offset - max(g.committed(i), p.start_offset)
                    for i, p in enumerate(topic.partitions)
                    if i in known
                )
        if self.webhooks is not None:
            attempts = self.webhooks.attempt_counts
            dead = self.webhooks.dead_counts
            for wid in self.webhooks.endpoints:  # successes and failures: 0 when quiet
                for outcome in ("success", "failed"):
                    counters[("webhook_attempts", (wid, outcome))] = attempts.get((wid, outcome), 0)
                counters[("webhook_dead_letters", (wid,))] = dead.get(wid, 0)
            for (wid, outcome), n in attempts.items():
                if wid in self.webhooks.endpoints:
                    counters[("webhook_attempts", (wid, outcome))] = n
        counters[("fsyncs", ())] = FSYNC_STATS.count
        counters[("fsync_latency", ())] = FSYNC_STATS.seconds * 1000
        cpu = os.times()
        counters[("cpu", ())] = (cpu.user + cpu.system) * 100
        gauges[("memory", ())] = resident_memory_bytes()
        if self.connections is not None:
            for channel, n in self.connections().items():
                gauges[("connections", (channel,))] = n
        return Reading(counters, gauges)

    def sample(self) -> None:
        """One point now: in memory always; on disk unless the store fails (logged)."""
        try:
            self.history.observe(self.hub.clock.time_ms(), self.reading())
        except Exception as exc:  # a full disk, say: the history goes on in memory
            if not self._failing:
                logger.warning("metrics history not stored: %s", exc)
            self._failing = True
        else:
            if self._failing:
                logger.info("metrics history stored again")
            self._failing = False

    def start(self) -> None:
        """Read the hub now, then take back the stored points (in a worker thread) and
        sample every interval.

        The reading taken here, before the server answers anything, is the base of
        the first point's rates: events published while the stored points are read
        still show in the rates (a first reading taken after them would count them
        as already there). It makes no point: the store is written only once it has
        been read."""
        self.history.begin(self.hub.clock.time_ms(), self.reading())
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def load(self) -> None:
        try:
            # A day of points takes a while to read and decode: not on the event loop.
            loaded = await asyncio.to_thread(self.history.read_store, self.hub.clock.time_ms())
            n = self.history.adopt(loaded)
            logger.info("metrics history: %d points taken back", n)
        except Exception:
            logger.exception("metrics history not loaded; it starts empty")

    async def _run(self) -> None:
        await self.load()
        interval = self.history.interval_ms / 1000
        self.sample()  # gauges at once; rates since start() too
        while True:
            # Just past the next mark of wall-clock time's grid, so the points of every
            # run line up (a timer that fires early would sample the old slot again).
            await asyncio.sleep(interval - (time.time() % interval) + _PAST_THE_MARK_S)
            self.sample()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.history.store is not None:
            with contextlib.suppress(Exception):
                self.history.store.close()
