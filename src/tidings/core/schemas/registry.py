"""The schema registry: versions of each event type's data schema, and checks at publish.

A type's entry holds its versions (JSON Schema 2020-12, numbered from 1), its
compatibility mode (``backward`` by default; see :mod:`.compat`), the apps that
said they produce it and the apps that said they consume it, with the schema
each consumer reads with. The whole entry is saved through the ``Storage`` seam
(``save_schemas``) before a change is answered, so it survives a crash; a backend
keeps it wherever it keeps topics (SQLite in the embedded backend).

A new version is refused (:class:`~tidings.errors.Conflict`, 409) when the mode
finds a break against the versions it checks, or when a consumer that said what
it reads could not read what the new version allows (unless the mode is
``none``). Each break names its JSON path.

At publish, a topic whose ``schemas`` is ``validate`` or ``required`` has each
event's ``data`` checked against the latest version of its type (or the version
its ``dataschema`` names), with a validator compiled once per version by
``jsonschema-rs``; the event's ``dataschema`` is set to the version's URI. Under
``required`` a type with no schema is refused.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import jsonschema_rs
import orjson

from tidings.core.schemas.compat import MODES, Break, Mode, check_compatibility, covers
from tidings.errors import BadRequest, Conflict, InvalidEvent, NotFound

__all__ = [
    "MAX_SCHEMA_BYTES",
    "TOPIC_MODES",
    "SchemaRegistry",
    "TypeSchemas",
    "Version",
    "schema_uri",
]

TOPIC_MODES = ("off", "validate", "required")
MAX_SCHEMA_BYTES = 256 << 10
MAX_TYPES = 10_000
MAX_VERSIONS = 1_000  # per type
MAX_NAMES = 1_000  # producers or consumers per type
MAX_DEPTH = 64
DRAFT = "https://json-schema.org/draft/2020-12/schema"
TYPE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,199}$")
APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,199}$")
_URI = re.compile(r"/v1/schemas/([^/]+)/versions/([1-9][0-9]{0,8})$")
# Where an event's dataschema points when no server says its address (in process).
IN_PROCESS = "tidings:"


def schema_uri(etype: str, version: int) -> str:
    return f"/v1/schemas/{etype}/versions/{version}"


@dataclass(slots=True)
class Version:
    number: int
    schema: Any
    canonical: bytes  # sorted-key JSON: the same schema again is the same version
    validator: Any  # jsonschema_rs.Draft202012Validator
    many: Any  # the same, for an array of data: one call validates a batch
    uri: str


@dataclass(slots=True)
class TypeSchemas:
    name: str
    versions: list[Version] = field(default_factory=list)
    compatibility: Mode = "backward"
    producers: dict[str, int] = field(default_factory=dict)  # app -> version it registered
    consumers: dict[str, Any] = field(default_factory=dict)  # app -> the schema it reads with
    failures: int = 0  # publishes refused for this type since start
    last_failure: str | None = None

    @property
    def latest(self) -> Version | None:
        return self.versions[-1] if self.versions else None

    def entry(self) -> dict[str, Any]:
        """What is stored."""
        return {
            "versions": [v.schema for v in self.versions],
            "compatibility": self.compatibility,
            "producers": self.producers,
            "consumers": self.consumers,
        }

    def summary(self) -> dict[str, Any]:
        latest = self.latest
        return {
            "type": self.name,
            "latest": latest.number if latest else None,
            "versions": len(self.versions),
            "compatibility": self.compatibility,
            "producers": sorted(self.producers),
            "consumers": sorted(self.consumers),
            "failures": self.failures,
        }


class SchemaRegistry:
    """Every type's schemas; saved through ``storage`` (``load_schemas``/``save_schemas``)."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self.types: dict[str, TypeSchemas] = {}
        #: Put before a version's path to make an event's dataschema, which CloudEvents
        #: wants absolute: the hub's address (``tidings serve`` sets it), else "tidings:".
        self.base_uri = IN_PROCESS
        # A change reads a type's entry, makes the new one and saves it: one change at
        # a time, so that none is made from an entry another is about to replace.
        self._changing = asyncio.Lock()

    async def load(self) -> None:
        for name, entry in (await self.storage.load_schemas()).items():
            ts = TypeSchemas(name, compatibility=entry.get("compatibility", "backward"))
            for schema in entry.get("versions", []):
                ts.versions.append(_compile(name, len(ts.versions) + 1, schema))
            ts.producers = dict(entry.get("producers", {}))
            ts.consumers = dict(entry.get("consumers", {}))
            self.types[name] = ts

    # -- reading ------------------------------------------------------------------------

    def get(self, etype: str) -> TypeSchemas:
        check_type_name(etype)
        ts = self.types.get(etype)
        if ts is None:
            raise NotFound(f"no schema is registered for type {etype!r}", type=etype)
        return ts

    def version(self, etype: str, number: int) -> Version:
        ts = self.get(etype)
        if not 1 <= number <= len(ts.versions):
            raise NotFound(
                f"type {etype!r} has versions 1 to {len(ts.versions)}, not {number}",
                type=etype,
                version=number,
            )
        return ts.versions[number - 1]

    # -- changing -----------------------------------------------------------------------

    def _entry(self, etype: str) -> TypeSchemas:
        check_type_name(etype)
        ts = self.types.get(etype)
        if ts is None:
            if len(self.types) >= MAX_TYPES:
                raise Conflict(f"the registry holds {MAX_TYPES} types, its limit")
            ts = TypeSchemas(etype)
        return ts

    async def _save(self, ts: TypeSchemas) -> None:
        # Saved first, kept after: a save that fails (a full disk) changes nothing.
        await self.storage.save_schemas(ts.name, ts.entry())
        self.types[ts.name] = ts

    def check(self, etype: str, schema: Any, producer: str | None = None) -> dict[str, Any]:
        """What registering ``schema`` would meet: its version if it is one already, the
        breaks the mode finds, and the consumers that could not read it."""
        check_schema(schema)
        ts = self.types.get(etype) or TypeSchemas(check_type_name(etype))
        canonical = _canonical(schema)
        same = next((v for v in ts.versions if v.canonical == canonical), None)
        breaks = (
            []
            if same
            else check_compatibility(ts.compatibility, schema, [v.schema for v in ts.versions])
        )
        consumers = (
            [] if ts.compatibility == "none" else self._broken_consumers(ts, schema, producer)
        )
        return {
            "type": etype,
            "compatible": not breaks and not consumers,
            "compatibility": ts.compatibility,
            "version": same.number if same else None,
            "changes": [b.to_dict() for b in breaks],
            "consumers": consumers,
        }

    def _broken_consumers(
        self, ts: TypeSchemas, schema: Any, producer: str | None
    ) -> list[dict[str, Any]]:
        out = []
        for name, reads in sorted(ts.consumers.items()):
            if name == producer:
                continue
            found = covers(reads, schema, new_is_wide=False)
            if found:
                out.append({"name": name, "changes": [_for_consumer(b) for b in found]})
        return out

    async def put(
        self, etype: str, schema: Any, producer: str | None = None
    ) -> tuple[Version, bool]:
        async with self._changing:
            return await self._put(etype, schema, producer)

    async def _put(
        self, etype: str, schema: Any, producer: str | None = None
    ) -> tuple[Version, bool]:
        """Add ``schema`` as the next version of ``etype`` (or answer the version it is
        already); Conflict (409) with each break by path when it is incompatible."""
        if producer is not None:
            check_app_name(producer, "producer")
        result = self.check(etype, schema, producer)
        ts = self._entry(etype)
        if result["version"] is not None:
            version, created = ts.versions[result["version"] - 1], False
        else:
            if not result["compatible"]:
                raise _incompatible(etype, result)
            if len(ts.versions) >= MAX_VERSIONS:
                raise Conflict(f"type {etype!r} has {MAX_VERSIONS} versions, the limit")
            version, created = _compile(etype, len(ts.versions) + 1, schema), True
        if not created and (producer is None or ts.producers.get(producer) == version.number):
            return version, False
        new = _copy(ts)
        if created:
            new.versions.append(version)
        if producer is not None:
            _bounded(new.producers, producer, "producers")
            new.producers[producer] = version.number
        await self._save(new)
        return version, created

    async def put_consumer(self, etype: str, name: str, schema: Any) -> list[dict[str, Any]]:
        async with self._changing:
            return await self._put_consumer(etype, name, schema)

    async def _put_consumer(self, etype: str, name: str, schema: Any) -> list[dict[str, Any]]:
        """Record that app ``name`` reads ``etype`` with ``schema``; Conflict when it
        cannot read what the latest version allows."""
        check_app_name(name, "consumer")
        check_schema(schema)
        ts = self._entry(etype)
        latest = ts.latest
        if latest is not None and ts.compatibility != "none":
            found = covers(schema, latest.schema, new_is_wide=False)
            if found:
                raise Conflict(
                    f"consumer {name!r} cannot read type {etype!r} as version "
                    f"{latest.number} allows: " + _first(found),
                    type=etype,
                    version=latest.number,
                    changes=[_for_consumer(b) for b in found],
                )
        if ts.consumers.get(name) == schema and etype in self.types:
            return []
        new = _copy(ts)
        _bounded(new.consumers, name, "consumers")
        new.consumers[name] = schema
        await self._save(new)
        return []

    async def configure(self, etype: str, compatibility: Any) -> TypeSchemas:
        async with self._changing:
            return await self._configure(etype, compatibility)

    async def _configure(self, etype: str, compatibility: Any) -> TypeSchemas:
        if compatibility not in MODES:
            raise BadRequest(
                f"compatibility must be one of {', '.join(MODES)}", field="compatibility"
            )
        ts = self._entry(etype)
        new = _copy(ts)
        new.compatibility = cast(Mode, compatibility)
        await self._save(new)
        return new

    # -- publish ------------------------------------------------------------------------

    def check_events(self, events: Sequence[Mapping[str, Any]], required: bool) -> None:
        """Validate each event's ``data`` and set its ``dataschema``; raise for the first
        that fails (with its index in a batch), so a batch is written whole or not at all."""
        one = len(events) == 1
        etype = events[0]["type"]
        if not one and all(ev["type"] == etype for ev in events):
            # The common batch: one type. One call into the validator for all of them.
            ts = self.types.get(etype)
            version = ts.latest if ts is not None else None
            if (
                version is not None
                and not any("dataschema" in ev or "data_base64" in ev for ev in events)
                and version.many.is_valid([ev.get("data") for ev in events])
            ):
                uri = self.base_uri + version.uri
                for ev in events:
                    cast(dict[str, Any], ev)["dataschema"] = uri
                return
        for i, ev in enumerate(events):
            try:
                self._check_event(cast(dict[str, Any], ev), required)
            except InvalidEvent as exc:
                raise exc if one else exc.at_index(i) from None

    def _check_event(self, ev: dict[str, Any], required: bool) -> None:
        etype = ev["type"]
        ts = self.types.get(etype)
        version = ts.latest if ts is not None else None
        named = ev.get("dataschema")
        if named is not None:
            m = _URI.search(named)
            if m is not None and m.group(1) == etype and ts is not None:
                n = int(m.group(2))
                if n > len(ts.versions):
                    raise self._failed(
                        ts,
                        InvalidEvent(
                            f"dataschema names version {n} of {etype!r}, which has "
                            f"{len(ts.versions)}",
                            attribute="dataschema",
                        ),
                    )
                version = ts.versions[n - 1]
        if version is None or ts is None:
            if required:
                raise InvalidEvent(
                    f"this topic requires a registered schema, and type {etype!r} has none; "
                    f"register one with PUT /v1/schemas/{etype}",
                    attribute="type",
                )
            return
        if "data_base64" in ev:
            raise self._failed(
                ts,
                InvalidEvent(
                    f"type {etype!r} has a schema; its data must be JSON, not data_base64",
                    attribute="data_base64",
                ),
            )
        data = ev.get("data")
        if not version.validator.is_valid(data):
            err = next(iter(version.validator.iter_errors(data)))
            path = json_path(err.instance_path)
            raise self._failed(
                ts,
                InvalidEvent(
                    f"data at {path} does not match {version.uri}: {err.message}",
                    attribute="data",
                    path=path,
                    dataschema=version.uri,
                ),
            )
        ev["dataschema"] = self.base_uri + version.uri

    def _failed(self, ts: TypeSchemas, exc: InvalidEvent) -> InvalidEvent:
        ts.failures += 1
        ts.last_failure = exc.detail
        return exc


