"""How deep an event may nest: objects and arrays, the event object counting as one level.

orjson parses 1024 levels but serializes only 254, so an event nested between the
two parsed, then failed where the hub stored it. The hub refuses it where it
parses it instead, far below both, with :class:`~tidings.errors.InvalidEvent` (422).

The walk stops at the first branch past the limit; otherwise it visits each
object and array once (the request size limit bounds how many there are). Two
checks in C spare it: JSON text with no more brackets than the limit cannot nest
past it (:func:`shallow`), and a batch's data values that orjson can write inside
as many arrays as it has levels to spare cannot either (:func:`any_too_deep`).
"""

from __future__ import annotations

from itertools import chain
from typing import Any, Final

import orjson

from tidings.errors import InvalidEvent

__all__ = [
    "MAX_DEPTH", "any_too_deep", "check_data_depth", "deeper_than", "shallow", "too_deep",
]  # fmt: skip

MAX_DEPTH: Final = 64
"""Levels of objects and arrays an event may nest, the event object itself being one."""

_CONTAINERS: Final = frozenset({dict, list})
_OBJECTS: Final = {dict}


def _orjson_levels() -> int:
    """The most levels of arrays orjson writes (254 in orjson 3); 0 if it found none."""
    value: Any = 0
    for levels in range(1, 2048):
        value = [value]
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError:
            return levels - 1
    return 0


# Arrays to wrap a list of data values in, so that orjson writes them only if none
# nests past MAX_DEPTH: levels = wrap + the list + the data's own, and an event's
# are 1 + the data's. 0 (no such check) if orjson's limit leaves no room for it.
_WRAP: Final = max(0, _orjson_levels() - MAX_DEPTH)


def any_too_deep(data: list[Any]) -> bool:
    """True if an event whose ``data`` is one of ``data`` nests deeper than :data:`MAX_DEPTH`."""
    kinds = set(map(type, data))
    if kinds == _OBJECTS:
        # The usual batch, objects of plain values: checked in C, with no loop in Python.
        if _CONTAINERS.isdisjoint(map(type, chain.from_iterable(map(dict.values, data)))):
            return False
    elif _CONTAINERS.isdisjoint(kinds):
        return False
    if _WRAP:
        wrapped: Any = data
        for _ in range(_WRAP):
            wrapped = [wrapped]
        try:
            orjson.dumps(wrapped)  # in C: it raises past its levels
            return False
        except orjson.JSONEncodeError:
            pass  # too deep, or a value orjson cannot write: the walk says which
    return deeper_than([d for d in data if type(d) is dict or type(d) is list], MAX_DEPTH - 1)


def deeper_than(values: list[Any], levels: int) -> bool:
    """True if any of ``values`` (objects and arrays) nests more than ``levels`` levels."""
    return any(_deeper(value, levels) for value in values)


def _deeper(value: Any, room: int) -> bool:
    # Recursion at most MAX_DEPTH deep: the walk stops where the room runs out. A
    # plain loop measured faster here than gathering each level with map() in C.
    if room <= 0:
        return True
    for child in value.values() if type(value) is dict else value:
        kind = type(child)
        if (kind is dict or kind is list) and _deeper(child, room - 1):
            return True
    return False


def shallow(text: bytes) -> bool:
    """True if an event written as JSON ``text`` cannot nest past :data:`MAX_DEPTH`: the
    text holds no more brackets than that (those inside strings only add to the count)."""
    return text.count(b"{") + text.count(b"[") <= MAX_DEPTH


def too_deep() -> InvalidEvent:
    """The error for an event that nests deeper than :data:`MAX_DEPTH`."""
    return InvalidEvent(
        f"attribute 'data' nests objects and arrays deeper than the limit of {MAX_DEPTH} "
        "levels (the event object counts as one)",
        attribute="data",
        max_depth=MAX_DEPTH,
    )


def check_data_depth(data: Any) -> None:
    """Raise :class:`InvalidEvent` if an event whose ``data`` is ``data`` nests too deep."""
    if type(data) in _CONTAINERS and deeper_than([data], MAX_DEPTH - 1):
        raise too_deep()
