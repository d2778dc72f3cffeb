"""history.sqlite3: points survive closing and opening again, stay within the span, and
a damaged point costs only itself. (Embedded-only: the store is the embedded backend's.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tidings.backends.embedded.history import SqliteHistoryStore, decode, encode
from tidings.core.history import MetricsHistory, Reading

T0 = 1_800_000_000_000
LAG = ("group_lag", ("orders", "payments"))


def test_points_come_back_after_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    store = SqliteHistoryStore(path)
    store.append(T0, {("events_in", ("orders",)): 2.5, LAG: 7.0}, T0 - 86_400_000)
    store.append(T0 + 10_000, {("events_in", ("orders",)): 0.0, ("memory", ()): 1e9}, 0)
    store.close()

    again = SqliteHistoryStore(path)
    assert again.load(0) == [
        (T0, {("events_in", ("orders",)): 2.5, LAG: 7.0}),
        (T0 + 10_000, {("events_in", ("orders",)): 0.0, ("memory", ()): 1e9}),
    ]
    assert again.load(T0 + 1) == [(T0 + 10_000, again.load(0)[1][1])]
    again.close()


def test_it_holds_one_span_and_forgets_series_no_point_uses(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    history = MetricsHistory(1_000, 10, SqliteHistoryStore(path))
    for i in range(50):  # five spans; each second point names a group of its own
        gauges = {LAG: float(i), ("group_lag", ("orders", f"g{i}")): 1.0}
        history.observe(T0 + i * 1_000, Reading({}, gauges))
    assert history.store is not None
    history.store.close()

    db = sqlite3.connect(path)
    times = [t for (t,) in db.execute("SELECT t FROM points ORDER BY t")]
    assert times == [T0 + i * 1_000 for i in range(40, 50)]  # the last 10 s only
    db.close()
    again = SqliteHistoryStore(path)
    assert len(again.load(0)) == 10
    db = sqlite3.connect(path)  # the load dropped the series of the forgotten points
    (series,) = db.execute("SELECT count(*) FROM series").fetchone()
    assert series == 11  # LAG and the groups g40..g49
    db.close()
    again.close()


def test_a_damaged_point_is_skipped_and_the_others_load(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    store = SqliteHistoryStore(path)
    for i in range(3):
        store.append(T0 + i * 1_000, {LAG: float(i)}, 0)
    store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE points SET body = ? WHERE t = ?", (b"\x78\x9c garbage", T0 + 1_000))
    db.commit()
    db.close()
    again = SqliteHistoryStore(path)
    assert again.load(0) == [(T0, {LAG: 0.0}), (T0 + 2_000, {LAG: 2.0})]
    again.close()


def test_a_point_is_small() -> None:
    quiet = {i: 0.0 for i in range(100)}  # 100 series of a quiet hub
    assert decode(encode(quiet)) == quiet
    assert len(encode(quiet)) < 120  # 1,204 bytes before compression