def check_type_name(etype: str) -> str:
    if not isinstance(etype, str) or not TYPE_NAME.match(etype):
        raise BadRequest(
            "a schema's event type must match [A-Za-z0-9][A-Za-z0-9._:-]{0,199}", field="type"
        )
    return etype


def check_app_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not APP_NAME.match(name):
        raise BadRequest(f"{what} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,199}}", field=what)
    return name


def check_schema(schema: Any) -> None:
    """A JSON Schema 2020-12 document, local references only, of bounded size and depth."""
    if not isinstance(schema, dict | bool):
        raise BadRequest("schema must be a JSON Schema (an object or a boolean)", field="schema")
    if len(orjson.dumps(schema)) > MAX_SCHEMA_BYTES:
        raise BadRequest(f"schema is over {MAX_SCHEMA_BYTES} bytes", field="schema")
    if isinstance(schema, dict):
        declared = schema.get("$schema", DRAFT)
        if declared not in (DRAFT, DRAFT + "#"):
            raise BadRequest(
                f"schema must be JSON Schema 2020-12 ($schema {DRAFT})", field="schema"
            )
    _check_refs(schema, "$", 0)
    if isinstance(schema, dict) and not jsonschema_rs.meta.is_valid(schema):
        try:
            jsonschema_rs.meta.validate(schema)
        except jsonschema_rs.ValidationError as exc:
            raise BadRequest(
                f"schema is not valid JSON Schema 2020-12: {exc.message}", field="schema"
            ) from None
    try:  # what the meta-schema leaves: references that resolve, patterns that compile
        jsonschema_rs.Draft202012Validator(schema)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        raise BadRequest(
            f"schema cannot be compiled: {str(exc).splitlines()[0]}", field="schema"
        ) from None


