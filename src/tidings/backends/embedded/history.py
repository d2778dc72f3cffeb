"""The metrics history on disk: ``history.sqlite3`` in the data directory (WAL mode).

A file of its own, beside ``meta.sqlite3``, so that a point written every
interval never queues group positions behind it. Layout::

    series (id INTEGER PRIMARY KEY, family TEXT, labels TEXT)   labels: a JSON array
    points (t INTEGER PRIMARY KEY, body BLOB)                   t: ms since the epoch

A point's body is zlib-compressed, little endian: ``<u32 n>``, then ``n`` series
ids in ascending order, each as its step from the one before (u32; the first from
0), then their ``n`` values (f64). Steps are mostly 1 and a quiet hub's rates are
0, so a point compresses well.

Each append is one transaction: the point, any new series, and the deletion of
points older than the history's span, so the file holds one span of points at
most (SQLite reuses the pages of deleted rows). Commits use ``synchronous=NORMAL``:
a killed process loses nothing committed; a power loss may take back the last
points, which are metrics, not acknowledged data. Series no point uses any more
are deleted at the next start and then hourly.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import orjson

from tidings.backends.embedded.sqlite import connect
from tidings.core.history import SeriesKey

logger = logging.getLogger("tidings.history")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY, family TEXT NOT NULL, labels TEXT NOT NULL,
    UNIQUE (family, labels));
CREATE TABLE IF NOT EXISTS points (t INTEGER PRIMARY KEY, body BLOB NOT NULL);
"""
_COUNT = struct.Struct("<I")
_PRUNE_EVERY_MS = 3_600_000


def encode(values: Mapping[int, float]) -> bytes:
    """A point's body: its values by series id."""
    ids = sorted(values)
    n = len(ids)
    steps = [b - a for a, b in zip([0, *ids], ids, strict=False)]  # mostly 1: compresses well
    raw = struct.pack(f"<I{n}I{n}d", n, *steps, *(values[i] for i in ids))
    return zlib.compress(raw, 6)


def decode(body: bytes) -> dict[int, float]:
    """A point's values by series id; ValueError if the body is not one :func:`encode` made."""
    try:
        raw = zlib.decompress(body)
        (n,) = _COUNT.unpack_from(raw)
        if len(raw) != _COUNT.size + 12 * n:
            raise ValueError(f"a point of {n} values has {len(raw)} bytes")
        steps = struct.unpack_from(f"<{n}I", raw, _COUNT.size)
        values = struct.unpack_from(f"<{n}d", raw, _COUNT.size + 4 * n)
    except (zlib.error, struct.error) as exc:
        raise ValueError(str(exc)) from exc
    return dict(zip(itertools.accumulate(steps), values, strict=True))


class SqliteHistoryStore:
    """:class:`~tidings.core.history.HistoryStore` in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # Loaded in a worker thread at start (the event loop goes on), then written
        # from the loop: one thread at a time.
        self._db = connect(self.path, "NORMAL", any_thread=True)
        self._db.executescript(_SCHEMA)
        self._ids: dict[SeriesKey, int] = {}
        self._last_used: dict[int, int] = {}  # series id -> its newest point
        self._next_prune_ms = 0
        for sid, family, labels in self._db.execute("SELECT id, family, labels FROM series"):
            self._ids[(family, tuple(orjson.loads(labels)))] = sid

    def load(self, since_ms: int) -> list[tuple[int, dict[SeriesKey, float]]]:
        keys = {sid: key for key, sid in self._ids.items()}
        out: list[tuple[int, dict[SeriesKey, float]]] = []
        rows = self._db.execute("SELECT t, body FROM points WHERE t >= ? ORDER BY t", (since_ms,))
        for t, body in rows.fetchall():
            try:
                values = decode(body)
            except ValueError as exc:
                logger.warning("%s: point at %d skipped: %s", self.path, t, exc)
                continue
            for sid in values:
                self._last_used[sid] = t
            out.append((t, {keys[sid]: v for sid, v in values.items() if sid in keys}))
        self._prune(since_ms)
        return out

    def append(
        self, t_ms: int, values: Mapping[SeriesKey, float], forget_before_ms: int
    ) -> None:
        made: dict[SeriesKey, int] = {}
        by_id: dict[int, float] = {}
        self._db.execute("BEGIN")
        try:
            for key, value in values.items():
                sid = self._ids.get(key)
                if sid is None:
                    cur = self._db.execute(
                        "INSERT INTO series (family, labels) VALUES (?, ?)",
                        (key[0], orjson.dumps(list(key[1])).decode()),
                    )
                    sid = made[key] = int(cur.lastrowid or 0)
                by_id[sid] = value
            self._db.execute(
                "INSERT OR REPLACE INTO points (t, body) VALUES (?, ?)", (t_ms, encode(by_id))
            )
            self._db.execute("DELETE FROM points WHERE t < ?", (forget_before_ms,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")  # the series it made are gone with it
            raise
        self._ids.update(made)
        for sid in by_id:
            self._last_used[sid] = t_ms
        if t_ms >= self._next_prune_ms:
            self._prune(forget_before_ms)
            self._next_prune_ms = t_ms + _PRUNE_EVERY_MS

    def _prune(self, before_ms: int) -> None:
        """Delete the series that no point from ``before_ms`` on uses."""
        gone = [sid for sid in self._ids.values() if self._last_used.get(sid, -1) < before_ms]
        if not gone:
            return
        self._db.execute("BEGIN")
        self._db.executemany("DELETE FROM series WHERE id = ?", [(sid,) for sid in gone])
        self._db.execute("COMMIT")
        dropped = set(gone)
        self._ids = {k: i for k, i in self._ids.items() if i not in dropped}
        for sid in gone:
            self._last_used.pop(sid, None)

    @property
    def size_bytes(self) -> int:
        """The database and its write-ahead log, on disk."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += Path(f"{self.path}{suffix}").stat().st_size
        return total

    def close(self) -> None:
        self._db.close()
