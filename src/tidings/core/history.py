"""The hub's own metrics over the last day, one point per interval, sans I/O.

Rules:

- A sampler (``tidings.server.history``) reads the hub's counters and gauges and
  hands them to :meth:`MetricsHistory.observe` with the time, one
  :class:`Reading` per interval (10 s by default). Nothing here reads a clock.
- Each :data:`FAMILIES` entry says how a reading becomes a value: a ``rate`` is
  the counter's growth since the previous reading, per second; a ``mean`` is the
  growth of one counter over the growth of another (fsync time over fsyncs);
  a ``gauge`` is the value as read. The first reading after a start has nothing
  before it, so it gives gauges only: a restart shows as a gap in the rates,
  never as a spike.
- A point's time is the reading's time rounded to the interval, so points of
  successive runs of the hub fall on one grid. A second reading in the slot of
  the last point replaces it, its rates taken over both (from the reading before
  that point); a point before the last one (a clock set back) replaces the
  points after it.
- At most ``points`` points are kept (8,640: 24 h at 10 s), and none older than
  ``points`` intervals before the newest; at most :data:`MAX_SERIES` series,
  and a new one beyond that is left out (logged once) until old ones age out.
- Each point also goes to the :class:`HistoryStore` seam, if there is one, and
  :meth:`MetricsHistory.load` takes the stored points back at start: a
  restarted hub still shows its day.

Imports only errors and the core's parsing helpers; the server pumps it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from array import array
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tidings.core.positions import parse_duration_ms, parse_time_ms
from tidings.errors import BadRequest

logger = logging.getLogger("tidings.history")

SeriesKey = tuple[str, tuple[str, ...]]
"""(family, label values in the family's label order)"""

DEFAULT_INTERVAL_MS = 10_000
DEFAULT_POINTS = 8_640  # 24 h at 10 s
MAX_SERIES = 1_000


@dataclass(frozen=True, slots=True)
class Family:
    """A kind of series: its labels, unit and how a reading becomes its value."""

    labels: tuple[str, ...]
    unit: str
    kind: Literal["rate", "gauge", "mean"]
    text: str
    per: str | None = None  # a mean: the family whose growth divides this one's


FAMILIES: Mapping[str, Family] = {
    "events_in": Family(("topic",), "events/s", "rate", "Events appended (published), per topic"),
    "events_out": Family(
        ("topic",), "events/s", "rate", "Events handed to readers and consumer groups"
    ),
    "dead_letters": Family(
        ("topic",), "events/s", "rate", "Events moved to a dead-letter topic, by their topic"
    ),
    "group_lag": Family(
        ("topic", "group"), "events", "gauge", "Events a consumer group has not finished"
    ),
    "webhook_attempts": Family(
        ("webhook", "outcome"), "attempts/s", "rate",
        "Webhook attempts per endpoint and outcome (success, failed, throttled, gone)",
    ),
    "webhook_dead_letters": Family(
        ("webhook",), "events/s", "rate", "Webhook deliveries dead-lettered after the last attempt"
    ),
    "fsyncs": Family((), "fsyncs/s", "rate", "fsyncs of the event log"),
    "fsync_latency": Family(
        (), "ms", "mean", "Mean time of the event log's fsyncs in the interval", per="fsyncs"
    ),
    "cpu": Family((), "%", "rate", "CPU time of the hub's process, percent of one core"),
    "memory": Family((), "bytes", "gauge", "Resident memory of the hub's process"),
    "connections": Family(("channel",), "connections", "gauge", "Open WebSockets and SSE streams"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Reading:
    """What the hub's counters and gauges read at one instant.

    ``counters`` grow for the life of the process, in the family's unit times
    seconds (a ``rate`` family) or in any unit (a ``mean`` family and its ``per``);
    ``gauges`` are values now.
    """

    counters: Mapping[SeriesKey, float] = field(default_factory=dict)
    gauges: Mapping[SeriesKey, float] = field(default_factory=dict)


class HistoryStore(Protocol):
    """Where the points outlive the process.

    What an implementation owes: ``append`` makes one point durable enough to
    survive a crash of the process, and forgets points older than
    ``forget_before_ms`` (so what it keeps stays bounded); ``load`` answers the
    points it has from ``since_ms`` on, oldest first, as they were appended;
    nothing it does raises past a logged error but :class:`OSError` or an error
    of its database.
    """

    def load(self, since_ms: int) -> Iterable[tuple[int, Mapping[SeriesKey, float]]]: ...

    def append(
        self, t_ms: int, values: Mapping[SeriesKey, float], forget_before_ms: int
    ) -> None: ...

    def close(self) -> None: ...


class MetricsHistory:
    """The last ``points`` points, in memory (and through ``store``, on disk)."""

    def __init__(
        self,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        points: int = DEFAULT_POINTS,
        store: HistoryStore | None = None,
    ) -> None:
        if interval_ms < 1 or points < 2:
            raise ValueError("a history needs an interval of at least 1 ms and 2 points")
        self.interval_ms = interval_ms
        self.points = points
        self.store = store
        self._keys: list[SeriesKey] = []
        self._index: dict[SeriesKey, int] = {}
        self._points: deque[tuple[int, array[float]]] = deque()
        self._last: tuple[int, Reading] | None = None  # the previous reading, this process
        self._base: tuple[int, Reading] | None = None  # the one the last point's rates are from
        self._full_logged = False

    @property
    def span_ms(self) -> int:
        """How far back the history reaches from its newest point."""
        return self.interval_ms * self.points

    def __len__(self) -> int:
        return len(self._points)

    # -- in ------------------------------------------------------------------------

    def load(self, now_ms: int) -> int:
        """Take the store's points of the last :attr:`span_ms`; how many there were."""
        if self.store is None:
            return 0
        n = 0
        for t, values in self.store.load(now_ms - self.span_ms + 1):
            self._add(t, values)
            n += 1
        return n

    def observe(self, now_ms: int, reading: Reading) -> dict[SeriesKey, float]:
        """One reading: the point it makes (also stored), by series."""
        values: dict[SeriesKey, float] = {}
        t = self.interval_ms * round(now_ms / self.interval_ms)
        if self._points and self._points[-1][0] == t:
            last = self._base  # this slot again: its rates cover the whole slot
        else:
            last = self._base = self._last
        self._last = (now_ms, reading)
        if last is not None and now_ms > last[0]:
            dt = (now_ms - last[0]) / 1000
            before = last[1].counters
            for key, now in reading.counters.items():
                fam = FAMILIES.get(key[0])
                if fam is None or fam.kind == "gauge":
                    continue
                if fam.kind == "rate":
                    values[key] = round(_growth(before.get(key), now) / dt, 3)
                elif fam.per is not None:
                    per_key = (fam.per, key[1])
                    count = _growth(before.get(per_key), reading.counters.get(per_key, 0.0))
                    if count > 0:
                        values[key] = round(_growth(before.get(key), now) / count, 3)
        for key, value in reading.gauges.items():
            if key[0] in FAMILIES and math.isfinite(value):
                values[key] = value
        self._add(t, values)
        if self.store is not None:
            self.store.append(t, values, t - self.span_ms + 1)
        return values

    def _add(self, t: int, values: Mapping[SeriesKey, float]) -> None:
        while self._points and self._points[-1][0] >= t:
            self._points.pop()  # the same slot again (or a clock that went back)
        for key in values:
            if key not in self._index:
                self._new_series(key, values)
        row = array("d", [math.nan] * len(self._keys))
        for key, value in values.items():
            i = self._index.get(key)
            if i is not None:
                row[i] = value
        self._points.append((t, row))
        while self._points and (
            len(self._points) > self.points or self._points[0][0] <= t - self.span_ms
        ):
            self._points.popleft()

    def _new_series(self, key: SeriesKey, current: Collection[SeriesKey]) -> None:
        if len(self._keys) >= MAX_SERIES:
            self._compact(current)
        if len(self._keys) >= MAX_SERIES:
            if not self._full_logged:
                logger.warning(
                    "metrics history holds %d series: %s and others are left out "
                    "until old series age out", MAX_SERIES, key,
                )  # fmt: skip
                self._full_logged = True
            return
        self._index[key] = len(self._keys)
        self._keys.append(key)
        for _, row in self._points:
            row.append(math.nan)

    def _compact(self, current: Collection[SeriesKey]) -> None:
        """Forget the series that neither a kept point nor the point being made has."""
        used = [
            i for i, key in enumerate(self._keys)
            if key in current or any(not math.isnan(row[i]) for _, row in self._points)
        ]  # fmt: skip
        if len(used) == len(self._keys):
            return
        self._keys = [self._keys[i] for i in used]
        self._index = {k: i for i, k in enumerate(self._keys)}
        self._points = deque((t, array("d", (row[i] for i in used))) for t, row in self._points)
        self._full_logged = False

    # -- out -----------------------------------------------------------------------

    def query(
        self,
        families: Collection[str] = (),
        since_ms: int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The points from ``since_ms`` on of the series of ``families`` (all when
        empty) whose labels include ``labels``: a time column and a value column
        per series that has a value there (null where it has none)."""
        rows = [(t, r) for t, r in self._points if since_ms is None or t >= since_ms]
        wanted = set(families) or set(FAMILIES)
        series = []
        for i, key in sorted(enumerate(self._keys), key=lambda x: x[1]):
            name, values = key
            if name not in wanted:
                continue
            named = dict(zip(FAMILIES[name].labels, values, strict=True))
            if labels and any(named.get(k) != v for k, v in labels.items()):
                continue
            column = [None if i >= len(r) or math.isnan(r[i]) else r[i] for _, r in rows]
            if any(v is not None for v in column):
                series.append(
                    {"name": name, "labels": named, "unit": FAMILIES[name].unit, "values": column}
                )
        return {
            "interval": self.interval_ms / 1000,
            "times": [t for t, _ in rows],
            "series": series,
        }


def _growth(before: float | None, now: float) -> float:
    """How much a counter grew; a counter found lower than before was reset (a topic
    deleted and made again): all of it is new."""
    if before is None or now < before:
        return now
    return now - before


# -- the query's parameters ------------------------------------------------------------

LABEL_FILTERS = ("topic", "group", "webhook")


def parse_families(raw: str | None) -> tuple[str, ...]:
    """``series=events_in,group_lag``: family names, comma-separated; none given: all."""
    if raw is None:
        return ()
    names = raw.split(",")
    for name in names:
        if name not in FAMILIES:
            raise BadRequest(
                f"series {name!r} is not one the hub keeps; it keeps {', '.join(FAMILIES)} "
                "(comma-separated, no spaces)",
                field="series",
            )
    return tuple(dict.fromkeys(names))


_SINCE_MS = re.compile(r"-?[0-9]{1,15}")
_SINCE_AGO = re.compile(r"(0|[1-9][0-9]{0,3})(\.[0-9]{1,3})?(ms|s|m|h|d)")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_since(raw: str | None, now_ms: int) -> int | None:
    """``since``: an RFC 3339 time, ms since the epoch, or a duration with its unit
    back from now (``90s``, ``15m``, ``6h``, ``1d``); none given: all that is kept."""
    if raw is None:
        return None
    if _SINCE_MS.fullmatch(raw):
        return int(raw)
    if _SINCE_AGO.fullmatch(raw):
        return now_ms - parse_duration_ms(raw, "since")
    if _RFC3339.fullmatch(raw):
        with contextlib.suppress(BadRequest):
            return parse_time_ms(raw, "since")
    raise BadRequest(
        f"since {raw!r} is not an RFC 3339 time (2026-12-05T10:00:00Z), ms since the epoch, "
        "nor a duration back from now (90s, 15m, 6h, 1d)",
        field="since",
    )
