"""The depth checks done in C say what the walk says (tidings.events.nesting).

A batch's data values are checked by having orjson write them inside as many
arrays as its limit leaves to spare, and a single event by counting the brackets
of its text; each must agree with the walk, at the limit and around it.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from tidings.events.nesting import MAX_DEPTH, any_too_deep, deeper_than, shallow


def nest(levels: int, leaf: Any = 1, rng: random.Random | None = None) -> Any:
    """``levels`` of objects and arrays (chosen at random with ``rng``) around ``leaf``."""
    value = leaf
    for _ in range(levels):
        flip = rng is not None and rng.random() < 0.5
        value = {"k": value, "s": "x"} if flip else [0, value]
    return value


def walked(data: list[Any]) -> bool:
    return deeper_than([d for d in data if type(d) in (dict, list)], MAX_DEPTH - 1)


@pytest.mark.parametrize(
    "levels", [1, 2, MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, 65, 200, 254, 300]
)
def test_a_batch_is_too_deep_exactly_when_the_walk_says_so(levels: int) -> None:
    rng = random.Random(levels)
    shallow_ones = [nest(rng.randrange(0, 6), rng=rng) for _ in range(50)]
    for where in (0, 25, 50):
        data = [*shallow_ones[:where], nest(levels, rng=rng), *shallow_ones[where:]]
        assert any_too_deep(data) == walked(data) == (levels >= MAX_DEPTH), (levels, where)


def test_random_batches_agree_with_the_walk() -> None:
    rng = random.Random(7)
    for _ in range(300):
        data = [nest(rng.randrange(0, 70), rng=rng) for _ in range(rng.randrange(1, 6))]
        data.append(rng.choice([None, "text", 3, {"flat": 1}, []]))
        assert any_too_deep(data) == walked(data)


def test_a_value_orjson_cannot_write_leaves_the_answer_to_the_walk() -> None:
    data = [{"big": 1 << 70}, nest(3)]  # past 64 bits: orjson refuses to write it
    assert any_too_deep(data) is False
    assert any_too_deep([{"big": 1 << 70}, nest(MAX_DEPTH)]) is True


@pytest.mark.parametrize("levels", [0, 1, 10, MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, 100])
def test_a_shallow_text_is_never_too_deep(levels: int) -> None:
    rng = random.Random(levels)
    event = {"type": "t", "data": nest(levels, rng=rng), "note": "[{[{"}
    text = orjson.dumps(event)
    if shallow(text):
        assert not walked([event["data"]])
    # The event object is one level, and counts one bracket.
    assert shallow(orjson.dumps({"type": "t", "data": nest(MAX_DEPTH - 1)}))
    assert not shallow(orjson.dumps({"type": "t", "data": nest(MAX_DEPTH)}))
