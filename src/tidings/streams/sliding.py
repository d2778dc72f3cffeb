"""Sliding windows: for each distinct event time ``t`` of a key, the window ``(t - size, t]``.

As ``[start, end)``: ``[t - size + 1, t + 1)``. Each window holds every accepted event
of its key with a time inside it, folded in merged order. An event is late when its
own window has closed (``t + 1 + grace <= W``); otherwise it is added to every window
that covers it (all open, since they end no earlier than its own), and its own window
is made if it is new, from the events kept for the key. Events are kept until no
window that could still be made covers them (``W >= t + size + grace``).

With ``emit="updates"``, ``rev`` is the number of events in the window.
"""

from __future__ import annotations

import bisect
import heapq
from operator import itemgetter
from typing import Any

from tidings.streams.eventtime import format_ms
from tidings.streams.types import DELETED, InputRecord
from tidings.streams.windowed import NEVER, WindowOperator
from tidings.streams.windows import Sliding

__all__ = ["SlidingWindows"]

_CLOSE, _PRUNE = 0, 1
_time = itemgetter(0)  # of a kept event [t, seq, x]
_seq = itemgetter(1)


class SlidingWindows(WindowOperator):
    """Per key, the kept events ``[[t, seq, x], ...]`` in time order, and the open windows
    ``{t: [state, rev]}``.

    ``seq`` numbers a key's kept events in merged order (a window folds them in that
    order); ``x`` is what the aggregation lifted from the event, or the whole event
    dict for an aggregation that needs it. Changelog entries: ``e:{key}`` -> ``[next seq,
    the kept events]``, ``w:{t}:{key}`` -> ``[state, rev]``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.window, Sliding):
            raise TypeError(f"SlidingWindows takes Sliding, not {self.window!r}")
        self.size = self.window.size
        self._events: dict[str, list[list[Any]]] = {}
        self._next_seq: dict[str, int] = {}
        self._wins: dict[str, dict[int, list[Any]]] = {}
        self._heap: list[tuple[int, int, str, int]] = []  # (when, _CLOSE|_PRUNE, key, t)
        self._changed: set[tuple[str, int | None]] = set()  # (key, t) or (key, None): events

    def _lifted(self, stored: Any) -> Any:
        return self.agg.lift(self._decode(stored)) if self.agg.needs_event else stored

    def _place(self, k: str, et: int, e: Any, rec: InputRecord) -> None:
        agg, size, grace = self.agg, self.size, self.grace
        if et + 1 + grace <= self._wm:
            self._late_event(rec, k, et, (
                f"its window ({format_ms(et - size)}, {format_ms(et)}] closed: the watermark "
                f"{format_ms(self._wm)} reached its end plus the grace of {grace} ms"
            ))
            return
        x = agg.lift(e)
        wins = self._wins.setdefault(k, {})
        events = self._events.setdefault(k, [])
        covering = sorted(t for t in wins if et <= t < et + size)
        if et not in wins:
            state = agg.initial()
            lifted = self._lifted if agg.needs_event else None
            lo = bisect.bisect_right(events, et - size, key=_time)
            hi = bisect.bisect_right(events, et, key=_time)
            inside = sorted(events[lo:hi], key=_seq)  # in merged order
            for _, _, stored in inside:
                state = agg.add(state, stored if lifted is None else lifted(stored))
            wins[et] = [state, len(inside)]
            covering.insert(0, et)
            self._push((et + 1 + grace, _CLOSE, k, et))
        for t in covering:
            w = wins[t]
            w[0] = agg.add(w[0], x)
            w[1] += 1
            self._changed.add((k, t))
            if self._updates:
                self._result(k, t - size + 1, t + 1, agg.result(w[0]), w[1])
        seq = self._next_seq.get(k, 0)
        self._next_seq[k] = seq + 1
        bisect.insort(events, [et, seq, rec[4] if agg.needs_event else x], key=_time)
        self._changed.add((k, None))
        self._push((et + size + grace, _PRUNE, k, et))

    def _push(self, entry: tuple[int, int, str, int]) -> None:
        heapq.heappush(self._heap, entry)
        if entry[0] < self._next_close:
            self._next_close = entry[0]

    def _close(self) -> None:
        wm, heap, size = self._wm, self._heap, self.size
        closing: list[tuple[int, int, str, list[Any]]] = []
        while heap and heap[0][0] <= wm:
            _, kind, k, t = heapq.heappop(heap)
            if kind == _CLOSE:
                wins = self._wins.get(k, {})
                w = wins.pop(t, None)
                if w is not None:
                    closing.append((t + 1, t - size + 1, k, w))
                    self._changed.add((k, t))
                if not wins:
                    self._wins.pop(k, None)
            else:
                events = self._events.get(k, [])
                cut = bisect.bisect_right(events, wm - size - self.grace, key=_time)
                if cut:
                    del events[:cut]
                    self._changed.add((k, None))
                if not events:
                    self._events.pop(k, None)
                    self._next_seq.pop(k, None)
        closing.sort(key=lambda c: c[:3])
        for end, start, k, w in closing:
            self._result(k, start, end, self.agg.result(w[0]), 0)
        self._next_close = heap[0][0] if heap else NEVER

    def _state_changes(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for k, t in self._changed:
            if t is None:
                events = self._events.get(k)
                state[f"e:{k}"] = [self._next_seq[k], events] if events else DELETED
            else:
                w = self._wins.get(k, {}).get(t)
                state[f"w:{t}:{k}"] = DELETED if w is None else list(w)
        self._changed = set()
        return state

    def _load(self, state: dict[str, Any]) -> None:
        self._events, self._wins, self._heap, self._changed = {}, {}, [], set()
        self._next_seq = {}
        self._next_close = NEVER
        size, grace = self.size, self.grace
        for name, value in state.items():
            kind, _, rest = name.partition(":")
            if kind == "e":
                self._next_seq[rest], kept = value
                self._events[rest] = [list(ev) for ev in kept]
                for ev in kept:
                    self._push((ev[0] + size + grace, _PRUNE, rest, ev[0]))
                continue
            t_s, _, k = rest.partition(":")
            if kind != "w" or not t_s.lstrip("-").isdigit():
                raise ValueError(f"view {self.name!r}: state entry {name!r} is not a window")
            t = int(t_s)
            self._wins.setdefault(k, {})[t] = list(value)
            self._push((t + 1 + grace, _CLOSE, k, t))
