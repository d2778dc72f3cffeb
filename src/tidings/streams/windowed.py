"""Windowed aggregation: the watermark, lateness, results, and fixed windows.

Time, in merged order (design section 2):

- event time ``t`` = the event's ``time`` attribute in ms, else its append time;
- ``stream_time`` = the greatest event time seen, and ``last_appended`` = the
  append time of the last record that had an event time (of the view's types,
  with a key, and a ``time`` that parses or none);
- the watermark ``W`` is at least ``stream_time``, and moves with the hub's clock
  only across a quiet gap: given a horizon ``H`` (an ``advance(H)``, or a record's
  own append time, which is a horizon for everything after it in merged order),
  if ``H - last_appended > idle`` then ``W >= stream_time + (H - last_appended -
  idle)``: event time is taken to have gone on at the clock's pace since the last
  record, less ``idle``. While records keep coming no more than ``idle`` apart,
  ``W`` is the stream time alone, however far event times lag the append times
  (a backfill of old events, a producer that buffers); once the stream pauses,
  the clock closes its windows.
- a live run and a replay hold the same ``W`` at every record. Between two
  records ``r1`` and ``r2`` a live run may get any ``advance(H)`` calls, each with
  ``H <= r2``'s append time (the merger releases ``r2`` only below a horizon above
  it); none of them changes ``stream_time`` or ``last_appended``, and the rule is
  monotone in ``H``, so applying ``r2``'s append time first, as ``process`` does,
  gives ``W`` at least what they gave, and exactly what a replay without them
  gives. The windows they closed early close at ``r2`` in a replay, in the same
  order (see below), before ``r2`` is looked at: only the windows closed after the
  last record depend on when ``advance`` came.
- a window ``[start, end)`` closes once ``W >= end + grace``: its final result is
  published and its state dropped. Windows closing together come out sorted by
  ``(end, start, key)``, whatever order they were opened in (a restored operator
  opens them in another order).
- an event whose windows are all closed is late: it goes to the late output with
  ``why``, and nowhere else.

The clock (checkpointed) holds ``stream_time``, ``watermark`` and
``last_appended``, so a restored operator goes on exactly. A clock from before
``last_appended`` was kept restores it as ``watermark + idle``: no earlier than
the last record's append time (the rule before kept ``W >= appended - idle`` at
every record), and exactly the last horizon when the clock had set the watermark,
so such a view never moves its watermark sooner than this rule would.

A window's aggregate folds its events in merged order (a session merges the
states of the sessions an event bridges, see ``sessions``). Served values, result
events and late events are built here, with the ids of the design, so that a
window processed twice publishes the same ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from tidings.streams.aggregations import Aggregation, Count, Sum
from tidings.streams.eventtime import (
    FRACTION_MS,
    FRACTION_TAIL,
    SECONDS,
    event_time_ms,
    format_ms,
)
from tidings.streams.eventview import EventView
from tidings.streams.types import DELETED, InputRecord, Output
from tidings.streams.windows import Hopping, Tumbling, Window

__all__ = ["FixedWindows", "WindowOperator", "late_id", "window_id"]

NEVER: Final = 1 << 62  # later than any time
BEFORE: Final = -(1 << 62)  # earlier than any time
RESULT_TYPE: Final = "tidings.window.result"
LATE_TYPE: Final = "tidings.window.late"
EMITS: Final = ("final", "updates")


def window_id(view: str, key: str, start: str, rev: int) -> str:
    """A window result's event id: ``start`` as in the view key, ``rev`` 0 when final."""
    digest = hashlib.blake2b(f"{view}\0{key}\0{start}\0{rev}".encode(), digest_size=16)
    return "w-" + digest.hexdigest()


def late_id(view: str, topic: str, partition: int, offset: int) -> str:
    """A late event's id, from where the event lies in its input."""
    digest = hashlib.blake2b(f"{view}\0{topic}\0{partition}\0{offset}".encode(), digest_size=16)
    return "l-" + digest.hexdigest()


