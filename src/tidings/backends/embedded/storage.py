"""The embedded backend: partitions in the segment log, metadata in SQLite.

Layout of the data directory::

    tidings-data/
      meta.sqlite3                   the hub's id, topics, groups (positions, counters),
                                     schemas (WAL mode)
      index.sqlite3                  the event index: by id, by correlationid (see .eventindex)
      topics/<topic>/<partition>/    segments of one partition (see tidings.log.format)

SQLite commits follow the hub's fsync policy: ``synchronous=FULL`` under
``always``, ``NORMAL`` otherwise (WAL: safe from a process crash, and a power
loss may take back the last commits).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from tidings.backends.embedded.eventindex import SqliteIndex
from tidings.backends.embedded.sqlite import connect
from tidings.errors import CorruptLog, StorageUnavailable
from tidings.log.compaction import Compactor
from tidings.log.config import (
    Clock,
    FsyncPolicy,
    GroupRow,
    GroupStats,
    LogConfig,
    Positions,
    Retention,
    SystemClock,
)
from tidings.log.files import OpenFiles, SegmentFile
from tidings.log.linked import append_linked, resolve
from tidings.log.partition import PartitionLog
from tidings.log.segment import fsync_dir, make_dirs

logger = logging.getLogger("tidings.storage")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY, config TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (
    topic TEXT NOT NULL, name TEXT NOT NULL, config TEXT NOT NULL,
    positions TEXT NOT NULL DEFAULT '{}', stats TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (topic, name));
CREATE TABLE IF NOT EXISTS schemas (type TEXT PRIMARY KEY, entry TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hub (one INTEGER PRIMARY KEY CHECK (one = 1), id TEXT NOT NULL);
"""


