"""Schema compatibility: can every value one JSON Schema accepts pass another?

Confluent Schema Registry's rules for JSON Schema, read as what they mean
(https://docs.confluent.io/platform/current/schema-registry/fundamentals/serdes-develop/serdes-json.html):

- ``backward``: a reader with the new schema reads what the old one allowed,
  so the new schema must accept every value the old one accepts;
- ``forward``: a reader with the old schema reads what the new one allows, so
  the old schema must accept every value the new one accepts;
- ``full``: both; the ``*_transitive`` forms check against every earlier version
  instead of the latest; ``none`` checks nothing.

One question answers all of them: does ``wide`` accept every value ``narrow``
accepts (:func:`covers`)? It is answered keyword by keyword, conservatively: a
change it cannot prove safe is a break. The content model decides what adding
or removing a property means, as Confluent documents: under an open model
(``additionalProperties`` absent or true) an old value may already carry a new
property's name with any value, so adding a property is a backward break and
removing one is not; under a closed model (``additionalProperties: false``) it
is the other way round; ``patternProperties`` (a partially open model) stands
for the names it matches.

Each break names the JSON path of the value it is about (``$.items[*].qty``) and
what changed, in terms of the old and the new schema. ``oneOf`` is read as
``anyOf`` (a wider reading: never a false refusal, possibly a missed one), and
keywords that are hard to compare (``not``, ``if``, ``contains``, ...) must be
unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "MODES",
    "Break",
    "Mode",
    "check_compatibility",
    "covers",
]

Mode = Literal[
    "none", "backward", "forward", "full",
    "backward_transitive", "forward_transitive", "full_transitive",
]  # fmt: skip
MODES: tuple[Mode, ...] = (
    "none", "backward", "forward", "full",
    "backward_transitive", "forward_transitive", "full_transitive",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Break:
    """One breaking change: where, what, and (filled by the registry) against which version."""

    path: str
    change: str
    detail: str
    direction: str = ""  # "backward" or "forward"
    version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "change": self.change, "detail": self.detail}
        if self.direction:
            d["direction"] = self.direction
        if self.version is not None:
            d["version"] = self.version
        return d


# Keywords that say nothing about which values are valid.
_ANNOTATIONS = frozenset({
    "$schema", "$id", "$anchor", "$comment", "$defs", "definitions", "title", "description",
    "default", "examples", "deprecated", "readOnly", "writeOnly", "$vocabulary",
    "contentMediaType", "contentEncoding", "contentSchema", "$dynamicAnchor",
})  # fmt: skip
# Keywords compared one by one below.
_HANDLED = frozenset({
    "type", "enum", "const", "properties", "required", "additionalProperties",
    "patternProperties", "items", "prefixItems", "anyOf", "oneOf", "allOf", "$ref",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
    "pattern", "format", "uniqueItems", "dependentRequired",
})  # fmt: skip
_TYPES = ("null", "boolean", "object", "array", "number", "integer", "string")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_compatibility(mode: Mode, new: Any, earlier: list[Any]) -> list[Break]:
    """The breaks of ``new`` against ``earlier`` (oldest first) under ``mode``."""
    if mode == "none" or not earlier:
        return []
    against = list(enumerate(earlier, 1))
    if not mode.endswith("_transitive"):
        against = against[-1:]
    found: list[Break] = []
    for version, old in against:
        if mode.startswith(("backward", "full")):
            found += _tag(covers(new, old, new_is_wide=True), "backward", version)
        if mode.startswith(("forward", "full")):
            found += _tag(covers(old, new, new_is_wide=False), "forward", version)
    return found


def _tag(breaks: list[Break], direction: str, version: int) -> Iterator[Break]:
    for b in breaks:
        yield Break(b.path, b.change, b.detail, direction, version)


def covers(wide: Any, narrow: Any, *, new_is_wide: bool) -> list[Break]:
    """Why ``wide`` may refuse a value ``narrow`` accepts; empty when it never does.

    ``new_is_wide`` says which of the two is the new schema, so that each break
    is told as the change it is (a field *added* as required, a value *removed*
    from an enum).
    """
    return _Compare(wide, narrow, new_is_wide).run()


class _Compare:
    def __init__(self, wide: Any, narrow: Any, new_is_wide: bool) -> None:
        self.wide_root = wide
        self.narrow_root = narrow
        self.new_is_wide = new_is_wide
        self.seen: set[tuple[int, int]] = set()

    def run(self) -> list[Break]:
        out: list[Break] = []
        self.cover(self.wide_root, self.narrow_root, "$", out)
        return out

    # wording: "old" and "new" for the two sides
    def _side(self, wide: bool) -> str:
        return "new" if wide == self.new_is_wide else "old"

    def brk(self, out: list[Break], path: str, change: str, detail: str) -> None:
        out.append(Break(path, change, detail))

    def resolve(self, schema: Any, root: Any) -> Any:
        hops = 0
        while isinstance(schema, Mapping) and "$ref" in schema and hops < 32:
            target = _pointer(root, schema["$ref"])
            if target is None:
                return schema
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest} if rest and isinstance(target, Mapping) else target
            hops += 1
        return schema

    def cover(self, wide: Any, narrow: Any, path: str, out: list[Break]) -> None:
        wide = self.resolve(wide, self.wide_root)
        narrow = self.resolve(narrow, self.narrow_root)
        key = (id(wide), id(narrow))
        if key in self.seen:  # a recursive schema: assume what is being proved
            return
        self.seen.add(key)
        try:
            self._cover(wide, narrow, path, out)
        finally:
            self.seen.discard(key)

    def _cover(self, wide: Any, narrow: Any, path: str, out: list[Break]) -> None:
        if wide is True or wide == {} or narrow is False or wide == narrow:
            return
        if wide is False:
            self.brk(out, path, "refused", f"the {self._side(True)} schema accepts no value here")
            return
        if narrow is True:
            narrow = {}
        if not isinstance(wide, Mapping) or not isinstance(narrow, Mapping):
            self.brk(out, path, "unreadable", "a schema here is neither an object nor a boolean")
            return
        wide, narrow = _merge_all_of(wide), _merge_all_of(narrow)
        # Alternatives: every alternative of narrow must fit; then narrow must fit one of wide's.
        n_alts = _alternatives(narrow)
        if n_alts is not None:
            for alt in n_alts:
                self.cover(wide, alt, path, out)
            return
        w_alts = _alternatives(wide)
        if w_alts is not None:
            best: list[Break] | None = None
            for alt in w_alts:
                trial: list[Break] = []
                self.cover(alt, narrow, path, trial)
                if not trial:
                    return
                if best is None or len(trial) < len(best):
                    best = trial
            out.extend(best or [])
            return
        self._types(wide, narrow, path, out)
        self._values(wide, narrow, path, out)
        self._bounds(wide, narrow, path, out)
        n_types = _type_set(narrow)
        if "object" in n_types and "object" in _type_set(wide):
            self._object(wide, narrow, path, out)
        if "array" in n_types and "array" in _type_set(wide):
            self._array(wide, narrow, path, out)
        for kw in sorted(set(wide) - _ANNOTATIONS - _HANDLED):
            if wide.get(kw) != narrow.get(kw):
                self.brk(
                    out,
                    path,
                    "keyword-changed",
                    f"{kw!r} differs between the old and the new schema; "
                    "tidings cannot prove the change safe",
                )

    def _types(
        self, wide: Mapping[str, Any], narrow: Mapping[str, Any], path: str, out: list[Break]
    ) -> None:
        if "type" not in wide:
            return
        w, n = _type_set(wide), _type_set(narrow)
        lost = [
            t for t in _TYPES if t in n and t not in w and not (t == "integer" and "number" in w)
        ]
        if not lost:
            return
        if self.new_is_wide:
            self.brk(
                out, path, "type-narrowed", f"the new schema no longer accepts {_join(lost)} here"
            )
        else:
            self.brk(
                out,
                path,
                "type-widened",
                f"the new schema accepts {_join(lost)} here, which the old one refuses",
            )

    def _values(
        self, wide: Mapping[str, Any], narrow: Mapping[str, Any], path: str, out: list[Break]
    ) -> None:
        w_enum = _enum(wide)
        if w_enum is None:
            return
        n_enum = _enum(narrow)
        if n_enum is None:
            self.brk(
                out,
                path,
                "enum-added",
                f"the {self._side(True)} schema allows only {_values_text(w_enum)} here",
            )
            return
        missing = [v for v in n_enum if v not in w_enum]
        if missing:
            if self.new_is_wide:
                self.brk(
                    out,
                    path,
                    "enum-value-removed",
                    f"the new schema no longer allows {_values_text(missing)}",
                )
            else:
                self.brk(
                    out,
                    path,
                    "enum-value-added",
                    f"the new schema allows {_values_text(missing)}, which the old one refuses",
                )

    def _bounds(
        self, wide: Mapping[str, Any], narrow: Mapping[str, Any], path: str, out: list[Break]
    ) -> None:
        def tighter(kw: str, what: str) -> None:
            self.brk(
                out,
                path,
                f"{kw}-tightened",
                f"{what}: {kw} is {_text(wide.get(kw))} in the {self._side(True)} schema, "
                f"{_text(narrow.get(kw))} in the {self._side(False)} one",
            )

        for kw in ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"):
            if kw in wide and _num(wide[kw]) is not None:
                lo = _lower(narrow, kw)
                if (
                    lo is None
                    or lo < wide[kw]
                    or (
                        kw == "exclusiveMinimum"
                        and lo == wide[kw]
                        and "exclusiveMinimum" not in narrow
                    )
                ):
                    tighter(kw, "a lower bound rose")
        for kw in ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"):
            if kw in wide and _num(wide[kw]) is not None:
                hi = _upper(narrow, kw)
                if (
                    hi is None
                    or hi > wide[kw]
                    or (
                        kw == "exclusiveMaximum"
                        and hi == wide[kw]
                        and "exclusiveMaximum" not in narrow
                    )
                ):
                    tighter(kw, "an upper bound fell")
        if "multipleOf" in wide:
            m_n, m_w = _num(narrow.get("multipleOf")), _num(wide["multipleOf"])
            if m_w and (not m_n or (m_n / m_w) != int(m_n / m_w)):
                tighter("multipleOf", "a step is no longer a multiple")
        for kw in ("pattern", "format"):
            if kw in wide and narrow.get(kw) != wide[kw]:
                tighter(kw, f"the {kw} changed")
        if wide.get("uniqueItems") is True and narrow.get("uniqueItems") is not True:
            tighter("uniqueItems", "items must now be unique")

    def _object(
        self, wide: Mapping[str, Any], narrow: Mapping[str, Any], path: str, out: list[Break]
    ) -> None:
        w_req, n_req = set(wide.get("required", ())), set(narrow.get("required", ()))
        for name in sorted(w_req - n_req):
            where = _child(path, name)
            if self.new_is_wide:
                self.brk(
                    out,
                    where,
                    "required-added",
                    f"{name!r} is required in the new schema; old events may lack it",
                )
            else:
                self.brk(
                    out,
                    where,
                    "required-removed",
                    f"{name!r} is no longer required; readers with the old schema need it",
                )
        for name, needs in (wide.get("dependentRequired") or {}).items():
            has = (narrow.get("dependentRequired") or {}).get(name, [])
            for other in sorted(set(needs) - set(has) - n_req):
                self.brk(
                    out,
                    _child(path, other),
                    "required-added",
                    f"{other!r} is required with {name!r} in the {self._side(True)} schema",
                )
        w_props: Mapping[str, Any] = wide.get("properties") or {}
        n_props: Mapping[str, Any] = narrow.get("properties") or {}
        for name in sorted(set(w_props) | set(n_props)):
            w_sub, w_from = _property_schema(wide, name)
            n_sub, n_from = _property_schema(narrow, name)
            where = _child(path, name)
            if n_from != "properties" and w_from == "properties":
                # Declared on the wide side only: what narrow let through under that name.
                trial: list[Break] = []
                self.cover(w_sub, n_sub, where, trial)
                if trial:
                    model = (
                        "an open content model" if n_sub in (True, {}) else "a partially open model"
                    )
                    if self.new_is_wide:
                        self.brk(
                            out,
                            where,
                            "property-added-open",
                            f"{name!r} is added, but under {model} old events may carry "
                            f"{name!r} with any value; close the model "
                            "(additionalProperties: false) to add properties",
                        )
                    else:
                        self.brk(
                            out,
                            where,
                            "property-removed-open",
                            f"{name!r} is removed; under {model} new events may carry it "
                            "with a value the old schema refuses",
                        )
                continue
            if n_from == "properties" and w_from != "properties" and w_sub is False:
                if self.new_is_wide:
                    self.brk(
                        out,
                        where,
                        "property-removed-closed",
                        f"{name!r} is removed under a closed content model: "
                        "old events that carry it are refused",
                    )
                else:
                    self.brk(
                        out,
                        where,
                        "property-added-closed",
                        f"{name!r} is added, but the old schema's closed content model "
                        "refuses events that carry it",
                    )
                continue
            self.cover(w_sub, n_sub, where, out)
        # Names neither side declares.
        w_pat: Mapping[str, Any] = wide.get("patternProperties") or {}
        n_pat: Mapping[str, Any] = narrow.get("patternProperties") or {}
        for pattern, n_sub in n_pat.items():
            w_sub = w_pat.get(pattern, wide.get("additionalProperties", True))
            self.cover(w_sub, n_sub, f"{path}[/{pattern}/]", out)
        n_extra = narrow.get("additionalProperties", True)
        w_extra = wide.get("additionalProperties", True)
        extra_where = f"{path}.*"
        if w_extra is False and n_extra is not False:
            if self.new_is_wide:
                self.brk(
                    out,
                    extra_where,
                    "model-closed",
                    "the new schema closes the content model (additionalProperties: false); "
                    "old events with other properties are refused",
                )
            else:
                self.brk(
                    out,
                    extra_where,
                    "model-opened",
                    "the new schema opens the content model; the old one refuses "
                    "properties it does not name",
                )
        elif w_extra is not False:
            self.cover(w_extra, n_extra, extra_where, out)
        for pattern, w_sub in w_pat.items():
            if pattern not in n_pat and w_sub not in (True, {}):
                self.cover(w_sub, n_extra, f"{path}[/{pattern}/]", out)

    def _array(
        self, wide: Mapping[str, Any], narrow: Mapping[str, Any], path: str, out: list[Break]
    ) -> None:
        w_pre: list[Any] = list(wide.get("prefixItems") or [])
        n_pre: list[Any] = list(narrow.get("prefixItems") or [])
        w_rest, n_rest = wide.get("items", True), narrow.get("items", True)
        for i in range(max(len(w_pre), len(n_pre))):
            w_sub = w_pre[i] if i < len(w_pre) else w_rest
            n_sub = n_pre[i] if i < len(n_pre) else n_rest
            self.cover(w_sub, n_sub, f"{path}[{i}]", out)
        self.cover(w_rest, n_rest, f"{path}[*]", out)


def _pointer(root: Any, ref: Any) -> Any:
    """The target of a local ``$ref`` (``#/$defs/X``); None for anything else."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node = root
    for part in ref[1:].split("/")[1:] if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return None
    return node


def _merge_all_of(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    parts = schema.get("allOf")
    if not isinstance(parts, list):
        return schema
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in parts:
        if isinstance(part, Mapping):
            for k, v in part.items():
                if k == "required":
                    merged["required"] = sorted(set(merged.get("required", [])) | set(v))
                elif k == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **v}
                else:
                    merged.setdefault(k, v)
    return merged


def _alternatives(schema: Mapping[str, Any]) -> list[Any] | None:
    """anyOf/oneOf branches, each with the schema's other keywords, or a type list split."""
    for kw in ("anyOf", "oneOf"):
        alts = schema.get(kw)
        if isinstance(alts, list) and alts:
            rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
            return [{**rest, **a} if isinstance(a, Mapping) else a for a in alts] if rest else alts
    return None


def _type_set(schema: Mapping[str, Any]) -> set[str]:
    t = schema.get("type")
    if t is None:
        if "enum" in schema or "const" in schema:
            return {_json_type(v) for v in _enum(schema) or []} | (
                {"number"}
                if any(_json_type(v) == "integer" for v in _enum(schema) or [])
                else set()
            )
        return set(_TYPES)
    got = {t} if isinstance(t, str) else set(t)
    if "number" in got:
        got.add("integer")
    return got


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "integer" if v.is_integer() else "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _enum(schema: Mapping[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    e = schema.get("enum")
    return list(e) if isinstance(e, list) else None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _lower(schema: Mapping[str, Any], kw: str) -> float | None:
    """Narrow's lower bound to compare with ``kw`` (minimum and exclusiveMinimum mix)."""
    if kw in ("minimum", "exclusiveMinimum"):
        vals = [
            x
            for x in (_num(schema.get("minimum")), _num(schema.get("exclusiveMinimum")))
            if x is not None
        ]
        return max(vals) if vals else None
    return _num(schema.get(kw))


def _upper(schema: Mapping[str, Any], kw: str) -> float | None:
    if kw in ("maximum", "exclusiveMaximum"):
        vals = [
            x
            for x in (_num(schema.get("maximum")), _num(schema.get("exclusiveMaximum")))
            if x is not None
        ]
        return min(vals) if vals else None
    return _num(schema.get(kw))


def _property_schema(schema: Mapping[str, Any], name: str) -> tuple[Any, str]:
    """The schema a property ``name`` meets, and where it comes from."""
    props = schema.get("properties") or {}
    if name in props:
        return props[name], "properties"
    for pattern, sub in (schema.get("patternProperties") or {}).items():
        try:
            if re.search(pattern, name):
                return sub, "patternProperties"
        except re.error:
            continue
    return schema.get("additionalProperties", True), "additionalProperties"


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if _IDENT.match(name) else f"{path}[{_text(name)}]"


def _text(v: Any) -> str:
    import json

    return json.dumps(v, ensure_ascii=False)


def _values_text(values: list[Any]) -> str:
    return ", ".join(_text(v) for v in values)


def _join(types: list[str]) -> str:
    return " or ".join(types)
