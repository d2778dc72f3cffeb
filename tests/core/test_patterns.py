"""Event-type patterns: the token tree matches as the NATS rules say, fast, and within a limit."""

from __future__ import annotations

import itertools
import random
import re
import time

import pytest

from tidings.core.patterns import MAX_TYPE_PATTERNS, TypeFilter
from tidings.errors import BadRequest


def _reference(pattern: str) -> re.Pattern[str]:
    """The rules as one regular expression: '*' one non-empty token, '>' the rest (non-empty)."""
    parts = [
        r"[^.]+" if tok == "*" else r".+" if tok == ">" else re.escape(tok)
        for tok in pattern.split(".")
    ]
    return re.compile(r"\.".join(parts))


TOKENS = ["a", "b", "ab", "*", ""]


def _types() -> list[str]:
    out = []
    for n in range(1, 4):
        out += [".".join(t) for t in itertools.product(TOKENS, repeat=n)]
    return out


def _patterns() -> list[str]:
    out = []
    for n in range(1, 4):
        for t in itertools.product(["a", "b", "ab", "*", ">"], repeat=n):
            if ">" not in t[:-1]:
                out.append(".".join(t))
    return out


def test_each_pattern_matches_what_the_rules_say() -> None:
    types = _types()
    for pattern in _patterns():
        ref = _reference(pattern)
        f = TypeFilter([pattern])
        for etype in types:
            assert f.matches(etype) == bool(ref.fullmatch(etype)), (pattern, etype)


def test_several_patterns_match_what_any_of_them_matches() -> None:
    rng = random.Random(13)
    patterns, types = _patterns(), _types()
    for _ in range(300):
        chosen = rng.sample(patterns, rng.randint(1, 6))
        refs = [_reference(p) for p in chosen]
        f = TypeFilter(chosen)
        for etype in types:
            assert f.matches(etype) == any(r.fullmatch(etype) for r in refs), (chosen, etype)


def test_no_pattern_matches_every_type() -> None:
    assert TypeFilter().matches("anything.at.all")
    assert TypeFilter(["", ""]).matches("x")


@pytest.mark.parametrize("bad", ["a.>.b", "a..b", "a.b*", "a b", ">x"])
def test_a_bad_pattern_is_refused_with_its_name(bad: str) -> None:
    with pytest.raises(BadRequest) as info:
        TypeFilter(["ok.*", bad])
    assert repr(bad) in info.value.detail
    assert info.value.fields["field"] == "types"


def test_more_patterns_than_the_limit_are_refused_naming_it() -> None:
    at_limit = [f"t{i}.*" for i in range(MAX_TYPE_PATTERNS)]
    assert TypeFilter(at_limit, limit=MAX_TYPE_PATTERNS).matches("t7.x")
    with pytest.raises(BadRequest) as info:
        TypeFilter([*at_limit, "one.more"], limit=MAX_TYPE_PATTERNS)
    assert "max_type_patterns" in info.value.detail
    assert info.value.fields == {"field": "types", "limit": MAX_TYPE_PATTERNS}
    with pytest.raises(BadRequest):
        TypeFilter.parse(",".join([*at_limit, "one.more"]), limit=MAX_TYPE_PATTERNS)


def _match_time(f: TypeFilter, types: list[str]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        assert not any(f.matches(t) for t in types)
        best = min(best, time.perf_counter() - started)
    return best


def test_matching_costs_little_at_the_limit() -> None:
    """The worst case the limit lets in: every pattern a wildcard, no type matching any.

    A match walks the type's tokens once: a hundred patterns cost about what one
    does (with one regular expression per pattern, 25 times more).
    """
    patterns = [f"*.*.p{i}.>" for i in range(MAX_TYPE_PATTERNS)]
    types = [f"x.y.q{i}.z" for i in range(10_000)]
    one = _match_time(TypeFilter(patterns[:1]), types)
    many = _match_time(TypeFilter(patterns, limit=MAX_TYPE_PATTERNS), types)
    assert many < 5 * one, f"{len(patterns)} patterns: {many:.4f} s, one pattern: {one:.4f} s"
