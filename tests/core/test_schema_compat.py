"""Compatibility rules against a table of schema changes, in each mode.

Each row: the old schema, the new one, and per mode whether it is accepted; a
refused row names the JSON path its break is about. The rows marked "Confluent"
are the cases Confluent's documentation lists for JSON Schema (open, closed and
partially open content models), with the verdict it gives.
"""

from __future__ import annotations

from typing import Any

import pytest

from tidings.core.schemas.compat import MODES, check_compatibility

OBJ: dict[str, Any] = {"type": "object"}


def obj(
    props: dict[str, Any],
    required: list[str] | None = None,
    closed: bool | None = None,
    **more: Any,
) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        s["required"] = required
    if closed is not None:
        s["additionalProperties"] = not closed
    s.update(more)
    return s


S = {"type": "string"}
INT = {"type": "integer"}
N = {"type": "number"}

# (name, old, new, backward: None | path refused, forward: None | path refused)
CASES: list[tuple[str, Any, Any, str | None, str | None]] = [
    ("identical", obj({"a": S}), obj({"a": S}), None, None),
    (
        "annotations only",
        obj({"a": S}),
        obj({"a": {**S, "description": "x"}}, title="T"),
        None,
        None,
    ),
    # Confluent: open content model
    ("Confluent open: add optional property", obj({"a": S}), obj({"a": S, "b": INT}), "$.b", None),
    ("Confluent open: remove property", obj({"a": S, "b": INT}), obj({"a": S}), None, "$.b"),
    (
        "Confluent open: add property with any value",
        obj({"a": S}),
        obj({"a": S, "b": {}}),
        None,
        None,
    ),
    # Confluent: closed content model
    (
        "Confluent closed: add optional property",
        obj({"a": S}, closed=True),
        obj({"a": S, "b": INT}, closed=True),
        None,
        "$.b",
    ),
    (
        "Confluent closed: remove property",
        obj({"a": S, "b": INT}, closed=True),
        obj({"a": S}, closed=True),
        "$.b",
        None,
    ),
    # Confluent: partially open content model (patternProperties)
    (
        "Confluent partial: add property matching the pattern",
        obj({"a": S}, closed=True, patternProperties={"^i_": INT}),
        obj({"a": S, "i_n": INT}, closed=True, patternProperties={"^i_": INT}),
        None,
        None,
    ),
    (
        "Confluent partial: add property of another type under the pattern",
        obj({"a": S}, closed=True, patternProperties={"^i_": INT}),
        obj({"a": S, "i_n": S}, closed=True, patternProperties={"^i_": INT}),
        "$.i_n",
        "$.i_n",
    ),
    (
        "Confluent partial: add property outside the pattern",
        obj({"a": S}, closed=True, patternProperties={"^i_": INT}),
        obj({"a": S, "x": S}, closed=True, patternProperties={"^i_": INT}),
        None,
        "$.x",
    ),
    ("required field added", obj({"a": S, "b": INT}), obj({"a": S, "b": INT}, ["b"]), "$.b", None),
    (
        "required field dropped",
        obj({"a": S, "b": INT}, ["b"]),
        obj({"a": S, "b": INT}),
        None,
        "$.b",
    ),
    ("type widened integer -> number", obj({"n": INT}), obj({"n": N}), None, "$.n"),
    ("type narrowed number -> integer", obj({"n": N}), obj({"n": INT}), "$.n", None),
    ("type changed string -> integer", obj({"n": S}), obj({"n": INT}), "$.n", "$.n"),
    ("null allowed", obj({"n": S}), obj({"n": {"type": ["string", "null"]}}), None, "$.n"),
    ("anyOf branch added", obj({"n": S}), obj({"n": {"anyOf": [S, INT]}}), None, "$.n"),
    ("anyOf branch removed", obj({"n": {"anyOf": [S, INT]}}), obj({"n": S}), "$.n", None),
    (
        "enum value added",
        obj({"s": {"enum": ["a", "b"]}}),
        obj({"s": {"enum": ["a", "b", "c"]}}),
        None,
        "$.s",
    ),
    (
        "enum value removed",
        obj({"s": {"enum": ["a", "b"]}}),
        obj({"s": {"enum": ["a"]}}),
        "$.s",
        None,
    ),
    ("enum added", obj({"s": S}), obj({"s": {"type": "string", "enum": ["a"]}}), "$.s", None),
    ("const relaxed to string", obj({"s": {"const": "a"}}), obj({"s": S}), None, "$.s"),
    (
        "maxLength raised",
        obj({"s": {**S, "maxLength": 5}}),
        obj({"s": {**S, "maxLength": 9}}),
        None,
        "$.s",
    ),
    (
        "maxLength lowered",
        obj({"s": {**S, "maxLength": 9}}),
        obj({"s": {**S, "maxLength": 5}}),
        "$.s",
        None,
    ),
    (
        "minimum raised",
        obj({"n": {**INT, "minimum": 0}}),
        obj({"n": {**INT, "minimum": 1}}),
        "$.n",
        None,
    ),
    (
        "minimum lowered",
        obj({"n": {**INT, "minimum": 1}}),
        obj({"n": {**INT, "minimum": 0}}),
        None,
        "$.n",
    ),
    ("maximum added", obj({"n": INT}), obj({"n": {**INT, "maximum": 10}}), "$.n", None),
    ("pattern added", obj({"s": S}), obj({"s": {**S, "pattern": "^a"}}), "$.s", None),
    ("model closed", obj({"a": S}), obj({"a": S}, closed=True), "$.*", None),
    ("model opened", obj({"a": S}, closed=True), obj({"a": S}), None, "$.*"),
    (
        "nested required added",
        obj({"c": obj({"id": S})}),
        obj({"c": obj({"id": S}, ["id"])}),
        "$.c.id",
        None,
    ),
    (
        "array items narrowed",
        obj({"xs": {"type": "array", "items": N}}),
        obj({"xs": {"type": "array", "items": INT}}),
        "$.xs[*]",
        None,
    ),
    (
        "array item field required",
        obj({"xs": {"type": "array", "items": obj({"q": INT})}}),
        obj({"xs": {"type": "array", "items": obj({"q": INT}, ["q"])}}),
        "$.xs[*].q",
        None,
    ),
    (
        "minItems raised",
        obj({"xs": {"type": "array", "minItems": 0}}),
        obj({"xs": {"type": "array", "minItems": 1}}),
        "$.xs",
        None,
    ),
    (
        "uniqueItems added",
        obj({"xs": {"type": "array"}}),
        obj({"xs": {"type": "array", "uniqueItems": True}}),
        "$.xs",
        None,
    ),
    (
        "multipleOf finer",
        obj({"n": {**N, "multipleOf": 10}}),
        obj({"n": {**N, "multipleOf": 5}}),
        None,
        "$.n",
    ),
    (
        "ref to defs, field added as required",
        {"$defs": {"C": obj({"id": S})}, **obj({"c": {"$ref": "#/$defs/C"}})},
        {"$defs": {"C": obj({"id": S, "tier": S}, ["tier"])}, **obj({"c": {"$ref": "#/$defs/C"}})},
        "$.c.tier",
        None,
    ),
    (
        "pydantic Optional made required",
        obj({"n": {"anyOf": [S, {"type": "null"}], "default": None}}),
        obj({"n": S}, ["n"]),
        "$.n",
        None,
    ),
    ("whole schema true -> object", True, OBJ, "$", None),
    ("odd property name path", obj({"a b": S}), obj({"a b": INT}), '$["a b"]', '$["a b"]'),
    (
        "recursive schema unchanged",
        {
            "$defs": {"T": obj({"kids": {"type": "array", "items": {"$ref": "#/$defs/T"}}})},
            "$ref": "#/$defs/T",
        },
        {
            "$defs": {"T": obj({"kids": {"type": "array", "items": {"$ref": "#/$defs/T"}}})},
            "$ref": "#/$defs/T",
            "title": "tree",
        },
        None,
        None,
    ),
]


