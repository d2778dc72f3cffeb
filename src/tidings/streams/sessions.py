"""Session windows: a key's events closer than ``gap`` to each other, merged as they come.

A session ``[first, last + gap)`` holds a key's events from ``first`` to ``last``,
each less than ``gap`` from the next. An event touches a session when it falls
within ``gap`` of it (``first - gap < t < last + gap``); it joins every open
session it touches, merging them (their states merged earliest first, then the
event added). An event that touches none starts a session of its own, unless that
session would already be closed (``t + gap + grace <= W``): then it is late. A
session is final once closed: an event that would have joined it joins an open
session it touches, or starts one if it still can, or is late.

With ``emit="updates"``, ``rev`` is the number of events in the session, so a
session's update ids never repeat; a session merged into an earlier one stops
being served under its own start.
"""

from __future__ import annotations

import bisect
import heapq
from typing import Any

from tidings.streams.aggregations import Aggregate
from tidings.streams.eventtime import format_ms
from tidings.streams.types import DELETED, InputRecord
from tidings.streams.windowed import NEVER, WindowOperator
from tidings.streams.windows import Session

__all__ = ["SessionWindows"]

# One open session: [first, last, aggregate state, rev]
Sess = list[Any]


class SessionWindows(WindowOperator):
    """Per key, the open sessions in order of ``first``; a heap of close times.

    Changelog entries: ``w:{first}:{key}`` -> ``[last, state, rev]``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.window, Session):
            raise TypeError(f"SessionWindows takes Session, not {self.window!r}")
        if isinstance(self.agg, Aggregate) and self.agg.merger is None:
            raise ValueError(
                f"view {self.name!r}: Session windows need Aggregate(..., merge=f), "
                "f(earlier, later) -> state, to join two sessions an event bridges"
            )
        self.gap = self.window.gap
        self._sessions: dict[str, list[Sess]] = {}
        # (close time, key, first); an entry whose session has moved on is skipped
        self._heap: list[tuple[int, str, int]] = []
        self._changed: set[tuple[str, int]] = set()

    def _place(self, k: str, et: int, e: Any, rec: InputRecord) -> None:
        agg, gap = self.agg, self.gap
        x = agg.lift(e)
        sess = self._sessions.get(k)
        touched = [s for s in sess if s[0] - gap < et < s[1] + gap] if sess else []
        if len(touched) == 1 and touched[0][0] <= et:  # the common case: it grows one session
            s = touched[0]
            if et > s[1]:
                s[1] = et
            s[2] = agg.add(s[2], x)
            s[3] += 1
            self._changed.add((k, s[0]))
            if self._updates:
                self._result(k, s[0], s[1] + gap, agg.result(s[2]), s[3])
            return
        if not touched:
            if et + gap + self.grace <= self._wm:
                self._late_event(rec, k, et, (
                    f"its session [{format_ms(et)}, {format_ms(et + gap)}) would have closed: "
                    f"the watermark {format_ms(self._wm)} reached its end plus the grace of "
                    f"{self.grace} ms"
                ))
                return
            new: Sess = [et, et, agg.add(agg.initial(), x), 1]
        else:
            state = touched[0][2]
            for s in touched[1:]:
                state = agg.merge(state, s[2])
            first = min(touched[0][0], et)
            rev = sum(s[3] for s in touched) + 1
            new = [first, max(touched[-1][1], et), agg.add(state, x), rev]
            for s in touched:
                sess.remove(s)  # type: ignore[union-attr]  # touched is not empty: sess is not None
                if s[0] != first:
                    self._changed.add((k, s[0]))
                    if self._updates:
                        self._unserve(k, s[0])
        if sess is None:
            sess = self._sessions[k] = []
        bisect.insort(sess, new, key=_first)
        self._changed.add((k, new[0]))
        if not touched or new[0] != touched[0][0]:
            # A session that only grew later keeps its heap entry: an entry due before
            # its session is is pushed again, with the session's close, when it comes up.
            self._schedule(k, new)
        if self._updates:
            self._result(k, new[0], new[1] + gap, agg.result(new[2]), new[3])

    def _schedule(self, k: str, s: Sess) -> None:
        close = s[1] + self.gap + self.grace
        heapq.heappush(self._heap, (close, k, s[0]))
        if close < self._next_close:
            self._next_close = close

    def _close(self) -> None:
        wm, heap, gap = self._wm, self._heap, self.gap
        closing: list[tuple[int, int, str, Sess]] = []
        while heap and heap[0][0] <= wm:
            _, k, first = heapq.heappop(heap)
            sess = self._sessions.get(k, [])
            for s in sess:
                if s[0] == first:
                    close = s[1] + gap + self.grace
                    if close <= wm:
                        closing.append((s[1] + gap, first, k, s))
                        sess.remove(s)
                    else:
                        heapq.heappush(heap, (close, k, first))
                    break
            if not sess:
                self._sessions.pop(k, None)
        closing.sort(key=lambda c: c[:3])
        for end, first, k, s in closing:
            self._result(k, first, end, self.agg.result(s[2]), 0)
            self._changed.add((k, first))
        self._next_close = heap[0][0] if heap else NEVER

    def _state_changes(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for k, first in self._changed:
            name = f"w:{first}:{k}"
            for s in self._sessions.get(k, ()):
                if s[0] == first:
                    state[name] = [s[1], s[2], s[3]]
                    break
            else:
                state[name] = DELETED
        self._changed = set()
        return state

    def _load(self, state: dict[str, Any]) -> None:
        self._sessions, self._heap, self._changed = {}, [], set()
        self._next_close = NEVER
        for name, value in state.items():
            kind, _, rest = name.partition(":")
            first_s, _, k = rest.partition(":")
            if kind != "w" or not first_s.lstrip("-").isdigit():
                raise ValueError(f"view {self.name!r}: state entry {name!r} is not a session")
            s: Sess = [int(first_s), value[0], value[1], value[2]]
            bisect.insort(self._sessions.setdefault(k, []), s, key=_first)
            self._schedule(k, s)


def _first(s: Sess) -> int:
    return int(s[0])