def _check_refs(node: Any, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BadRequest(f"schema is nested deeper than {MAX_DEPTH}", field="schema")
    if isinstance(node, dict):
        for key in ("$ref", "$dynamicRef"):
            ref = node.get(key)
            if ref is not None and not (isinstance(ref, str) and ref.startswith("#")):
                raise BadRequest(
                    f"{key} at {path} must point inside the schema (#/...): the hub fetches "
                    "nothing",
                    field="schema",
                )
        for k, v in node.items():
            _check_refs(v, f"{path}.{k}", depth + 1)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_refs(v, f"{path}[{i}]", depth + 1)


def _compile(etype: str, number: int, schema: Any) -> Version:
    try:
        validator = jsonschema_rs.Draft202012Validator(schema)
        # The data schema as a resource of its own ($id), so its "#/..." references
        # still point into it once it is wrapped.
        items = (
            {**schema, "$id": _DATA_ID}
            if isinstance(schema, dict) and "$id" not in schema
            else schema
        )
        many = jsonschema_rs.Draft202012Validator({"type": "array", "items": items})
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        raise BadRequest(
            f"schema cannot be compiled: {str(exc).splitlines()[0]}", field="schema"
        ) from None
    return Version(number, schema, _canonical(schema), validator, many, schema_uri(etype, number))


_DATA_ID = "urn:tidings:data"


def _canonical(schema: Any) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)


