"""Joins against a plain-Python reference, whole and restored at every cut."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest
from streamref import make_script, ms_of, run, text_of

from tidings.streams import EnrichOperator, Join, StreamJoin

WITHIN, GRACE, IDLE = 4_000, 1_000, 1_000


def two_inputs(script: list[Any], seed: int) -> list[Any]:
    """The same steps with each record moved to input 0 or 1 at random."""
    rnd = random.Random(seed)
    out = []
    for step, arg in script:
        if step == "rec":
            _, p, o, a, ev = arg
            arg = (rnd.randrange(2), p, o, a, ev)
        out.append((step, arg))
    return out


def jid(view: str, *positions: tuple[str, int, int]) -> str:
    text = "\0".join([view, *(f"{t}\0{p}\0{o}" for t, p, o in positions)])
    return "j-" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def pair_data(left: Any, right: Any) -> dict[str, Any]:
    return {"l": left.data["v"], "r": right.data["v"]}


def join_reference(script: list[Any]) -> tuple[list[Any], list[int]]:
    """Every pair of events not late, same key, times at most WITHIN apart, in the order the
    second of them came; and the offsets of the late events."""
    wm = -(10**18)
    stream_time, last = -(10**18), None  # the greatest event time; the last record's append
    accepted: list[tuple[int, int, str, int, dict[str, Any]]] = []  # side, t, key, offset, event
    pairs: list[Any] = []
    late: list[int] = []
    topics = ("left", "right")
    for step, arg in script:
        horizon = arg if step == "adv" else arg[3]
        if last is not None and horizon - last > IDLE:  # a quiet gap: event time goes on
            wm = max(wm, stream_time + horizon - last - IDLE)
        if step == "adv":
            continue
        side, _, offset, appended, ev = arg
        t = ms_of(ev["time"]) if "time" in ev else appended
        stream_time, last = max(stream_time, t), appended
        wm = max(wm, t)
        k = ev["data"]["k"]
        if t + WITHIN + GRACE <= wm:
            late.append(offset)
            continue
        for s2, t2, k2, o2, ev2 in accepted:
            if s2 != side and k2 == k and abs(t2 - t) <= WITHIN:
                (ls, lt, lo, le), (rs, rt, ro, re) = sorted(
                    [(s2, t2, o2, ev2), (side, t, offset, ev)], key=lambda x: x[0]
                )
                pairs.append((
                    jid("j", (topics[ls], 0, lo), (topics[rs], 0, ro)), text_of(max(lt, rt)), k,
                    {"l": le["data"]["v"], "r": re["data"]["v"]},
                ))
        accepted.append((side, t, k, offset, ev))
    return pairs, late


def make_join() -> StreamJoin:
    return StreamJoin(
        "j", ["left", "right"], Join(f"{WITHIN}ms", grace=f"{GRACE}ms"),
        lambda e: e.data["k"], lambda e: e.data["k"], pair_data,
    )


@pytest.mark.parametrize("seed", range(5))
def test_a_stream_join_equals_the_reference(seed: int) -> None:
    script = two_inputs(make_script(150, seed=seed, spread=3_000), seed)
    want_pairs, want_late = join_reference(script)
    got = run(make_join, script)
    assert [(r["id"], r["time"], r["partitionkey"], r["data"]) for r in got.results] == want_pairs
    assert [ev["data"]["offset"] for ev in got.late] == want_late
    assert want_pairs and want_late
    assert {r["type"] for r in got.results} == {"tidings.join.result"}


def test_a_stream_join_restored_at_every_cut_gives_the_same_output() -> None:
    script = two_inputs(make_script(50, seed=9, spread=3_000), 9)
    whole = run(make_join, script)
    for cut in range(len(script) + 1):
        got = run(make_join, script, cuts=[cut], batch=cut % 2 == 1)
        assert (got.results, got.late, got.state, got.clock) == (
            whole.results, whole.late, whole.state, whole.clock
        ), cut


def test_a_stream_join_lets_go_of_what_can_no_longer_match() -> None:
    script = two_inputs(make_script(300, seed=4, spread=3_000), 4)
    got = run(make_join, script)
    assert got.state == {}  # the last horizon is far past every event


def enrich_reference(script: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    table: dict[str, Any] = {}
    out = []
    for step, arg in script:
        if step != "rec":
            continue
        side, _, offset, _, ev = arg
        k = ev["data"]["k"]
        if side == 1:
            new = table.get(k, 0) + ev["data"]["v"]
            if new < 0:
                table.pop(k, None)
            else:
                table[k] = new
        else:
            data = {"v": ev["data"]["v"], "t": table.get(k)}
            out.append((jid("e", ("orders", 0, offset)), k, data))
    return out, table


def make_enrich() -> EnrichOperator:
    return EnrichOperator(
        "e", ["orders", "customers"], lambda e: e.data["k"], lambda e: e.data["k"],
        lambda cur, e: None if (cur or 0) + e.data["v"] < 0 else (cur or 0) + e.data["v"],
        lambda e, value: {"v": e.data["v"], "t": value},
    )


def test_an_enriched_stream_sees_the_table_as_of_its_place_in_the_merged_order() -> None:
    script = two_inputs(make_script(200, seed=2), 2)
    want, table = enrich_reference(script)
    got = run(make_enrich, script)
    assert [(r["id"], r["partitionkey"], r["data"]) for r in got.results] == want
    assert got.values == table
    whole = got
    for cut in range(0, len(script) + 1, 7):
        got = run(make_enrich, script, cuts=[cut], batch=cut % 2 == 0)
        assert (got.results, got.values) == (whole.results, whole.values), cut


def test_join_parameters() -> None:
    with pytest.raises(ValueError, match="a join reads two inputs"):
        StreamJoin("j", ["a"], Join("1s"), str, str, pair_data)
    with pytest.raises(ValueError, match="takes Join"):
        StreamJoin("j", ["a", "b"], "1s", str, str, pair_data)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Join within 'x' is not a duration"):
        Join("x")
    with pytest.raises(ValueError, match="join must be a function"):
        EnrichOperator("e", ["a", "b"], str, str, lambda c, e: c, None)  # type: ignore[arg-type]
    assert Join("5m", grace="10s").describe() == {
        "kind": "join", "within": 300_000, "grace": 10_000, "idle": 10_000,
    }
