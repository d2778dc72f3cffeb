"""How deep an event may nest: objects and arrays, the event object counting as one level.

orjson parses 1024 levels but serializes only 254, so an event nested between the
two parsed, then failed where the hub stored it. The hub refuses it where it
parses it instead, far below both, with :class:`~tidings.errors.InvalidEvent` (422).

The walk goes level by level and does its per-item work in C (``map``,
``compress``): a flat ``data`` object costs one pass over its values.
"""

from __future__ import annotations

from itertools import chain, compress, repeat
from operator import is_
from typing import Any, Final

from tidings.errors import InvalidEvent

__all__ = ["MAX_DEPTH", "check_data_depth", "deeper_than", "is_container", "too_deep"]

MAX_DEPTH: Final = 64
"""Levels of objects and arrays an event may nest, the event object itself being one."""

is_container = frozenset({dict, list}).__contains__
"""Whether a type (as ``type(value)`` gives it) is a JSON object or array."""


def deeper_than(values: list[Any], levels: int) -> bool:
    """True if any of ``values`` (objects and arrays) nests more than ``levels`` levels."""
    dicts = [v for v in values if type(v) is dict]
    lists = [v for v in values if type(v) is list]
    depth = 1
    while dicts or lists:
        if depth > levels:
            return True
        children = list(chain(chain.from_iterable(map(dict.values, dicts)), *lists))
        types = list(map(type, children))
        present = set(types)
        dicts = list(compress(children, map(is_, types, repeat(dict)))) if dict in present else []
        lists = list(compress(children, map(is_, types, repeat(list)))) if list in present else []
        depth += 1
    return False


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
    if is_container(type(data)) and deeper_than([data], MAX_DEPTH - 1):
        raise too_deep()
