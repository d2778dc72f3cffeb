"""The embedded backend's event index store: generations, and dropping them whole.

Backend-only, as generations are how SQLite keeps inserts fast (the in-memory store
has none); the contract both stores share is in tests/core/test_eventindex.py.
"""

from __future__ import annotations

from pathlib import Path

from tidings.backends.embedded.eventindex import SqliteIndex


def rows(first: int, n: int, corr: int = 7) -> list[tuple[int, int, int, int | None]]:
    # offset, time, id hash (the offset, to find each), correlationid hash
    return [(o, 1000 + o, o, corr) for o in range(first, first + n)]


def test_rows_fill_generations_and_lookups_span_them(tmp_path: Path) -> None:
    store = SqliteIndex(tmp_path / "index.sqlite3", generation_rows=10)
    assert store.load() == {}
    for first in range(0, 50, 5):
        store.add([("orders", 0, first + 5, rows(first, 5), [])])
    assert len(store._gens) == 5
    assert store.by_id(23, 10) == [("orders", 0, 23)]
    page = store.by_correlation(7, None, 100)
    assert [r[4] for r in page] == list(range(50))  # publish order, across generations
    more = store.by_correlation(7, (page[19][0], page[19][1]), 5)
    assert [r[4] for r in more] == [20, 21, 22, 23, 24]
    store.close()
    again = SqliteIndex(tmp_path / "index.sqlite3", generation_rows=10)
    assert again.load() == {("orders", 0): 50}
    again.add([("orders", 0, 51, rows(50, 1), [])])
    assert [r[4] for r in again.by_correlation(7, None, 100)][-2:] == [49, 50]
    again.close()


def test_retention_drops_whole_generations_oldest_first(tmp_path: Path) -> None:
    store = SqliteIndex(tmp_path / "index.sqlite3", generation_rows=10)
    store.load()
    for first in range(0, 40, 10):
        store.add([("orders", 0, first + 10, rows(first, 10), []), ("other", 0, 1, [], [])])
    assert len(store._gens) == 4
    assert store.prune({("orders", 0): 15, ("other", 0): 0}) == 1  # offsets 0-9 only
    assert store.by_id(3, 10) == []
    assert store.by_id(12, 10) == [("orders", 0, 12)]
    assert store.prune({("orders", 0): 39, ("other", 0): 0}) == 2  # never the newest
    assert [r[4] for r in store.by_correlation(7, None, 100)] == list(range(30, 40))
    store.forget("orders")  # a deleted topic's rows are never answered
    assert store.by_id(35, 10) == []
    assert store.load() == {("other", 0): 1}
    store.close()


def test_a_stale_generation_goes_though_an_older_one_is_live(tmp_path: Path) -> None:
    store = SqliteIndex(tmp_path / "index.sqlite3", generation_rows=10)
    store.load()
    store.add([("quiet", 0, 1, [(0, 999, 1000, None)], [])])  # a quiet topic, no retention
    for first in range(0, 30, 10):
        store.add([("busy", 0, first + 10, rows(first, 10), [])])
    gens = len(store._gens)
    # busy's retention moved past its first 20 offsets; quiet keeps its one row
    assert store.prune({("quiet", 0): 0, ("busy", 0): 20}) >= 1
    assert len(store._gens) < gens
    assert store.by_id(1000, 10) == [("quiet", 0, 0)]
    assert store.by_id(25, 10) == [("busy", 0, 25)]
    assert store.by_id(12, 10) == []  # its generation went, past the live first one
    store.close()


def test_a_tail_cut_by_recovery_is_never_found_twice(tmp_path: Path) -> None:
    """A power cut took offsets 6-9 back; retried publishes take them again."""
    store = SqliteIndex(tmp_path / "index.sqlite3", generation_rows=4)
    store.load()
    store.add([("orders", 0, 10, rows(0, 10), [])])
    store.trim("orders", 0, 0, 6)
    assert store.load() == {("orders", 0): 6}
    store.add([("orders", 0, 10, rows(6, 4), [])])
    assert [r[4] for r in store.by_correlation(7, None, 100)] == list(range(10))
    assert store.by_id(8, 10) == [("orders", 0, 8)]
    store.close()


def test_publish_order_holds_after_reopening_on_an_empty_generation(tmp_path: Path) -> None:
    store = SqliteIndex(tmp_path / "index.sqlite3", generation_rows=5)
    store.load()
    store.add([("orders", 0, 5, rows(0, 5), [])])  # the first generation is full
    store.add([("orders", 0, 5, [], [])])  # a round with nothing new
    gens = list(store._gens)
    store.close()
    again = SqliteIndex(tmp_path / "index.sqlite3", generation_rows=5)
    again.load()
    again.add([("orders", 0, 6, [(5, 1000, 5, 7)], [])])  # the same millisecond as offset 0
    page = again.by_correlation(7, None, 100)
    # (time, seq) orders rows: the new row's seq goes on from 5, never restarts at 1
    assert [(r[0], r[1], r[4]) for r in page[:2]] == [(1000, 1, 0), (1000, 6, 5)], (gens, page)
    assert [r[4] for r in page] == [0, 5, 1, 2, 3, 4]
    again.close()


def test_a_run_stands_for_its_ids_through_trim_prune_and_reopening(tmp_path: Path) -> None:
    store = SqliteIndex(tmp_path / "index.sqlite3", generation_rows=10)
    store.load()
    # offsets 0-1 rows; 2-11 a run of prefix 99 counting from 500; 12 a row
    store.add([("orders", 0, 13, [(0, 1000, 1, None), (1, 1000, 2, None)],
                [(2, 1001, 99, 500, 10)])])  # fmt: skip
    store.add([("orders", 0, 13, [(12, 1002, 3, None)], [])])
    assert len(store._gens) == 2  # the run counted its 10 ids
    assert store.by_id(0, 10, (99, 504)) == [("orders", 0, 6)]
    assert store.by_id(0, 10, (99, 509)) == [("orders", 0, 11)]
    assert store.by_id(0, 10, (99, 510)) == []
    assert store.by_id(0, 10, (98, 504)) == []
    assert store.by_id(3, 10, (98, 504)) == [("orders", 0, 12)]  # a row, no run
    assert store.by_id(3, 10, (99, 504)) == [("orders", 0, 6), ("orders", 0, 12)]
    store.close()
    again = SqliteIndex(tmp_path / "index.sqlite3", generation_rows=10)
    assert again.load() == {("orders", 0): 13}
    assert again._seq == 13  # after the run's 10 seqs
    again.trim("orders", 0, 0, 6)  # a power cut took offsets 6 on back
    assert again.by_id(0, 10, (99, 503)) == [("orders", 0, 5)]
    assert again.by_id(0, 10, (99, 504)) == []
    assert again.prune({("orders", 0): 13}) == 1  # the run's generation, not the newest
    assert again.by_id(0, 10, (99, 503)) == []
    again.close()


def test_an_index_made_before_runs_gets_them_on_opening(tmp_path: Path) -> None:
    store = SqliteIndex(tmp_path / "index.sqlite3")
    store.load()
    store.add([("orders", 0, 1, rows(0, 1), [])])
    assert store._w is not None
    store._w.execute("DROP TABLE runs_1")
    store.close()
    again = SqliteIndex(tmp_path / "index.sqlite3")
    assert again.load() == {("orders", 0): 1}
    again.add([("orders", 0, 3, [], [(1, 1001, 99, 0, 2)])])
    assert again.by_id(5, 10, (99, 1)) == [("orders", 0, 2)]
    assert again.by_id(0, 10) == [("orders", 0, 0)]
    again.close()
