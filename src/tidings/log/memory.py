"""The storage interface in memory, for tests of the layers above the log."""

from __future__ import annotations

import asyncio
import bisect
import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from tidings.errors import OffsetOutOfRange, StorageUnavailable
from tidings.log.config import (
    Clock,
    GroupRow,
    GroupStats,
    LogRecord,
    Positions,
    Retention,
    SystemClock,
    WrongEnd,
)
from tidings.log.damage import Damage


class MemoryPartition:
    """A partition kept in a list; same contract as :class:`~tidings.log.partition.PartitionLog`."""

    def __init__(self, retention: Retention | None = None, clock: Clock | None = None) -> None:
        self.retention = retention or Retention()
        self.clock = clock or SystemClock()
        self._records: list[LogRecord] = []
        self._start = 0
        self._readers: list[asyncio.Future[None]] = []
        self._last_ts = -1  # append times never go back
        self.closed = False

    @property
    def start_offset(self) -> int:
        return self._start

    @property
    def end_offset(self) -> int:
        return self._start + len(self._records)

    @property
    def size_bytes(self) -> int:
        return sum(len(r[2]) for r in self._records)

    @property
    def damage(self) -> list[Damage]:
        """Memory is never damaged: always empty."""
        return []

    @property
    def failure(self) -> str | None:
        return None  # memory does not fill up the way a disk does

    def append(
        self,
        payloads: Sequence[bytes],
        timestamp_ms: int | None = None,
        ids: Sequence[str] | None = None,
        expect_end: int | None = None,
    ) -> asyncio.Future[int]:
        """``ids`` are not kept: the hub's dedupe window is all there is in memory."""
        if self.closed:
            raise StorageUnavailable("partition is closed")
        if expect_end is not None and expect_end != self.end_offset:
            raise WrongEnd(expect_end, self.end_offset)
        ts = max(self.clock.time_ms() if timestamp_ms is None else timestamp_ms, self._last_ts)
        self._last_ts = ts
        base = self.end_offset
        self._records.extend((base + i, ts, bytes(p)) for i, p in enumerate(payloads))
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        fut.set_result(base)
        readers, self._readers = self._readers, []
        for r in readers:
            if not r.done():
                r.set_result(None)
        return fut

    @property
    def last_ts(self) -> int:
        return self._last_ts

    def horizon(self, now_ms: int) -> int:
        """Every append is readable at once: ``now_ms``, below every later append time."""
        self._last_ts = max(self._last_ts, now_ms)
        return now_ms

    async def read(
        self, offset: int, max_records: int = 1000, max_bytes: int = 1 << 20
    ) -> list[LogRecord]:
        return self.read_now(offset, max_records, max_bytes)

    def read_now(
        self, offset: int, max_records: int = 1000, max_bytes: int = 1 << 20
    ) -> list[LogRecord]:
        if offset < self._start or offset > self.end_offset:
            raise OffsetOutOfRange(
                f"offset {offset} is outside [{self._start}, {self.end_offset}]",
                start=self._start,
                end=self.end_offset,
            )
        out: list[LogRecord] = []
        for rec in self._records[offset - self._start : offset - self._start + max_records]:
            if out and len(rec[2]) > max_bytes:
                break
            out.append(rec)
            max_bytes -= len(rec[2])
        return out

    async def offset_for_time(self, ts_ms: int) -> int:
        return self.offset_for_time_now(ts_ms)

    def offset_for_time_now(self, ts_ms: int) -> int:
        for rec in self._records:
            if rec[1] >= ts_ms:
                return rec[0]
        return self.end_offset

    async def wait(self, offset: int, timeout: float | None = None) -> bool:
        while self.end_offset <= offset and not self.closed:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._readers.append(fut)
            try:
                await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                break
        return self.end_offset > offset

    async def apply_retention(self, now_ms: int | None = None) -> int:
        return self.apply_retention_now(now_ms)

    def apply_retention_now(self, now_ms: int | None = None) -> int:
        now = self.clock.time_ms() if now_ms is None else now_ms
        removed = 0
        r = self.retention
        while self._records and (
            (r.max_age_ms is not None and self._records[0][1] < now - r.max_age_ms)
            or (r.max_bytes is not None and self.size_bytes > r.max_bytes)
        ):
            self._records.pop(0)
            self._start += 1
            removed += 1
        return removed


