"""Names, times, durations and positions as the API spells them.

A position token names an offset per partition, ``"0:15,1:7"``; a read answers
one in ``next`` and takes it back in ``from``.
"""

from __future__ import annotations

import re
from datetime import datetime

from tidings.errors import BadPosition, BadRequest, Forbidden

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}


MAX_DURATION_MS = 100 * 365 * 86_400_000
_TOKEN_RE = re.compile(r"\d+:\d+(,\d+:\d+)*", re.ASCII)


def is_decimal(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` alone takes "²", which ``int`` refuses."""
    return text.isascii() and text.isdigit()


def is_token(text: str) -> bool:
    """Whether ``text`` has the shape of a position token, ``"0:15,1:7"``."""
    return _TOKEN_RE.fullmatch(text) is not None


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise BadRequest(
            f"{kind} name {name!r} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,199}}", field=kind
        )
    return name


def check_client_topic(name: str) -> None:
    """Forbidden for a topic of the hub's own (its name starts with ``_``, which no
    client can create): a view's changelog ``__view.{name}`` is written only by the
    view's commits, never published to, deleted or consumed in a group by a client."""
    if not isinstance(name, str) or not name.startswith("_"):
        return
    detail = f"topic {name!r} is the hub's own"
    if name.startswith("__view.") and name.endswith(".by-key"):
        view = name.removeprefix("__view.").removesuffix(".by-key")
        detail += (
            f": the repartition topic of view {view!r}, written only by its routing "
            f"stage's commits (POST /v1/views/{view}/commit) and emptied by "
            f"POST /v1/views/{view}/rebuild"
        )
    elif name.startswith("__view."):
        view = name.removeprefix("__view.")
        detail += (
            f": the changelog of view {view!r}, written only by POST /v1/views/{view}/commit "
            f"and emptied by POST /v1/views/{view}/rebuild"
        )
    raise Forbidden(
        detail + "; no client may publish to it, delete it or make groups on it", topic=name
    )


def parse_duration_ms(value: object, field: str) -> int:
    """Seconds as a number, or a string such as ``"500ms"``, ``"30s"``, ``"7d"``."""
    if isinstance(value, bool):
        raise BadRequest(f"{field} must be a duration, not a boolean", field=field)
    ms: float | None = None
    if isinstance(value, int | float):
        if value < 0:
            raise BadRequest(f"{field} must not be negative", field=field)
        ms = value * 1000
    elif isinstance(value, str):
        m = _DURATION.fullmatch(value.strip())
        if m:
            ms = float(m.group(1)) * _UNITS[m.group(2)]
    if ms is not None:
        if not ms <= MAX_DURATION_MS:  # also refuses nan and inf
            raise BadRequest(f"{field} {value!r} is longer than 100 years", field=field)
        return int(ms)
    raise BadRequest(
        f"{field} {value!r} is not a duration: seconds, or a number with ms, s, m, h or d",
        field=field,
    )


def parse_time_ms(value: object, field: str = "time") -> int:
    """An RFC 3339 time, or milliseconds since the epoch, as ms since the epoch."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        if is_decimal(text.removeprefix("-")):
            return int(text)
        try:
            dt = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            pass
        else:
            if dt.tzinfo is not None:
                return int(dt.timestamp() * 1000)
    raise BadPosition(
        f"{field} {value!r} is not an RFC 3339 time with an offset, nor ms since the epoch",
        field=field,
    )


def parse_token(value: str, partitions: int, field: str = "from") -> dict[int, int]:
    """``"0:15,1:7"`` as ``{0: 15, 1: 7}``; partitions are checked against the topic."""
    out: dict[int, int] = {}
    for part in value.split(","):
        p, sep, o = part.strip().partition(":")
        if not sep or not is_decimal(p) or not is_decimal(o):
            raise BadPosition(
                f"{field} {value!r} is not earliest, latest, an offset or a position "
                "token like '0:15,1:7'",
                field=field,
            )
        if int(p) >= partitions:
            raise BadPosition(
                f"{field} names partition {p}; the topic has {partitions}", field=field
            )
        out[int(p)] = int(o)
    return out


def format_token(positions: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))
