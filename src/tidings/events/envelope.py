"""The CloudEvents 1.0 envelope: check and fill events, parse and write them over HTTP.

The hub checks every published event here, up to 200,000 a second from one
process, so the hot path works on plain dicts decoded by orjson: cheap checks
first (``str.isprintable`` before a regex), values already seen (sources,
content types, extension names) checked once, and the clock read once per batch.
:class:`Event` and :class:`Record` are the frozen dataclasses SDK users see; the
hub itself never builds them.

An event that passes :func:`normalize_event` always has ``specversion`` "1.0",
a non-empty ``id``, ``source`` and ``type``, and a ``time`` that
:meth:`datetime.datetime.fromisoformat` can parse (``T`` and ``Z`` in upper case,
no leap second). The size limit applies to the event as the log stores it: its
JSON serialization.

Specifications implemented:

- attributes and type system:
  https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md
- JSON format, batch format, ``null`` as absent (2.2), ``data`` handling (3.1):
  https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/formats/json-format.md
- HTTP binding, binary mode headers and their percent-encoding (3.1.3.2):
  https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md
- distributed tracing extension (``traceparent``), W3C Trace Context 3.2:
  https://www.w3.org/TR/trace-context/#traceparent-header
"""

from __future__ import annotations

import binascii
import re
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

import orjson
from uuid_utils import uuid7

from tidings.errors import InvalidEvent
from tidings.events.nesting import check_data_depth

__all__ = [
    "MAX_EVENT_BYTES",
    "Event",
    "Record",
    "new_event_id",
    "normalize_event",
    "now_rfc3339",
    "rfc3339_ms",
    "serialize",
]

MAX_EVENT_BYTES: Final = 1 << 20
"""Default limit on one event, measured as its JSON serialization."""

BATCH: Final = "application/cloudevents-batch+json"  # named in error hints

# Members of the JSON form that are not extensions.
_CONTEXT: Final = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "dataschema",
        "data",
        "data_base64",
    }
)
# Optional context attributes that a null in JSON leaves out.
_NULLABLE: Final = ("subject", "datacontenttype", "dataschema", "data_base64")
# Extensions tidings gives a meaning to; their values must be strings.
_STRING_EXTENSIONS: Final = frozenset(
    {"partitionkey", "correlationid", "causationid", "tracestate"}
)
_INT32_MIN: Final = -(1 << 31)
_INT32_MAX: Final = (1 << 31) - 1

