"""The one narrow interface between the hub and where its log lives.

The core uses it; a backend implements it. The embedded backend
(``tidings.backends.embedded.storage``) keeps partitions in the segment log of
``tidings.log`` and metadata in SQLite; ``tidings.log.memory`` keeps both in
memory for tests. Another backend implements the same two protocols and owes
the hub what their docstrings list; nothing above the core changes.

Reads, metadata and opening a partition are coroutines, so a backend may make a
network round trip in each; the hub never assumes that no other task ran while
one was awaited. What stays synchronous a backend keeps current in memory: a
partition's offsets, size, damage, failure and ``horizon``, and the call of
``append`` (offsets are assigned then; only its durability is awaited).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import Any, Protocol

from tidings.log.config import GroupRow, GroupStats, LogRecord, Positions, Retention, WrongEnd
from tidings.log.damage import Damage

__all__ = [
    "Damage", "Deduplicated", "GroupRow", "GroupStats", "IdRun", "IndexRow", "IndexStore",
    "LogRecord", "PartitionStore", "Positions", "Retention", "Storage", "WrongEnd",
]  # fmt: skip


# One indexed record: (offset, append time in ms, hash of its id, hash of its
# correlationid or None). The hashes are :func:`tidings.core.indexrows.key_hash`.
IndexRow = tuple[int, int, int, int | None]
# Ids the hub made for one batch, all in one partition and without correlationids,
# as one row: (first offset, append time in ms, hash of the ids' shared first 28
# characters, the first id's last 8 hex digits as a number, how many). Id ``k`` of the
# run counts up ``k`` from the first in those digits and is at offset ``first + k``
# (see :func:`tidings.core.indexrows.run_key`).
IdRun = tuple[int, int, int, int, int]


class Deduplicated(int):
    """What an append given event ``ids`` answers when the backend (one with
    ``Storage.shared_dedupe``) found some of its records stored already under those
    ids, by this node or another: the int is the first record's offset, ``offsets``
    each record's, ``repeated`` whether each was stored before (nothing appended for
    it). An append whose records are all new answers a plain int."""

    offsets: tuple[int, ...]
    repeated: tuple[bool, ...]

    def __new__(cls, offsets: Sequence[int], repeated: Sequence[bool]) -> Deduplicated:
        self = super().__new__(cls, offsets[0])
        self.offsets = tuple(offsets)
        self.repeated = tuple(repeated)
        return self


class PartitionStore(Protocol):
    """One partition: an append-only sequence of records.

    What an implementation owes the hub:

    - Offsets are dense: ``append`` gives its records the next offsets at the
      moment it is called, so appends land in call order, and no offset is
      skipped or reused, across restarts too.
    - An append's awaitable resolves with its first offset only once its records
      are durable as the hub's policy asks (fsynced under ``always``); on failure
      it raises :class:`~tidings.errors.StorageUnavailable` and none of them is
      readable. An append is all or nothing.
    - A record is readable (``read``, ``wait``) only once its append resolved:
      no reader sees a record that a crash could take back.
    - ``read`` answers records in offset order from ``offset``, at least one if
      any is there (however large), else up to ``max_records``/``max_bytes``; an
      offset outside ``[start_offset, end_offset]`` raises
      :class:`~tidings.errors.OffsetOutOfRange`.
    - ``apply_retention`` removes records from the start only, moving
      ``start_offset`` on; it never changes a record that stays.
    - On a topic compacted by key, a record that a newer one of the same key
      made obsolete may be removed from inside the partition: its offset is a
      gap, never reused. ``read`` from a gap answers the records after it; the last
      record (``end_offset - 1``) is never removed.
    - Records lost to damage on disk are named in ``damage`` (offset ranges)
      and ``read`` steps over them: it answers the records after them, and
      nothing only when every offset from ``offset`` to the end is lost.
    - ``failure`` says why appends are refused (a write that failed: a full
      disk); None when they are taken. A failed partition still serves reads,
      and heals by itself once the cause goes: no restart.
    - ``append(..., expect_end=N)`` stores its records only if they land at offset
      ``N`` (the partition ends there as the store of record sees it, whichever
      process appended before): else it raises :class:`WrongEnd` naming the end,
      at the call or from the awaitable, and stores nothing. A compare and set
      that several processes sharing one backend may race on: exactly one wins.
    - Append times never go back within a partition (across restarts too), and
      ``horizon(now)`` answers a time H such that every record that becomes
      readable after the call has an append time of at least H: ``now``, or the
      time of the oldest append not readable yet, if earlier.
    """

    @property
    def start_offset(self) -> int: ...
    @property
    def end_offset(self) -> int: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def damage(self) -> Sequence[Damage]:
        """The bad ranges known so far, in offset order."""
        ...
    @property
    def failure(self) -> str | None: ...

    def append(
        self,
        payloads: Sequence[bytes],
        timestamp_ms: int | None = None,
        ids: Sequence[str] | None = None,
        expect_end: int | None = None,
    ) -> Awaitable[int]:
        """Assign offsets now; resolve with the first once durable by the hub's policy
        (only at ``expect_end``, if given: else :class:`WrongEnd`).

        ``ids``: the records' event ids, given only to a backend with
        ``Storage.shared_dedupe``, which stores a record whose id it holds (within its
        window) no more and answers a :class:`Deduplicated`; others ignore them."""
        ...

    async def read(
        self, offset: int, max_records: int = 1000, max_bytes: int = 1 << 20
    ) -> list[LogRecord]: ...

    async def offset_for_time(self, ts_ms: int) -> int:
        """The first offset whose append time is at or after ``ts_ms`` (the end if none)."""
        ...

    def horizon(self, now_ms: int) -> int:
        """The read horizon at hub time ``now_ms`` (see the class docstring)."""
        ...

    async def wait(self, offset: int, timeout: float | None = None) -> bool:
        """True once a record at ``offset`` is readable; False on timeout or close."""
        ...

    async def apply_retention(self, now_ms: int | None = None) -> int:
        """Remove what retention allows from the start; how many units (segments,
        records: the implementation's) went."""
        ...


class IndexStore(Protocol):
    """Where the event index (:mod:`tidings.core.eventindex`) keeps its rows.

    A row says that the record at ``(topic, partition, offset)`` has an id (and a
    correlationid) of a given hash. Rows are hints, never the truth: the index
    reads each record a row points at and checks the full value, so a row whose
    record is gone or different (retention, a deleted topic, a tail lost to a power
    cut) is skipped, never answered. What an implementation owes:

    - ``add`` stores its rows and each partition's new indexed-up-to offset as one
      change: after a crash, ``load`` answers offsets whose rows are all there.
    - ``by_id`` and ``by_correlation`` answer in publish order: append time, then
      the order rows were added. ``by_correlation`` continues after a cursor
      ``(time, seq)`` it gave.
    - ``forget`` drops a topic's offsets (its rows are never answered again); ``trim``
      moves one partition's offset into ``[start, end]``, and may drop its rows
      outside; ``prune`` drops rows retention has made useless.
    - Every method may be called from a worker thread (one writer, one reader).
    """

    def load(self) -> dict[tuple[str, int], int]:
        """The next offset to index, per partition indexed so far."""
        ...

    def add(
        self, parts: Sequence[tuple[str, int, int, Sequence[IndexRow], Sequence[IdRun]]]
    ) -> None:
        """``(topic, partition, next offset, rows, runs)`` for each partition, as one
        change. A run stands for a row per id it holds."""
        ...

    def forget(self, topic: str) -> None: ...
    def trim(self, topic: str, partition: int, start: int, end: int) -> None: ...

    def prune(self, starts: Mapping[tuple[str, int], int]) -> int:
        """Let go of rows below each partition's first offset (``starts``: every
        partition there is) and rows of partitions it does not name, as far as it
        can at low cost; how many units (rows, tables) went."""
        ...

    def by_id(
        self, id_hash: int, limit: int, run: tuple[int, int] | None = None
    ) -> list[tuple[str, int, int]]:
        """``(topic, partition, offset)`` of rows with this id hash, and of ids in runs
        that hold ``run`` (its :func:`~tidings.core.indexrows.run_key`), in publish order."""
        ...

    def by_correlation(
        self, corr_hash: int, after: tuple[int, int] | None, limit: int
    ) -> list[tuple[int, int, str, int, int]]:
        """``(time, seq, topic, partition, offset)`` past ``after``, in publish order."""
        ...

    def close(self) -> None: ...


class Storage(Protocol):
    """Partitions and the hub's metadata (topics, groups, their positions, schemas).

    What an implementation owes the hub: ``open_partition`` answers the same
    partition, with its records, for the same (topic, partition) however often
    it is called and after a restart; each ``save_*`` and ``delete_group`` is
    durable when it returns (under the hub's policy) and ``load_*`` answers the
    last one saved; ``append_linked`` is all or nothing across partitions;
    ``close`` lets queued appends finish before it returns; ``compact`` keeps, on
    the topics opened with ``Retention.compaction == "key"``, at least the latest
    record of each key and every record without one, at its offset (what else it
    removes, if anything, is the implementation's choice).

    ``hub_id`` names the hub this storage holds: made once when its data is
    first created and kept with it, so it is the same after a restart, and the
    same for every node that serves the same data (one backend shared by
    several processes); two stores of separate data never share one. Clients
    given several node URLs check it, so as never to carry a position of one
    hub's log to another.
    """

    hub_id: str
    # Whether appends given event ids deduplicate them in the storage itself, for
    # every node that shares it (see ``PartitionStore.append``): the hub then passes
    # the ids of publishes, and picks the partition of an event without a
    # ``partitionkey`` from its id, so a retry through any node lands where the
    # first did.
    shared_dedupe: bool

    async def open_partition(
        self, topic: str, partition: int, retention: Retention
    ) -> PartitionStore: ...

    def append_linked(
        self,
        topic: str,
        parts: Sequence[tuple[int, Sequence[bytes]]],
        ids: Sequence[Sequence[str]] | None = None,
    ) -> Awaitable[list[int]]:
        """Append ``(partition, payloads)`` to several open partitions of ``topic`` as one.
        ``ids``: each part's event ids, as ``PartitionStore.append`` takes them (a part's
        base is then a :class:`Deduplicated` where some of its records were stored before).

        Owes what :meth:`PartitionStore.append` owes, for the parts together: offsets
        are assigned at the call; the awaitable gives each part's base offset once all
        are durable; no part is readable before every one is, and whatever instant the
        process dies, every part survives or none does.
        """
        ...

    async def drop_topic(self, topic: str) -> None:
        """Close and delete every partition of ``topic`` and its metadata."""
        ...

    async def load_topics(self) -> dict[str, dict[str, Any]]: ...
    async def save_topic(self, topic: str, config: dict[str, Any]) -> None: ...

    def topic_changes(self) -> AsyncIterator[str]:
        """The topic of each change of topics' metadata after ``load_topics``, as it
        happens: another process that shares the storage (a node of the hub) may make
        it, and this one's own changes may come too. Ends at once where no other
        process shares the storage."""
        ...

    async def load_topic(self, topic: str) -> dict[str, Any] | None:
        """The topic's config as last saved by any process (None: there is none)."""
        ...

    async def forget_topic(self, topic: str) -> None:
        """Close what this process opened of a topic another process dropped (deleting
        it was that one's)."""
        ...

    async def load_groups(self) -> list[GroupRow]:
        """(topic, group, config, positions, stats) for every group."""
        ...

    async def save_group(self, topic: str, group: str, config: dict[str, Any]) -> None: ...
    async def save_positions(
        self, topic: str, group: str, positions: Positions, stats: GroupStats | None = None
    ) -> None:
        """The group's positions and, unless None, its counters, in one durable write."""
        ...

    async def delete_group(self, topic: str, group: str) -> None: ...

    async def load_schemas(self) -> dict[str, dict[str, Any]]:
        """Every event type's registry entry, as last saved (see
        :mod:`tidings.core.schemas.registry`)."""
        ...

    async def save_schemas(self, etype: str, entry: dict[str, Any]) -> None:
        """Keep ``entry`` (versions, compatibility, producers, consumers) for ``etype``,
        replacing what was there; durable when it returns, like ``save_topic``."""
        ...

    def open_index(self) -> IndexStore:
        """Where the event index keeps its rows (it owns them and closes them)."""
        ...

    async def compact(self, now_ms: int) -> int:
        """One bounded round of compaction by key (see :mod:`tidings.log.compaction`);
        how many records it removed."""
        ...

    async def close(self) -> None:
        """Finish queued appends, make everything durable, close."""
        ...
