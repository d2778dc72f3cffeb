"""The 202 body of a publish, spliced for a run, is byte for byte what orjson writes."""

from __future__ import annotations

import orjson
import pytest

from tidings.core.published import Published, Run, Spread
from tidings.events.batch import new_event_ids
from tidings.server.publish import _answer, _one_answer, _run_answer, _spread_answer


@pytest.mark.parametrize(
    "ids",
    [
        new_event_ids(1000),
        ["a"],
        ["café", "😀", "a,b", "{}", "[]", "x/y", "100%"],
    ],
)
def test_a_run_is_answered_as_orjson_would(ids: list[str]) -> None:
    run = Run(ids, 3, 2**40)
    assert _run_answer(run) == _answer(run.published())
    assert orjson.loads(_answer(run.published()))["events"][-1] == {
        "id": ids[-1],
        "partition": 3,
        "offset": 2**40 + len(ids) - 1,
    }


@pytest.mark.parametrize("odd", ['q"uote', "back\\slash", '","partition":9', "tab\there"])
def test_an_id_that_json_escapes_is_answered_the_general_way(odd: str) -> None:
    assert _run_answer(Run(["a", odd, "b"], 0, 0)) is None


@pytest.mark.parametrize(
    "ids",
    [
        new_event_ids(1000),
        ["a"],
        ["café", "😀", "a,b", "{}", "[]", "x/y", "100%"],
    ],
)
def test_a_spread_is_answered_as_orjson_would(ids: list[str]) -> None:
    partitions = [i % 3 for i in range(len(ids))]
    offsets = [2**40 + i // 3 for i in range(len(ids))]
    spread = Spread(ids, partitions, offsets)
    assert _spread_answer(spread) == _answer(spread.published())
    assert orjson.loads(_answer(spread.published()))["events"][-1] == {
        "id": ids[-1],
        "partition": partitions[-1],
        "offset": offsets[-1],
    }


@pytest.mark.parametrize("odd", ['q"uote', "back\\slash", '","partition":9', "tab\there"])
def test_a_spread_with_an_id_that_json_escapes_is_answered_the_general_way(odd: str) -> None:
    assert _spread_answer(Spread(["a", odd, "b"], [0, 1, 2], [5, 6, 7])) is None


@pytest.mark.parametrize("eid", ["a", "café", "😀", 'q"uote', "back\\slash", "tab\there", "\u2028"])
def test_one_event_is_answered_as_orjson_would(eid: str) -> None:
    one = Published(eid, 2, 2**40)
    assert _one_answer(one) == _answer([one])
