"""The event index's rows in SQLite: ``index.sqlite3`` beside ``meta.sqlite3``.

The ``IndexStore`` seam of :mod:`tidings.core.eventindex`. Schema::

    parts     (tp INTEGER PRIMARY KEY AUTOINCREMENT, topic, partition, next_offset)
    gens      (n INTEGER PRIMARY KEY, rows)             generations, oldest first
    gen_parts (gen, tp, max_off)                        what each generation points into
    ids_<n>   (h, ts, seq, tp, off)  WITHOUT ROWID, key (h, ts, seq)   find by id
    corrs_<n> (c, ts, seq, tp, off)  WITHOUT ROWID, key (c, ts, seq)   an order's events
    runs_<n>  (p, lo, ts, seq, n, tp, off)  WITHOUT ROWID, key (p, lo, ts, seq)
              ids the hub made for a batch: n of them, at seq and off on, as one row

A run (:data:`~tidings.core.storage.IdRun`) is a batch's ids that count up from one
UUIDv7 in its last 32 bits: ``p`` is the hash of their shared first 28 characters,
``lo`` the first one's last 8 hex digits as a number; the id of number ``lo + k`` is
at ``off + k``, with seq ``seq + k``. A lookup of an id of that shape also asks the
runs of its prefix that reach it. One row instead of a thousand: each row is a
B-tree insert at a random key, most of what the index costs.

Rows go to the newest generation until it holds ``GENERATION_ROWS`` (a run counts
its ids), then to a new one. Keys are hashes, so inserts land at random places in
their B-tree: kept to a generation that fits in SQLite's page cache, each insert
touches pages in memory, and the rate stays flat however large the index grows (one
table for everything slowed as it outgrew the cache: 16,000 rows a second at 250,000
rows, 6,500 at 750,000, on the benchmark machine). A lookup asks every generation in
one statement (``UNION ALL``): one B-tree probe each.

Retention drops whole generations: once every partition a generation points into
has moved its first offset past the generation's highest offset there (or its topic
was deleted), the generation's tables go with one ``DROP`` each. A deleted topic's
``parts`` rows go at once (``tp`` numbers are never reused, AUTOINCREMENT), and
queries join ``parts``, so its rows are never answered. Rows are hints checked
against the log (see :mod:`tidings.core.eventindex`), so a row left pointing past a
log's end by a power cut is never answered either.

Its own file, so index writes never queue group positions behind them.
``synchronous=NORMAL`` whatever the log's policy: the index is a cache of the log;
a power cut that takes back its last commits takes back their offsets with them,
and those records are indexed again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from tidings.backends.embedded.sqlite import connect
from tidings.core.storage import IdRun, IndexRow
from tidings.errors import StorageUnavailable

GENERATION_ROWS = 200_000  # rows a generation takes: its B-trees stay in the cache
COMPOUND = 400  # generations one lookup statement asks (SQLite's limit is 500 terms)
CACHE_KIB = 64 * 1024  # SQLite's page cache for the writer, in KiB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS parts (
    tp INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL, UNIQUE (topic, partition));
CREATE TABLE IF NOT EXISTS gens (n INTEGER PRIMARY KEY, rows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS gen_parts (
    gen INTEGER NOT NULL, tp INTEGER NOT NULL, max_off INTEGER NOT NULL,
    PRIMARY KEY (gen, tp)) WITHOUT ROWID;
"""


def _create_generation(db: sqlite3.Connection, n: int) -> None:
    db.execute(
        f"CREATE TABLE ids_{n} (h INTEGER NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL,"
        " tp INTEGER NOT NULL, off INTEGER NOT NULL, PRIMARY KEY (h, ts, seq)) WITHOUT ROWID"
    )
    db.execute(
        f"CREATE TABLE corrs_{n} (c INTEGER NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL,"
        " tp INTEGER NOT NULL, off INTEGER NOT NULL, PRIMARY KEY (c, ts, seq)) WITHOUT ROWID"
    )
    _create_runs(db, n)
    db.execute("INSERT INTO gens (n, rows) VALUES (?, 0)", (n,))


