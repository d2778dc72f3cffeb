"""Event time: the CloudEvent ``time`` attribute as exact milliseconds, fast.

The hub checked every ``time`` at publish (RFC 3339, ``T`` and ``Z`` in upper case).
Most are UTC with a fraction, ``2026-12-05T10:01:00.123456Z``: the seconds part is
looked up in a cache (one entry per distinct second) and the first three digits of
the fraction are added. The operators' hot paths go further: they keep the last
seconds prefix and its value, so an event in the same second as the one before
costs a ``startswith`` and a lookup in :data:`FRACTION_MS` and in
:data:`FRACTION_TAIL`, which hold it to the exact shapes ``.mmmZ`` and
``.mmmuuuZ`` (anything else takes the full parse, which may refuse it). Anything
else goes through :meth:`datetime.datetime.fromisoformat`. Times are truncated to
the millisecond (floor, also before 1970), in integers only: no float rounding.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

from tidings.events.envelope import rfc3339_ms

__all__ = ["FRACTION_MS", "FRACTION_TAIL", "SECONDS", "event_time_ms", "format_ms"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_SECONDS_TEXT: Final = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d", re.ASCII)
_FRACTION: Final = re.compile(r"\d+", re.ASCII)
_CACHE_LIMIT: Final = 1 << 16

SECONDS: dict[str, int] = {}
"""``"2026-12-05T10:01:00"`` (UTC) -> its ms since the epoch; filled by :func:`event_time_ms`."""

_FORMATTED: dict[int, str] = {}

FRACTION_MS: Final = {f"{i:03d}": i for i in range(1000)}
"""``"123"`` -> 123: the milliseconds of a fraction, a dict lookup cheaper than ``int``."""

FRACTION_TAIL: Final = frozenset(["Z", *(f"{i:03d}Z" for i in range(1000))])
"""What may follow a fraction's first three digits on the fast path: ``Z`` (a time to
the millisecond) or three more digits and ``Z`` (to the microsecond, as the hub
stamps ``time``). So ``t[23:] in FRACTION_TAIL`` holds a time to those two shapes,
its length to 24 or 27 characters."""


def event_time_ms(text: object) -> int | None:
    """An RFC 3339 time with an offset as ms since the epoch, or None if it is not one."""
    if not isinstance(text, str):
        return None
    n = len(text)
    if n >= 20 and text[-1] in "Zz" and text[19] in ".Zz":
        prefix = text[:19]
        base = SECONDS.get(prefix)
        if base is None:
            if not _SECONDS_TEXT.fullmatch(prefix):
                return None
            try:
                dt = datetime.fromisoformat(prefix.replace("t", "T")).replace(tzinfo=UTC)
            except ValueError:
                return None
            base = (dt - _EPOCH) // _MS
            if len(SECONDS) >= _CACHE_LIMIT:
                SECONDS.clear()
            SECONDS[prefix] = base
        if n == 20:
            return base
        fraction = text[20:-1]
        if not _FRACTION.fullmatch(fraction):
            return None
        return base + int(fraction[:3].ljust(3, "0"))
    try:
        dt = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return (dt - _EPOCH) // _MS


def format_ms(ms: int) -> str:
    """``ms`` as RFC 3339 UTC to the millisecond, ``2026-12-05T10:01:00.000Z`` (cached)."""
    text = _FORMATTED.get(ms)
    if text is None:
        if len(_FORMATTED) >= _CACHE_LIMIT:
            _FORMATTED.clear()
        text = _FORMATTED[ms] = rfc3339_ms(ms)
    return text