# spec.md "Attribute Naming Convention": a-z and 0-9 only. Names "SHOULD NOT exceed
# 20 characters": a producer's guideline, so a longer name is accepted.
_EXTENSION_NAME: Final = re.compile(r"[a-z0-9]+")
# spec.md "Type System", String: no control characters, surrogates or non-characters.
_FORBIDDEN_CHAR: Final = re.compile(
    r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"\\U{plane:04x}fffe\\U{plane:04x}ffff" for plane in range(17))
    + "]"
)
# RFC 3986 Appendix A, written once for the hub and for /openapi.json, so in syntax
# that Python and ECMA-262 read alike. An IP-literal's inside is only told apart from
# a registered name, not parsed as an IPv6 address.
_HEX2: Final = "%[0-9A-Fa-f]{2}"
_PCHAR: Final = f"(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|{_HEX2})"
_AUTHORITY: Final = (
    f"(?:(?:[A-Za-z0-9._~!$&'()*+,;=:-]|{_HEX2})*@)?"
    r"(?:\[(?:[0-9A-Fa-f:.]+|[Vv][0-9A-Fa-f]+\.[A-Za-z0-9._~!$&'()*+,;=:-]+)\]"
    f"|(?:[A-Za-z0-9._~!$&'()*+,;=-]|{_HEX2})*)(?::[0-9]*)?"
)
_PATH_ABEMPTY: Final = f"(?:/{_PCHAR}*)*"
_PATH_ABSOLUTE: Final = f"/(?:{_PCHAR}+{_PATH_ABEMPTY})?"
_QUERY: Final = f"(?:{_PCHAR}|[/?])*"
_HIER_PART: Final = (
    f"(?://{_AUTHORITY}{_PATH_ABEMPTY}|{_PATH_ABSOLUTE}|{_PCHAR}+{_PATH_ABEMPTY}|)"
)
_RELATIVE_PART: Final = (
    f"(?://{_AUTHORITY}{_PATH_ABEMPTY}|{_PATH_ABSOLUTE}"
    f"|(?:[A-Za-z0-9._~!$&'()*+,;=@-]|{_HEX2})+{_PATH_ABEMPTY}|)"
)
_SCHEME: Final = "[A-Za-z][A-Za-z0-9+.-]*"
ABSOLUTE_URI_PATTERN: Final = f"{_SCHEME}:{_HIER_PART}(?:\\?{_QUERY})?"
"""RFC 3986 section 4.3 ``absolute-URI``: the CloudEvents ``URI`` type (no fragment)."""
URI_REFERENCE_PATTERN: Final = (
    f"(?:{_SCHEME}:{_HIER_PART}|{_RELATIVE_PART})(?:\\?{_QUERY})?(?:#{_QUERY})?"
)
"""RFC 3986 section 4.1 ``URI-reference``: the CloudEvents ``URI-reference`` type."""
_ABSOLUTE_URI: Final = re.compile(ABSOLUTE_URI_PATTERN)
_URI_REFERENCE: Final = re.compile(URI_REFERENCE_PATTERN)
# RFC 2046 via RFC 9110 8.3.1: type "/" subtype *( OWS ";" OWS [ token "=" value ] ),
# a value being a token or a quoted-string. No tab: a String holds no control character.
_TOKEN: Final = "[!#$%&'*+.^_`|~0-9A-Za-z-]+"
MEDIA_TYPE_PATTERN: Final = (
    f"{_TOKEN}/{_TOKEN}"
    rf'(?: *;(?: *{_TOKEN}=(?:{_TOKEN}|"(?:[ !#-\[\]-~]|\\[ -~])*"))?)*'
)
"""A media type with its parameters (RFC 2046, RFC 9110 section 8.3.1)."""
_MEDIA_TYPE: Final = re.compile(MEDIA_TYPE_PATTERN)
# RFC 3339 section 5.6, minus year 0000 and leap seconds, which datetime cannot hold.
_RFC3339_TEXT: Final = (
    r"(?!0000)(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]"
    r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d+)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
)
_RFC3339: Final = re.compile(_RFC3339_TEXT, re.ASCII)
_TRACEPARENT: Final = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?", re.ASCII | re.DOTALL
)


def new_event_id() -> str:
    """A new UUIDv7 (RFC 9562): unique, and sorting as text sorts by creation time."""
    return str(uuid7())


