"""How the hub spreads a partitioned view's tasks over the processes that run it
(``core/viewmembers.py``), on a clock the tests move."""

from __future__ import annotations

import random

import pytest

from tidings.core.viewmembers import MAX_MEMBERS, Members, check_member
from tidings.errors import BadRequest, Conflict


def owners(m: Members) -> dict[int, str]:
    """Task -> the member told it runs it (each task at most once, by construction)."""
    return dict(m.owner)


def settle(m: Members, members: list[str], now: int, rounds: int = 3) -> dict[str, list[int]]:
    """Every member heartbeats ``rounds`` times: what each runs then."""
    got: dict[str, list[int]] = {}
    for _ in range(rounds):
        for who in members:
            got[who] = m.heartbeat(who, now)
    return got


def test_one_member_runs_every_task() -> None:
    m = Members(4)
    assert m.heartbeat("a", 0) == [0, 1, 2, 3]


@pytest.mark.parametrize(("tasks", "n"), [(3, 2), (3, 3), (8, 3), (2, 5), (12, 4)])
def test_tasks_are_spread_evenly_and_each_runs_once(tasks: int, n: int) -> None:
    m = Members(tasks)
    names = [f"m{i}" for i in range(n)]
    got = settle(m, names, 0)
    runs = sorted(t for ts in got.values() for t in ts)
    assert runs == list(range(tasks))  # every task, once
    sizes = sorted(len(ts) for ts in got.values())
    assert sizes[-1] - sizes[0] <= 1


def test_a_task_moves_only_once_its_holder_let_it_go() -> None:
    m = Members(3)
    assert m.heartbeat("a", 0) == [0, 1, 2]
    assert m.heartbeat("b", 0) == []  # a still holds them all
    kept = m.heartbeat("a", 0)  # told to let one go
    assert len(kept) == 2
    moved = m.heartbeat("b", 0)
    assert len(moved) == 1 and not set(kept) & set(moved)


def test_a_silent_member_is_dropped_after_the_session_timeout() -> None:
    m = Members(3, timeout_ms=10_000)
    settle(m, ["a", "b"], 0)
    assert m.heartbeat("b", 10_000) != [0, 1, 2]  # a is not yet silent for too long
    assert m.heartbeat("b", 10_001) == [0, 1, 2]
    assert m.describe(10_001)["members"] == {"b": [0, 1, 2]}


def test_a_leaver_gives_its_tasks_at_once_and_the_others_keep_theirs() -> None:
    m = Members(6)
    before = settle(m, ["a", "b", "c"], 0)
    m.heartbeat("c", 0, leave=True)
    after = settle(m, ["a", "b"], 0)
    assert sorted(after["a"] + after["b"]) == list(range(6))
    assert set(before["a"]) <= set(after["a"]) and set(before["b"]) <= set(after["b"])


def test_a_resize_starts_the_assignment_over() -> None:
    m = Members(2)
    settle(m, ["a"], 0)
    m.resize(4)
    assert m.heartbeat("a", 0) == [0, 1, 2, 3]


@pytest.mark.parametrize("seed", range(40))
def test_random_joins_leaves_and_silences_never_tell_two_live_members_one_task(
    seed: int,
) -> None:
    rng = random.Random(seed)
    m = Members(7, timeout_ms=50)
    now = 0
    told: dict[str, list[int]] = {}  # each member's last answer: what it runs
    for step in range(2000):
        now += rng.randint(0, 20)
        who = f"m{rng.randrange(6)}"
        if rng.random() < 0.1:
            m.heartbeat(who, now, leave=True)
            told.pop(who, None)
        else:
            told[who] = m.heartbeat(who, now)
        live = m.describe(now)["members"]
        for gone in set(told) - set(live):
            del told[gone]  # silent past the timeout: dropped, told nothing more
        flat = [t for ts in told.values() for t in ts]
        assert len(flat) == len(set(flat)), (seed, step, told)
        assert told == {w: ts for w, ts in live.items() if w in told}, (seed, step)


def test_member_ids_are_checked() -> None:
    assert check_member("app@host:12:ab") == "app@host:12:ab"
    for bad in (None, 5, "", "x" * 201, "a\nb", "a\x7f"):
        with pytest.raises(BadRequest):
            check_member(bad)


def test_a_full_member_list_is_409_and_a_member_joins_once_one_leaves() -> None:
    m = Members(4)
    for i in range(MAX_MEMBERS):
        m.heartbeat(f"m{i:04}", 0)
    with pytest.raises(Conflict) as full:
        m.heartbeat("late", 0)
    assert full.value.status == 409 and full.value.fields["field"] == "member"
    assert "late" not in m.seen and len(m.seen) == MAX_MEMBERS
    assert m.heartbeat("m0000", 1) == [0]  # a member already in heartbeats on
    m.heartbeat("m0005", 1, leave=True)
    m.heartbeat("late", 1)
    assert "late" in m.seen
