"""Event-type patterns, as NATS subjects: ``order.*`` matches one token, ``order.>`` the rest.

``order.placed`` matches ``order.*``, ``order.>`` and ``>``; ``order.item.added``
matches ``order.>`` but not ``order.*``. A pattern without wildcards matches
itself only. Types are split on ``.``.

A :class:`TypeFilter` keeps its wildcard patterns as a tree of tokens, so one
match walks the type's tokens once, whatever the number of patterns; a request
names at most ``limit`` patterns (the hub's ``max_type_patterns``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tidings.errors import BadRequest

#: Type patterns one subscription, fetch, read, group or webhook may name, by default.
MAX_TYPE_PATTERNS = 100

_TOKEN = re.compile(r"[^.*>\s]+")


class _Node:
    """One token of the pattern tree: what may follow it, and whether a pattern ends here."""

    __slots__ = ("children", "end", "rest")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}  # a name, or "*"
        self.end = False  # a pattern ends with this token
        self.rest = False  # a pattern goes on with ">": one or more characters


def _check(pattern: str) -> list[str]:
    tokens = pattern.split(".")
    for i, tok in enumerate(tokens):
        if tok == ">":
            if i != len(tokens) - 1:
                raise BadRequest(
                    f"type pattern {pattern!r}: '>' may only be the last token", field="types"
                )
        elif tok != "*" and not _TOKEN.fullmatch(tok):
            raise BadRequest(
                f"type pattern {pattern!r}: token {tok!r} must be a name, '*' or a final '>'",
                field="types",
            )
    return tokens


class TypeFilter:
    """Matches an event type against any of several patterns; empty matches all.

    ``limit``: refuse more than this many patterns (:class:`BadRequest` naming it);
    None takes any number (patterns the hub already holds).
    """

    __slots__ = ("_exact", "_root", "patterns")

    def __init__(self, patterns: Iterable[str] = (), *, limit: int | None = None) -> None:
        given = tuple(patterns)
        # Counted as given, empty ones too: the limit bounds what a request may send.
        if limit is not None and len(given) > limit:
            raise BadRequest(
                f"{len(given)} type patterns is over the limit of {limit} "
                "(max_type_patterns)",
                field="types",
                limit=limit,
            )
        self.patterns = tuple(p for p in given if p)
        self._exact = frozenset(p for p in self.patterns if "*" not in p and ">" not in p)
        self._root: _Node | None = None
        for p in self.patterns:
            tokens = _check(p)
            if p in self._exact:
                continue
            node = self._root = self._root or _Node()
            for tok in tokens:
                if tok == ">":
                    node.rest = True
                    break
                node = node.children.setdefault(tok, _Node())
            else:
                node.end = True

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, event_type: str) -> bool:
        if not self.patterns or event_type in self._exact:
            return True
        if self._root is None:
            return False
        tokens = event_type.split(".")
        last = len(tokens) - 1
        nodes = [self._root]
        for i, tok in enumerate(tokens):
            following: list[_Node] = []
            for node in nodes:
                # ">" takes the rest of the type, which must not be empty.
                if node.rest and (i < last or tok):
                    return True
                child = node.children.get(tok)
                if child is not None:
                    following.append(child)
                if tok:
                    child = node.children.get("*")
                    if child is not None:
                        following.append(child)
            if not following:
                return False
            nodes = following
        return any(node.end for node in nodes)

    @classmethod
    def parse(cls, raw: str | Iterable[str] | None, *, limit: int | None = None) -> TypeFilter:
        """From a comma-separated query value or a list."""
        if raw is None:
            return cls(limit=limit)
        if isinstance(raw, str):
            return cls((p.strip() for p in raw.split(",")), limit=limit)
        return cls(raw, limit=limit)
