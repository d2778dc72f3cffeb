"""A set of offsets kept as ranges: what a consumer group has done above its
committed offset.

Acknowledgements out of order add single offsets; a gap a compaction by key
left (2,000,000 offsets, say) adds one range, so the state a gap costs does not
grow with its length. The ranges are sorted, half-open ``[first, end)``, and
never overlap or touch (adjacent ranges merge).

Saved form (:meth:`OffsetRanges.saved`): a list of offsets as ints and of
``[first, end]`` pairs for runs of three or more. A list of ints alone, the form
saved before ranges, loads as the same set.

Imports nothing of tidings; imported by :mod:`tidings.core.groups`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from typing import Any

SavedOffsets = list[int | tuple[int, int]]
"""Offsets as ints and runs as ``(first, end)``, as :meth:`OffsetRanges.saved` gives them."""

# Runs shorter than this are saved as ints: "3,4" is shorter than "[3,5]".
_RUN_SAVED_AS_RANGE = 3


class OffsetRanges:
    """A set of non-negative offsets, stored as sorted disjoint ranges."""

    __slots__ = ("_ends", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    @classmethod
    def load(cls, saved: Iterable[Any], *, at_least: int = 0) -> OffsetRanges:
        """The set :meth:`saved` gave (or an older list of ints), without offsets
        below ``at_least``; ValueError naming the entry that is neither."""
        spans: list[tuple[int, int]] = []
        for entry in saved:
            if isinstance(entry, int) and not isinstance(entry, bool):
                first, end = entry, entry + 1
            elif (
                isinstance(entry, (list, tuple))
                and len(entry) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in entry)
                and entry[0] < entry[1]
            ):
                first, end = entry
            else:
                raise ValueError(
                    f"a saved done offset must be an int or a [first, end] pair with"
                    f" first < end, not {entry!r}"
                )
            spans.append((max(first, at_least), end))
        # Sorted, then merged in one pass: an older list of millions of offsets
        # costs a sort, not one add() (a bisect and a list splice) per offset.
        spans.sort()
        out = cls()
        starts, ends = out._starts, out._ends
        for first, end in spans:
            if first >= end:
                continue
            if ends and first <= ends[-1]:
                ends[-1] = max(ends[-1], end)
            else:
                starts.append(first)
                ends.append(end)
        return out

    def saved(self) -> SavedOffsets:
        """The set as a compact list: ints, and ``(first, end)`` for runs of 3 or more."""
        out: SavedOffsets = []
        for first, end in zip(self._starts, self._ends, strict=True):
            if end - first >= _RUN_SAVED_AS_RANGE:
                out.append((first, end))
            else:
                out.extend(range(first, end))
        return out

    def copy(self) -> OffsetRanges:
        out = OffsetRanges()
        out._starts = self._starts.copy()
        out._ends = self._ends.copy()
        return out

    def __contains__(self, offset: object) -> bool:
        if not isinstance(offset, int):
            return False
        i = bisect_right(self._starts, offset) - 1
        return i >= 0 and offset < self._ends[i]

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """The ranges ``(first, end)``, in order."""
        return zip(self._starts, self._ends, strict=True)

    def __len__(self) -> int:
        """How many ranges (not offsets) the set holds: what it costs."""
        return len(self._starts)

    def count(self) -> int:
        """How many offsets the set holds."""
        return sum(e - s for s, e in self)

    @property
    def end(self) -> int | None:
        """One past the highest offset held, or None when empty."""
        return self._ends[-1] if self._ends else None

    def add(self, first: int, end: int) -> int:
        """Add the offsets ``first`` to ``end`` (not included); how many were not held."""
        if first >= end:
            return 0
        # The ranges that overlap or touch [first, end) are those from lo to hi - 1.
        lo = bisect_left(self._ends, first)
        hi = bisect_right(self._starts, end)
        held = sum(
            max(0, min(end, self._ends[i]) - max(first, self._starts[i])) for i in range(lo, hi)
        )
        added = end - first - held
        if lo < hi:
            first = min(first, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [first]
        self._ends[lo:hi] = [end]
        return added

    def pop_run(self, offset: int) -> int:
        """Where a position at ``offset`` moves to: past the run of held offsets that
        holds it. That run, and every offset below the new position, leaves the set."""
        i = bisect_right(self._starts, offset) - 1
        if i >= 0 and self._ends[i] > offset:
            offset = self._ends[i]
        below = bisect_right(self._ends, offset)
        del self._starts[:below]
        del self._ends[:below]
        return offset

    def drop_from(self, offset: int) -> bool:
        """Remove the offsets from ``offset`` on; whether any was held."""
        i = bisect_right(self._ends, offset)
        if i == len(self._ends):
            return False
        if self._starts[i] < offset:
            self._ends[i] = offset
            i += 1
        del self._starts[i:]
        del self._ends[i:]
        return True

    def clear(self) -> None:
        self._starts.clear()
        self._ends.clear()

    def __repr__(self) -> str:
        return f"OffsetRanges({list(self)!r})"

