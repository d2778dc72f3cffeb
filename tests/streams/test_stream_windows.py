"""Window views against the plain-Python reference, whole and restored at every cut."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streamref import (
    T0,
    fold_of,
    folded,
    lid,
    make_script,
    reference,
    run,
    text_of,
    wid,
)
from streamref import (
    agg_for as make_agg,
)

from tidings.streams import (
    Count,
    Hopping,
    Session,
    Sliding,
    Sum,
    Tumbling,
    window_operator,
)
from tidings.streams.eventtime import event_time_ms

KINDS: dict[str, dict[str, Any]] = {
    "tumbling": {"size": 10_000, "every": 10_000, "grace": 2_000, "idle": 2_000},
    "hopping": {"size": 10_000, "every": 4_000, "grace": 2_000, "idle": 2_000},
    "sliding": {"size": 5_000, "grace": 1_000, "idle": 3_000},
    "session": {"gap": 3_000, "grace": 1_000, "idle": 1_000},
}


def window_of(kind: str) -> Any:
    p = KINDS[kind]
    if kind == "tumbling":
        return Tumbling(f"{p['size']}ms", grace=f"{p['grace']}ms")
    if kind == "hopping":
        return Hopping("10s", every="4s", grace="2s")
    if kind == "sliding":
        return Sliding(5, grace=1, idle="3s")
    return Session("3s", grace="1s")


def maker(kind: str, agg: str, emit: str = "final") -> Any:
    return lambda: window_operator(
        "v", ["in"], window_of(kind), lambda e: e.data["k"], make_agg(agg), emit=emit
    )


def expected(kind: str, agg: str, script: Any, emit: str = "final") -> Any:
    return reference(script, view="v", kind=kind, fold=fold_of(agg), emit=emit, **KINDS[kind])


def summary(got: Any) -> tuple[list[Any], list[Any]]:
    results = [
        (r["id"], r["data"]["key"], r["data"]["start"], r["data"]["end"], r["data"]["value"],
         r["data"]["final"])
        for r in got.results
    ]
    late = [(ev["id"], ev["data"]["offset"], ev["data"]["event_time"]) for ev in got.late]
    return results, late


@pytest.mark.parametrize("emit", ["final", "updates"])
@pytest.mark.parametrize("agg", ["count", "sum", "min", "max", "mean", "list"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_and_aggregation_equals_the_reference(kind: str, agg: str, emit: str) -> None:
    for seed in range(3):
        script = make_script(120, seed=seed)
        want = expected(kind, agg, script, emit)
        got = run(maker(kind, agg, emit), script)
        results, late = summary(got)
        assert late == want.late, seed
        assert results == want.results, seed
        assert got.values == folded(want.values), seed
        assert want.results and want.late, "the script must close windows and have late events"


@pytest.mark.parametrize("kind", list(KINDS))
def test_restored_at_every_cut_the_output_is_the_same(kind: str) -> None:
    script = make_script(45, seed=11)
    for emit in ("final", "updates"):
        whole = run(maker(kind, "sum", emit), script)
        for cut in range(len(script) + 1):
            got = run(maker(kind, "sum", emit), script, cuts=[cut])
            assert got.results == whole.results, (emit, cut)
            assert got.late == whole.late, (emit, cut)
            assert got.values == whole.values, (emit, cut)
            assert got.state == whole.state, (emit, cut)
            assert got.clock == whole.clock, (emit, cut)


@pytest.mark.parametrize("kind", list(KINDS))
def test_many_cuts_drains_and_batches_change_nothing(kind: str) -> None:
    rnd = random.Random(5)
    for seed in range(8):
        script = make_script(150, seed=100 + seed)
        whole = run(maker(kind, "list"), script)
        again = run(maker(kind, "list"), script)
        assert (again.results, again.late, again.values) == (
            whole.results, whole.late, whole.values
        )
        cuts = sorted(rnd.sample(range(len(script)), 12))
        drains = sorted(rnd.sample(range(len(script)), 20))
        got = run(maker(kind, "list"), script, cuts=cuts, drains=drains, batch=seed % 2 == 0)
        assert got.results == whole.results, seed
        assert got.late == whole.late, seed
        assert (got.values, got.state, got.clock) == (whole.values, whole.state, whole.clock)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_replay_with_no_advances_gives_the_live_output(kind: str) -> None:
    # Live: horizons between records. Replay: none, only the records (and the last horizon).
    live = make_script(150, seed=3)
    replay = [s for s in live[:-1] if s[0] == "rec"] + [live[-1]]
    a, b = run(maker(kind, "count"), live), run(maker(kind, "count"), replay)
    assert (a.results, a.late, a.values, a.state) == (b.results, b.late, b.values, b.state)


def test_quiet_windows_close_through_advance_alone() -> None:
    op = window_operator("q", ["in"], Tumbling("1m", grace="10s"), lambda e: e.data["k"], Count())
    op.restore({}, {}, {})
    for i in range(3):
        ev = {"type": "t", "time": text_of(T0 + 1_000 * i), "data": {"k": "a"}}
        op.process((0, 0, i, T0 + 1_000 * i, ev))
    end = T0 + 60_000
    op.advance(end + 10_000 + 10_000 - 1)  # idle = grace: W = H - 10 s, one ms short
    assert op.drain().results == []
    op.advance(end + 10_000 + 10_000)
    out = op.drain()
    assert [r["data"] for r in out.results] == [{
        "key": "a", "start": text_of(T0), "end": text_of(end), "value": 3, "final": True,
    }]
    assert out.values == {f"a@{text_of(T0)}": out.results[0]["data"]}
    assert out.clock == {
        "stream_time": T0 + 2_000, "watermark": end + 10_000, "last_appended": T0 + 2_000,
        "window": {"kind": "tumbling", "size": 60_000, "grace": 10_000, "idle": 10_000},
    }


def test_result_and_late_events_are_cloudevents_with_stable_ids() -> None:
    op = window_operator(
        "sales", ["orders"], Tumbling("1m"), lambda e: e.data["k"], Sum(lambda e: e.data["v"])
    )
    op.restore({}, {}, {})
    ev = {"type": "t", "time": text_of(T0 + 5), "data": {"k": "sku-1", "v": 7}}
    op.process((0, 0, 0, T0 + 5, ev))
    old = {"type": "t", "time": text_of(T0 - 1), "data": {"k": "sku-1", "v": 1}}
    op.advance(T0 + 60_000)
    op.process((0, 2, 9, T0 + 60_000, old))
    out = op.drain()
    start = text_of(T0)
    assert out.results == [{
        "specversion": "1.0", "id": wid("sales", "sku-1", start, 0),
        "source": "tidings/views/sales", "type": "tidings.window.result",
        "time": text_of(T0 + 60_000), "partitionkey": "sku-1",
        "data": {"key": "sku-1", "start": start, "end": text_of(T0 + 60_000), "value": 7,
                 "final": True},
    }]
    (late,) = out.late
    assert late["id"] == lid("sales", "orders", 2, 9)
    assert late["type"] == "tidings.window.late"
    assert late["source"] == "tidings/views/sales"
    assert late["partitionkey"] == "sku-1"
    data = late["data"]
    assert data["topic"] == "orders" and data["partition"] == 2 and data["offset"] == 9
    assert data["event_time"] == text_of(T0 - 1)
    assert data["watermark"] == text_of(T0 + 60_000)
    assert data["event"] == old
    assert "closed" in data["why"] and text_of(T0 - 60_000) in data["why"]


def test_an_event_whose_time_does_not_parse_goes_to_late() -> None:
    op = window_operator("v", ["in"], Tumbling("1m"), lambda e: e.data["k"], Count())
    op.restore({}, {}, {})
    op.process((0, 0, 0, T0, {"type": "t", "time": "yesterday", "data": {"k": "a"}}))
    (late,) = op.drain().late
    assert late["data"]["event_time"] is None
    assert "RFC 3339" in late["data"]["why"]


def test_types_and_a_key_of_none_skip_events() -> None:
    op = window_operator(
        "v", ["in"], Tumbling("1m"), lambda e: e.data.get("k"), Count(), types=["keep"]
    )
    op.restore({}, {}, {})
    for i, (typ, data) in enumerate([("keep", {"k": 1}), ("drop", {"k": 1}), ("keep", {})]):
        op.process((0, 0, i, T0 + i, {"type": typ, "time": text_of(T0 + i), "data": data}))
    op.advance(T0 + 120_000)
    out = op.drain()
    assert [(r["data"]["key"], r["data"]["value"]) for r in out.results] == [("1", 1)]


@st.composite
def scripts(draw: st.DrawFn) -> list[Any]:
    """Records whose event times wander around their append times, and horizons."""
    steps: list[Any] = []
    appended = T0
    n = draw(st.integers(1, 30))
    for offset in range(n):
        appended += draw(st.integers(0, 4_000))
        if draw(st.booleans()):
            last = steps[-1][1] if steps and steps[-1][0] == "adv" else appended
            steps.append(("adv", draw(st.integers(min(last, appended), appended))))
        ev: dict[str, Any] = {
            "type": "t", "data": {"k": draw(st.sampled_from("ab")), "v": draw(st.integers(0, 9))},
        }
        lag = draw(st.one_of(st.none(), st.integers(-50, 25_000)))
        if lag is not None:
            ev["time"] = text_of(appended - lag)
        steps.append(("rec", (0, 0, offset, appended, ev)))
    steps.append(("adv", appended + draw(st.integers(0, 60_000))))
    return steps


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(KINDS)), scripts(), st.data())
def test_any_script_equals_the_reference_and_survives_any_cut(
    kind: str, script: list[Any], data: st.DataObject
) -> None:
    want = expected(kind, "sum", script, "updates")
    whole = run(maker(kind, "sum", "updates"), script)
    assert summary(whole) == (want.results, want.late)
    assert whole.values == folded(want.values)
    cuts = data.draw(st.lists(st.integers(0, len(script)), max_size=4))
    batch = data.draw(st.booleans())
    got = run(maker(kind, "sum", "updates"), script, cuts=sorted(set(cuts)), batch=batch)
    assert (got.results, got.late, got.values, got.state, got.clock) == (
        whole.results, whole.late, whole.values, whole.state, whole.clock
    )


def test_state_made_with_another_window_is_refused_on_restore() -> None:
    op = window_operator("v", ["in"], Tumbling("1m"), lambda e: "k", Count())
    op.restore({}, {}, {})
    op.process((0, 0, 0, T0, {"type": "t"}))
    out = op.drain()
    assert out.clock["window"] == {"kind": "tumbling", "size": 60_000, "grace": 0, "idle": 0}
    again = window_operator("v", ["in"], Tumbling("2m"), lambda e: "k", Count())
    with pytest.raises(ValueError, match="rebuild the view to change its window"):
        again.restore({}, out.state, out.clock)


@pytest.mark.parametrize("kind", list(KINDS))
def test_keys_with_separators_survive_a_restore(kind: str) -> None:
    script = make_script(40, seed=21)
    for _, arg in script:
        if not isinstance(arg, int):
            arg[4]["data"]["k"] = f"{arg[4]['data']['k']}:x@y:"
    whole = run(maker(kind, "count"), script)
    assert any(":x@y:@" in k for k in whole.values)
    for cut in range(0, len(script) + 1, 3):
        got = run(maker(kind, "count"), script, cuts=[cut])
        assert (got.results, got.values, got.state) == (whole.results, whole.values, whole.state)


@pytest.mark.parametrize("kind", list(KINDS))
def test_drained_state_comes_in_name_order(kind: str) -> None:
    op = maker(kind, "sum")()
    op.restore({}, {}, {})
    for step, arg in make_script(60, seed=8):
        if step == "rec":
            op.process(arg)
        else:
            op.advance(arg)
    names = list(op.drain().state)
    assert len(names) > 3 and names == sorted(names)


@pytest.mark.parametrize(("window", "closes_at"), [
    (Hopping("10s", every="5s", grace="1s", idle="2s"), T0 + 10_000 + 1_000 + 2_000),
    (Sliding("10s", grace="1s", idle="2s"), T0 + 1_000 + 1 + 1_000 + 2_000),
    (Session("3s", grace="1s", idle="2s"), T0 + 1_000 + 3_000 + 1_000 + 2_000),
])
def test_quiet_windows_of_every_kind_close_through_advance(window: Any, closes_at: int) -> None:
    # events at T0 and T0 + 1 s, then only horizons: the last window to close is the
    # one ending latest (hopping [T0, T0 + 10 s); the sliding window of the second
    # event; the session [T0, T0 + 1 s + gap))
    op = window_operator("q", ["in"], window, lambda e: "k", Count())
    op.restore({}, {}, {})
    for i in range(2):
        op.process((0, 0, i, T0 + 1_000 * i, {"type": "t", "time": text_of(T0 + 1_000 * i)}))
    op.advance(closes_at - 1)
    before = op.drain().results
    op.advance(closes_at)
    after = op.drain().results
    assert len(after) == 1 and after[0]["data"]["final"]
    assert all(r["data"]["end"] < after[0]["data"]["end"] for r in before)


def test_a_sliding_window_numbers_kept_events_the_same_after_a_restore() -> None:
    # C comes after B with an earlier time and is let go first, while B is kept: the
    # numbering of the next event must not depend on a restore in between.
    def rec(offset: int, appended: int, t: int) -> tuple[str, Any]:
        return ("rec", (0, 0, offset, appended, {"type": "t", "time": text_of(T0 + t)}))

    script = [
        rec(0, T0 + 5_000, 5_000), rec(1, T0 + 5_000, 1_000), ("adv", T0 + 9_000),
        rec(2, T0 + 9_000, 9_000), ("adv", T0 + 9_500),
    ]
    make = lambda: window_operator(  # noqa: E731
        "s", ["in"], Sliding("2s", grace="5s", idle=0), lambda e: "k", Count()
    )
    whole = run(make, script)
    assert [ev[0] for ev in whole.state["e:k"][1]] == [T0 + 5_000, T0 + 9_000]
    for cut in range(len(script) + 1):
        assert run(make, script, cuts=[cut]).state == whole.state, cut


SECOND = text_of(T0 + 60_000)[:20]  # "2026-12-05T10:01:00."
NOT_TIMES = [
    SECOND + "123-this-is-not-a-time-Z",
    SECOND + "123xZ",
    SECOND + "123ZZ",
    SECOND + "1234x6Z",
    SECOND + "123456 Z",
]
TIMES = [SECOND + f for f in ("123Z", "123456Z", "9Z", "123456789Z")] + [SECOND[:-1] + "Z"]


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("one_by_one", [True, False])
def test_the_time_fast_path_takes_only_what_the_full_parse_takes(
    kind: str, one_by_one: bool
) -> None:
    # After an event in the same second (the fast path is primed) or none (the
    # second may be known all the same): a replay from any offset decides alike.
    for primed in (True, False, True):
        for text in NOT_TIMES + TIMES:
            op = maker(kind, "count")()
            op.restore({}, {}, {})
            event = {"type": "t", "time": text, "id": "x", "data": {"k": "a"}}
            recs = [(0, 0, 1, T0, event)]
            if primed:
                first = {"type": "t", "time": SECOND + "000Z", "data": {"k": "b"}}
                recs.insert(0, (0, 0, 0, T0, first))
            if one_by_one:
                for rec in recs:
                    op.process(rec)
            else:
                op.process_all(recs)
            out = op.drain()
            if text in NOT_TIMES:
                assert event_time_ms(text) is None
                late = [(ev["data"]["event"]["id"], ev["data"]["event_time"]) for ev in out.late]
                assert late == [("x", None)], (kind, primed, text)
            else:
                assert out.late == [], (kind, primed, text)
                assert out.clock["stream_time"] == event_time_ms(text), (kind, primed, text)
