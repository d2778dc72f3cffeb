"""Checking and filling a whole batch of events at once, attribute by attribute.

:func:`fill_batch` does what :func:`tidings.events.normalize_event` does to each
event of a batch, but per attribute: each attribute's values are gathered in C
and each distinct value is checked once, so a batch costs a few lookups per event
instead of a pass of the per-event check. Anything it cannot vouch for sends the
batch back to the per-event path, which names the fault and its index.
"""

from __future__ import annotations

import re
import sys
from array import array
from collections import deque
from itertools import repeat
from operator import setitem
from typing import Any, Final, Literal

from uuid_utils import uuid7

from tidings.errors import InvalidEvent
from tidings.events.envelope import (
    _CACHE_LIMIT,
    _CONTEXT,
    _RFC3339_TEXT,
    _check_chars,
    _check_media_type,
    _check_string,
    _check_time,
    _check_traceparent,
    _check_uri,
    _check_uri_reference,
    _checked_media,
    _checked_sources,
    _plain_extensions,
)
from tidings.events.nesting import any_too_deep

__all__ = ["counted_ids", "fill_batch", "new_event_ids"]

# Timestamps each ending a line, all checked by one match (groups made non-capturing, and
# the repeat possessive: nothing to remember or undo per line).
_RFC3339_LINES: Final = re.compile(
    "(?:" + re.sub(r"\((?!\?)", "(?:", _RFC3339_TEXT) + "\n)*+", re.ASCII
)

def new_event_ids(count: int) -> list[str]:
    """``count`` new UUIDv7s, in creation order, which is their sorted order.

    One UUIDv7 is made, and the others count up from it in its last 32 random bits
    (RFC 9562 6.2, method 2: the random part incremented within a millisecond),
    written as hex in C: about half the cost of making each. Where those bits would
    overflow, each is made on its own.
    """
    if count < 1:
        return []
    first = str(uuid7())
    ids = counted_ids(first, count)
    if ids is None:
        ids = [first] + [str(uuid7()) for _ in range(count - 1)]
        ids.sort()  # a no-op but for a clock that stepped back: one comparison per id
    return ids


def counted_ids(first: str, count: int) -> list[str] | None:
    """``count`` ids counting up from the UUID text ``first`` in its last 32 bits, as
    :func:`new_event_ids` makes them; None where those bits would overflow."""
    low = int(first[_LOW_HEX:], 16)
    if low + count > 1 << 32:
        return None
    counts = array(_U32, range(low, low + count))
    if sys.byteorder == "little":
        counts.byteswap()  # hex digits in reading order
    return list(map(first[:_LOW_HEX].__add__, counts.tobytes().hex(",", 4).split(",")))


# The last 8 hex digits of a UUID's text, and an array type of 32-bit items.
_LOW_HEX: Final = 28
_U32: Final = next(code for code in "IL" if array(code).itemsize == 4)



