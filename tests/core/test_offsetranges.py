"""OffsetRanges: a set of offsets kept as ranges, checked against a plain set."""

from __future__ import annotations

import random

import pytest

from tidings.core.offsetranges import OffsetRanges


def offsets(r: OffsetRanges) -> set[int]:
    return {o for first, end in r for o in range(first, end)}


def test_adjacent_and_overlapping_ranges_merge_and_count_what_is_new() -> None:
    r = OffsetRanges()
    assert r.add(5, 8) == 3
    assert r.add(10, 12) == 2
    assert r.add(8, 10) == 2  # touches both: one range
    assert list(r) == [(5, 12)]
    assert r.add(4, 14) == 3  # 4, 12 and 13 are new
    assert list(r) == [(4, 14)]
    assert r.add(6, 9) == 0 and r.add(3, 3) == 0
    assert (len(r), r.count(), r.end) == (1, 10, 14)


def test_pop_run_moves_a_position_past_the_run_that_holds_it() -> None:
    r = OffsetRanges()
    r.add(3, 6)
    r.add(9, 10)
    assert r.pop_run(2) == 2  # 2 is not held: nothing moves, nothing leaves
    assert list(r) == [(3, 6), (9, 10)]
    assert r.pop_run(3) == 6
    assert list(r) == [(9, 10)]
    assert r.pop_run(9) == 10
    assert not r and r.end is None


def test_drop_from_cuts_a_range_that_straddles_the_offset() -> None:
    r = OffsetRanges()
    r.add(2, 5)
    r.add(7, 20)
    assert not r.drop_from(20)
    assert r.drop_from(9)
    assert list(r) == [(2, 5), (7, 9)]
    assert r.drop_from(3)
    assert list(r) == [(2, 3)]


def test_saved_form_is_compact_and_loads_back_as_older_lists_of_ints_do() -> None:
    r = OffsetRanges()
    r.add(4, 6)  # a run of two stays two ints
    r.add(9, 10)
    r.add(20, 2_000_000)
    saved = r.saved()
    assert saved == [4, 5, 9, (20, 2_000_000)]
    assert list(OffsetRanges.load(saved)) == list(r)
    assert list(OffsetRanges.load([[20, 2_000_000], 9, 5, 4])) == list(r)  # as JSON gives it
    assert list(OffsetRanges.load([1, 2, 3, 7])) == [(1, 4), (7, 8)]  # the older form
    assert list(OffsetRanges.load([1, 2, (3, 9), 12], at_least=5)) == [(5, 9), (12, 13)]


@pytest.mark.parametrize("entry", ["7", [3], [5, 5], [6, 2], [1, 2, 3], True, 1.5])
def test_a_malformed_saved_entry_is_named(entry: object) -> None:
    with pytest.raises(ValueError, match=r"\[first, end\] pair") as info:
        OffsetRanges.load([1, entry])
    assert repr(entry) in str(info.value)


def test_random_operations_agree_with_a_set() -> None:
    rng = random.Random(7)
    for _ in range(200):
        r, s = OffsetRanges(), set[int]()
        for _ in range(30):
            first = rng.randrange(60)
            end = first + rng.randrange(6)
            op = rng.random()
            if op < 0.7:
                assert r.add(first, end) == len(set(range(first, end)) - s)
                s |= set(range(first, end))
            elif op < 0.85:
                at = r.pop_run(first)
                want = first
                while want in s:
                    want += 1
                assert at == want
                s = {o for o in s if o >= want}
            else:
                assert r.drop_from(first) == any(o >= first for o in s)
                s = {o for o in s if o < first}
            assert offsets(r) == s
            assert all((o in r) == (o in s) for o in range(70))
            starts = [a for a, _ in r]
            ends = [b for _, b in r]
            assert all(ends[i] < starts[i + 1] for i in range(len(starts) - 1))  # never touch
            assert list(OffsetRanges.load(r.saved())) == list(r)
