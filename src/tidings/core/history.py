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
  never as a spike. :meth:`MetricsHistory.begin` gives it a base without making
  a point (the sampler reads the hub so as it starts).
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

import bisect
import contextlib
import logging
import math
import re
from array import array
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


@dataclass(slots=True)
class _Columns:
    """The points: their times, and a column of values per series (NaN: none)."""

    times: array[int] = field(default_factory=lambda: array("q"))
    values: dict[SeriesKey, array[float]] = field(default_factory=dict)


class MetricsHistory:
    """The last ``points`` points, in memory as columns (and through ``store``, on disk)."""

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
        self._data = _Columns()
        self._last: tuple[int, Reading] | None = None  # the previous reading, this process
        self._base: tuple[int, Reading] | None = None  # the one the last point's rates are from
        self._full_logged = False

    @property
    def span_ms(self) -> int:
        """How far back the history reaches from its newest point."""
        return self.interval_ms * self.points

    def __len__(self) -> int:
        return len(self._data.times)

    @property
    def series(self) -> list[SeriesKey]:
        return list(self._data.values)

    # -- in ------------------------------------------------------------------------

    def load(self, now_ms: int) -> int:
        """Take the store's points of the last :attr:`span_ms`; how many there were."""
        return self.adopt(self.read_store(now_ms))

    def read_store(self, now_ms: int) -> _Columns:
        """The store's points of the last :attr:`span_ms` as columns, for :meth:`adopt`.
        Touches the store only, not this history: it may run in a worker thread."""
        loaded = _Columns()
        if self.store is None:
            return loaded
        rows = list(self.store.load(now_ms - self.span_ms + 1))[-self.points :]
        keys = list(dict.fromkeys(k for _, values in rows for k in values))[:MAX_SERIES]
        loaded.times.extend(t for t, _ in rows)
        for key in keys:
            loaded.values[key] = array("d", [values.get(key, math.nan) for _, values in rows])
        return loaded

    def adopt(self, loaded: _Columns) -> int:
        """Points :meth:`read_store` read, before any this history has; how many."""
        data = self._data
        keep = [i for i, t in enumerate(loaded.times) if not data.times or t < data.times[0]]
        n = len(keep)
        if n:
            merged = _Columns(array("q", loaded.times[:n]))
            merged.times.extend(data.times)
            for key in dict.fromkeys([*loaded.values, *data.values]):
                old = loaded.values.get(key)
                col = array("d", old[:n]) if old is not None else _gap(n)
                col.extend(data.values.get(key, _gap(len(data.times))))
                merged.values[key] = col
            self._data = merged
        return n

    def begin(self, now_ms: int, reading: Reading) -> None:
        """The first reading of this process, as the base of the next point's rates;
        it makes no point."""
        self._last = (now_ms, reading)

    def observe(self, now_ms: int, reading: Reading) -> dict[SeriesKey, float]:
        """One reading: the point it makes (also stored), by series."""
        values: dict[SeriesKey, float] = {}
        t = self.interval_ms * round(now_ms / self.interval_ms)
        times = self._data.times
        if times and times[-1] == t:
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
        data = self._data
        times, cols = data.times, data.values
        cut = len(times)
        while cut and times[cut - 1] >= t:
            cut -= 1  # the same slot again (or a clock that went back)
        if cut < len(times):
            del times[cut:]
            for col in cols.values():
                del col[cut:]
        for key in values:
            if key not in cols:
                self._new_series(key, values)
        times.append(t)
        for key, col in cols.items():
            col.append(values.get(key, math.nan))
        old = 0
        while old < len(times) and (
            len(times) - old > self.points or times[old] <= t - self.span_ms
        ):
            old += 1
        if old:
            del times[:old]
            for col in cols.values():
                del col[:old]

    def _new_series(self, key: SeriesKey, current: Collection[SeriesKey]) -> None:
        cols = self._data.values
        if len(cols) >= MAX_SERIES:
            # Forget the series that neither a kept point nor the point being made has.
            for old in [k for k, col in cols.items() if k not in current and _empty(col)]:
                del cols[old]
                self._full_logged = False
        if len(cols) >= MAX_SERIES:
            if not self._full_logged:
                logger.warning(
                    "metrics history holds %d series: %s and others are left out "
                    "until old series age out", MAX_SERIES, key,
                )  # fmt: skip
                self._full_logged = True
            return
        cols[key] = _gap(len(self._data.times))

    # -- out -----------------------------------------------------------------------

    def query(
        self,
        families: Collection[str] = (),
        since_ms: int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The points from ``since_ms`` on of the series of ``families`` (all when
        empty) whose labels include ``labels``: a time column and a value column
        per series that has a value there (NaN where it has none: orjson, which
        the server answers with, writes it as null)."""
        data = self._data
        start = 0 if since_ms is None else bisect.bisect_left(data.times, since_ms)
        wanted = set(families) or set(FAMILIES)
        series = []
        for key in sorted(data.values):
            name, values = key
            if name not in wanted:
                continue
            named = dict(zip(FAMILIES[name].labels, values, strict=True))
            if labels and any(named.get(k) != v for k, v in labels.items()):
                continue
            column = data.values[key][start:].tolist()
            if any(v == v for v in column):  # not all NaN
                series.append(
                    {"name": name, "labels": named, "unit": FAMILIES[name].unit, "values": column}
                )
        return {
            "interval": self.interval_ms / 1000,
            "times": data.times[start:].tolist(),
            "series": series,
        }


def _gap(n: int) -> array[float]:
    return array("d", [math.nan]) * n


def _empty(col: array[float]) -> bool:
    return all(v != v for v in col)


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