def _paths(mode: str, old: Any, new: Any) -> list[str]:
    return [b.path for b in check_compatibility(mode, new, [old])]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "old", "new", "backward", "forward"), CASES, ids=[c[0] for c in CASES]
)
def test_each_mode(
    name: str, old: Any, new: Any, backward: str | None, forward: str | None
) -> None:
    back, fwd, full = (
        _paths("backward", old, new),
        _paths("forward", old, new),
        _paths("full", old, new),
    )
    assert (backward in back) if backward else back == [], back
    assert (forward in fwd) if forward else fwd == [], fwd
    assert sorted(full) == sorted(back + fwd)
    assert _paths("none", old, new) == []
    # transitive forms agree with the plain ones for a single earlier version
    for mode in ("backward", "forward", "full"):
        assert _paths(f"{mode}_transitive", old, new) == _paths(mode, old, new)


def test_the_table_has_both_verdicts() -> None:
    assert len(CASES) >= 30
    assert any(c[3] is None and c[4] is None for c in CASES)
    assert sum(c[3] is not None for c in CASES) >= 10 and sum(c[4] is not None for c in CASES) >= 10


def test_transitive_checks_every_earlier_version() -> None:
    # v1 has b as a string, v2 drops b (open model: backward fine), v3 adds b as an integer:
    # compatible with v2, not with v1, whose events may carry b as a string.
    v1, v2, v3 = obj({"a": S, "b": S}), obj({"a": S}), obj({"a": S, "b": S})
    v3_bad = obj({"a": S, "b": INT})
    assert check_compatibility("backward", v3, [v1, v2]) != []  # open model: adding b breaks v2
    closed = [obj({"a": S, "b": S}, closed=True), obj({"a": S, "b": S, "c": S}, closed=True)]
    later = obj({"a": S, "b": INT, "c": S}, closed=True)
    assert [b.version for b in check_compatibility("backward_transitive", later, closed)] == [1, 2]
    assert [b.version for b in check_compatibility("backward", later, closed)] == [2]
    assert check_compatibility("backward", v3_bad, [v1]) != []


def test_every_break_says_what_and_where() -> None:
    [b] = check_compatibility("backward", obj({"a": S}, ["a", "b"]), [obj({"a": S}, ["a"])])
    assert (b.path, b.change, b.direction, b.version) == ("$.b", "required-added", "backward", 1)
    assert "'b'" in b.detail and b.to_dict()["path"] == "$.b"
    assert set(MODES) == {
        "none",
        "backward",
        "forward",
        "full",
        "backward_transitive",
        "forward_transitive",
        "full_transitive",
    }
