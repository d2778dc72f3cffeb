"""The log's settings and the values it hands up: fsync policy, retention, segment
layout, the clock it reads, a record, and a group's durable positions.

Imports only :mod:`tidings.errors`; imported by every module of ``log`` and by the
layers above, which name these types without opening a partition.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tidings.errors import BadRequest, Conflict

LogRecord = tuple[int, int, bytes]
"""(offset, timestamp in ms, payload)"""

Positions = dict[int, tuple[int, list[int | tuple[int, int]], list[tuple[int, int, int]]]]
"""A group's durable state: per partition, the committed offset, the offsets done above
it (each an int, or ``(first, end)`` for the run ``first`` to ``end - 1``; older
versions saved ints only), and ``(offset, deliveries, due_ms)`` of each record
delivered and not done yet."""

GroupStats = dict[str, Any]
"""A group's counters (delivered, redelivered, acked, dead_lettered, skipped_events) and
its latest skipped ranges, saved with its positions so that they outlive a restart."""

GroupRow = tuple[str, str, dict[str, Any], Positions, GroupStats]
"""(topic, group, config, positions, stats) as the metadata store keeps them."""


class Disk:
    """The seam under the log's durability: every fsync the log makes goes here.

    The log writes with plain ``os.write`` and asks this object only to make
    something durable: a file's data (:meth:`fdatasync`), a file's data and
    metadata (:meth:`fsync`), or a directory's entries (:meth:`fsync_dir`). A
    power-loss test swaps it (:func:`use_disk`) for one that notes what each
    call made durable, so that it can build what a machine that lost power at
    any instant could have kept. Writes need no seam: what was written and not
    yet made durable is the file as it stands minus what the last sync kept.
    """

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fsync_dir(self, path: str | os.PathLike[str]) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_disk = Disk()


def disk() -> Disk:
    """The :class:`Disk` the log syncs through now."""
    return _disk


def use_disk(new: Disk) -> Disk:
    """Make the log sync through ``new`` from now on; returns the one it replaces."""
    global _disk
    old, _disk = _disk, new
    return old


class FsyncStats:
    """How many fsyncs the log made and how long they took, for ``/metrics``."""

    __slots__ = ("count", "seconds")

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0

    def fdatasync(self, fd: int) -> None:
        start = time.perf_counter()
        _disk.fdatasync(fd)
        self.seconds += time.perf_counter() - start
        self.count += 1


FSYNC_STATS = FsyncStats()


class Clock(Protocol):
    def time_ms(self) -> int: ...


class SystemClock:
    def time_ms(self) -> int:
        return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class FsyncPolicy:
    """When an append is acknowledged.

    ``always``: after its bytes are fsynced. ``interval``: once written to the
    operating system (safe from a process crash), with an fsync at most
    ``interval_ms`` later (a power loss loses at most that window). ``never``:
    once written; the operating system flushes when it likes.
    """

    mode: Literal["always", "interval", "never"] = "interval"
    interval_ms: int = 50

    @classmethod
    def parse(cls, text: str) -> FsyncPolicy:
        text = text.strip()
        if text in ("always", "never"):
            return cls(text)  # type: ignore[arg-type]
        if text.startswith("interval:"):
            raw = text.removeprefix("interval:")
            if raw.isascii() and raw.isdigit() and int(raw) > 0:  # isdigit alone takes "²"
                return cls("interval", int(raw))
        raise BadRequest(
            f"fsync policy {text!r} is not one of 'always', 'interval:<ms>' (ms > 0), 'never'"
        )

    def __str__(self) -> str:
        return f"interval:{self.interval_ms}" if self.mode == "interval" else self.mode


DELETE_RETENTION_MS = 24 * 3600 * 1000
"""How long a compacted topic keeps a tombstone after its append, unless told otherwise."""

COMPACTION_MODES = ("none", "key")


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a topic keeps its records: whole segments go past either limit.

    ``compaction="key"`` also keeps only the latest record of each ``partitionkey``
    (see :mod:`tidings.log.compaction`), and a tombstone (a record without data)
    for ``delete_retention_ms`` after its append.
    """

    max_age_ms: int | None = None
    max_bytes: int | None = None
    compaction: str = "none"
    delete_retention_ms: int = DELETE_RETENTION_MS


@dataclass(frozen=True, slots=True)
class LogConfig:
    """How a partition lays out and keeps its segments."""

    segment_bytes: int = 64 * 1024 * 1024
    segment_ms: int | None = 7 * 24 * 3600 * 1000
    index_interval: int = 4096
    retention_ms: int | None = None
    retention_bytes: int | None = None
    compaction: str = "none"  # or "key": see tidings.log.compaction
    delete_retention_ms: int = DELETE_RETENTION_MS


class WrongEnd(Conflict):
    """An append with ``expect_end`` refused (``PartitionStore.append``): the partition
    ends at ``end``, not at ``expected``; nothing of the append is stored."""

    def __init__(self, expected: int, end: int) -> None:
        super().__init__(
            f"the partition ends at offset {end}, not {expected}", expected=expected, end=end
        )
        self.end = end