def _copy(ts: TypeSchemas) -> TypeSchemas:
    return TypeSchemas(
        ts.name,
        list(ts.versions),
        ts.compatibility,
        dict(ts.producers),
        dict(ts.consumers),
        ts.failures,
        ts.last_failure,
    )


def _bounded(names: dict[str, Any], name: str, what: str) -> None:
    if name not in names and len(names) >= MAX_NAMES:
        raise Conflict(f"a type has at most {MAX_NAMES} {what}")


def _for_consumer(b: Break) -> dict[str, Any]:
    return {"path": b.path, "change": b.change, "detail": b.detail}


def _first(breaks: list[Break]) -> str:
    b = breaks[0]
    more = f" (and {len(breaks) - 1} more)" if len(breaks) > 1 else ""
    return f"{b.path}: {b.detail}{more}"


def _incompatible(etype: str, result: dict[str, Any]) -> Conflict:
    parts = []
    if result["changes"]:
        c = result["changes"][0]
        more = len(result["changes"]) - 1
        parts.append(f"{c['path']}: {c['detail']}" + (f" (and {more} more)" if more else ""))
    if result["consumers"]:
        names = ", ".join(c["name"] for c in result["consumers"])
        parts.append(f"consumers that would break: {names}")
    return Conflict(
        f"the schema is not {result['compatibility']} compatible with type {etype!r}: "
        + "; ".join(parts),
        type=etype,
        compatibility=result["compatibility"],
        changes=result["changes"],
        consumers=result["consumers"],
    )


def json_path(parts: Sequence[str | int]) -> str:
    """``["items", 0, "qty"]`` as ``$.items[0].qty``."""
    out = "$"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", p):
            out += f".{p}"
        else:
            out += "[" + orjson.dumps(p).decode() + "]"
    return out
