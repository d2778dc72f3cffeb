"""Which events each group has handled, for a window of time: the idempotency memory.

A redelivered event whose id a group has already handled (the ack was lost to a
crash, a restart or an expired lease) is acknowledged without running the
handler again. Ids live in memory, in insertion order, for ``window_ms``; with
a ``path`` they are also written to SQLite, so that the memory survives a
restart of the process. Writes are batched: :meth:`HandledIds.flush` commits
what was added since the last one; the app calls it every 50 ms while ids
come in, and when it stops.

The memory matters for events handled and not acknowledged: an ack that
reached the hub already keeps the event from coming again. So an id need not
be durable before its ack; a crash between a handler's end and the next flush
may run that handler once more, which at-least-once delivery allows.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from tidings.log.config import Clock

__all__ = ["HandledIds"]

# One row per group per flush: the ids joined by newlines (an event id holds no
# control character, CloudEvents 1.0 "String") and the time of the newest. Rows are
# only read all at once at start-up, and deleted by age now and then; an id lives
# at most one flush longer than its window.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS handled (grp TEXT NOT NULL, at INTEGER NOT NULL, ids TEXT NOT NULL)"
)
_PRUNE_EVERY_MS = 60_000


@dataclass(frozen=True, slots=True)
class _Taken:
    """Ids taken to be written: per group, when, and the age below which rows go."""

    ids: dict[str, list[str]]
    at: int
    prune_before: int | None


class HandledIds:
    """Per group, the ids handled within ``window_ms``; durable if given a ``path``."""

    def __init__(self, window_ms: int, clock: Clock, path: Path | None = None) -> None:
        self.window_ms = window_ms
        self.clock = clock
        self._groups: dict[str, dict[str, int]] = {}
        self._pending: dict[str, list[str]] = {}  # group -> ids since the last flush
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._pruned_ms = clock.time_ms()
        if path is not None and window_ms > 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written from a worker thread too (App writes off the event loop), one
            # writer at a time under _lock.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            since = clock.time_ms() - window_ms
            self._db.execute("DELETE FROM handled WHERE at < ?", (since,))
            rows = self._db.execute("SELECT grp, at, ids FROM handled ORDER BY rowid").fetchall()
            for group, at, ids in rows:
                self.group(group).update(dict.fromkeys(ids.split("\n"), at))

    @property
    def enabled(self) -> bool:
        return self.window_ms > 0

    @property
    def dirty(self) -> bool:
        return any(self._pending.values())

    def group(self, group: str) -> dict[str, int]:
        """The ids ``group`` handled, each with when (ms); in time order."""
        ids = self._groups.get(group)
        if ids is None:
            ids = self._groups[group] = {}
        return ids

    def seen(self, ids: dict[str, int], event_id: str, now_ms: int) -> bool:
        at = ids.get(event_id)
        return at is not None and at >= now_ms - self.window_ms

    def pending(self, group: str) -> list[str] | None:
        """Where to append ids of ``group`` to be written, or None when nothing is."""
        if self._db is None:
            return None
        found = self._pending.get(group)
        if found is None:
            found = self._pending[group] = []
        return found

    def add(self, group: str, ids: dict[str, int], event_id: str, now_ms: int) -> None:
        ids.pop(event_id, None)  # re-inserted at the end: the dict stays in time order
        ids[event_id] = now_ms
        pending = self.pending(group)
        if pending is not None:
            pending.append(event_id)

    def flush(self) -> None:
        """Commit the ids added since the last flush, and forget those out of the window."""
        taken = self.take()
        if taken is not None:
            self.write(taken)

    def take(self) -> _Taken | None:
        """Forget the ids out of the window; take what is to be written (None: nothing).
        In the event loop's thread, where the consumers add ids."""
        since = self.clock.time_ms() - self.window_ms
        forgot = False
        for ids in self._groups.values():
            # Oldest first: stop at the first id still inside the window.
            expired = []
            for event_id, at in ids.items():
                if at >= since:
                    break
                expired.append(event_id)
            for event_id in expired:
                del ids[event_id]
            forgot = forgot or bool(expired)
        if self._db is None:
            return None
        prune = forgot and since - self._pruned_ms >= _PRUNE_EVERY_MS
        if not (self.dirty or prune):
            return None
        now = self.clock.time_ms()
        taken = {g: list(new) for g, new in self._pending.items() if new}
        for new in self._pending.values():
            new.clear()  # the same lists: consumers hold them
        if prune:
            self._pruned_ms = since
        return _Taken(taken, now, since if prune else None)

    def write(self, taken: _Taken) -> None:
        """Commit what :meth:`take` took; may run in another thread (one at a time). If it
        fails, the ids are pending again (written next time) and the error is raised."""
        rows = [(g, taken.at, "\n".join(new)) for g, new in taken.ids.items()]
        with self._lock:
            db = self._db
            if db is None:
                return
            try:
                db.execute("BEGIN")
                db.executemany("INSERT INTO handled (grp, at, ids) VALUES (?, ?, ?)", rows)
                if taken.prune_before is not None:
                    db.execute("DELETE FROM handled WHERE at < ?", (taken.prune_before,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                self.put_back(taken)
                raise

    def put_back(self, taken: _Taken) -> None:
        for g, kept in taken.ids.items():  # written next time
            self._pending.setdefault(g, [])[:0] = kept

    def close(self) -> None:
        if self._db is not None:
            self.flush()
            with self._lock:
                self._db.close()
                self._db = None
