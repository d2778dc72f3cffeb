"""The deterministic merge of a view's inputs by append time (streams design, section 1).

Records are released in the order ``(appended_ms, input_index, partition,
offset)`` once they are below the horizon: the lowest, over the inputs, of the
horizon each input's latest read answered. Live and replay release the same
records in the same order, whatever the reads' sizes and timing.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

__all__ = ["InputRecord", "Merger"]

#: (input_index, partition, offset, appended_ms, event)
InputRecord = tuple[int, int, int, int, dict[str, Any]]

_APPENDED = itemgetter(3)


class Merger:
    """Holds the records read from ``inputs`` inputs until the horizon passes them.

    Records are kept per (input, partition), where they come in offset order with
    append times that never go back (the log's guarantee); a release cuts each
    buffer at the horizon and, when several had records, sorts the runs by append
    time (a stable sort of runs taken in (input, partition) order gives the
    merged order)."""

    def __init__(self, inputs: int) -> None:
        if inputs < 1:
            raise ValueError("a merger needs at least one input")
        self._horizons: list[int | None] = [None] * inputs
        self._buffers: dict[tuple[int, int], list[InputRecord]] = {}
        self._held = 0

    def add(self, input_index: int, records: list[InputRecord], horizon: int) -> None:
        """One read of input ``input_index``: its records and the horizon it answered."""
        buffers = self._buffers
        for rec in records:
            src = (rec[0], rec[1])
            buf = buffers.get(src)
            if buf is None:
                buf = buffers[src] = []
            buf.append(rec)
        self._held += len(records)
        known = self._horizons[input_index]
        if known is None or horizon > known:
            self._horizons[input_index] = horizon

    @property
    def horizon(self) -> int | None:
        """The lowest horizon over the inputs; None until each has answered once."""
        least: int | None = None
        for h in self._horizons:
            if h is None:
                return None
            if least is None or h < least:
                least = h
        return least

    def ready(self) -> list[InputRecord]:
        """The records held below the horizon, in merged order; they are let go."""
        h = self.horizon
        if h is None or not self._held:
            return []
        out: list[InputRecord] = []
        runs = 0
        for src in sorted(self._buffers):
            buf = self._buffers[src]
            if not buf or buf[0][3] >= h:
                continue
            cut = _cut(buf, h)
            out.extend(buf[:cut])
            del buf[:cut]
            runs += 1
        if runs > 1:
            out.sort(key=_APPENDED)
        self._held -= len(out)
        return out

    def first_held(self, input_index: int, partition: int) -> int | None:
        """The offset of the first record held from this partition; None if none."""
        buf = self._buffers.get((input_index, partition))
        return buf[0][2] if buf else None

    def holding(self) -> bool:
        """Whether records wait for the horizon."""
        return self._held > 0


def _cut(buf: list[InputRecord], horizon: int) -> int:
    """The index of the first record appended at or after ``horizon``."""
    if buf[-1][3] < horizon:
        return len(buf)
    lo, hi = 0, len(buf)
    while lo < hi:
        mid = (lo + hi) // 2
        if buf[mid][3] < horizon:
            lo = mid + 1
        else:
            hi = mid
    return lo
