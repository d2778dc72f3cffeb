"""Event-type patterns, as NATS subjects: ``order.*`` matches one token, ``order.>`` the rest.

``order.placed`` matches ``order.*``, ``order.>`` and ``>``; ``order.item.added``
matches ``order.>`` but not ``order.*``. A pattern without wildcards matches
itself only. Types are split on ``.``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from tidings.errors import BadRequest

_TOKEN = re.compile(r"[^.*>\s]+")


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    tokens = pattern.split(".")
    parts: list[str] = []
    for i, tok in enumerate(tokens):
        if tok == "*":
            parts.append(r"[^.]+")
        elif tok == ">":
            if i != len(tokens) - 1:
                raise BadRequest(
                    f"type pattern {pattern!r}: '>' may only be the last token", field="types"
                )
            parts.append(r".+")
        elif _TOKEN.fullmatch(tok):
            parts.append(re.escape(tok))
        else:
            raise BadRequest(
                f"type pattern {pattern!r}: token {tok!r} must be a name, '*' or a final '>'",
                field="types",
            )
    return re.compile(r"\.".join(parts))


class TypeFilter:
    """Matches an event type against any of several patterns; empty matches all."""

    __slots__ = ("_exact", "_patterns", "patterns")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(p for p in patterns if p)
        self._exact = frozenset(p for p in self.patterns if "*" not in p and ">" not in p)
        self._patterns = tuple(
            _compile(p) for p in self.patterns if p not in self._exact
        )
        for p in self._exact:
            _compile(p)  # checks the name

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, event_type: str) -> bool:
        if not self.patterns or event_type in self._exact:
            return True
        return any(p.fullmatch(event_type) for p in self._patterns)

    @classmethod
    def parse(cls, raw: str | Iterable[str] | None) -> TypeFilter:
        """From a comma-separated query value or a list."""
        if raw is None:
            return cls()
        if isinstance(raw, str):
            return cls(p.strip() for p in raw.split(","))
        return cls(raw)
