"""Webhook endpoints, attempts and dead letters in ``webhooks.sqlite3`` (WAL mode).

A separate file from the hub's metadata: the attempts log takes thousands of
rows a second under load, and its writes must not queue behind group positions.
Endpoints and dead letters are committed at once; attempts come in batches.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tidings.backends.embedded.sqlite import connect
from tidings.core.webhooks.store import Attempt, WebhookDeadLetter, outcome_filter

_SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (id TEXT PRIMARY KEY, row TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, endpoint TEXT NOT NULL, time_ms INTEGER NOT NULL,
    msg_id TEXT NOT NULL, topic TEXT, partition INTEGER, "offset" INTEGER,
    attempt INTEGER NOT NULL, outcome TEXT NOT NULL, status INTEGER,
    latency_ms REAL NOT NULL, error TEXT, response TEXT NOT NULL, trigger TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS attempts_endpoint ON attempts (endpoint, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, endpoint TEXT NOT NULL, time_ms INTEGER NOT NULL,
    topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
    msg_id TEXT NOT NULL, payload BLOB NOT NULL, attempts INTEGER NOT NULL,
    reason TEXT NOT NULL, replaying INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS dead_letters_endpoint ON dead_letters (endpoint, id);
"""

_ATTEMPT_COLUMNS = (
    'endpoint, time_ms, msg_id, topic, partition, "offset", attempt, outcome, status, '
    "latency_ms, error, response, trigger"
)
_DEAD_COLUMNS = (
    'endpoint, time_ms, topic, partition, "offset", msg_id, payload, attempts, reason, replaying'
)


class SqliteWebhookStore:
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN … COMMIT, or ROLLBACK on any error: a failed statement must not
        leave the connection inside a transaction that every later BEGIN refuses."""
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def __init__(self, path: str | Path, synchronous: str = "NORMAL") -> None:
        self._db = connect(Path(path), synchronous)
        self._db.executescript(_SCHEMA)

    # -- endpoints -----------------------------------------------------------------

    async def load_endpoints(self) -> list[dict[str, Any]]:
        return [json.loads(r) for (r,) in self._db.execute("SELECT row FROM endpoints")]

    async def save_endpoint(self, row: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO endpoints (id, row) VALUES (?, ?) "
            "ON CONFLICT(id) DO UPDATE SET row = excluded.row",
            (row["id"], json.dumps(row)),
        )

    async def delete_endpoint(self, endpoint: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM endpoints WHERE id = ?", (endpoint,))
            self._db.execute("DELETE FROM attempts WHERE endpoint = ?", (endpoint,))
            self._db.execute("DELETE FROM dead_letters WHERE endpoint = ?", (endpoint,))

    # -- attempts --------------------------------------------------------------------

    async def add_attempts(self, attempts: Sequence[Attempt]) -> None:
        if not attempts:
            return
        with self._transaction():
            self._db.executemany(
                f"INSERT INTO attempts ({_ATTEMPT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (a.endpoint, a.time_ms, a.msg_id, a.topic, a.partition, a.offset, a.attempt,
                     a.outcome, a.status, a.latency_ms, a.error, a.response, a.trigger)
                    for a in attempts
                ],
            )

    async def attempts(
        self, endpoint: str, outcome: str | None, limit: int, before: int | None
    ) -> list[Attempt]:
        sql = f"SELECT id, {_ATTEMPT_COLUMNS} FROM attempts WHERE endpoint = ?"
        args: list[Any] = [endpoint]
        wanted = outcome_filter(outcome)
        if wanted is not None:
            sql += f" AND outcome IN ({','.join('?' * len(wanted))})"
            args.extend(wanted)
        if before is not None:
            sql += " AND id < ?"
            args.append(before)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [
            Attempt(
                endpoint=r[1], time_ms=r[2], msg_id=r[3], topic=r[4], partition=r[5],
                offset=r[6], attempt=r[7], outcome=r[8], status=r[9], latency_ms=r[10],
                error=r[11], response=r[12], trigger=r[13], id=r[0],
            )
            for r in self._db.execute(sql, args)
        ]

    async def prune_attempts(self, older_than_ms: int, keep: int) -> int:
        with self._transaction():
            n = self._db.execute(
                "DELETE FROM attempts WHERE time_ms < ?", (older_than_ms,)
            ).rowcount
            endpoints = self._db.execute("SELECT DISTINCT endpoint FROM attempts").fetchall()
            for (endpoint,) in endpoints:
                n += self._db.execute(
                    "DELETE FROM attempts WHERE endpoint = ? AND id <= (SELECT id FROM "
                    "attempts WHERE endpoint = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (endpoint, endpoint, keep),
                ).rowcount
        return n

    async def retry_state(
        self, endpoint: str, since_ms: int
    ) -> dict[tuple[str, int, int], tuple[int, int]]:
        rows = self._db.execute(
            'SELECT topic, partition, "offset", MAX(attempt), MAX(time_ms) FROM attempts '
            "WHERE endpoint = ? AND trigger = 'delivery' AND time_ms >= ? "
            'AND topic IS NOT NULL GROUP BY topic, partition, "offset" '
            "HAVING SUM(outcome = 'success') = 0",
            (endpoint, since_ms),
        )
        return {(t, p, o): (made, last) for t, p, o, made, last in rows}

    # -- dead letters ------------------------------------------------------------------

    async def add_dead_letter(self, dead: WebhookDeadLetter) -> int:
        cur = self._db.execute(
            f"INSERT INTO dead_letters ({_DEAD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (dead.endpoint, dead.time_ms, dead.topic, dead.partition, dead.offset, dead.msg_id,
             dead.payload, dead.attempts, dead.reason, int(dead.replaying)),
        )
        return int(cur.lastrowid or 0)

    async def dead_letters(
        self, endpoint: str, limit: int, before: int | None, replaying: bool | None = None
    ) -> list[WebhookDeadLetter]:
        sql = f"SELECT id, {_DEAD_COLUMNS} FROM dead_letters WHERE endpoint = ?"
        args: list[Any] = [endpoint]
        if before is not None:
            sql += " AND id < ?"
            args.append(before)
        if replaying is not None:
            sql += " AND replaying = ?"
            args.append(int(replaying))
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [
            WebhookDeadLetter(
                endpoint=r[1], time_ms=r[2], topic=r[3], partition=r[4], offset=r[5],
                msg_id=r[6], payload=bytes(r[7]), attempts=r[8], reason=r[9],
                replaying=bool(r[10]), id=r[0],
            )
            for r in self._db.execute(sql, args)
        ]

    async def mark_replaying(self, endpoint: str, ids: Iterable[int] | None) -> int:
        if ids is None:
            cur = self._db.execute(
                "UPDATE dead_letters SET replaying = 1 WHERE endpoint = ? AND replaying = 0",
                (endpoint,),
            )
            return cur.rowcount
        n = 0
        with self._transaction():
            for i in ids:
                n += self._db.execute(
                    "UPDATE dead_letters SET replaying = 1 "
                    "WHERE endpoint = ? AND id = ? AND replaying = 0",
                    (endpoint, i),
                ).rowcount
        return n

    async def update_dead_letter(self, dead: WebhookDeadLetter) -> None:
        self._db.execute(
            "UPDATE dead_letters SET attempts = ?, reason = ?, replaying = ?, time_ms = ? "
            "WHERE id = ?",
            (dead.attempts, dead.reason, int(dead.replaying), dead.time_ms, dead.id),
        )

    async def remove_dead_letter(self, id: int) -> None:
        self._db.execute("DELETE FROM dead_letters WHERE id = ?", (id,))

    async def close(self) -> None:
        self._db.close()
