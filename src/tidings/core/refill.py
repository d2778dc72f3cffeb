"""Refilling the dedupe window from the log at start-up, newest records first.

A producer whose publish was acknowledged just before the hub died retries it
after the restart; the window must still know its ids, however high the publish
rate was. The records of every partition of every topic are merged by append
time, newest first, and read until the window would hold no more
(``DedupeWindow.max_entries``, as many as the running hub kept) or until they are
older than the window: so what is refilled is what the hub remembered when it
stopped. The refill hands the event loop back after each chunk of records, so
the hub answers ``/healthz`` (and reads) meanwhile; publishes wait for it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Mapping, Sequence

import orjson

from tidings.core.dedupe import DedupeWindow
from tidings.core.skipping import read_past_damage
from tidings.core.storage import PartitionStore
from tidings.errors import TidingsError

logger = logging.getLogger("tidings.hub")

_CHUNK = 2_000  # records read at a time, backwards from a partition's end


class _Cursor:
    """One partition, read backwards a chunk at a time from its end."""

    __slots__ = ("hi", "p", "part", "topic")

    def __init__(self, topic: str, p: int, part: PartitionStore) -> None:
        self.topic, self.p, self.part = topic, p, part
        self.hi = part.end_offset

    async def chunk(self, since_ms: int) -> list[tuple[int, int, bytes]]:
        """The next records back from the end, oldest first, all after ``since_ms``
        (an empty list once there are none). A range lost to damage is stepped
        over: the chunks before it are read on."""
        part = self.part
        while self.hi > part.start_offset:
            hi = self.hi
            try:
                lo = max(part.start_offset, hi - _CHUNK)
                records: list[tuple[int, int, bytes]] = []
                offset = lo
                while offset < hi:
                    got, nxt, _ = await read_past_damage(part, self.p, offset, hi - offset, 1 << 18)
                    records.extend(r for r in got if r[0] < hi)
                    if nxt <= offset:
                        break
                    offset = nxt
            except (TidingsError, OSError) as exc:  # retention or a deletion meanwhile
                logger.error("dedupe window of %s/%d refilled in part: %s", self.topic, self.p, exc)
                self.hi = 0
                return []
            if records and records[0][1] <= since_ms:
                records = [r for r in records if r[1] > since_ms]
                self.hi = 0  # nothing older counts
            else:
                self.hi = lo
            if records or not self.hi:
                return records
        return []


class _Chunk:
    """What the window needs of one chunk of records: their offsets, times and ids."""

    __slots__ = ("cursor", "ids", "newest", "offsets", "times")

    def __init__(self, cursor: _Cursor, records: list[tuple[int, int, bytes]]) -> None:
        loads = orjson.loads
        self.cursor = cursor
        self.offsets = [r[0] for r in records]
        self.times = [r[1] for r in records]
        self.newest = self.times[-1]
        ids: list[str | None] = []
        for r in records:
            try:
                event_id = loads(r[2]).get("id")
            except orjson.JSONDecodeError:
                event_id = None
            ids.append(event_id if isinstance(event_id, str) else None)
        self.ids = ids


async def refill(
    window: DedupeWindow, partitions: Mapping[str, Sequence[PartitionStore]], now_ms: int
) -> int:
    """Remember the ids of the newest records of ``partitions`` (topic -> its partitions)
    within the window, up to about ``window.max_entries``; returns how many.

    Chunks are taken newest first by their newest record, across every partition;
    once enough are held, only chunks with a record newer than the oldest one that
    counts can matter, and the rest are never read.
    """
    since = now_ms - window.window_ms
    budget = window.max_entries
    heads: list[tuple[int, int, _Chunk]] = []
    seq = 0
    for topic, parts in partitions.items():
        for p, part in enumerate(parts):
            cursor = _Cursor(topic, p, part)
            records = await cursor.chunk(since)
            if records:
                heads.append((-records[-1][1], seq, _Chunk(cursor, records)))
                seq += 1
    heapq.heapify(heads)
    taken: list[_Chunk] = []
    held = 0
    floor = -1  # once ``budget`` are held: the time of the oldest of the newest
    while heads:
        _, k, chunk = heapq.heappop(heads)
        if chunk.newest < floor:
            break
        taken.append(chunk)
        held += len(chunk.ids)
        if floor < 0 and held >= budget:
            times = sorted(t for c in taken for t in c.times)
            floor = times[len(times) - budget]
        cursor = chunk.cursor
        if cursor.hi > cursor.part.start_offset:
            records = await cursor.chunk(since)
            if records:
                heapq.heappush(heads, (-records[-1][1], k, _Chunk(cursor, records)))
        await asyncio.sleep(0)
    n = 0
    # Oldest chunk first, roughly as they were remembered when they were published.
    for chunk in reversed(taken):
        cursor = chunk.cursor
        n += window.put_many(cursor.topic, cursor.p, chunk.offsets, chunk.times, chunk.ids, floor)
    return n