_second: tuple[int, str] = (-1, "")


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with microseconds, e.g. ``2026-11-27T03:26:25.123456Z``."""
    global _second
    ns = _time.time_ns()
    seconds = ns // 1_000_000_000
    cached, prefix = _second
    if seconds != cached:
        prefix = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(seconds))
        _second = (seconds, prefix)
    return f"{prefix}.{ns % 1_000_000_000 // 1000:06d}Z"


def rfc3339_ms(ms: int) -> str:
    """``ms`` since the epoch as RFC 3339 UTC to the ms, e.g. ``2026-11-27T03:26:25.123Z``."""
    return f"{_time.strftime('%Y-%m-%dT%H:%M:%S', _time.gmtime(ms // 1000))}.{ms % 1000:03d}Z"


# Values already checked, so that a stream of events from one producer pays for each
# check once. Bounded: past the limit, new values are checked every time.
_CACHE_LIMIT: Final = 1024
_checked_sources: set[str] = set()
_checked_uris: set[str] = set()  # dataschema values
_checked_media: dict[str, bool] = {}  # datacontenttype -> does it declare JSON?
# Extension names whose string values need only the character check.
_plain_extensions: set[str] = set(_STRING_EXTENSIONS)


def normalize_event(obj: object, *, topic: str, now: str | None = None) -> dict[str, Any]:
    """Check one event (a parsed JSON object), fill what is missing, return a new dict.

    Fills ``specversion`` "1.0", ``id`` (a UUIDv7), ``source`` "/topics/{topic}" and
    ``time`` (``now``, else the clock). ``null`` attributes count as absent
    (JSON format 2.2) and are dropped; ``"data": null`` is an explicit null payload
    and is kept (JSON format 3.1.1). Raises :class:`InvalidEvent` naming the
    attribute and the reason.
    """
    return _fill(dict(obj) if isinstance(obj, dict) else obj, topic, now)


def _fill(
    obj: object, topic: str, now: str | None, *, check_depth: bool = True
) -> dict[str, Any]:
    """:func:`normalize_event` on a dict the caller owns: checked and filled in place.

    The parsers own the dicts they decode, so a batch is filled where it lies
    instead of copied event by event. ``check_depth`` False: the caller knows the
    event cannot nest too deep (see :func:`tidings.events.nesting.shallow`).
    """
    # Each check is a fast test inline; only when it fails is a function called, to name
    # the fault or to pass what the test was too strict for (a no-break space or a
    # zero-width joiner is allowed, yet not str.isprintable()).
    if not isinstance(obj, dict):
        hint = f"; send a batch as {BATCH}" if isinstance(obj, list) else ""
        raise InvalidEvent(f"event must be a JSON object, not {_kind(obj)}{hint}")
    get = obj.get

    etype = get("type")
    if not isinstance(etype, str) or not etype or not etype.isprintable():
        _check_string("type", etype)

    specversion = get("specversion")
    if specversion is None:
        obj["specversion"] = "1.0"
    elif specversion != "1.0":
        raise InvalidEvent(
            f"attribute 'specversion' must be \"1.0\", not {_show(specversion)}",
            attribute="specversion",
        )

    eid = get("id")
    if eid is None:
        obj["id"] = str(uuid7())
    elif not isinstance(eid, str) or not eid or not eid.isprintable():
        _check_string("id", eid)

    source = get("source")
    if source is None:
        obj["source"] = "/topics/" + topic
    elif not isinstance(source, str) or source not in _checked_sources:
        obj["source"] = source = _check_uri_reference("source", source)
        if len(_checked_sources) < _CACHE_LIMIT:
            _checked_sources.add(source)

    subject = get("subject")
    if subject is not None and (
        not isinstance(subject, str) or not subject or not subject.isprintable()
    ):
        _check_string("subject", subject)

    etime = get("time")
    obj["time"] = (now or now_rfc3339()) if etime is None else _check_time(etime)

    json_data = True
    content_type = get("datacontenttype")
    if content_type is not None:
        if isinstance(content_type, str) and content_type in _checked_media:
            json_data = _checked_media[content_type]
        else:
            json_data = _check_media_type(content_type)

    schema = get("dataschema")
    if schema is not None:
        obj["dataschema"] = _check_uri("dataschema", schema)

    data_base64 = get("data_base64")
    # null means absent (JSON format 2.2): drop optional attributes given as null.
    if subject is None or content_type is None or schema is None or data_base64 is None:
        for name in _NULLABLE:
            if name in obj and obj[name] is None:
                del obj[name]
    extensions = obj.keys() - _CONTEXT  # a set difference in C, not a loop over every key
    for name in extensions:
        value = obj[name]
        if value is None:
            del obj[name]
        elif isinstance(value, str) and name in _plain_extensions:
            if not value.isprintable():
                _check_chars(name, value, "extension attribute")
        elif (whole := _check_extension(name, value)) is not None:
            obj[name] = whole

    if "data" in obj:
        if check_depth:
            check_data_depth(obj["data"])
        if data_base64 is not None:
            raise InvalidEvent(
                "attributes 'data' and 'data_base64' cannot both be present",
                attribute="data_base64",
            )
        if not json_data and not isinstance(obj["data"], str):
            raise InvalidEvent(
                f"attribute 'data' must be a string when datacontenttype {content_type!r}"
                f" is not JSON, not {_kind(obj['data'])}; send bytes as 'data_base64'",
                attribute="data",
            )
    elif data_base64 is not None:
        _check_base64(data_base64)
    return obj


def serialize(event: Mapping[str, Any]) -> bytes:
    """An event in the JSON format, as the log stores it and structured mode sends it."""
    return orjson.dumps(event if isinstance(event, dict) else dict(event))


@dataclass(frozen=True, slots=True)
class Event:
    """A CloudEvent for SDK users.

    ``extensions`` holds every attribute outside the core set (``partitionkey``,
    ``correlationid``, ``causationid``, ``traceparent``, ...). ``topic`` is where a
    handler wants a returned event to go; it is not a CloudEvents attribute and is
    never serialized. ``data=None`` means no data.
    """

    type: str
    data: Any = None
    id: str | None = None
    source: str | None = None
    subject: str | None = None
    time: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data_base64: str | None = None
    specversion: str = "1.0"
    extensions: Mapping[str, Any] = field(default_factory=dict)
    topic: str | None = None

    def __post_init__(self) -> None:
        clash = _CONTEXT.intersection(self.extensions)
        if clash:
            name = min(clash)
            raise InvalidEvent(
                f"{name!r} is a core attribute, not an extension; pass it as {name}=",
                attribute=name,
            )

    def to_dict(self) -> dict[str, Any]:
        """The CloudEvents JSON attributes: ``None`` dropped, extensions flattened."""
        out: dict[str, Any] = {"specversion": self.specversion}
        for name in ("id", "source"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out["type"] = self.type
        for name in ("subject", "time", "datacontenttype", "dataschema"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for name, value in self.extensions.items():
            if value is not None:
                out[name] = value
        if self.data_base64 is not None:
            out["data_base64"] = self.data_base64
        elif self.data is not None:
            out["data"] = self.data
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        """An event from its JSON attributes; attributes outside the core set become extensions."""
        if not isinstance(d, Mapping):
            raise InvalidEvent(f"event must be a JSON object, not {_kind(d)}")
        etype = _check_string("type", d.get("type"))
        strings: dict[str, str | None] = {}
        for name in ("id", "source", "subject", "time", "datacontenttype", "dataschema"):
            value = d.get(name)
            if value is not None and not isinstance(value, str):
                raise InvalidEvent(
                    f"attribute {name!r} must be a string, not {_kind(value)}", attribute=name
                )
            strings[name] = value
        data_base64 = d.get("data_base64")
        if data_base64 is not None and not isinstance(data_base64, str):
            raise InvalidEvent("attribute 'data_base64' must be a string", attribute="data_base64")
        return cls(
            type=etype,
            data=d.get("data"),
            data_base64=data_base64,
            specversion=d.get("specversion") or "1.0",
            extensions={k: v for k, v in d.items() if k not in _CONTEXT and v is not None},
            **strings,
        )

    def get(self, name: str, default: Any = None) -> Any:
        """A core attribute or an extension by name; ``default`` if it is absent."""
        if name in _CONTEXT:
            value = getattr(self, name)
            return default if value is None else value
        return self.extensions.get(name, default)

    @property
    def partitionkey(self) -> str | None:
        """The key that chooses the partition: same key, same partition, same order."""
        return _str_or_none(self.extensions.get("partitionkey"))

    @property
    def correlationid(self) -> str | None:
        """The id shared by every event of one flow (e.g. one order)."""
        return _str_or_none(self.extensions.get("correlationid"))

    @property
    def causationid(self) -> str | None:
        """The id of the event that caused this one."""
        return _str_or_none(self.extensions.get("causationid"))


@dataclass(frozen=True, slots=True)
class Record:
    """A delivered event: where it sits in the log and what it is; ``appended`` is
    its append time (ms since the epoch) when the read asked for it."""

    topic: str
    partition: int
    offset: int
    event: Event
    appended: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Record:
        """A record from ``{"topic", "partition", "offset", "event": {...}}`` (and
        ``"appended"``, if there)."""
        topic, event = d.get("topic"), d.get("event")
        if not isinstance(topic, str):
            raise ValueError(f"record 'topic' must be a string, not {_kind(topic)}")
        if not isinstance(event, Mapping):
            raise ValueError(f"record 'event' must be an object, not {_kind(event)}")
        appended = d.get("appended")
        if appended is not None and (not isinstance(appended, int) or isinstance(appended, bool)):
            raise ValueError(f"record 'appended' must be an integer, not {_show(appended)}")
        return cls(
            topic, _position(d, "partition"), _position(d, "offset"), Event.from_dict(event),
            appended,
        )

    def to_dict(self) -> dict[str, Any]:
        d = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "event": self.event.to_dict(),
        }
        if self.appended is not None:
            d["appended"] = self.appended
        return d


# -- checks -------------------------------------------------------------------------------------


def _check_string(name: str, value: object) -> str:
    """A String attribute that the spec requires to be non-empty."""
    if value is None:
        raise InvalidEvent(f"attribute {name!r} is required", attribute=name)
    if not isinstance(value, str):
        raise InvalidEvent(
            f"attribute {name!r} must be a string, not {_kind(value)}", attribute=name
        )
    if not value:
        raise InvalidEvent(f"attribute {name!r} must not be empty", attribute=name)
    _check_chars(name, value)
    return value


def _check_chars(name: str, value: str, what: str = "attribute") -> None:
    # Every forbidden character is unprintable, so printable text (nearly all) skips the regex.
    if not value.isprintable():
        bad = _FORBIDDEN_CHAR.search(value)
        if bad is not None:
            raise InvalidEvent(
                f"{what} {name!r} must not contain U+{ord(bad.group()):04X}"
                " (control characters, surrogates and non-characters are not allowed)",
                attribute=name,
            )


def _check_uri_reference(name: str, value: object) -> str:
    value = _check_string(name, value)
    if _URI_REFERENCE.fullmatch(value) is None:
        raise InvalidEvent(
            f"attribute {name!r} must be a URI-reference (RFC 3986 section 4.1): ASCII"
            " letters, digits and -._~!$&'()*+,;=:@/?# in their places, anything else"
            f" percent-encoded as %XX; got {_show(value)}",
            attribute=name,
        )
    return value


def _check_media_type(value: object) -> bool:
    """A datacontenttype (RFC 2046); returns whether it declares JSON data."""
    value = _check_string("datacontenttype", value)
    if _MEDIA_TYPE.fullmatch(value) is None:
        raise InvalidEvent(
            f"attribute 'datacontenttype' must be a media type (RFC 2046) such as"
            f" 'application/json; charset=utf-8' (parameters as name=value), not {_show(value)}",
            attribute="datacontenttype",
        )
    json_data = _is_json(value)
    if len(_checked_media) < _CACHE_LIMIT:
        _checked_media[value] = json_data
    return json_data


def _check_uri(name: str, value: object) -> str:
    """An absolute URI (RFC 3986 section 4.3): a scheme, no fragment."""
    if isinstance(value, str) and value in _checked_uris:
        return value
    value = _check_uri_reference(name, value)
    if _ABSOLUTE_URI.fullmatch(value) is None:
        raise InvalidEvent(
            f"attribute {name!r} must be an absolute URI (RFC 3986 section 4.3): a scheme"
            f" such as https: and no #fragment, not {_show(value)}",
            attribute=name,
        )
    if len(_checked_uris) < _CACHE_LIMIT:
        _checked_uris.add(value)
    return value


def _check_time(value: object) -> str:
    """An RFC 3339 timestamp, returned with ``T`` and ``Z`` in upper case."""
    if not isinstance(value, str) or (match := _RFC3339.fullmatch(value)) is None:
        raise InvalidEvent(
            "attribute 'time' must be an RFC 3339 timestamp such as"
            f" '2026-11-27T03:26:25.123Z', not {_show(value)}",
            attribute="time",
        )
    if match[3] > "28":  # the regex allows 31 days in every month
        try:
            date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            raise InvalidEvent(
                f"attribute 'time' names a day that does not exist: {_show(value)}",
                attribute="time",
            ) from None
    return value.upper() if "t" in value or "z" in value else value


def _check_base64(value: object) -> None:
    if not isinstance(value, str):
        raise InvalidEvent(
            f"attribute 'data_base64' must be a base64 string, not {_kind(value)}",
            attribute="data_base64",
        )
    try:
        binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidEvent(
            f"attribute 'data_base64' is not valid base64 (RFC 4648): {err}",
            attribute="data_base64",
        ) from None


def _check_extension(name: str, value: object) -> int | None:
    """Raises if the extension is not allowed; a whole float comes back as its integer."""
    if name in _STRING_EXTENSIONS:
        if not isinstance(value, str):
            raise InvalidEvent(
                f"extension attribute {name!r} must be a string, not {_kind(value)}",
                attribute=name,
            )
        _check_chars(name, value, "extension attribute")
        return None
    if name == "traceparent":
        _check_traceparent(value)
        return None
    if not isinstance(name, str) or _EXTENSION_NAME.fullmatch(name) is None:
        raise InvalidEvent(
            f"extension name {_show(name)} must be lower-case letters or digits, a-z and 0-9"
            " (CloudEvents attribute naming convention)",
            attribute=str(name),
        )
    if len(_plain_extensions) < _CACHE_LIMIT:
        _plain_extensions.add(name)
    whole = None
    if isinstance(value, float) and value.is_integer():
        value = whole = int(value)  # JSON has one number type: 7.0 is the Integer 7
    if isinstance(value, str):
        _check_chars(name, value, "extension attribute")
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if not _INT32_MIN <= value <= _INT32_MAX:
            raise InvalidEvent(
                f"extension attribute {name!r} is {value}, outside the 32-bit integer range"
                " of the CloudEvents Integer type; send it as a string",
                attribute=name,
            )
    else:
        if isinstance(value, float):
            why = "CloudEvents has no floating-point type; send it as a string"
        else:
            why = "extension values are flat; put structured values in data"
        raise InvalidEvent(
            f"extension attribute {name!r} must be a string, an integer or a boolean,"
            f" not {_kind(value)} ({why})",
            attribute=name,
        )
    return whole


def _check_traceparent(value: object) -> None:
    match = _TRACEPARENT.fullmatch(value) if isinstance(value, str) else None
    if match is not None:
        version, trace_id, parent_id, rest = match.groups()
        if (
            version != "ff"
            and not (version == "00" and rest is not None)
            and trace_id != "0" * 32
            and parent_id != "0" * 16
        ):
            return
    raise InvalidEvent(
        "extension attribute 'traceparent' must be a W3C traceparent"
        " (version-traceid-parentid-flags in lower-case hex, ids not all zero, version not ff),"
        f" not {_show(value)}",
        attribute="traceparent",
    )


# -- small helpers ------------------------------------------------------------------------------


def _kind(value: object) -> str:
    """What a value is, in JSON terms, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a floating-point number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def _media(content_type: str) -> str:
    """The media type without parameters, lower-cased."""
    return content_type.partition(";")[0].strip().lower()


def _is_json(content_type: str) -> bool:
    """JSON format 3.1.1: a media type of the form ``*/json`` or ``*/*+json``."""
    media = _media(content_type)
    return media.endswith("/json") or media.endswith("+json")


def _show(value: object) -> str:
    """A value for an error message, cut short so a huge value cannot bloat the error."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _position(d: Mapping[str, Any], name: str) -> int:
    value = d.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"record {name!r} must be an integer >= 0, not {_show(value)}")
    return value


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
