"""Refilling the dedupe window from the log at start-up, newest records first.

A producer whose publish was acknowledged just before the hub died retries it
after the restart; the window must still know its ids, however high the publish
rate was. The records of every partition of every topic are merged by append
time, newest first, and read until the window would hold no more
(``DedupeWindow.max_entries``, as many as the running hub kept) or until they are
older than the window: so what is refilled is what the hub remembered when it
stopped. The refill hands the event loop back every few thousand records, so
the hub answers ``/healthz`` (and reads) meanwhile; publishes wait for it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Iterator, Mapping, Sequence

import orjson

from tidings.core.dedupe import DedupeWindow
from tidings.core.storage import PartitionStore
from tidings.errors import TidingsError

logger = logging.getLogger("tidings.hub")

_CHUNK = 2_000  # records read at a time, backwards from a partition's end
_YIELD_EVERY = 4_096  # records between two turns given back to the event loop

Found = tuple[int, str, int, int, bytes]
"""(append time in ms, topic, partition, offset, payload)"""


def newest_first(topic: str, p: int, part: PartitionStore, since_ms: int) -> Iterator[Found]:
    """The records of one partition appended after ``since_ms``, newest first."""
    hi = part.end_offset
    try:
        while hi > part.start_offset:
            lo = max(part.start_offset, hi - _CHUNK)
            records: list[tuple[int, int, bytes]] = []
            offset = lo
            while offset < hi:
                got = part.read(offset, hi - offset, 1 << 24)
                if not got:
                    break
                records.extend(got)
                offset = got[-1][0] + 1
            for o, ts, payload in reversed(records):
                if o >= hi:
                    continue
                if ts <= since_ms:
                    return
                yield ts, topic, p, o, payload
            hi = lo
    except (TidingsError, OSError) as exc:  # damage, or retention or a deletion meanwhile
        logger.error("dedupe window of %s/%d refilled in part: %s", topic, p, exc)


async def refill(
    window: DedupeWindow, partitions: Mapping[str, Sequence[PartitionStore]], now_ms: int
) -> int:
    """Remember the ids of the newest records of ``partitions`` (topic -> its partitions)
    within the window, up to ``window.max_entries``; returns how many."""
    since = now_ms - window.window_ms
    streams = [
        newest_first(topic, p, part, since)
        for topic, parts in partitions.items()
        for p, part in enumerate(parts)
    ]
    found: list[tuple[int, str, str, int, int]] = []
    loads = orjson.loads
    for n, (ts, topic, p, o, payload) in enumerate(heapq.merge(*streams, reverse=True)):
        if n >= window.max_entries:
            break
        try:
            event_id = loads(payload).get("id")
        except orjson.JSONDecodeError:
            continue
        if isinstance(event_id, str):
            found.append((ts, topic, event_id, p, o))
        if n % _YIELD_EVERY == _YIELD_EVERY - 1:
            await asyncio.sleep(0)
    # Oldest first, as they were remembered when they were published.
    put = window.put
    for ts, topic, event_id, p, o in reversed(found):
        put(topic, event_id, p, o, ts)
    return len(found)
