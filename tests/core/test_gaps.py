"""Offsets a compaction by key removed: found between the records a read answers, told
from damage, and passed over by a group (done, not counted as skipped)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar, cast

import orjson

from tidings.core.groups import ConsumerGroup, GroupConfig
from tidings.core.skipping import Skipped, find_gaps

_T = TypeVar("_T")

def drive(step: Coroutine[Any, Any, _T]) -> _T:
    """Run a group's fetch to its end: its reads here never wait, so it never yields."""
    try:
        step.send(None)
    except StopIteration as done:
        return cast(_T, done.value)
    step.close()
    raise AssertionError("a fetch over reads that never wait yielded")



def rec(offset: int) -> tuple[int, int, bytes]:
    return (offset, 0, b"{}")


def test_gaps_between_records_and_before_the_first() -> None:
    got = [rec(3), rec(4), rec(9)]
    assert find_gaps(0, 0, 10, got, []) == [(0, 0, 3), (0, 5, 9)]
    assert find_gaps(1, 3, 10, got, []) == [(1, 5, 9)]
    assert find_gaps(0, 0, 3, [rec(0), rec(1), rec(2)], []) == []


def test_damage_is_not_a_gap() -> None:
    got = [rec(2), rec(20)]
    lost = [Skipped(0, 5, 8, "crc"), Skipped(0, 10, 12, "crc")]
    assert find_gaps(0, 0, 21, got, lost) == [(0, 0, 2), (0, 3, 5), (0, 8, 10), (0, 12, 20)]


def test_nothing_read_up_to_the_end_is_a_gap() -> None:
    assert find_gaps(0, 4, 9, [], [Skipped(0, 4, 6, "crc")]) == [(0, 6, 9)]


def test_a_group_passes_over_a_gap_without_counting_it_skipped() -> None:
    g = ConsumerGroup("t", "g", GroupConfig(), {0: (0, [])})

    async def read(p: int, offset: int, n: int) -> list[tuple[int, int, bytes]]:
        return [r for r in (rec(0), rec(5), rec(6)) if r[0] >= offset][:n]

    out, _ = drive(g.fetch(0, 10, read))
    assert [d.offset for d in out] == [0, 5, 6]
    g.pass_gap(0, 1, 5)
    g.ack([d.lease for d in out])
    assert g.committed(0) == 7
    assert g.skipped_events == 0 and g.skipped == []
    # a gap passed before the records below it are acked: done once they are
    h = ConsumerGroup("t", "g", GroupConfig(), {0: (0, [])})
    out, _ = drive(h.fetch(0, 10, read))
    h.pass_gap(0, 1, 5)
    assert h.committed(0) == 0
    h.ack([out[0].lease])
    assert h.committed(0) == 5


def test_a_gap_of_two_million_offsets_behind_a_pending_record_costs_one_range() -> None:
    # A compacted partition: offsets 2 to 1,999,999 were removed. The first fetch
    # leases offset 0 only, so offset 1 stays pending when the gap is passed.
    gap = 2_000_000
    log = [rec(0), rec(1), rec(gap), rec(gap + 1)]
    g = ConsumerGroup("t", "g", GroupConfig(), {0: (0, [])})
    gaps: list[tuple[int, int, int]] = []

    async def read(p: int, offset: int, n: int) -> list[tuple[int, int, bytes]]:
        got = [r for r in log if r[0] >= offset][:n]
        gaps.extend(find_gaps(p, offset, got[-1][0] + 1 if got else offset, got, []))
        return got

    (first,), _ = drive(g.fetch(0, 1, read))
    for p, a, b in gaps:
        g.pass_gap(p, a, b)
    assert gaps == [(0, 2, gap)]
    assert g.positions() == {0: (0, [(2, gap)], [(0, 1, 0)])}
    assert len(orjson.dumps(g.positions(), option=orjson.OPT_NON_STR_KEYS)) < 100
    g.ack([first.lease])
    assert g.positions()[0][:2] == (1, [(2, gap)])
    # a restart from that state as a store hands it back (JSON: lists, keys as strings)
    saved = orjson.loads(orjson.dumps(g.positions(), option=orjson.OPT_NON_STR_KEYS))
    h = ConsumerGroup("t", "g", GroupConfig(), {int(p): v for p, v in saved.items()})
    out, _ = drive(h.fetch(1, 10, read))
    assert [d.offset for d in out] == [1, gap, gap + 1]
    h.ack([out[2].lease])
    assert h.positions()[0][:2] == (1, [(2, gap), gap + 1])
    h.ack([out[0].lease])
    assert h.positions()[0][:2] == (gap, [gap + 1])
    h.ack([out[1].lease])
    assert h.positions()[0][:2] == (gap + 2, [])
