"""The fold of views, the merger, event time and parameters."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streamref import T0, ms_of, run, text_of

from tidings.streams import (
    DELETED,
    Aggregate,
    Count,
    FoldOperator,
    Hopping,
    Max,
    Mean,
    Merger,
    Min,
    Session,
    Sliding,
    Sum,
    Tumbling,
    window_operator,
)
from tidings.streams.eventtime import event_time_ms, format_ms

# -- the fold ---------------------------------------------------------------------------------


def stock(current: int | None, e: Any) -> int | None:
    new = (current or 0) + e.data["delta"]
    return None if new == 0 else new


def fold_script(n: int, seed: int) -> list[tuple[str, Any]]:
    rnd = random.Random(seed)
    steps: list[tuple[str, Any]] = []
    for i in range(n):
        ev = {"type": "t", "data": {"sku": f"s{rnd.randrange(4)}", "delta": rnd.choice((-1, 1, 2))}}
        steps.append(("rec", (0, 0, i, T0 + i, ev)))
        if rnd.random() < 0.2:
            steps.append(("adv", T0 + i + 1))
    return steps


def test_the_fold_equals_a_dict_fold_and_deletes_on_none() -> None:
    script = fold_script(200, seed=1)
    want: dict[str, int] = {}
    deleted = 0
    for _, rec in (s for s in script if s[0] == "rec"):
        d = rec[4]["data"]
        new = want.get(d["sku"], 0) + d["delta"]
        if new == 0:
            deleted += want.pop(d["sku"], None) is not None
        else:
            want[d["sku"]] = new
    got = run(lambda: FoldOperator("stock", lambda e: e.data["sku"], stock), script)
    assert got.values == want
    assert deleted > 0, "the script must delete keys"
    assert got.clock == {"horizon": script[-1][1][3] if script[-1][0] == "rec" else script[-1][1]}


def test_a_fold_restored_at_every_cut_ends_the_same() -> None:
    script = fold_script(60, seed=2)
    make = lambda: FoldOperator("stock", lambda e: e.data["sku"], stock)  # noqa: E731
    whole = run(make, script)
    for cut in range(len(script) + 1):
        got = run(make, script, cuts=[cut], batch=cut % 2 == 0)
        assert got.values == whole.values, cut


def test_a_fold_drains_changes_and_tombstones_only() -> None:
    op = FoldOperator("v", lambda e: e.data["k"], lambda cur, e: e.data.get("v"), types=["t"])
    op.restore({"a": 1, "b": 2}, {}, {"horizon": 5})
    op.process((0, 0, 0, 10, {"type": "t", "data": {"k": "a"}}))  # None: delete a
    op.process((0, 0, 1, 11, {"type": "t", "data": {"k": "c", "v": 3}}))
    op.process((0, 0, 2, 12, {"type": "other", "data": {"k": "b", "v": 9}}))  # not its type
    op.advance(13)
    out = op.drain()
    assert out.values == {"a": DELETED, "c": 3}
    assert out.clock == {"horizon": 13}
    assert op.values == {"b": 2, "c": 3}
    assert op.drain().values == {}


# -- the merger -------------------------------------------------------------------------------


def test_the_merger_releases_below_the_horizon_in_merged_order() -> None:
    m = Merger(2)
    m.add(0, [(0, 0, 0, 10, {}), (0, 1, 0, 10, {}), (0, 0, 1, 20, {})], horizon=25)
    assert m.ready() == []  # input 1 has not answered: its records could come first
    assert m.horizon is None
    m.add(1, [(1, 0, 5, 10, {}), (1, 0, 6, 30, {})], horizon=30)
    assert m.horizon == 25
    got = [(r[0], r[1], r[2], r[3]) for r in m.ready()]
    assert got == [(0, 0, 0, 10), (0, 1, 0, 10), (1, 0, 5, 10), (0, 0, 1, 20)]
    assert m.holding() and m.first_held(1, 0) == 6
    m.add(0, [], horizon=40)
    assert m.ready() == []  # input 1's horizon, 30, is not past its record at 30
    m.add(1, [], horizon=31)
    assert [r[2] for r in m.ready()] == [6] and not m.holding()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_reads_release_the_sorted_order(data: st.DataObject) -> None:
    # Records of 2 inputs x 2 partitions with append times that never go back; read in
    # random pieces with valid horizons; what comes out is the sorted order, whole.
    parts: dict[tuple[int, int], list[Any]] = {}
    for src in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        times = sorted(data.draw(st.lists(st.integers(0, 50), max_size=12)))
        parts[src] = [(src[0], src[1], off, t, {}) for off, t in enumerate(times)]
    everything = sorted(
        (r for rs in parts.values() for r in rs), key=lambda r: (r[3], r[0], r[1], r[2])
    )
    m = Merger(2)
    out: list[Any] = []
    pos = dict.fromkeys(parts, 0)
    while any(pos[s] < len(parts[s]) for s in parts):
        i, first = data.draw(st.sampled_from([s for s in parts if pos[s] < len(parts[s])]))
        got: list[Any] = []
        horizon = None
        for p in (0, 1):
            recs = parts[(i, p)]
            left = len(recs) - pos[(i, p)]
            take = data.draw(st.integers(min(1, left) if p == first else 0, left))
            got += recs[pos[(i, p)]:pos[(i, p)] + take]
            pos[(i, p)] += take
            nxt = recs[pos[(i, p)]][3] if pos[(i, p)] < len(recs) else 10**6
            horizon = nxt if horizon is None else min(horizon, nxt)  # the next unread
        assert horizon is not None
        m.add(i, got, horizon)
        out += m.ready()
    m.add(0, [], 10**6)
    m.add(1, [], 10**6)
    out += m.ready()
    assert out == everything


def test_the_merger_refuses_records_out_of_order() -> None:
    m = Merger(1)
    m.add(0, [(0, 0, 4, 100, {})], horizon=0)
    with pytest.raises(ValueError, match="offsets must grow"):
        m.add(0, [(0, 0, 4, 100, {})], horizon=0)
    with pytest.raises(ValueError, match="append times never go back"):
        m.add(0, [(0, 0, 5, 99, {})], horizon=0)
    with pytest.raises(ValueError, match="not one of the 1 inputs"):
        m.add(1, [], horizon=0)
    with pytest.raises(ValueError, match="at least 1"):
        Merger(0)


# -- event time -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "2026-12-05T10:01:00.123456Z", "2026-12-05T10:01:00Z", "2026-12-05T10:01:00.1Z",
    "2026-12-05T10:01:00.12Z", "2026-12-05T10:01:00.999999999Z", "2026-12-05T12:01:00.5+02:00",
    "2026-12-05T08:31:00.25-01:30", "1969-12-31T23:59:59.9995Z", "2026-12-05t10:01:00z",
])
def test_event_time_is_the_exact_floor_ms(text: str) -> None:
    dt = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    want = (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert event_time_ms(text) == want
    assert event_time_ms(text) == event_time_ms(text)  # from the cache this time


@pytest.mark.parametrize("text", ["", "yesterday", "2026-12-05T10:01:00", "2026-12-05T10:01:00.Z",
                                  "2026-13-05T10:01:00Z", 17, None])
def test_what_is_not_an_rfc3339_time_with_an_offset_gives_none(text: Any) -> None:
    assert event_time_ms(text) is None


def test_the_fast_path_agrees_with_the_parser_across_seconds() -> None:
    rnd = random.Random(3)
    op = window_operator("v", ["in"], Tumbling("1s"), lambda e: e.data["k"], Count())
    op.restore({}, {}, {})
    times: list[int] = []
    for i in range(2_000):
        ms = T0 + i * 7 + rnd.choice((0, 0, -900))
        style = rnd.randrange(3)
        text = (text_of(ms)[:-1] + "123Z", text_of(ms), text_of(ms)[:21] + "Z")[style]
        times.append(ms_of(text))
        op.process((0, 0, i, T0 + i * 7, {"type": "t", "time": text, "data": {"k": "a"}}))
    op.advance(10**15)
    out = op.drain()
    counts: dict[str, int] = {}
    for t in times:
        counts[format_ms(t - t % 1000)] = counts.get(format_ms(t - t % 1000), 0) + 1
    late = {ev["data"]["offset"] for ev in out.late}
    for ev in out.late:
        t = ms_of(ev["data"]["event_time"])
        counts[format_ms(t - t % 1000)] -= 1
    assert {r["data"]["start"]: r["data"]["value"] for r in out.results} == {
        k: v for k, v in counts.items() if v
    }
    assert late, "some events must come after their second closed"


# -- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Tumbling(0), "Tumbling size must be longer than 0 ms"),
    (lambda: Tumbling("1 minute"), "Tumbling size '1 minute' is not a duration"),
    (lambda: Tumbling(True), "not a boolean"),
    (lambda: Tumbling("1m", grace=-1), "Tumbling grace must not be negative"),
    (lambda: Tumbling("1m", idle="soon"), "Tumbling idle 'soon' is not a duration"),
    (lambda: Hopping("1m", every="2m"), r"every \(120000 ms\) must not be longer than size"),
    (lambda: Hopping("1m", every=0), "Hopping every must be longer than 0 ms"),
    (lambda: Sliding("-5s"), "Sliding size '-5s' is not a duration"),
    (lambda: Session(0), "Session gap must be longer than 0 ms"),
    (lambda: Sum("total"), "Sum needs a function of the event"),
    (lambda: Aggregate(0, None), "Aggregate step needs a function"),
    (lambda: window_operator("v", ["in"], Tumbling("1m"), lambda e: 1, Count(), emit="all"),
     "emit must be 'final' or 'updates', not 'all'"),
    (lambda: window_operator("v", ["in"], Tumbling("1m"), lambda e: 1, len), "agg must be Count()"),
    (lambda: window_operator("v", ["in"], "1m", lambda e: 1, Count()), "window must be Tumbling"),
    (lambda: window_operator("v", "in", Tumbling("1m"), lambda e: 1, Count()),
     "inputs must be a list of topic names"),
    (lambda: window_operator("v", ["in"], Tumbling("1m"), "k", Count()), "key must be a function"),
    (lambda: FoldOperator("v", lambda e: 1, None), "the fold must be a function"),
])
def test_bad_parameters_say_what_is_wrong(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_durations_and_describe() -> None:
    assert Tumbling("1m", grace="10s").describe() == {
        "kind": "tumbling", "size": 60_000, "grace": 10_000, "idle": 10_000,
    }
    assert Hopping(300, every="1m", grace="500ms", idle=0).describe() == {
        "kind": "hopping", "size": 300_000, "every": 60_000, "grace": 500, "idle": 0,
    }
    assert Sliding("5s").describe()["size"] == 5_000
    assert Session("30s", idle="1m").describe() == {
        "kind": "session", "gap": 30_000, "grace": 0, "idle": 60_000,
    }


def test_a_session_window_needs_merge_for_a_custom_aggregate() -> None:
    with pytest.raises(ValueError, match=r"Session windows need Aggregate\(..., merge=f\)"):
        window_operator("v", ["in"], Session("10s"), lambda e: "k",
                        Aggregate(0, lambda s, e: s + 1))


def test_numbers_only_for_numeric_aggregations() -> None:
    for agg in (Sum(lambda e: e.data), Min(lambda e: e.data), Max(lambda e: e.data),
                Mean(lambda e: e.data)):
        op = window_operator("v", ["in"], Tumbling("1m"), lambda e: "k", agg)
        op.restore({}, {}, {})
        with pytest.raises(TypeError, match="must give a number, not str"):
            op.process((0, 0, 0, T0, {"type": "t", "data": "x"}))


def test_aggregate_init_is_copied_for_each_window() -> None:
    op = window_operator("v", ["in"], Tumbling("1s"), lambda e: e.data,
                         Aggregate([], lambda s, e: (s.append(e.data), s)[1]))
    op.restore({}, {}, {})
    for i, k in enumerate("abab"):
        op.process((0, 0, i, T0 + i, {"type": "t", "data": k}))
    op.advance(T0 + 5_000)
    assert {r["data"]["key"]: r["data"]["value"] for r in op.drain().results} == {
        "a": ["a", "a"], "b": ["b", "b"],
    }
