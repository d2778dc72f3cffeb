"""Which events each group has handled, for a window of time: the idempotency memory.

A redelivered event whose id a group has already handled (the ack was lost to a
crash, a restart or an expired lease) is acknowledged without running the
handler again. Ids live in memory, in insertion order, for ``window_ms``; with
a ``path`` they are also written to SQLite, so that the memory survives a
restart of the process. Writes are batched: :meth:`HandledIds.flush` commits
what was added since the last one, and the framework calls it before it acks,
and on a short interval while handlers run.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tidings.log.partition import Clock

__all__ = ["HandledIds"]

_SCHEMA = "CREATE TABLE IF NOT EXISTS handled (key TEXT PRIMARY KEY, at INTEGER NOT NULL)"


class HandledIds:
    """Per group, the ids handled within ``window_ms``; durable if given a ``path``."""

    def __init__(self, window_ms: int, clock: Clock, path: Path | None = None) -> None:
        self.window_ms = window_ms
        self.clock = clock
        self._seen: dict[str, int] = {}
        self._pending: list[tuple[str, int]] = []
        self._db: sqlite3.Connection | None = None
        if path is not None and window_ms > 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            since = clock.time_ms() - window_ms
            self._db.execute("DELETE FROM handled WHERE at < ?", (since,))
            rows = self._db.execute("SELECT key, at FROM handled ORDER BY at").fetchall()
            self._seen = dict(rows)

    @property
    def enabled(self) -> bool:
        return self.window_ms > 0

    @property
    def dirty(self) -> bool:
        return bool(self._pending)

    def seen(self, group: str, event_id: str) -> bool:
        at = self._seen.get(group + "/" + event_id)
        return at is not None and at >= self.clock.time_ms() - self.window_ms

    def add(self, group: str, event_id: str) -> None:
        key = group + "/" + event_id
        now = self.clock.time_ms()
        self._seen.pop(key, None)  # re-inserted at the end: the dict stays in time order
        self._seen[key] = now
        if self._db is not None:
            self._pending.append((key, now))

    def flush(self) -> None:
        """Commit the ids added since the last flush, and forget those out of the window."""
        since = self.clock.time_ms() - self.window_ms
        seen = self._seen
        # Oldest first: stop at the first id still inside the window.
        expired = []
        for key, at in seen.items():
            if at >= since:
                break
            expired.append(key)
        for key in expired:
            del seen[key]
        if self._db is None or not (self._pending or expired):
            return
        pending, self._pending = self._pending, []
        db = self._db
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO handled (key, at) VALUES (?, ?)", pending)
        if expired:
            db.execute("DELETE FROM handled WHERE at < ?", (since,))
        db.execute("COMMIT")

    def close(self) -> None:
        if self._db is not None:
            self.flush()
            self._db.close()
            self._db = None
