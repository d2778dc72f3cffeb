"""Opening the embedded backend's SQLite files, also on a full disk.

WAL mode keeps its index in a ``-shm`` file beside the database, which SQLite
must create (and grow) when the first connection opens it. On a full disk that
fails ("disk I/O error") and the hub could not start. The fallback is WAL in
``EXCLUSIVE`` locking mode: SQLite then keeps the index in the process's memory
and needs no ``-shm`` file, at the price of one process owning the file (the
hub is the only one that opens its data directory). Writes then fail with
"database or disk is full" until there is room, and reads go on.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

logger = logging.getLogger("tidings.storage")


def connect(path: Path, synchronous: str, *, any_thread: bool = False) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode with ``synchronous`` (FULL or NORMAL).

    ``any_thread``: the connection is made here and used by one worker thread.
    """
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=not any_thread)
    try:
        db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as exc:
        db.close()
        logger.warning("%s: %s; opening it for this process alone", path, exc)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=not any_thread)
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    return db
