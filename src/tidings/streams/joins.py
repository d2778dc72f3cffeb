"""Joins: a stream enriched by a table, and two streams matched within a time window.

Both take their inputs in the merged order (append time first), so what a join
matches is the same live, in a replay and after a restore.

- :class:`EnrichOperator`: inputs ``[stream, table]``. Records of the table input
  fold into a value per key, as a view does (``table_fold(current, event) -> new |
  None``); the operator serves that table. Each stream event is joined with the
  table's value for its key as of its place in the merged order:
  ``join(event, value) -> data | None`` (None: nothing is published).
- :class:`StreamJoin`: inputs ``[left, right]``. An event of one side is matched with
  every event of the other side with the same key and an event time at most
  ``within`` away; each pair gives ``join(left, right) -> data | None``, published
  when the second of the two arrives. Watermark and lateness as for windows: an
  event is late once ``W >= t + within + grace``; events are kept until
  ``W >= t + 2 * within + grace``, after which no event that is not late could
  match them, so every pair of events that are not late is joined exactly once.

Join results are CloudEvents of type ``tidings.join.result`` on the view's topic,
with ids from the positions of the events joined (``j-`` + 32 hex digits).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from tidings.streams.aggregations import Count
from tidings.streams.eventtime import format_ms
from tidings.streams.eventview import EventView
from tidings.streams.fold import FoldOperator
from tidings.streams.types import DELETED, InputRecord, Output
from tidings.streams.windowed import NEVER, WindowOperator
from tidings.streams.windows import Window, _grace_idle, duration_ms

__all__ = ["EnrichOperator", "Join", "StreamJoin", "join_id"]

JOIN_TYPE: Final = "tidings.join.result"


def join_id(view: str, *positions: tuple[str, int, int]) -> str:
    """A join result's id, from the (topic, partition, offset) of the events joined."""
    text = "\0".join([view, *(f"{t}\0{p}\0{o}" for t, p, o in positions)])
    return "j-" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _callable(f: object, what: str, name: str) -> Callable[..., Any]:
    if not callable(f):
        raise ValueError(f"view {name!r}: {what} must be a function, not {f!r}")
    return f


def _two_inputs(inputs: Sequence[str], name: str, what: str) -> list[str]:
    if (
        isinstance(inputs, str) or len(inputs) != 2
        or not all(isinstance(t, str) for t in inputs)
    ):
        raise ValueError(f"view {name!r}: a join reads two inputs, {what}, not {inputs!r}")
    return list(inputs)


class EnrichOperator(FoldOperator):
    """A stream enriched by a table folded from a second input (see the module docstring)."""

    def __init__(
        self,
        name: str,
        inputs: Sequence[str],
        key: Callable[[Any], Any],
        table_key: Callable[[Any], Any],
        table_fold: Callable[[Any, Any], Any],
        join: Callable[[Any, Any], Any],
        *,
        decode: Callable[[dict[str, Any]], Any] = EventView,
    ) -> None:
        super().__init__(name, table_key, table_fold, decode=decode)
        self.inputs = _two_inputs(inputs, name, "[stream, table]")
        self._stream_key = _callable(key, "key", name)
        self._join = _callable(join, "join", name)
        self._source = f"tidings/views/{name}"
        self._results: list[dict[str, Any]] = []

    def process(self, rec: InputRecord) -> None:
        if rec[0] != 0:
            super().process(rec)  # the table
            return
        idx, partition, offset, appended, ev = rec
        e = self._decode(ev)
        k = self._stream_key(e)
        if k is None:
            return
        k = k if isinstance(k, str) else str(k)
        data = self._join(e, self.values.get(k))
        if data is None:
            return
        topic = self.inputs[idx]
        self._results.append({
            "specversion": "1.0",
            "id": join_id(self.name, (topic, partition, offset)),
            "source": self._source,
            "type": JOIN_TYPE,
            "time": ev.get("time") or format_ms(appended),
            "partitionkey": k,
            "data": data,
        })

    def process_all(self, recs: Iterable[InputRecord]) -> None:
        for rec in recs:  # stream and table records differ: not the fold's loop
            self.process(rec)

    def drain(self) -> Output:
        out = super().drain()
        out.results, self._results = self._results, []
        return out


@dataclass(frozen=True, init=False)
class Join(Window):
    """How far apart two events may be to match: ``Join(within="5m", grace="10s")``."""

    within: int
    grace: int
    idle: int

    def __init__(self, within: object, grace: object = "0s", idle: object = None) -> None:
        object.__setattr__(self, "within", duration_ms(within, "Join within"))
        g, i = _grace_idle("Join", grace, idle)
        object.__setattr__(self, "grace", g)
        object.__setattr__(self, "idle", i)

    def describe(self) -> dict[str, Any]:
        """The join window as the view's declaration holds it (ms)."""
        return {"kind": "join", "within": self.within, "grace": self.grace, "idle": self.idle}