def fill_batch(items: list[Any], topic: str, now: str) -> Literal["new ids", "filled"] | None:
    """:func:`_fill` on every event of a batch at once, attribute by attribute.

    Each attribute's values are gathered in C (``map``) and each distinct value is
    checked once, so the cost per event is a few lookups instead of a pass of
    :func:`_fill`. Returns "new ids" when it gave every event its id, "filled" when
    the events had theirs, and None, having changed nothing, whenever the batch needs
    :func:`_fill` event by event: a fault to name with its index, an attribute given
    as ``null`` where that matters, ``data_base64``, a content type that is not JSON,
    an extension seen for the first time or with a value that is not a string. The
    events it fills come out exactly as :func:`_fill` would leave them, key order
    included.
    """
    if set(map(type, items)) != _ONLY_DICTS:
        return None
    n = len(items)
    names: set[str] = set().union(*items)
    if "data_base64" in names or not all(
        name in _plain_extensions or name == "traceparent" for name in names - _CONTEXT
    ):
        return None  # data_base64, or an extension name not checked yet
    get = dict.get
    absent = repeat(_ABSENT)  # told apart from null, which _fill drops
    try:
        # set() raises TypeError on an unhashable value (an array or an object).
        for value in _distinct(list(map(get, items, repeat("type")))):
            if type(value) is not str or not value or not value.isprintable():
                _check_string("type", value)

        fill_specversion = False
        if "specversion" in names:
            versions = _distinct(list(map(get, items, repeat("specversion"))))
            if not versions <= _SPECVERSIONS:
                return None
            fill_specversion = None in versions
        else:
            fill_specversion = True

        ids: list[Any] | None = None
        if "id" in names:
            ids = list(map(get, items, repeat("id")))
            if None in ids:
                return None  # some given, some not (or null): event by event
            # str.isprintable raises TypeError on anything but a string.
            if not all(ids) or not all(map(str.isprintable, ids)):
                return None

        fill_source = "source" not in names
        if not fill_source:
            for value in _distinct(list(map(get, items, repeat("source")))):
                if value is None:
                    return None
                if type(value) is not str or value not in _checked_sources:
                    _check_uri_reference("source", value)
                    if len(_checked_sources) < _CACHE_LIMIT:
                        _checked_sources.add(value)

        fill_time = "time" not in names
        if not fill_time:
            times = _distinct(list(map(get, items, repeat("time"))))
            if None in times or not _times_ok(times):
                return None

        if "subject" in names:
            for value in _distinct(list(map(get, items, repeat("subject"), absent))):
                if value is None:
                    return None
                if value is _ABSENT:
                    continue
                if type(value) is not str or not value or not value.isprintable():
                    _check_string("subject", value)
        if "datacontenttype" in names:
            for value in _distinct(list(map(get, items, repeat("datacontenttype"), absent))):
                if value is _ABSENT:
                    continue
                if type(value) is not str:
                    return None
                json_data = _checked_media.get(value)
                if json_data is None:
                    json_data = _check_media_type(value)
                if not json_data:
                    return None  # data must be a string: checked event by event
        if "dataschema" in names:
            for value in _distinct(list(map(get, items, repeat("dataschema"), absent))):
                if value is None:
                    return None
                if value is not _ABSENT:
                    _check_uri("dataschema", value)
        for name in names - _CONTEXT:
            values = _distinct(list(map(get, items, repeat(name), absent)))
            values.discard(_ABSENT)
            if (
                name != "traceparent"
                and set(map(type, values)) == _ONLY_STRS
                and all(map(str.isprintable, values))
            ):
                continue  # strings of printable characters (a key per event, say): in C
            for value in values:
                if value is _ABSENT:
                    continue
                if type(value) is not str:
                    return None  # null, or a number or boolean: event by event
                if name == "traceparent":
                    _check_traceparent(value)
                elif not value.isprintable():
                    _check_chars(name, value, "extension attribute")
    except (InvalidEvent, TypeError):
        return None
    if "data" in names and any_too_deep(list(map(get, items, repeat("data")))):
        return None  # _fill names the event that nests too deep

    # Every check passed: fill, in the order _fill fills.
    if fill_specversion:
        deque(map(setitem, items, repeat("specversion"), repeat("1.0", n)), 0)
    if ids is None:
        deque(map(setitem, items, repeat("id"), new_event_ids(n)), 0)
    if fill_source:
        deque(map(setitem, items, repeat("source"), repeat("/topics/" + topic, n)), 0)
    if fill_time:
        deque(map(setitem, items, repeat("time"), repeat(now, n)), 0)
    return "new ids" if ids is None else "filled"


def _distinct(values: list[Any]) -> set[Any]:
    """The distinct values of an attribute, cheaply when all are equal (the usual case).

    Raises TypeError on an unhashable value (an array or an object).
    """
    first = values[0]
    if type(first) is str and values.count(first) == len(values):
        return {first}  # only a str equals a str: no 1 == 1.0 == True to merge
    return set(values)


_ABSENT: Final = object()
_ONLY_DICTS: Final = {dict}
_ONLY_STRS: Final = {str}
_SPECVERSIONS: Final = frozenset({"1.0", None})


def _times_ok(times: set[Any]) -> bool:
    """Whether every distinct ``time`` of a batch is valid and already in upper case;
    TypeError if one is not a string.

    The distinct values are matched with one regex over their lines, so a batch
    whose events each carry their own time costs one scan, not a match per event.
    """
    text = "\n".join(times) + "\n"  # TypeError on a value that is not a string
    if text.count("\n") != len(times) or _RFC3339_LINES.fullmatch(text) is None:
        return False
    if "t" in text or "z" in text:
        return False  # to be stored in upper case: event by event
    if "-29T" in text or "-30T" in text or "-31T" in text:
        try:
            for value in times:
                _check_time(value)  # the regex allows 31 days in every month
        except InvalidEvent:
            return False
    return True