class EmbeddedStorage:
    """Everything on local disk under ``data_dir``."""

    shared_dedupe = False  # one process: the hub's dedupe window is all there is

    def __init__(
        self,
        data_dir: str | Path,
        policy: FsyncPolicy | None = None,
        log_config: LogConfig | None = None,
        clock: Clock | None = None,
        files: OpenFiles | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        # One pool for every partition: the log's descriptors stay bounded however
        # many partitions there are (see tidings.log.files).
        self.files = OpenFiles() if files is None else files
        self.policy = policy or FsyncPolicy()
        self.log_config = log_config or LogConfig()
        self.clock = clock or SystemClock()
        make_dirs(self.data_dir / "topics", 2)  # durable before any partition in it
        self._db = connect(
            self.data_dir / "meta.sqlite3", "FULL" if self.policy.mode == "always" else "NORMAL"
        )
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(groups)")}
        if "stats" not in columns:  # a data directory from before group counters were kept
            self._db.execute("ALTER TABLE groups ADD COLUMN stats TEXT NOT NULL DEFAULT '{}'")
        self.hub_id = self._hub_id()
        self._remove_orphans()
        self.partitions: dict[tuple[str, int], PartitionLog] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._compactor = Compactor()
        self._sync_lock = asyncio.Lock()
        self._closed = False
        # Directories made and synced in their parents by a worker thread, not yet
        # opened (partitions), or for as long as the topic lasts (topics).
        self._synced_dirs: set[Path] = set()

    def _hub_id(self) -> str:
        """The id made the first time this data directory was opened, kept in its
        metadata: the hub's identity across restarts (see ``Storage.hub_id``)."""
        self._db.execute(
            "INSERT INTO hub (one, id) VALUES (1, ?) ON CONFLICT(one) DO NOTHING",
            (uuid.uuid4().hex,),
        )
        row = self._db.execute("SELECT id FROM hub WHERE one = 1").fetchone()
        return str(row[0])

    def _remove_orphans(self) -> None:
        """Delete topic directories that no metadata names: a deletion a crash cut
        short. Left there, a new topic of the same name would find their records."""
        known = {row[0] for row in self._db.execute("SELECT name FROM topics")}
        for directory in (self.data_dir / "topics").iterdir():
            if directory.is_dir() and directory.name not in known:
                logger.warning("removing %s: no topic of that name exists", directory)
                shutil.rmtree(directory, ignore_errors=True)

    # -- partitions --------------------------------------------------------------

    def _topic_dir(self, topic: str) -> Path:
        return self.data_dir / "topics" / topic

    async def open_partition(
        self, topic: str, partition: int, retention: Retention
    ) -> PartitionLog:
        directory = self._topic_dir(topic) / str(partition)
        if (
            (topic, partition) not in self.partitions
            and not self._closed
            and not directory.is_dir()
        ):
            # A new partition's directory is made and synced in its parent (and its
            # topic's, once) in a worker thread: a topic of a thousand partitions
            # would otherwise hold the loop for seconds of fsyncs.
            topic_synced = directory.parent in self._synced_dirs
            await asyncio.to_thread(make_dirs, directory, 1 if topic_synced else 2)
            self._synced_dirs.add(directory.parent)
            self._synced_dirs.add(directory)
        return self.open_partition_now(topic, partition, retention)

    def open_partition_now(self, topic: str, partition: int, retention: Retention) -> PartitionLog:
        """What :meth:`open_partition` does, at once (the embedded backend never waits)."""
        part = self._open_log(topic, partition, retention)
        if part.report.linked:
            # A publish over several partitions may have been cut short by a crash:
            # keep it only if whole, in this partition and the ones it names.
            try:
                resolve(part, lambda p: self._open_log(topic, p, retention))
            except (OSError, CorruptLog) as exc:
                raise StorageUnavailable(
                    f"cannot check the linked batches of partition {partition} of {topic!r}: "
                    f"{exc}"
                ) from exc
        return part

    def _open_log(self, topic: str, partition: int, retention: Retention) -> PartitionLog:
        if self._closed:
            raise StorageUnavailable("storage is closed")
        key = (topic, partition)
        config = LogConfig(
            segment_bytes=self.log_config.segment_bytes,
            segment_ms=self.log_config.segment_ms,
            index_interval=self.log_config.index_interval,
            retention_ms=retention.max_age_ms,
            retention_bytes=retention.max_bytes,
            compaction=retention.compaction,
            delete_retention_ms=retention.delete_retention_ms,
        )
        part = self.partitions.get(key)
        if part is not None:
            part.config = config
            return part
        directory = self._topic_dir(topic) / str(partition)
        try:
            part = PartitionLog.open(
                directory, config, self.policy, self.clock, self.files,
                synced=directory in self._synced_dirs,
            )  # fmt: skip
            self._synced_dirs.discard(directory)
        except OSError as exc:
            raise StorageUnavailable(
                f"cannot open partition {partition} of {topic!r}: {exc}"
            ) from exc
        self.partitions[key] = part
        if self.policy.mode == "interval" and self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_every_interval())
        return part

    def append_linked(
        self,
        topic: str,
        parts: Sequence[tuple[int, Sequence[bytes]]],
        ids: Sequence[Sequence[str]] | None = None,
    ) -> asyncio.Future[list[int]]:
        logs = [(p, self.partitions[(topic, p)], payloads) for p, payloads in parts]
        return append_linked(logs, self.clock.time_ms())

    async def drop_topic(self, topic: str) -> None:
        # Metadata first: a crash halfway leaves files nobody names, never a topic
        # that comes back empty with its old group positions.
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM topics WHERE name = ?", (topic,))
        self._db.execute("DELETE FROM groups WHERE topic = ?", (topic,))
        self._db.execute("COMMIT")
        gone = self._topic_dir(topic)
        self._synced_dirs = {d for d in self._synced_dirs if gone not in (d, d.parent)}
        async with self._sync_lock:
            for key in [k for k in self.partitions if k[0] == topic]:
                await self.partitions.pop(key).close()
        shutil.rmtree(self._topic_dir(topic), ignore_errors=True)
        fsync_dir(self.data_dir / "topics")

    async def _flush_every_interval(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.policy.interval_ms / 1000
        while not self._closed:
            await asyncio.sleep(interval)
            # Under the lock, so no partition closes while a thread fsyncs its file.
            async with self._sync_lock:
                dirty = [p for p in self.partitions.values() if p.dirty]
                # Segments rolled with linked parts in them since the last round: once
                # this round has synced every partition, their parts are all durable.
                marks = [m for p in self.partitions.values() for m in p.take_linked_marks()]
                # Pinned here, on the loop: no file is closed for room while the thread syncs.
                pinned = [(p, f) for p in dirty if (f := p.pin_active()) is not None]
                if pinned:
                    try:
                        await loop.run_in_executor(None, _sync_all, pinned)
                    except OSError:
                        # The partition that failed refuses appends from now on (503).
                        logger.exception("interval fsync failed")
                        marks = []  # kept: recovery checks those segments
                    finally:
                        for _, f in pinned:
                            f.unpin()
                for mark in marks:  # a removal a crash undoes costs a scan at start-up
                    mark.unlink(missing_ok=True)

    async def compact(self, now_ms: int) -> int:
        """A round of :class:`~tidings.log.compaction.Compactor` over the partitions of
        the topics compacted by key."""
        if self._closed:
            return 0
        topics: dict[str, dict[int, PartitionLog]] = {}
        for (topic, p), log in self.partitions.items():
            if log.config.compaction == "key":
                topics.setdefault(topic, {})[p] = log
        return await self._compactor.run_round(topics.values(), now_ms) if topics else 0

    # -- metadata ----------------------------------------------------------------

    async def topic_changes(self) -> AsyncIterator[str]:
        """None: no other process shares these topics."""
        return
        yield

    async def load_topic(self, topic: str) -> dict[str, Any] | None:
        return (await self.load_topics()).get(topic)

    async def forget_topic(self, topic: str) -> None:
        """Nothing: no other process drops these topics."""

    async def load_topics(self) -> dict[str, dict[str, Any]]:
        rows = self._db.execute("SELECT name, config FROM topics").fetchall()
        return {name: json.loads(config) for name, config in rows}

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        """One statement, its own transaction: a full disk refuses it whole (503)."""
        try:
            self._db.execute(sql, params)
        except sqlite3.OperationalError as exc:
            raise StorageUnavailable(f"metadata not saved: {exc}") from exc

    async def save_topic(self, topic: str, config: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO topics (name, config) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET config = excluded.config",
            (topic, json.dumps(config)),
        )

    async def load_schemas(self) -> dict[str, dict[str, Any]]:
        rows = self._db.execute("SELECT type, entry FROM schemas").fetchall()
        return {etype: json.loads(entry) for etype, entry in rows}

    async def save_schemas(self, etype: str, entry: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO schemas (type, entry) VALUES (?, ?) "
            "ON CONFLICT(type) DO UPDATE SET entry = excluded.entry",
            (etype, json.dumps(entry)),
        )

    async def load_groups(self) -> list[GroupRow]:
        rows = self._db.execute(
            "SELECT topic, name, config, positions, stats FROM groups"
        ).fetchall()
        return [
            (
                t,
                g,
                json.loads(c),
                {
                    int(p): (
                        v[0],
                        [o if isinstance(o, int) else tuple(o) for o in v[1]],
                        [tuple(r) for r in v[2]] if len(v) > 2 else [],
                    )
                    for p, v in orjson.loads(pos).items()
                },
                orjson.loads(stats),
            )
            for t, g, c, pos, stats in rows
        ]

    async def save_group(self, topic: str, group: str, config: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO groups (topic, name, config) VALUES (?, ?, ?) "
            "ON CONFLICT(topic, name) DO UPDATE SET config = excluded.config",
            (topic, group, json.dumps(config)),
        )

    async def save_positions(
        self, topic: str, group: str, positions: Positions, stats: GroupStats | None = None
    ) -> None:
        encoded = orjson.dumps({str(p): v for p, v in positions.items()}).decode()
        if stats is None:
            self._write(
                "UPDATE groups SET positions = ? WHERE topic = ? AND name = ?",
                (encoded, topic, group),
            )
        else:
            self._write(
                "UPDATE groups SET positions = ?, stats = ? WHERE topic = ? AND name = ?",
                (encoded, orjson.dumps(stats).decode(), topic, group),
            )

    async def delete_group(self, topic: str, group: str) -> None:
        self._write("DELETE FROM groups WHERE topic = ? AND name = ?", (topic, group))

    def open_index(self) -> SqliteIndex:
        return SqliteIndex(self.data_dir / "index.sqlite3")  # opened by its first load()

    # -- closing -----------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._sync_lock:
            if self._flusher is not None:
                self._flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._flusher
            try:
                for part in self.partitions.values():
                    try:
                        await part.close()
                    except Exception:  # a failed partition: close the others all the same
                        logger.exception("partition %s did not close cleanly", part.directory)
            finally:
                self._db.close()


def _sync_all(pinned: list[tuple[PartitionLog, SegmentFile]]) -> None:
    """fsync every pinned partition, even past one that fails: each was marked clean
    when pinned, so one skipped here would wait for its next write to be synced."""
    failed: OSError | None = None
    for p, f in pinned:
        try:
            p.sync(f)
        except OSError as exc:
            failed = failed or exc
    if failed is not None:
        raise failed