def _create_runs(db: sqlite3.Connection, n: int) -> None:
    # IF NOT EXISTS: an index made before runs has generations without this table.
    db.execute(
        f"CREATE TABLE IF NOT EXISTS runs_{n} (p INTEGER NOT NULL, lo INTEGER NOT NULL,"
        " ts INTEGER NOT NULL, seq INTEGER NOT NULL, n INTEGER NOT NULL, tp INTEGER NOT NULL,"
        " off INTEGER NOT NULL, PRIMARY KEY (p, lo, ts, seq)) WITHOUT ROWID"
    )


class SqliteIndex:
    """Index rows in ``path``: one connection writes, another reads (WAL lets both run)."""

    def __init__(self, path: Path, generation_rows: int = GENERATION_ROWS) -> None:
        # Nothing is opened here: the file is made by load(), in the index's thread,
        # and a hub whose index cannot be opened (a full disk) still starts.
        self.path = path
        self.generation_rows = generation_rows
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None
        self._tps: dict[tuple[str, int], int] = {}
        self._gens: list[int] = []  # oldest first; the last takes rows
        self._gen_rows = 0
        self._seq = 0
        self._reader_gens: tuple[int, ...] = ()
        self._id_sql: list[str] = []
        self._corr_sql: list[str] = []
        self._run_sql: list[str] = []
        self._looking_for = "id"

    # -- writing (one thread) ---------------------------------------------------------

    def _open(self) -> None:
        try:
            if self._w is None:
                w = connect(self.path, "NORMAL", any_thread=True)
                try:
                    w.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
                    w.executescript(_SCHEMA)
                except sqlite3.Error:
                    w.close()
                    raise
                self._w = w
            if self._r is None:
                self._r = connect(self.path, "NORMAL", any_thread=True)
                self._r.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"cannot open the event index: {exc}") from exc

    @property
    def _db(self) -> sqlite3.Connection:
        if self._w is None:
            raise StorageUnavailable("the event index is not open")
        return self._w

    def load(self) -> dict[tuple[str, int], int]:
        self._open()
        db = self._db
        rows = db.execute("SELECT tp, topic, partition, next_offset FROM parts").fetchall()
        self._tps = {(t, p): tp for tp, t, p, _ in rows}
        self._gens = [n for (n,) in db.execute("SELECT n FROM gens ORDER BY n")]
        try:
            with _transaction(db):
                if not self._gens:
                    _create_generation(db, 1)
                    self._gens = [1]
                for n in self._gens:
                    _create_runs(db, n)
        except sqlite3.Error as exc:
            self._gens = []
            raise StorageUnavailable(f"cannot open the event index: {exc}") from exc
        newest = self._gens[-1]
        [(self._gen_rows,)] = db.execute("SELECT rows FROM gens WHERE n = ?", (newest,))
        seq = 0  # the newest generation with rows holds the highest (an empty one may follow)
        for n in reversed(self._gens):
            [(seq,)] = db.execute(
                f"SELECT MAX((SELECT COALESCE(MAX(seq), 0) FROM ids_{n}),"
                f" (SELECT COALESCE(MAX(seq + n - 1), 0) FROM runs_{n}))"
            )
            if seq:
                break
        self._seq = int(seq)
        return {(t, p): n for _, t, p, n in rows}

    def _tp(self, topic: str, partition: int, next_offset: int) -> int:
        tp = self._tps.get((topic, partition))
        if tp is None:
            cur = self._db.execute(
                "INSERT INTO parts (topic, partition, next_offset) VALUES (?, ?, ?)",
                (topic, partition, next_offset),
            )
            tp = self._tps[(topic, partition)] = int(cur.lastrowid or 0)
        return tp

    def add(
        self, parts: Sequence[tuple[str, int, int, Sequence[IndexRow], Sequence[IdRun]]]
    ) -> None:
        db = self._db
        saved = (dict(self._tps), list(self._gens), self._gen_rows, self._seq)
        try:
            with _transaction(db):
                if self._gen_rows >= self.generation_rows:
                    n = self._gens[-1] + 1
                    _create_generation(db, n)
                    self._gens.append(n)
                    self._gen_rows = 0
                gen = self._gens[-1]
                ids: list[tuple[int, int, int, int, int]] = []
                corrs: list[tuple[int, int, int, int, int]] = []
                runs: list[tuple[int, int, int, int, int, int, int]] = []
                seq = self._seq
                counted = 0  # ids, those of runs too
                for topic, partition, next_offset, rows, id_runs in parts:
                    tp = self._tp(topic, partition, next_offset)
                    for off, ts, h, c in rows:
                        seq += 1
                        ids.append((h, ts, seq, tp, off))
                        if c is not None:
                            corrs.append((c, ts, seq, tp, off))
                    for off, ts, prefix, low, count in id_runs:
                        runs.append((prefix, low, ts, seq + 1, count, tp, off))
                        seq += count
                        counted += count
                    if rows or id_runs:
                        last = max([r[0] for r in rows[-1:]] + [r[0] + r[4] - 1 for r in id_runs])
                        db.execute(
                            "INSERT INTO gen_parts (gen, tp, max_off) VALUES (?, ?, ?) "
                            "ON CONFLICT (gen, tp) DO UPDATE SET "
                            "max_off = MAX(max_off, excluded.max_off)",
                            (gen, tp, last),
                        )
                    db.execute(
                        "UPDATE parts SET next_offset = ? WHERE tp = ?", (next_offset, tp)
                    )
                db.executemany(f"INSERT INTO ids_{gen} VALUES (?, ?, ?, ?, ?)", ids)
                db.executemany(f"INSERT INTO corrs_{gen} VALUES (?, ?, ?, ?, ?)", corrs)
                db.executemany(f"INSERT INTO runs_{gen} VALUES (?, ?, ?, ?, ?, ?, ?)", runs)
                counted += len(ids)
                db.execute("UPDATE gens SET rows = rows + ? WHERE n = ?", (counted, gen))
            self._seq = seq
            self._gen_rows += counted
        except sqlite3.Error as exc:
            self._tps, self._gens, self._gen_rows, self._seq = saved
            raise StorageUnavailable(f"event index not written: {exc}") from exc

    def forget(self, topic: str) -> None:
        try:
            with _transaction(self._db):
                self._db.execute("DELETE FROM parts WHERE topic = ?", (topic,))
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"event index not written: {exc}") from exc
        for key in [k for k in self._tps if k[0] == topic]:
            del self._tps[key]

    def trim(self, topic: str, partition: int, start: int, end: int) -> None:
        """Rows below ``start`` are never answered (each is checked against the log) and
        go with whole generations; rows from ``end`` on (a tail the log lost to a power
        cut, whose offsets new records take again) are deleted here, or a retried
        publish would be found twice. What else is trimmed is the offset to go on from."""
        tp = self._tps.get((topic, partition))
        if tp is None:
            return
        try:
            with _transaction(self._db):
                [(indexed,)] = self._db.execute(
                    "SELECT next_offset FROM parts WHERE tp = ?", (tp,)
                ).fetchall() or [(0,)]
                if end < indexed:  # rare: after a cut tail; a scan of each generation
                    for n in self._gens:
                        for table in (f"ids_{n}", f"corrs_{n}", f"runs_{n}"):
                            self._db.execute(
                                f"DELETE FROM {table} WHERE tp = ? AND off >= ?", (tp, end)
                            )
                        self._db.execute(  # a run that reaches past the end: cut short
                            f"UPDATE runs_{n} SET n = ?2 - off WHERE tp = ?1 AND off + n > ?2",
                            (tp, end),
                        )
                self._db.execute(
                    "UPDATE parts SET next_offset = MIN(MAX(next_offset, ?), ?) WHERE tp = ?",
                    (start, end, tp),
                )
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"event index not written: {exc}") from exc

    def prune(self, starts: Mapping[tuple[str, int], int]) -> int:
        """Drop the generations whose every row points below its partition's first
        offset (or into a deleted topic); the newest always stays. How many went."""
        db = self._db
        first = {self._tps[k]: s for k, s in starts.items() if k in self._tps}
        dropped = 0
        for n in self._gens[:-1]:
            spans = db.execute("SELECT tp, max_off FROM gen_parts WHERE gen = ?", (n,)).fetchall()
            if any(tp in first and max_off >= first[tp] for tp, max_off in spans):
                continue  # live: kept; a later generation may be all stale already
            try:
                with _transaction(db):
                    db.execute(f"DROP TABLE ids_{n}")
                    db.execute(f"DROP TABLE corrs_{n}")
                    db.execute(f"DROP TABLE IF EXISTS runs_{n}")
                    db.execute("DELETE FROM gens WHERE n = ?", (n,))
                    db.execute("DELETE FROM gen_parts WHERE gen = ?", (n,))
            except sqlite3.Error as exc:
                raise StorageUnavailable(f"event index not pruned: {exc}") from exc
            self._gens.remove(n)
            dropped += 1
        return dropped

    # -- reading (another thread) -----------------------------------------------------

    def _statements(self) -> list[str]:
        """A lookup over every generation there is now, a statement per ``COMPOUND``
        generations (SQLite takes at most 500 terms in one compound SELECT)."""
        if self._r is None:
            raise StorageUnavailable("the event index is not open")
        gens = tuple(n for (n,) in self._r.execute("SELECT n FROM gens ORDER BY n"))
        if gens != self._reader_gens:
            self._reader_gens = gens
            chunks = [gens[i : i + COMPOUND] for i in range(0, len(gens), COMPOUND)]
            self._id_sql = [_lookup_sql("ids", "h = ?1", chunk) for chunk in chunks]
            self._corr_sql = [
                _lookup_sql("corrs", "c = ?1 AND (ts, seq) > (?2, ?3)", chunk) for chunk in chunks
            ]
            self._run_sql = [_run_lookup_sql(chunk) for chunk in chunks]
        if self._looking_for == "run":
            return self._run_sql
        return self._id_sql if self._looking_for == "id" else self._corr_sql

    def _query(self, which: str, params: tuple[int, ...]) -> list[tuple[int, int, str, int, int]]:
        """``(ts, seq, topic, partition, offset)`` in publish order, at most the limit
        (the last parameter)."""
        self._looking_for = which
        for _ in range(3):
            try:
                rows: list[tuple[int, int, str, int, int]] = []
                for sql in self._statements():
                    assert self._r is not None  # _statements() checked
                    rows += self._r.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                self._reader_gens = ()  # a generation was dropped meanwhile: look again
                continue
            rows.sort(key=lambda r: (r[0], r[1]))
            return rows[: params[-1]]
        raise StorageUnavailable("event index: generations kept changing under a lookup")

    def by_id(
        self, id_hash: int, limit: int, run: tuple[int, int] | None = None
    ) -> list[tuple[str, int, int]]:
        rows = self._query("id", (id_hash, limit))
        if run is not None:
            rows += self._query("run", (*run, limit))
            rows.sort(key=lambda r: (r[0], r[1]))
        return [(t, p, o) for _, _, t, p, o in rows[:limit]]

    def by_correlation(
        self, corr_hash: int, after: tuple[int, int] | None, limit: int
    ) -> list[tuple[int, int, str, int, int]]:
        ts, seq = after if after is not None else (-(1 << 62), -1)
        return self._query("corr", (corr_hash, ts, seq, limit))

    def close(self) -> None:
        for db in (self._r, self._w):
            if db is not None:
                db.close()