class WindowOperator:
    """What every window kind shares; :func:`~tidings.streams.window_operator` makes one.

    Subclasses place an event in its windows (``_place``), close the windows the
    watermark has passed (``_close``, called once ``W >= self._next_close``, which is
    never later than the first close due), and turn their state into changelog
    entries and back (``_state_changes``, ``_load``).
    """

    def __init__(
        self,
        name: str,
        inputs: Sequence[str],
        window: Window,
        key: Callable[[Any], Any],
        agg: Aggregation,
        *,
        emit: str = "final",
        types: Iterable[str] | None = None,
        decode: Callable[[dict[str, Any]], Any] = EventView,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a window view needs a name, not {name!r}")
        if isinstance(inputs, str) or not inputs or not all(isinstance(t, str) for t in inputs):
            raise ValueError(f"view {name!r}: inputs must be a list of topic names, not {inputs!r}")
        if not callable(key):
            raise ValueError(f"view {name!r}: key must be a function of the event, not {key!r}")
        if not isinstance(agg, Aggregation):
            raise ValueError(
                f"view {name!r}: agg must be Count(), Sum(f), Min(f), Max(f), Mean(f) or "
                f"Aggregate(init, step), not {agg!r}"
            )
        if emit not in EMITS:
            raise ValueError(f"view {name!r}: emit must be 'final' or 'updates', not {emit!r}")
        self.name = name
        self.inputs = list(inputs)
        self.window = window
        self.agg = agg
        self.emit = emit
        self.grace = window.grace
        self.idle = window.idle
        self._key = key
        self._types = None if types is None else frozenset(types)
        self._decode = decode
        self._updates = emit == "updates"
        self._source = f"tidings/views/{name}"
        self._stream_time = BEFORE
        self._wm = BEFORE
        # NEVER until a record has an event time: H - NEVER is never more than idle
        self._last = NEVER
        self._next_close = NEVER
        # The seconds prefix ("2026-12-05T10:01:00.") of the last event time parsed
        # on the fast path, and its ms: the next event is most often in the same second.
        self._tp = "\0"
        self._tb = 0
        self._view = EventView({}) if decode is EventView else None
        self._values: dict[str, Any] = {}
        self._results: list[dict[str, Any]] = []
        self._late: list[dict[str, Any]] = []

    # -- the Operator protocol ---------------------------------------------------------

    def restore(
        self, values: dict[str, Any], state: dict[str, Any], clock: dict[str, Any]
    ) -> None:
        made = clock.get("window")
        if made is not None and made != self.window.describe():
            raise ValueError(
                f"view {self.name!r}: its state was made with the window {made}, not "
                f"{self.window.describe()}: rebuild the view to change its window"
            )
        st, wm = clock.get("stream_time"), clock.get("watermark")
        self._stream_time = st if isinstance(st, int) else BEFORE
        self._wm = wm if isinstance(wm, int) else BEFORE
        last = clock.get("last_appended")
        if "last_appended" not in clock and isinstance(st, int) and isinstance(wm, int):
            last = wm + self.idle  # a clock from before last_appended: see the module
        self._last = last if isinstance(last, int) and isinstance(st, int) else NEVER
        self._values, self._results, self._late = {}, [], []
        self._load(state)

    def process(self, rec: InputRecord) -> None:
        _, _, _, appended, ev = rec
        if appended - self._last > self.idle:
            self._quiet(appended)
        if self._types is not None and ev.get("type") not in self._types:
            return
        e = self._decode(ev)
        k = self._key(e)
        if k is None:
            return
        if k.__class__ is not str:
            k = str(k)
        t = ev.get("time")
        # The fast path, written out again in both process_all loops: as a method
        # called per event it cost about 100 ns more (docs/benchmarks.md).
        if t is None:
            et = appended
        elif t.startswith(self._tp) and t[23:] in FRACTION_TAIL and t[20:23] in FRACTION_MS:
            et = self._tb + FRACTION_MS[t[20:23]]
        else:
            parsed = self._parse_time(t)
            if parsed is None:
                self._late_event(rec, k, None, "its time attribute is not an RFC 3339 time")
                return
            et = parsed
        self._last = appended
        if et > self._stream_time:
            self._stream_time = et
            if et > self._wm:
                self._wm = et
                if et >= self._next_close:
                    self._close()
        self._place(k, et, e, rec)

    def _parse_time(self, t: object) -> int | None:
        """The slow path of event time; it primes the fast path for the next event."""
        et = event_time_ms(t)
        if et is not None and isinstance(t, str) and t[19:20] == ".":
            base = SECONDS.get(t[:19])
            if base is not None:
                self._tp, self._tb = t[:20], base
        return et

    def process_all(self, recs: Iterable[InputRecord]) -> None:
        """``process`` each record in turn, with the time kept in local names."""
        idle, types, key, decode = self.idle, self._types, self._key, self._decode
        wm, stream_time, next_close = self._wm, self._stream_time, self._next_close
        last = self._last
        tp, tb, fraction, tail = self._tp, self._tb, FRACTION_MS, FRACTION_TAIL
        place = self._place
        for rec in recs:
            _, _, _, appended, ev = rec
            if appended - last > idle and stream_time + (appended - last - idle) > wm:
                wm = stream_time + (appended - last - idle)
                if wm >= next_close:
                    self._wm = wm
                    self._close()
                    next_close = self._next_close
            if types is not None and ev.get("type") not in types:
                continue
            e = decode(ev)
            k = key(e)
            if k is None:
                continue
            if k.__class__ is not str:
                k = str(k)
            t = ev.get("time")
            if t is None:
                et = appended
            elif t.startswith(tp) and t[23:] in tail and (ms := fraction.get(t[20:23])) is not None:
                et = tb + ms
            else:
                parsed = self._parse_time(t)
                tp, tb = self._tp, self._tb
                if parsed is None:
                    self._wm = wm
                    self._late_event(rec, k, None, "its time attribute is not an RFC 3339 time")
                    continue
                et = parsed
            last = appended
            if et > stream_time:
                stream_time = et
                if et > wm:
                    wm = et
                    if wm >= next_close:
                        self._wm = wm
                        self._close()
                        next_close = self._next_close
            self._wm, self._next_close = wm, next_close
            place(k, et, e, rec)
            next_close = self._next_close
        self._wm, self._stream_time, self._next_close = wm, stream_time, next_close
        self._last, self._tp, self._tb = last, tp, tb

    def advance(self, horizon_ms: int) -> None:
        if horizon_ms - self._last > self.idle:
            self._quiet(horizon_ms)

    def _quiet(self, horizon_ms: int) -> None:
        """Nothing came for more than ``idle`` before ``horizon_ms``: event time went on."""
        w = self._stream_time + (horizon_ms - self._last - self.idle)
        if w > self._wm:
            self._wm = w
            if w >= self._next_close:
                self._close()

    def drain(self) -> Output:
        # sorted by name: the same changelog records in the same order, whatever the
        # hash seed that ordered the sets of changed windows
        state = dict(sorted(self._state_changes().items()))
        out = Output(
            values=self._values, state=state, results=self._results, late=self._late,
            clock=self.clock,
        )
        self._values, self._results, self._late = {}, [], []
        return out

    @property
    def clock(self) -> dict[str, Any]:
        return {
            "stream_time": None if self._stream_time == BEFORE else self._stream_time,
            "watermark": None if self._wm == BEFORE else self._wm,
            "last_appended": None if self._last == NEVER else self._last,
            "window": self.window.describe(),
        }

    @property
    def watermark(self) -> int | None:
        return None if self._wm == BEFORE else self._wm

    # -- what a kind provides -----------------------------------------------------------

    def _place(self, k: str, et: int, e: Any, rec: InputRecord) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _state_changes(self) -> dict[str, Any]:
        """The changelog entries of the state changed since the last drain."""
        raise NotImplementedError

    def _load(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    # -- outputs ------------------------------------------------------------------------

    def _result(self, k: str, start: int, end: int, value: Any, rev: int) -> None:
        """Serve and publish a window's value: ``rev`` 0 is the final one."""
        start_s, end_s = format_ms(start), format_ms(end)
        data = {"key": k, "start": start_s, "end": end_s, "value": value, "final": rev == 0}
        self._values[f"{k}@{start_s}"] = data
        self._results.append({
            "specversion": "1.0",
            "id": window_id(self.name, k, start_s, rev),
            "source": self._source,
            "type": RESULT_TYPE,
            "time": end_s,
            "partitionkey": k,
            "data": data,
        })

    def _unserve(self, k: str, start: int) -> None:
        """A window merged into another (sessions) stops being served."""
        self._values[f"{k}@{format_ms(start)}"] = DELETED

    def _late_event(self, rec: InputRecord, k: str, et: int | None, why: str) -> None:
        idx, partition, offset, appended, ev = rec
        topic = self.inputs[idx] if 0 <= idx < len(self.inputs) else str(idx)
        self._late.append({
            "specversion": "1.0",
            "id": late_id(self.name, topic, partition, offset),
            "source": self._source,
            "type": LATE_TYPE,
            "time": format_ms(appended if et is None else et),
            "partitionkey": k,
            "data": {
                "why": why,
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "event_time": None if et is None else format_ms(et),
                "watermark": None if self._wm == BEFORE else format_ms(self._wm),
                "event": ev,
            },
        })


class FixedWindows(WindowOperator):
    """Tumbling and hopping windows: every window of a view has the same size.

    State: ``buckets[start][key]`` is the aggregate state, ``revs[start][key]`` the
    update count (``emit="updates"``), ``dirty[start]`` the keys changed since the
    last drain. Changelog entries: ``w:{start}:{key}`` -> ``[state, rev]``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        w = self.window
        if not isinstance(w, Tumbling | Hopping):
            raise TypeError(f"FixedWindows takes Tumbling or Hopping, not {w!r}")
        self.size = w.size
        self.every = w.every if isinstance(w, Hopping) else w.size
        self._buckets: dict[int, dict[str, Any]] = {}
        self._revs: dict[int, dict[str, int]] = {}
        self._changed: dict[int, set[str]] = {}

    def process_all(self, recs: Iterable[InputRecord]) -> None:
        # WindowOperator.process and _place in one loop over local names (attributes
        # cost several times more), with the tumbling window and Count inlined; the
        # attributes are written back before any method that reads them.
        idle, size, grace, types, key = self.idle, self.size, self.grace, self._types, self._key
        tumbling, updates = self.every == size, self._updates
        agg = self.agg
        count = type(agg) is Count
        total = agg.f if type(agg) is Sum else None
        lift, add, initial = agg.lift, agg.add, agg.initial
        buckets, changed = self._buckets, self._changed
        wm, stream_time, next_close, last = (
            self._wm, self._stream_time, self._next_close, self._last
        )
        tp, tb = self._tp, self._tb
        view, decode = self._view, self._decode
        fraction, tail = FRACTION_MS, FRACTION_TAIL
        # The window of the last event (most events fall in the same one): its start,
        # its states and its changed keys. None after a close, which may have removed it.
        cur: int | None = None
        bucket: dict[str, Any] = {}
        dirty: set[str] = set()
        for rec in recs:
            _, _, _, appended, ev = rec
            if appended - last > idle and stream_time + (appended - last - idle) > wm:
                wm = stream_time + (appended - last - idle)  # a quiet gap: see the module
                if wm >= next_close:
                    self._wm = wm
                    self._close()
                    next_close, cur = self._next_close, None
            if types is not None and ev.get("type") not in types:
                continue
            if view is None:
                e = decode(ev)
            else:
                # One EventView for every event: the view's functions read it and let go.
                e = view
                view.attributes = ev
                view.data = ev.get("data")
            k = key(e)
            if k is None:
                continue
            if k.__class__ is not str:
                k = str(k)
            t = ev.get("time")
            if t is None:
                et = appended
            elif t.startswith(tp) and t[23:] in tail and (ms := fraction.get(t[20:23])) is not None:
                et = tb + ms
            else:
                parsed = self._parse_time(t)
                tp, tb = self._tp, self._tb
                if parsed is None:
                    self._wm = wm
                    self._late_event(rec, k, None, "its time attribute is not an RFC 3339 time")
                    continue
                et = parsed
            last = appended
            if et > stream_time:
                stream_time = et
                if et > wm:
                    wm = et
                    if wm >= next_close:
                        self._wm = wm
                        self._close()
                        next_close, cur = self._next_close, None
            if not tumbling:
                self._wm, self._next_close = wm, next_close
                self._place(k, et, e, rec)
                next_close = self._next_close
                continue
            start = et - et % size
            if start != cur:
                if start + size + grace <= wm:
                    self._wm = wm
                    self._late_event(rec, k, et, self._why(start))
                    continue
                b = buckets.get(start)
                if b is None:
                    self._next_close = next_close
                    b = self._open(start)
                    next_close = self._next_close
                cur, bucket, dirty = start, b, changed[start]
            if count:
                bucket[k] = bucket.get(k, 0) + 1
            elif total is not None:
                x = total(e)
                if x.__class__ is not int and x.__class__ is not float:
                    x = lift(e)  # refuses what is not a number
                bucket[k] = bucket.get(k, 0) + x
            else:
                bucket[k] = add(bucket[k] if k in bucket else initial(), lift(e))
            dirty.add(k)
            if updates:
                revs = self._revs.setdefault(start, {})
                rev = revs[k] = revs.get(k, 0) + 1
                self._result(k, start, start + size, agg.result(bucket[k]), rev)
        self._wm, self._stream_time, self._next_close = wm, stream_time, next_close
        self._last, self._tp, self._tb = last, tp, tb

    def _place(self, k: str, et: int, e: Any, rec: InputRecord) -> None:
        size, grace, wm, agg, every = self.size, self.grace, self._wm, self.agg, self.every
        buckets, changed, updates = self._buckets, self._changed, self._updates
        count = type(agg) is Count
        x = None if count else agg.lift(e)
        last = et - et % every
        placed = False
        # the windows covering et, earliest first: starts in (et - size, last], every apart
        for start in range(last - (last - (et - size) - 1) // every * every, last + 1, every):
            if start + size + grace <= wm:
                continue
            b = buckets.get(start)
            if b is None:
                b = self._open(start)
            if count:
                b[k] = b.get(k, 0) + 1
            else:
                b[k] = agg.add(b[k] if k in b else agg.initial(), x)
            changed[start].add(k)
            placed = True
            if updates:
                revs = self._revs.setdefault(start, {})
                rev = revs[k] = revs.get(k, 0) + 1
                self._result(k, start, start + size, agg.result(b[k]), rev)
        if not placed:
            self._late_event(rec, k, et, self._why(last))

    def _why(self, start: int) -> str:
        end = start + self.size
        return (
            f"its window [{format_ms(start)}, {format_ms(end)}) closed: the watermark "
            f"{format_ms(self._wm)} reached its end plus the grace of {self.grace} ms"
        )

    def _open(self, start: int) -> dict[str, Any]:
        b: dict[str, Any] = {}
        self._buckets[start] = b
        self._changed.setdefault(start, set())
        close = start + self.size + self.grace
        if close < self._next_close:
            self._next_close = close
        return b

    def _close(self) -> None:
        wm, size, grace = self._wm, self.size, self.grace
        agg = self.agg
        for start in sorted(s for s in self._buckets if s + size + grace <= wm):
            b = self._buckets.pop(start)
            self._revs.pop(start, None)
            for k in sorted(b):
                self._result(k, start, start + size, agg.result(b[k]), 0)
            self._changed.setdefault(start, set()).update(b)
        self._next_close = min(self._buckets) + size + grace if self._buckets else NEVER

    def _state_changes(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for start, keys in self._changed.items():
            b = self._buckets.get(start)
            revs = self._revs.get(start, {})
            for k in keys:
                if b is None or k not in b:
                    state[f"w:{start}:{k}"] = DELETED
                else:
                    state[f"w:{start}:{k}"] = [b[k], revs.get(k, 0)]
        self._changed = {start: set() for start in self._buckets}
        return state

    def _load(self, state: dict[str, Any]) -> None:
        self._buckets, self._revs = {}, {}
        for name, value in state.items():
            kind, _, rest = name.partition(":")
            start_s, _, k = rest.partition(":")
            if kind != "w" or not start_s.lstrip("-").isdigit():
                raise ValueError(f"view {self.name!r}: state entry {name!r} is not a window")
            start = int(start_s)
            self._buckets.setdefault(start, {})[k] = value[0]
            if value[1]:
                self._revs.setdefault(start, {})[k] = value[1]
        self._changed = {start: set() for start in self._buckets}
        self._next_close = (
            min(self._buckets) + self.size + self.grace if self._buckets else NEVER
        )
