"""The metrics history without I/O: readings at times the test chooses, points out."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.core import history as history_module
from tidings.core.history import (
    MetricsHistory,
    Reading,
    SeriesKey,
    parse_families,
    parse_since,
)
from tidings.errors import BadRequest

T0 = 1_800_000_000_000  # on the 10 s grid
ORDERS: SeriesKey = ("events_in", ("orders",))
CART: SeriesKey = ("events_in", ("cart",))
LAG: SeriesKey = ("group_lag", ("orders", "payments"))
FSYNCS: SeriesKey = ("fsyncs", ())
FSYNC_MS: SeriesKey = ("fsync_latency", ())


class ListStore:
    """The HistoryStore seam in a list: what was appended, and what a load answers."""

    def __init__(self) -> None:
        self.points: list[tuple[int, dict[SeriesKey, float]]] = []

    def load(self, since_ms: int) -> list[tuple[int, dict[SeriesKey, float]]]:
        return [(t, v) for t, v in self.points if t >= since_ms]

    def append(self, t_ms: int, values: Any, forget_before_ms: int) -> None:
        self.points = [(t, v) for t, v in self.points if forget_before_ms <= t < t_ms]
        self.points.append((t_ms, dict(values)))

    def close(self) -> None:
        pass


def column(answer: dict[str, Any], name: str, **labels: str) -> list[float | None]:
    (series,) = [s for s in answer["series"] if s["name"] == name and s["labels"] == labels]
    # NaN where a series has no value: null on the wire (orjson writes NaN so).
    return [None if v != v else v for v in series["values"]]


def test_counters_become_rates_and_gauges_stay_values() -> None:
    h = MetricsHistory(10_000, 100)
    assert h.observe(T0, Reading({ORDERS: 100}, {LAG: 7})) == {LAG: 7}  # nothing to rate yet
    h.observe(T0 + 10_000, Reading({ORDERS: 150, CART: 5}, {LAG: 3}))
    h.observe(T0 + 20_000, Reading({ORDERS: 150, CART: 35}, {LAG: 0}))
    answer = h.query()
    assert answer["interval"] == 10
    assert answer["times"] == [T0, T0 + 10_000, T0 + 20_000]
    assert column(answer, "events_in", topic="orders") == [None, 5.0, 0.0]
    # A counter first seen counts from 0: all its events came in this process.
    assert column(answer, "events_in", topic="cart") == [None, 0.5, 3.0]
    assert column(answer, "group_lag", topic="orders", group="payments") == [7, 3, 0]
    assert answer["series"][0]["unit"] == "events/s"


def test_a_mean_divides_the_growth_of_one_counter_by_another() -> None:
    h = MetricsHistory(10_000, 100)
    h.observe(T0, Reading({FSYNCS: 10, FSYNC_MS: 40.0}))
    h.observe(T0 + 10_000, Reading({FSYNCS: 14, FSYNC_MS: 52.0}))
    h.observe(T0 + 20_000, Reading({FSYNCS: 14, FSYNC_MS: 52.0}))  # no fsync: no mean
    answer = h.query()
    assert column(answer, "fsync_latency") == [None, 3.0, None]
    assert column(answer, "fsyncs") == [None, 0.4, 0.0]


def test_points_fall_on_the_grid_and_a_second_reading_of_a_slot_replaces_it() -> None:
    h = MetricsHistory(10_000, 100)
    h.observe(T0 - 40, Reading({ORDERS: 0}))  # a timer a little early: the T0 slot
    h.observe(T0 + 9_990, Reading({ORDERS: 100}))
    h.observe(T0 + 10_004, Reading({ORDERS: 101}))  # the same slot again, just after
    answer = h.query()
    assert answer["times"] == [T0, T0 + 10_000]
    # The replacing point's rate runs from the reading before the slot: 101 in 10.044 s.
    assert column(answer, "events_in", topic="orders") == [None, round(101 / 10.044, 3)]


def test_a_counter_that_went_back_was_reset() -> None:
    h = MetricsHistory(1_000, 100)
    h.observe(T0, Reading({ORDERS: 500}))
    h.observe(T0 + 1_000, Reading({ORDERS: 3}))  # the topic deleted and made again
    assert column(h.query(), "events_in", topic="orders") == [None, 3.0]


def test_it_keeps_at_most_its_points_and_nothing_older_than_its_span() -> None:
    h = MetricsHistory(1_000, 5)
    for i in range(8):
        h.observe(T0 + i * 1_000, Reading({}, {LAG: i}))
    answer = h.query()
    assert answer["times"] == [T0 + i * 1_000 for i in range(3, 8)]
    assert column(answer, "group_lag", topic="orders", group="payments") == [3, 4, 5, 6, 7]
    # After a long stop, the old points are past the span: gone at the next point.
    h.observe(T0 + 60_000, Reading({}, {LAG: 9}))
    assert h.query()["times"] == [T0 + 60_000]


def test_series_beyond_the_limit_are_left_out_until_old_ones_age_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(history_module, "MAX_SERIES", 3)
    h = MetricsHistory(1_000, 3)
    lag = [("group_lag", ("t", f"g{i}")) for i in range(5)]
    h.observe(T0, Reading({}, {lag[0]: 0, lag[1]: 1, lag[2]: 2}))
    h.observe(T0 + 1_000, Reading({}, {lag[3]: 3}))  # a fourth: no room
    assert {s["labels"]["group"] for s in h.query()["series"]} == {"g0", "g1", "g2"}
    for i in range(2, 5):  # g0..g2 age out of the three points kept
        h.observe(T0 + i * 1_000, Reading({}, {lag[3]: 3, lag[4]: 4}))
    assert {s["labels"]["group"] for s in h.query()["series"]} == {"g3", "g4"}


def test_a_query_picks_families_labels_and_a_start() -> None:
    h = MetricsHistory(1_000, 100)
    for i in range(4):
        h.observe(T0 + i * 1_000, Reading({ORDERS: i, CART: 2 * i}, {LAG: i}))
    answer = h.query(["events_in"], since_ms=T0 + 2_000, labels={"topic": "cart"})
    assert answer["times"] == [T0 + 2_000, T0 + 3_000]
    assert [(s["name"], s["labels"]) for s in answer["series"]] == [
        ("events_in", {"topic": "cart"})
    ]
    assert h.query(["group_lag"], since_ms=T0 + 10_000) == {
        "interval": 1, "times": [], "series": [],
    }  # fmt: skip


def test_it_stores_each_point_and_loads_them_back() -> None:
    store = ListStore()
    first = MetricsHistory(1_000, 100, store)
    for i in range(3):
        first.observe(T0 + i * 1_000, Reading({ORDERS: 10 * i}, {LAG: i}))
    assert [t for t, _ in store.points] == [T0, T0 + 1_000, T0 + 2_000]

    second = MetricsHistory(1_000, 100, store)  # the hub again, 30 s later
    assert second.load(T0 + 32_000) == 3
    second.observe(T0 + 32_000, Reading({ORDERS: 7}, {LAG: 5}))  # new process: no rate
    second.observe(T0 + 33_000, Reading({ORDERS: 9}, {LAG: 5}))
    answer = second.query()
    assert answer["times"] == [T0, T0 + 1_000, T0 + 2_000, T0 + 32_000, T0 + 33_000]
    assert column(answer, "events_in", topic="orders") == [None, 10.0, 10.0, None, 2.0]


def test_query_parameters_are_checked() -> None:
    assert parse_families(None) == ()
    assert parse_families("events_in,group_lag,events_in") == ("events_in", "group_lag")
    for bad in ("", "nope", "events_in,", "events_in, group_lag", "EVENTS_IN"):
        with pytest.raises(BadRequest) as refused:
            parse_families(bad)
        assert refused.value.fields["field"] == "series"
        assert "events_in" in refused.value.detail  # it names what there is
    now = T0
    assert parse_since(None, now) is None
    assert parse_since("15m", now) == now - 900_000
    assert parse_since("1d", now) == now - 86_400_000
    assert parse_since("1700000000000", now) == 1_700_000_000_000
    assert parse_since("2027-01-15T08:00:00Z", now) == 1_800_000_000_000  # 1.8e9 s
    assert parse_since("2027-01-15T09:00:00+01:00", now) == 1_800_000_000_000  # 1.8e9 s
    for bad in ("", "yesterday", "15 m", "-1h", " 15m", "2027-02-30T00:00:00Z", "2027-01-15"):
        with pytest.raises(BadRequest) as refused:
            parse_since(bad, now)
        assert refused.value.fields["field"] == "since", bad
