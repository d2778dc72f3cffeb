"""The merged order of a view's inputs: ``(appended_ms, input_index, partition, offset)``.

Each read of an input topic hands the merger the records it got per partition and
the read's horizon: every record that will ever be readable later in those
partitions has ``appended_ms >= horizon``. The merger releases, in merged order,
exactly the buffered records below the least horizon over all its sources (the
input partitions this processor reads), and holds the rest. Live reads and a
replay from earliest release the same records in the same order, which is why a
replay computes what the live run computed.

A source that has not yet answered a read holds everything back: its records
could come first.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import itemgetter
from typing import Any

from tidings.streams.types import InputRecord

__all__ = ["Merger"]

_APPENDED = itemgetter(3)


class Merger:
    """Buffers per (input, partition) and releases records below the horizon, merged."""

    def __init__(self, sources: Iterable[tuple[int, int]]) -> None:
        self._sources = sorted(set(sources))
        if not self._sources:
            raise ValueError("a merger needs at least one (input, partition) source")
        self._buffers: dict[tuple[int, int], list[InputRecord]] = {s: [] for s in self._sources}
        self._horizons: dict[tuple[int, int], int | None] = dict.fromkeys(self._sources)
        # Per source: the next offset, and the append time of the last record taken in.
        self._next: dict[tuple[int, int], int | None] = dict.fromkeys(self._sources)
        self._last_appended: dict[tuple[int, int], int] = {}
        self._released: dict[tuple[int, int], int] = {}

    @property
    def sources(self) -> list[tuple[int, int]]:
        return list(self._sources)

    @property
    def horizon(self) -> int | None:
        """The least horizon over the sources; None until every source has answered."""
        least: int | None = None
        for h in self._horizons.values():
            if h is None:
                return None
            if least is None or h < least:
                least = h
        return least

    @property
    def held(self) -> int:
        """How many records wait for the horizon."""
        return sum(len(b) for b in self._buffers.values())

    def released_positions(self) -> dict[tuple[int, int], int]:
        """(input, partition) -> the next offset after the last record released."""
        return dict(self._released)

    def add(
        self,
        input_index: int,
        records: Iterable[tuple[int, int, int, dict[str, Any]]],
        horizon: int,
        partitions: Iterable[int],
    ) -> None:
        """One read of input ``input_index``: ``(partition, offset, appended_ms, event)``
        records, the read's ``horizon`` and the ``partitions`` it read.

        Records of a partition must come in offset order, after the ones given
        before, with append times that never go back (the log's guarantee).
        """
        for partition, offset, appended, event in records:
            src = (input_index, partition)
            buf = self._buffers.get(src)
            if buf is None:
                raise ValueError(f"input {input_index} partition {partition} is not a source")
            nxt = self._next[src]
            if nxt is not None and offset < nxt:
                raise ValueError(
                    f"input {input_index} partition {partition}: offset {offset} "
                    f"comes after {nxt - 1}"
                )
            last = self._last_appended.get(src)
            if last is not None and appended < last:
                raise ValueError(
                    f"input {input_index} partition {partition}: append time {appended} "
                    f"at offset {offset} is before {last}, the time of the record before"
                )
            self._last_appended[src] = appended
            self._next[src] = offset + 1
            buf.append((input_index, partition, offset, appended, event))
        for partition in partitions:
            src = (input_index, partition)
            if src not in self._horizons:
                raise ValueError(f"input {input_index} partition {partition} is not a source")
            h = self._horizons[src]
            if h is None or horizon > h:
                self._horizons[src] = horizon

    def ready(self) -> list[InputRecord]:
        """The held records below the horizon, in merged order; they leave the buffer."""
        horizon = self.horizon
        if horizon is None:
            return []
        out: list[InputRecord] = []
        runs = 0
        for src in self._sources:  # in (input, partition) order, for the stable sort
            buf = self._buffers[src]
            if not buf or buf[0][3] >= horizon:
                continue
            cut = _cut(buf, horizon)
            out.extend(buf[:cut])
            del buf[:cut]
            self._released[src] = out[-1][2] + 1
            runs += 1
        if runs > 1:
            # Each run is in offset order with append times that never go back, and the
            # runs are concatenated in (input, partition) order: a stable sort on the
            # append time alone gives (appended_ms, input, partition, offset).
            out.sort(key=_APPENDED)
        return out


def _cut(buf: list[InputRecord], horizon: int) -> int:
    """The index of the first record with ``appended_ms >= horizon`` (binary search)."""
    lo, hi = 0, len(buf)
    if buf[-1][3] < horizon:
        return hi
    while lo < hi:
        mid = (lo + hi) // 2
        if buf[mid][3] < horizon:
            lo = mid + 1
        else:
            hi = mid
    return lo
