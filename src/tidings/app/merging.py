"""The deterministic merge of a view's inputs by append time (streams design, section 1).

Records are released in the order ``(appended_ms, input_index, partition,
offset)`` once they are below the horizon: the lowest, over the inputs, of the
horizon each input's latest read answered. Live and replay release the same
records in the same order, whatever the reads' sizes and timing.
"""

from __future__ import annotations

import heapq
from typing import Any

__all__ = ["InputRecord", "Merger"]

#: (input_index, partition, offset, appended_ms, event)
InputRecord = tuple[int, int, int, int, dict[str, Any]]


class Merger:
    """Holds the records read from ``inputs`` inputs until the horizon passes them."""

    def __init__(self, inputs: int) -> None:
        if inputs < 1:
            raise ValueError("a merger needs at least one input")
        self._horizons: list[int | None] = [None] * inputs
        self._heap: list[tuple[int, int, int, int, dict[str, Any]]] = []

    def add(self, input_index: int, records: list[InputRecord], horizon: int) -> None:
        """One read of input ``input_index``: its records and the horizon it answered."""
        push, heap = heapq.heappush, self._heap
        for i, p, o, ms, ev in records:
            push(heap, (ms, i, p, o, ev))
        known = self._horizons[input_index]
        if known is None or horizon > known:
            self._horizons[input_index] = horizon

    @property
    def horizon(self) -> int | None:
        """The lowest horizon over the inputs; None until each has answered once."""
        hs = self._horizons
        if any(h is None for h in hs):
            return None
        return min(h for h in hs if h is not None)

    def ready(self) -> list[InputRecord]:
        """The records held below the horizon, in merged order; they are let go."""
        h = self.horizon
        heap = self._heap
        if h is None or not heap:
            return []
        pop = heapq.heappop
        out: list[InputRecord] = []
        while heap and heap[0][0] < h:
            ms, i, p, o, ev = pop(heap)
            out.append((i, p, o, ms, ev))
        return out

    def holding(self) -> bool:
        """Whether records wait for the horizon."""
        return bool(self._heap)
