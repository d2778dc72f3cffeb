"""The embedded backend keeps a group's done offsets as ranges, and still loads the
lists of offsets older versions saved. Embedded only: it checks the SQLite rows'
JSON, which the memory storage never encodes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.core.groups import ConsumerGroup, GroupConfig


async def test_done_ranges_round_trip_and_older_lists_of_offsets_load(tmp_path: Path) -> None:
    storage = EmbeddedStorage(tmp_path)
    try:
        for name in ("old", "new"):
            await storage.save_group("t", name, {})
        # as an older version saved it: every offset done above committed, one by one
        await storage.save_positions("t", "old", {0: (3, [4, 5, 6, 9], [(7, 1, 0)])})
        g = ConsumerGroup("t", "new", GroupConfig(), {0: (0, [])})
        assert g.skip(0, 2, 2_000_000, "removed") == 1_999_998
        await storage.save_positions("t", "new", g.positions())
    finally:
        await storage.close()

    with sqlite3.connect(tmp_path / "meta.sqlite3") as db:
        (row,) = db.execute("SELECT positions FROM groups WHERE name = 'new'").fetchall()
    assert orjson.loads(row[0]) == {"0": [0, [[2, 2_000_000]], []]}

    storage = EmbeddedStorage(tmp_path)
    try:
        rows = {name: pos for _, name, _, pos, _ in await storage.load_groups()}
    finally:
        await storage.close()
    assert rows["new"] == {0: (0, [(2, 2_000_000)], [])}
    old = ConsumerGroup("t", "old", GroupConfig(), rows["old"])
    assert old.positions() == {0: (3, [(4, 7), 9], [(7, 1, 0)])}
    assert [o for o in range(12) if old.undone(0, o)] == [3, 7, 8, 10, 11]
    new = ConsumerGroup("t", "new", GroupConfig(), rows["new"])
    assert [o for o in (0, 1, 2, 1_999_999, 2_000_000) if new.undone(0, o)] == [0, 1, 2_000_000]