def _lookup_sql(table: str, where: str, gens: Sequence[int]) -> str:
    """One lookup over ``gens``: each generation's first rows in key order, merged.
    The limit is the last parameter (?2 for ids, ?4 for correlations)."""
    limit = "?2" if table == "ids" else "?4"
    terms = " UNION ALL ".join(
        f"SELECT * FROM (SELECT ts, seq, tp, off FROM {table}_{n} WHERE {where}"
        f" ORDER BY ts, seq LIMIT {limit})"
        for n in gens
    )
    return (
        f"SELECT x.ts, x.seq, p.topic, p.partition, x.off FROM ({terms}) x "
        f"JOIN parts p ON p.tp = x.tp ORDER BY x.ts, x.seq LIMIT {limit}"
    )


def _run_lookup_sql(gens: Sequence[int]) -> str:
    """The ids in runs: ?1 the prefix's hash, ?2 the id's last 8 hex digits as a
    number, ?3 the limit; each as a row of its own, at its seq and offset in its run."""
    terms = " UNION ALL ".join(
        f"SELECT * FROM (SELECT ts, seq + (?2 - lo) AS seq, tp, off + (?2 - lo) AS off"
        f" FROM runs_{n} WHERE p = ?1 AND lo <= ?2 AND lo + n > ?2 ORDER BY ts, seq LIMIT ?3)"
        for n in gens
    )
    return (
        f"SELECT x.ts, x.seq, p.topic, p.partition, x.off FROM ({terms}) x "
        f"JOIN parts p ON p.tp = x.tp ORDER BY x.ts, x.seq LIMIT ?3"
    )


class _transaction:
    """BEGIN … COMMIT, or ROLLBACK when the body raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:
            self.db.execute("ROLLBACK")
