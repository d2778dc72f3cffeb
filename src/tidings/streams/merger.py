"""The merged order of a view's inputs: ``(appended_ms, input_index, partition, offset)``.

Each read of an input hands the merger its records and the read's horizon: every
record that will ever be readable later in the partitions read has
``appended_ms >= horizon``. The merger releases, in merged order, exactly the held
records below the least horizon over the inputs, and holds the rest. Live reads and
a replay from earliest release the same records in the same order, whatever the
reads' sizes and timing: that is why a replay computes what the live run computed.
An input that has not answered a read yet holds everything back (its records could
come first).
"""

from __future__ import annotations

from operator import itemgetter

from tidings.streams.types import InputRecord

__all__ = ["Merger"]

_APPENDED = itemgetter(3)


class Merger:
    """Holds the records read from ``inputs`` inputs until the horizon passes them.

    Records are kept per (input, partition), where they must come in offset order
    with append times that never go back (the log's guarantee; a record that breaks
    it raises ``ValueError``). A release cuts each buffer at the horizon and, when
    several had records, sorts the runs by append time: a stable sort of runs taken
    in (input, partition) order gives the merged order.
    """

    def __init__(self, inputs: int) -> None:
        if isinstance(inputs, bool) or not isinstance(inputs, int) or inputs < 1:
            raise ValueError(f"a merger needs a number of inputs, at least 1, not {inputs!r}")
        self._horizons: list[int | None] = [None] * inputs
        self._buffers: dict[tuple[int, int], list[InputRecord]] = {}
        self._last: dict[tuple[int, int], tuple[int, int]] = {}  # (offset, appended) taken in
        self._held = 0

    def add(self, input_index: int, records: list[InputRecord], horizon: int) -> None:
        """One read of input ``input_index``: its records and the horizon it answered."""
        if not 0 <= input_index < len(self._horizons):
            raise ValueError(
                f"input {input_index} is not one of the {len(self._horizons)} inputs"
            )
        buffers, last = self._buffers, self._last
        for rec in records:
            if rec[0] != input_index:
                raise ValueError(f"a record of input {rec[0]} in a read of input {input_index}")
            src = (input_index, rec[1])
            prev = last.get(src)
            if prev is not None and (rec[2] <= prev[0] or rec[3] < prev[1]):
                raise ValueError(
                    f"input {input_index} partition {rec[1]}: the record at offset {rec[2]} "
                    f"(appended {rec[3]}) comes after offset {prev[0]} (appended {prev[1]}): "
                    "offsets must grow and append times never go back"
                )
            last[src] = (rec[2], rec[3])
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
    """The index of the first record appended at or after ``horizon`` (binary search)."""
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
