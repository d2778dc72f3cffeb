"""The event index's rows in SQLite: ``index.sqlite3`` beside ``meta.sqlite3``.

The ``IndexStore`` seam of :mod:`tidings.core.eventindex`. Schema::

    parts   (tp INTEGER PRIMARY KEY AUTOINCREMENT, topic, partition, next_offset)
    events  (seq INTEGER PRIMARY KEY, tp, off, ts, h, c)
      events_id   (h)                       find by id
      events_corr (c, ts, seq) WHERE c IS NOT NULL   an order's events, in publish order
      events_pos  (tp, off)                 retention, a lost tail, a deleted topic

A row is 8-byte hashes and integers, never the id or the event: about 100 bytes
a record with its three indexes. ``tp`` numbers a (topic, partition) and is never
reused (AUTOINCREMENT), so rows left behind by a deleted topic, which no
``parts`` row names any more, can never be taken for a new topic's: queries join
``parts`` and do not see them, and :meth:`SqliteIndex.forget` deletes them.

Its own file, so index writes (thousands of rows a second, one transaction per
round) never queue group positions behind them. ``synchronous=NORMAL`` whatever
the log's policy: the index is a cache of the log; a power cut that takes back its
last commits takes back their offsets with them, and those records are indexed
again.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from tidings.backends.embedded.sqlite import connect
from tidings.core.storage import IndexRow
from tidings.errors import StorageUnavailable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS parts (
    tp INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL, UNIQUE (topic, partition));
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, tp INTEGER NOT NULL, off INTEGER NOT NULL, ts INTEGER NOT NULL,
    h INTEGER NOT NULL, c INTEGER);
CREATE INDEX IF NOT EXISTS events_id ON events (h);
CREATE INDEX IF NOT EXISTS events_corr ON events (c, ts, seq) WHERE c IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_pos ON events (tp, off);
"""


class SqliteIndex:
    """Index rows in ``path``: one connection writes, another reads (WAL lets both run)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._w = connect(path, "NORMAL", any_thread=True)
        self._w.executescript(_SCHEMA)
        self._r = connect(path, "NORMAL", any_thread=True)
        self._r.execute("PRAGMA query_only=ON")
        self._tps: dict[tuple[str, int], int] = {}
        self._closing = threading.Lock()

    def load(self) -> dict[tuple[str, int], int]:
        rows = self._w.execute("SELECT tp, topic, partition, next_offset FROM parts").fetchall()
        self._tps = {(t, p): tp for tp, t, p, _ in rows}
        return {(t, p): n for _, t, p, n in rows}

    def _tp(self, topic: str, partition: int, next_offset: int) -> int:
        tp = self._tps.get((topic, partition))
        if tp is None:
            cur = self._w.execute(
                "INSERT INTO parts (topic, partition, next_offset) VALUES (?, ?, ?)",
                (topic, partition, next_offset),
            )
            tp = self._tps[(topic, partition)] = int(cur.lastrowid or 0)
        return tp

    def add(self, parts: Sequence[tuple[str, int, int, Sequence[IndexRow]]]) -> None:
        db = self._w
        try:
            db.execute("BEGIN")
            try:
                for topic, partition, next_offset, rows in parts:
                    tp = self._tp(topic, partition, next_offset)
                    db.executemany(
                        "INSERT INTO events (tp, off, ts, h, c) VALUES (?, ?, ?, ?, ?)",
                        [(tp, off, ts, h, c) for off, ts, h, c in rows],
                    )
                    db.execute(
                        "UPDATE parts SET next_offset = ? WHERE tp = ?", (next_offset, tp)
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._tps = {}  # tp numbers made in the rolled-back change are gone
                self.load()
                raise
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"event index not written: {exc}") from exc

    def forget(self, topic: str) -> None:
        db = self._w
        try:
            db.execute("BEGIN")
            db.execute(
                "DELETE FROM events WHERE tp IN (SELECT tp FROM parts WHERE topic = ?)", (topic,)
            )
            db.execute("DELETE FROM parts WHERE topic = ?", (topic,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StorageUnavailable(f"event index not written: {exc}") from exc
        for key in [k for k in self._tps if k[0] == topic]:
            del self._tps[key]

    def trim(self, topic: str, partition: int, start: int, end: int) -> None:
        tp = self._tps.get((topic, partition))
        if tp is None:
            return
        db = self._w
        try:
            db.execute("BEGIN")
            db.execute(
                "DELETE FROM events WHERE tp = ? AND (off < ? OR off >= ?)", (tp, start, end)
            )
            db.execute(
                "UPDATE parts SET next_offset = MIN(MAX(next_offset, ?), ?) WHERE tp = ?",
                (start, end, tp),
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StorageUnavailable(f"event index not written: {exc}") from exc

    def by_id(self, id_hash: int, limit: int) -> list[tuple[str, int, int]]:
        rows = self._r.execute(
            "SELECT p.topic, p.partition, e.off FROM events e JOIN parts p ON p.tp = e.tp "
            "WHERE e.h = ? ORDER BY e.ts, e.seq LIMIT ?",
            (id_hash, limit),
        ).fetchall()
        return [(t, p, o) for t, p, o in rows]

    def by_correlation(
        self, corr_hash: int, after: tuple[int, int] | None, limit: int
    ) -> list[tuple[int, int, str, int, int]]:
        ts, seq = after if after is not None else (-(1 << 62), -1)
        rows = self._r.execute(
            "SELECT e.ts, e.seq, p.topic, p.partition, e.off "
            "FROM events e INDEXED BY events_corr JOIN parts p ON p.tp = e.tp "
            "WHERE e.c = ? AND (e.ts, e.seq) > (?, ?) ORDER BY e.ts, e.seq LIMIT ?",
            (corr_hash, ts, seq, limit),
        ).fetchall()
        return [(a, b, t, p, o) for a, b, t, p, o in rows]

    def close(self) -> None:
        with self._closing:
            self._r.close()
            self._w.close()