_Row = tuple[int, int, int, int | None]  # offset, time, id hash, correlationid hash
_Run = tuple[int, int, int, int, int]  # first offset, time, prefix hash, first low, count


class MemoryIndex:
    """The event index's rows in memory (the ``IndexStore`` seam of
    ``tidings.core.eventindex``); a lock, as a writer and a reader thread share it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[tuple[str, int], int] = {}
        self._seq = 0
        # hash -> sorted [(ts, seq, topic, partition, offset)]
        self._ids: dict[int, list[tuple[int, int, str, int, int]]] = {}
        self._corrs: dict[int, list[tuple[int, int, str, int, int]]] = {}
        # prefix hash -> [(first low, count, ts, first seq, topic, partition, first offset)]
        self._runs: dict[int, list[tuple[int, int, int, int, str, int, int]]] = {}

    def load(self) -> dict[tuple[str, int], int]:
        with self._lock:
            return dict(self._next)

    def add(self, parts: Sequence[tuple[str, int, int, Sequence[_Row], Sequence[_Run]]]) -> None:
        with self._lock:
            for topic, partition, next_offset, rows, runs in parts:
                for off, ts, h, c in rows:
                    self._seq += 1
                    row = (ts, self._seq, topic, partition, off)
                    bisect.insort(self._ids.setdefault(h, []), row)
                    if c is not None:
                        bisect.insort(self._corrs.setdefault(c, []), row)
                for off, ts, prefix, low, count in runs:
                    run = (low, count, ts, self._seq + 1, topic, partition, off)
                    self._runs.setdefault(prefix, []).append(run)
                    self._seq += count
                self._next[(topic, partition)] = next_offset

    def _drop(self, keep: Any) -> None:
        for table in (self._ids, self._corrs):
            for h in list(table):
                table[h] = [r for r in table[h] if keep(r)]
                if not table[h]:
                    del table[h]
        for h in list(self._runs):
            # A run stands for its ids: keep those ``keep`` keeps, as shorter runs.
            kept = []
            for low, count, ts, seq, topic, partition, off in self._runs[h]:
                start = None
                for k in range(count + 1):
                    if k < count and keep((ts, seq + k, topic, partition, off + k)):
                        start = k if start is None else start
                    elif start is not None:
                        n, at = k - start, off + start
                        kept.append((low + start, n, ts, seq + start, topic, partition, at))
                        start = None
            self._runs[h] = kept
            if not kept:
                del self._runs[h]

    def forget(self, topic: str) -> None:
        with self._lock:
            self._drop(lambda r: r[2] != topic)
            for key in [k for k in self._next if k[0] == topic]:
                del self._next[key]

    def trim(self, topic: str, partition: int, start: int, end: int) -> None:
        with self._lock:
            self._drop(lambda r: (r[2], r[3]) != (topic, partition) or start <= r[4] < end)
            key = (topic, partition)
            if key in self._next:
                self._next[key] = min(max(self._next[key], start), end)

    def prune(self, starts: Any) -> int:
        return 0  # trim drops a partition's rows as it goes

    def by_id(
        self, id_hash: int, limit: int, run: tuple[int, int] | None = None
    ) -> list[tuple[str, int, int]]:
        with self._lock:
            rows = list(self._ids.get(id_hash, []))
            if run is not None:
                prefix, wanted = run
                for low, count, ts, seq, topic, partition, off in self._runs.get(prefix, []):
                    if low <= wanted < low + count:
                        k = wanted - low
                        rows.append((ts, seq + k, topic, partition, off + k))
                rows.sort(key=lambda r: (r[0], r[1]))
            return [(r[2], r[3], r[4]) for r in rows[:limit]]

    def by_correlation(
        self, corr_hash: int, after: tuple[int, int] | None, limit: int
    ) -> list[tuple[int, int, str, int, int]]:
        with self._lock:
            rows = self._corrs.get(corr_hash, [])
            past = (after[0], after[1], "\U0010ffff") if after is not None else None
            i = 0 if past is None else bisect.bisect_right(rows, past)
            return list(rows[i : i + limit])

    def close(self) -> None:
        pass


class MemoryStorage:
    """Partitions and metadata in memory; nothing survives the process."""

    partition_type: type[MemoryPartition] = MemoryPartition  # what open_partition makes
    shared_dedupe = False  # one process: the hub's dedupe window is all there is

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self.hub_id = uuid.uuid4().hex  # a hub of its own, for as long as it lives
        self.partitions: dict[tuple[str, int], MemoryPartition] = {}
        self.topics: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, dict[str, Any]] = {}
        self.groups: dict[tuple[str, str], dict[str, Any]] = {}
        self.positions: dict[tuple[str, str], Positions] = {}
        self.stats: dict[tuple[str, str], GroupStats] = {}

    async def open_partition(
        self, topic: str, partition: int, retention: Retention
    ) -> MemoryPartition:
        part = self.partitions.get((topic, partition))
        if part is None:
            part = self.partitions[(topic, partition)] = self.partition_type(
                retention, self.clock
            )
        part.retention = retention
        return part

    def append_linked(
        self,
        topic: str,
        parts: Sequence[tuple[int, Sequence[bytes]]],
        ids: Sequence[Sequence[str]] | None = None,
    ) -> asyncio.Future[list[int]]:
        """Nothing in memory survives a crash, so the parts are simply appended together."""
        ts = max([self.clock.time_ms()] + [self.partitions[(topic, p)].last_ts for p, _ in parts])
        bases = [self.partitions[(topic, p)].end_offset for p, _ in parts]
        for p, payloads in parts:
            self.partitions[(topic, p)].append(payloads, ts)
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        fut.set_result(bases)
        return fut

    async def drop_topic(self, topic: str) -> None:
        for key in [k for k in self.partitions if k[0] == topic]:
            part = self.partitions.pop(key)
            part.closed = True
        self.topics.pop(topic, None)
        for gkey in [k for k in self.groups if k[0] == topic]:
            self.groups.pop(gkey)
            self.positions.pop(gkey, None)
            self.stats.pop(gkey, None)

    async def topic_changes(self) -> AsyncIterator[str]:
        """None: no other process shares these topics."""
        return
        yield

    async def load_topic(self, topic: str) -> dict[str, Any] | None:
        return (await self.load_topics()).get(topic)

    async def forget_topic(self, topic: str) -> None:
        """Nothing: no other process drops these topics."""

    async def load_topics(self) -> dict[str, dict[str, Any]]:
        return dict(self.topics)

    async def save_topic(self, topic: str, config: dict[str, Any]) -> None:
        self.topics[topic] = dict(config)

    async def load_schemas(self) -> dict[str, dict[str, Any]]:
        return dict(self.schemas)

    async def save_schemas(self, etype: str, entry: dict[str, Any]) -> None:
        self.schemas[etype] = dict(entry)

    async def load_groups(self) -> list[GroupRow]:
        return [
            (t, g, c, self.positions.get((t, g), {}), dict(self.stats.get((t, g), {})))
            for (t, g), c in self.groups.items()
        ]

    async def save_group(self, topic: str, group: str, config: dict[str, Any]) -> None:
        self.groups[(topic, group)] = dict(config)

    async def save_positions(
        self, topic: str, group: str, positions: Positions, stats: GroupStats | None = None
    ) -> None:
        self.positions[(topic, group)] = dict(positions)
        if stats is not None:
            self.stats[(topic, group)] = dict(stats)

    async def delete_group(self, topic: str, group: str) -> None:
        self.groups.pop((topic, group), None)
        self.positions.pop((topic, group), None)
        self.stats.pop((topic, group), None)

    async def compact(self, now_ms: int) -> int:
        """Memory keeps every record: a superset of the latest per key, all that a
        compacted topic promises. Removes nothing."""
        return 0

    def open_index(self) -> MemoryIndex:
        return MemoryIndex()

    async def close(self) -> None:
        for part in self.partitions.values():
            part.closed = True
