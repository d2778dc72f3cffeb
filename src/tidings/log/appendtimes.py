"""A partition's append times: they never go back, and the read horizon they give.

Each append is stamped with the clock's time, or the last time given if that is
later, so the times of a partition never go back even if the clock does. The
read horizon (:meth:`AppendTimes.horizon`) is a time every record that becomes
readable from now on is stamped at or after: the reads that merge partitions by
append time wait for it.
"""

from __future__ import annotations

from collections import deque


class AppendTimes:
    """The append times of one partition: the last given, and those not readable yet."""

    def __init__(self) -> None:
        self.last = -1  # the append time given last: the next one is at least this
        # The end offsets and times of appends not readable yet, oldest first.
        self._unread: deque[tuple[int, int]] = deque()

    def stamp(self, ts: int) -> int:
        """An append time: ``ts``, or the last one given if later (times never go back)."""
        self.last = max(ts, self.last)
        return self.last

    def queued(self, end: int, ts: int, readable_end: int) -> None:
        """An append stamped ``ts`` ending at ``end`` is queued; ``readable_end``: the
        partition's end offset now."""
        self._forget_read(readable_end)
        self._unread.append((end, ts))

    def refused(self) -> None:
        """Every append not readable yet was refused: none will ever be read."""
        self._unread.clear()

    def horizon(self, now_ms: int, readable_end: int) -> int:
        """A time H such that every record that becomes readable from now on has an
        append time of at least H: ``now_ms`` or the time of the oldest append given
        an offset but not readable yet (below ``readable_end`` is readable), if earlier.

        Appends from now on are stamped at least H, so H holds even if the clock
        goes back.
        """
        self._forget_read(readable_end)
        unread = self._unread
        h = min(now_ms, unread[0][1]) if unread else now_ms
        self.last = max(self.last, h)
        return h

    def _forget_read(self, readable_end: int) -> None:
        unread = self._unread
        while unread and unread[0][0] <= readable_end:
            unread.popleft()