class StreamJoin(WindowOperator):
    """Two streams matched by key within ``within`` (see the module docstring).

    Kept events: per side and key, ``[[t, topic, partition, offset, event], ...]`` in
    merged order. Changelog entries: ``l:{key}`` and ``r:{key}``.
    """

    def __init__(
        self,
        name: str,
        inputs: Sequence[str],
        window: Join,
        left_key: Callable[[Any], Any],
        right_key: Callable[[Any], Any],
        join: Callable[[Any, Any], Any],
        *,
        types: Iterable[str] | None = None,
        decode: Callable[[dict[str, Any]], Any] = EventView,
    ) -> None:
        if not isinstance(window, Join):
            raise ValueError(f"view {name!r}: a stream join takes Join(within=...), not {window!r}")
        inputs = _two_inputs(inputs, name, "[left, right]")
        # The base's aggregation is not used: a join folds no window.
        super().__init__(name, inputs, window, left_key, Count(), types=types, decode=decode)
        self.within = window.within
        self._keys = (left_key, _callable(right_key, "right_key", name))
        self._join = _callable(join, "join", name)
        self._kept: tuple[dict[str, list[list[Any]]], dict[str, list[list[Any]]]] = ({}, {})
        self._changed: set[tuple[int, str]] = set()

    def process(self, rec: InputRecord) -> None:
        self._key = self._keys[1 if rec[0] else 0]
        super().process(rec)

    def process_all(self, recs: Iterable[InputRecord]) -> None:
        for rec in recs:  # the key function changes with the input
            self.process(rec)

    def _place(self, k: str, et: int, e: Any, rec: InputRecord) -> None:
        within, grace = self.within, self.grace
        if et + within + grace <= self._wm:
            self._late_event(rec, k, et, (
                f"its join window [{format_ms(et - within)}, {format_ms(et + within)}] closed: "
                f"the watermark {format_ms(self._wm)} reached its end plus the grace of "
                f"{grace} ms"
            ))
            return
        idx, partition, offset, _, ev = rec
        side = 1 if idx else 0
        topic = self.inputs[idx]
        for other in self._kept[1 - side].get(k, ()):
            if abs(other[0] - et) <= within:
                mine: list[Any] = [et, topic, partition, offset, ev]
                left, right = (other, mine) if side else (mine, other)
                data = self._join(self._decode(left[4]), self._decode(right[4]))
                if data is not None:
                    self._pair(k, left, right, data)
        self._kept[side].setdefault(k, []).append([et, topic, partition, offset, ev])
        self._changed.add((side, k))
        drop = et + 2 * within + grace
        if drop < self._next_close:
            self._next_close = drop

    def _pair(self, k: str, left: list[Any], right: list[Any], data: Any) -> None:
        self._results.append({
            "specversion": "1.0",
            "id": join_id(self.name, (left[1], left[2], left[3]), (right[1], right[2], right[3])),
            "source": self._source,
            "type": JOIN_TYPE,
            "time": format_ms(max(left[0], right[0])),
            "partitionkey": k,
            "data": data,
        })

    def _close(self) -> None:
        wm, span = self._wm, 2 * self.within + self.grace
        nxt = NEVER
        for side, kept in enumerate(self._kept):
            for k in list(kept):
                events = kept[k]
                keep = [ev for ev in events if ev[0] + span > wm]
                if len(keep) != len(events):
                    self._changed.add((side, k))
                    if keep:
                        kept[k] = keep
                    else:
                        del kept[k]
                if keep:
                    nxt = min(nxt, min(ev[0] for ev in keep) + span)
        self._next_close = nxt

    def _state_changes(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for side, k in self._changed:
            events = self._kept[side].get(k)
            state[f"{'lr'[side]}:{k}"] = events if events else DELETED
        self._changed = set()
        return state

    def _load(self, state: dict[str, Any]) -> None:
        self._kept, self._changed = ({}, {}), set()
        self._next_close = NEVER
        span = 2 * self.within + self.grace
        for name, value in state.items():
            side_s, _, k = name.partition(":")
            if side_s not in ("l", "r"):
                raise ValueError(f"view {self.name!r}: state entry {name!r} is not a join side")
            self._kept[0 if side_s == "l" else 1][k] = [list(ev) for ev in value]
            for ev in value:
                self._next_close = min(self._next_close, ev[0] + span)
