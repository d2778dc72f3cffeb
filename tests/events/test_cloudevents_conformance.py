"""CloudEvents 1.0.2, rule by rule: each rule of the core specification, the JSON format
and the HTTP binding that a receiver can check, with events it must accept and events
it must refuse.

Each rule is one row naming its section; every row runs against the envelope code
(``normalize_event``, ``parse_batch``, ``parse_request``) and against a real hub
(published over HTTP, read back). What the hub emits (reads, SSE, webhooks, the
SDK's binary mode) is read with the reference SDK, the ``cloudevents`` package.

Specifications, v1.0.2:
https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md
https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/formats/json-format.md
https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md

Where the contract deliberately differs (README, "The HTTP API"): a missing ``id``,
``source``, ``specversion`` and ``time`` is filled, not refused (rows marked
``filled``); a whole number such as ``7.0`` is the Integer 7; a leap second or year
0000 in ``time`` is refused. A SHOULD binds producers, so its row has nothing to
refuse.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import orjson
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.core.formats.json import JSONFormat
from hubapi import expect, expect_problem, next_offsets, read_all, unique
from hubproc import HubFactory, HubProcess
from receivers import Receiver

from tidings.errors import InvalidEvent, TidingsError
from tidings.events.envelope import normalize_event
from tidings.events.http import parse_batch, parse_request, to_binary

pytestmark = pytest.mark.timeout(180)

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
CORE = "core 1.0.2"
JSON = "JSON format 1.0.2"
HTTP = "HTTP binding 1.0.2"


@dataclass(frozen=True)
class Refused:
    """An input the rule refuses: the attribute the error names and words of its detail."""

    event: Any
    attribute: str | None
    says: str


@dataclass(frozen=True)
class Rule:
    """One rule of one section: events (JSON format members) accepted and refused."""

    section: str
    rule: str
    accepted: tuple[Any, ...]
    refused: tuple[Refused, ...] = ()
    should: bool = False  # a SHOULD for producers: a receiver accepts either way

    @property
    def id(self) -> str:
        return f"{self.section}: {self.rule}"


def ev(**attributes: Any) -> dict[str, Any]:
    """An event with a type and whatever the case is about."""
    return {"type": "com.example.someevent", **attributes}


def refused(attribute: str | None, says: str, **attributes: Any) -> Refused:
    return Refused(ev(**attributes), attribute, says)


def wire(value: Any) -> bytes:
    """JSON text, unpaired surrogates written as ``\\uD800`` escapes (orjson will not)."""
    return json.dumps(value).encode()


def on_the_wire(bad: Refused) -> tuple[int, str | None, str]:
    """Status, attribute and words of the refusal of ``bad`` sent as JSON text.

    An unpaired surrogate cannot be decoded from JSON text at all: 400 from the parser.
    """
    try:
        orjson.dumps(bad.event)
    except TypeError:
        return 400, None, "surrogate"
    return 422, bad.attribute, bad.says


INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

EVENT_RULES = [
    # -- core: context attributes ----------------------------------------------------------
    Rule(
        f"{CORE} Attribute Naming Convention",
        "names are lower-case letters a-z or digits 0-9 (extensions alike)",
        (ev(tenant="a"), ev(comexampleextension1="v"), ev(x1="a"), ev(**{"0": "digits"})),
        (
            refused("Tenant", "lower-case letters or digits", Tenant="a"),
            refused("bad_name", "lower-case letters or digits", bad_name="a"),
            refused("a-b", "lower-case letters or digits", **{"a-b": "a"}),
            refused("", "lower-case letters or digits", **{"": "a"}),
            refused("café", "lower-case letters or digits", **{"café": "a"}),
        ),
    ),
    Rule(
        f"{CORE} Attribute Naming Convention",
        "names SHOULD NOT exceed 20 characters (a guideline: longer ones are valid)",
        (ev(**{"a" * 21: "x"}), ev(**{"comexampleextensionlonger": 1})),
        should=True,
    ),
    Rule(
        f"{CORE} REQUIRED Attributes: id",
        "id is a non-empty String (filled when absent)",
        (ev(id="1234-1234-1234"), ev(id="A"), ev(id="Euro € 😀"), ev(), ev(id=None)),
        (
            refused("id", "must not be empty", id=""),
            refused("id", "must be a string", id=5),
            refused("id", "must be a string", id=["a"]),
            refused("id", "U+000A", id="a\nb"),
        ),
    ),
    Rule(
        f"{CORE} REQUIRED Attributes: source",
        "source is a non-empty URI-reference (filled when absent)",
        (
            ev(source="/mycontext"),
            ev(source="https://github.com/cloudevents"),
            ev(source="mailto:cncf-wg-serverless@lists.cncf.io"),
            ev(source="urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"),
            ev(source="/cloudevents/spec/pull/123"),
            ev(source="1-555-123-4567"),
            ev(source="http://[::1]:8080/a%20b?q=1#frag"),
            ev(source="//example.com/x"),
            ev(source="?only=query"),
            ev(),
        ),
        (
            refused("source", "must not be empty", source=""),
            refused("source", "URI-reference", source="my service"),
            refused("source", "URI-reference", source="a<b>"),
            refused("source", "URI-reference", source="100%"),  # % only as %XX
            refused("source", "URI-reference", source="/a%zz"),
            refused("source", "URI-reference", source="/a[b]"),  # [ ] only around an IP
            refused("source", "URI-reference", source="/café"),  # an IRI, not a URI
            refused("source", "URI-reference", source="/x#y#z"),
            refused("source", "must be a string", source=5),
        ),
    ),
    Rule(
        f"{CORE} REQUIRED Attributes: specversion",
        'specversion is "1.0" for this version; another is refused (filled when absent)',
        (ev(specversion="1.0"), ev()),
        (
            refused("specversion", 'must be "1.0"', specversion="0.3"),
            refused("specversion", 'must be "1.0"', specversion="1.0.2"),
            refused("specversion", 'must be "1.0"', specversion=""),
            refused("specversion", 'must be "1.0"', specversion=1.0),
        ),
    ),
    Rule(
        f"{CORE} REQUIRED Attributes: type",
        "type is REQUIRED, a non-empty String",
        (ev(), {"type": "com.github.pull_request.opened"}, {"type": "t"}),
        (
            Refused({}, "type", "is required"),
            Refused({"type": None}, "type", "is required"),
            Refused({"type": ""}, "type", "must not be empty"),
            Refused({"type": 7}, "type", "must be a string"),
        ),
    ),
    Rule(
        f"{CORE} OPTIONAL Attributes: datacontenttype",
        "datacontenttype follows RFC 2046, and MAY appear without data",
        (
            ev(datacontenttype="application/json", data={"a": 1}),
            ev(datacontenttype="application/json; charset=utf-8", data=1),
            ev(datacontenttype="application/vnd.apache.thrift.binary", data_base64="AA=="),
            ev(datacontenttype='multipart/mixed; boundary="a \\"b\\""'),
            ev(datacontenttype="text/plain"),
        ),
        (
            refused("datacontenttype", "RFC 2046", datacontenttype="json"),
            refused("datacontenttype", "RFC 2046", datacontenttype="text/"),
            refused("datacontenttype", "RFC 2046", datacontenttype="text/plain; charset"),
            refused("datacontenttype", "RFC 2046", datacontenttype="text/plain charset=utf-8"),
            refused("datacontenttype", "RFC 2046", datacontenttype="text/plain; a=b c"),
            refused("datacontenttype", "U+0009", datacontenttype="text/plain;\tq=1"),
            refused("datacontenttype", "must not be empty", datacontenttype=""),
            refused("datacontenttype", "must be a string", datacontenttype=5),
        ),
    ),
    Rule(
        f"{CORE} OPTIONAL Attributes: dataschema",
        "dataschema is a non-empty URI (absolute)",
        (
            ev(dataschema="https://example.com/s.json"),
            ev(dataschema="urn:example:schema:1"),
            ev(dataschema="https://example.com/schemas?type=order&v=2"),
        ),
        (
            refused("dataschema", "absolute URI", dataschema="/s.json"),
            refused("dataschema", "must not be empty", dataschema=""),
            refused("dataschema", "URI-reference", dataschema="https://a b"),
            refused("dataschema", "absolute URI", dataschema="https://example.com/s.json#/a"),
            refused("dataschema", "absolute URI", dataschema="//example.com/s.json"),
        ),
    ),
    Rule(
        f"{CORE} OPTIONAL Attributes: subject",
        "subject, if present, is a non-empty String",
        (ev(subject="mynewfile.jpg"), ev(subject="partnerid/5/clientid/100")),
        (
            refused("subject", "must not be empty", subject=""),
            refused("subject", "must be a string", subject=3),
        ),
    ),
    Rule(
        f"{CORE} OPTIONAL Attributes: time",
        "time, if present, is an RFC 3339 timestamp (filled when absent)",
        (
            ev(time="2018-04-05T17:31:00Z"),
            ev(time="2018-04-05T17:31:00.123456789+05:30"),
            ev(time="2018-04-05T17:31:00-00:00"),
            ev(time="2018-04-05t17:31:00z"),  # RFC 3339 5.6 NOTE: stored as T and Z
            ev(time="2024-02-29T23:59:59Z"),
            ev(),
        ),
        (
            refused("time", "RFC 3339", time="yesterday"),
            refused("time", "RFC 3339", time="2018-04-05T17:31:00"),
            refused("time", "RFC 3339", time="2018-04-05 17:31:00Z"),
            refused("time", "RFC 3339", time="2018-13-01T00:00:00Z"),
            refused("time", "does not exist", time="2023-02-29T00:00:00Z"),
            refused("time", "RFC 3339", time="2018-04-05T24:00:00Z"),
            refused("time", "RFC 3339", time=1522949460),
            # Valid RFC 3339 that the hub refuses on purpose (README): it orders by time.
            refused("time", "RFC 3339", time="2016-12-31T23:59:60Z"),
            refused("time", "RFC 3339", time="0000-01-01T00:00:00Z"),
        ),
    ),
    # -- core: type system -----------------------------------------------------------------
    Rule(
        f"{CORE} Type System: Boolean",
        "a Boolean is true or false",
        (ev(flag=True), ev(flag=False)),
        (refused("flag", "not an object", flag={"true": 1}),),
    ),
    Rule(
        f"{CORE} Type System: Integer",
        "an Integer lies in -2,147,483,648 to +2,147,483,647",
        (ev(n=0), ev(n=INT32_MIN), ev(n=INT32_MAX), ev(n=-5), ev(n=7.0)),  # 7.0: lenient
        (
            refused("n", "32-bit integer range", n=INT32_MAX + 1),
            refused("n", "32-bit integer range", n=INT32_MIN - 1),
            refused("n", "32-bit integer range", n=float(1 << 31)),
        ),
    ),
    Rule(
        f"{CORE} Type System: String",
        "a String has no control characters, non-characters or unpaired surrogates",
        (
            ev(subject="Euro € 😀"),
            ev(subject="no\u00a0break"),  # not str.isprintable(), yet allowed
            ev(subject="zero\u200dwidth"),
            ev(note="\ufdcf\ufdf0\ufffd"),  # around the non-character ranges
            ev(note=""),  # an extension String may be empty
        ),
        (
            refused("subject", "U+0000", subject="a\x00"),
            refused("subject", "U+001F", subject="a\x1f"),
            refused("note", "U+007F", note="a\x7f"),
            refused("subject", "U+0085", subject="a\x85"),
            refused("subject", "U+009F", subject="a\x9f"),
            refused("id", "U+FDD0", id="a\ufdd0"),
            refused("id", "U+FFFE", id="a\ufffe"),
            refused("note", "U+1FFFF", note="\U0001ffff"),
            refused("note", "U+10FFFF", note="\U0010ffff"),
            refused("subject", "U+D800", subject="a\ud800"),  # from JSON text: 400
            refused("type", "U+DEAD", type="x\udead"),
        ),
    ),
    Rule(
        f"{CORE} Type System: Binary",
        "Binary is Base64 (RFC 4648)",
        (ev(data_base64="aGVsbG8="), ev(data_base64="AA=="), ev(data_base64="")),
        (
            refused("data_base64", "base64", data_base64="not base64!"),
            refused("data_base64", "padding", data_base64="aGVsbG8"),
            refused("data_base64", "base64 string", data_base64=12),
        ),
    ),
    Rule(
        f"{CORE} Type System",
        "every context attribute value is of a type of the type system",
        (ev(s="text", b=True, i=1),),
        (
            refused("amount", "no floating-point type", amount=9.99),
            refused("tags", "not an array", tags=["a"]),
            refused("meta", "not an object", meta={"a": 1}),
        ),
    ),
    # -- JSON format -----------------------------------------------------------------------
    Rule(
        f"{JSON} 2",
        "extensions are top-level members (a nested member is no attribute)",
        (ev(comexampleextension1="value", comexampleothervalue=5),),
        (refused("extensions", "not an object", extensions={"tenant": "a"}),),
    ),
    Rule(
        f"{JSON} 2.2",
        "Integer is a JSON number of only an integer component",
        (ev(n=5), ev(n=-5)),
        (
            refused("n", "no floating-point type", n=0.5),
            refused("n", "no floating-point type", n=-1e-3),
        ),
    ),
    Rule(
        f"{JSON} 2.2",
        "String, URI-reference, URI and Timestamp are JSON strings",
        (ev(id="5", source="/5", time="2018-04-05T17:31:00Z", dataschema="urn:x"),),
        (
            refused("id", "must be a string", id=5),
            refused("source", "must be a string", source=True),
            refused("time", "RFC 3339", time=["2018-04-05T17:31:00Z"]),
            refused("dataschema", "must be a string", dataschema=1),
        ),
    ),
    Rule(
        f"{JSON} 2.2",
        "null is the same as an unset attribute",
        (
            ev(subject=None, datacontenttype=None, dataschema=None, data_base64=None),
            ev(unsetextension=None, id=None, source=None, specversion=None, time=None),
        ),
        (Refused({"type": None, "subject": None}, "type", "is required"),),
    ),
    Rule(
        f"{JSON} 3",
        "an event is a JSON object",
        (ev(),),
        (
            Refused([ev()], None, "JSON object, not an array"),
            Refused("com.example.someevent", None, "JSON object, not a string"),
            Refused(None, None, "JSON object, not null"),
        ),
    ),
    Rule(
        f"{JSON} 3.1.1",
        "data and data_base64 are mutually exclusive",
        (ev(data=1), ev(data_base64="AA=="), ev(data=1, data_base64=None)),
        (
            refused("data_base64", "both", data=1, data_base64="AA=="),
            refused("data_base64", "both", data=None, data_base64="AA=="),
        ),
    ),
    Rule(
        f"{JSON} 3.1.1",
        "JSON data (*/json, */*+json, or no datacontenttype) is any JSON value, null included",
        (
            ev(data={"appinfoA": "abc", "appinfoB": 123, "appinfoC": True}),
            ev(data=None),
            ev(data=[1, "a", None]),
            ev(data="I'm just a string"),
            ev(data='{"not": "parsed"}'),  # 3.1.2: a string is never decoded as JSON
            ev(datacontenttype="text/json", data=3),
            ev(datacontenttype="application/vnd.api+json; charset=utf-8", data=[1]),
            ev(datacontenttype="APPLICATION/JSON", data={"a": 1}),
        ),
        (
            refused(
                "data_base64",
                "both",
                datacontenttype="application/json",
                data=[],
                data_base64="AA==",
            ),
        ),
    ),
    Rule(
        f"{JSON} 3.1.1",
        "data of a datacontenttype that is not JSON is a string (the hub refuses others)",
        (
            ev(datacontenttype="application/xml", data='<much wow="xml"/>'),
            ev(datacontenttype="text/plain", data=""),
        ),
        (
            refused("data", "must be a string", datacontenttype="text/plain", data={"a": 1}),
            refused("data", "must be a string", datacontenttype="application/xml", data=5),
        ),
    ),
]


# -- the envelope code --------------------------------------------------------------------------

FILLED = ("id", "source", "specversion", "time")


def _without(event: Mapping[str, Any], case: Mapping[str, Any]) -> dict[str, Any]:
    """The event without the id and time the hub made for it (they differ call to call)."""
    return {k: v for k, v in event.items() if k not in ("id", "time") or case.get(k) is not None}


def expected(case: Any, topic: str) -> dict[str, Any]:
    """The event as the hub stores it, minus what it fills that differs between runs."""
    return _without(normalize_event(case, topic=topic), case)


@pytest.mark.parametrize("rule", EVENT_RULES, ids=lambda r: r.id)
def test_event_rule_in_the_envelope(rule: Rule) -> None:
    assert rule.accepted, "every rule accepts something"
    assert rule.refused or rule.should, "every rule but a SHOULD refuses something"
    for case in rule.accepted:
        event = normalize_event(case, topic="conformance")
        assert (event["specversion"], event["type"]) == ("1.0", case["type"])
        assert event["id"] and event["source"] and event["time"]
        for name, value in case.items():
            if value is None and name != "data":
                assert name not in event or name in FILLED, name  # null: unset
            elif name == "time":
                assert event["time"] == value.upper()
            elif name != "specversion":
                assert event[name] == value, name
        # The batch path, which checks attribute by attribute, agrees.
        for got in parse_batch(orjson.dumps([ev(), case, case]), topic="conformance")[1:]:
            assert _without(got, case) == _without(event, case)
    for bad in rule.refused:
        with pytest.raises(InvalidEvent) as err:
            normalize_event(bad.event, topic="conformance")
        assert err.value.attribute == bad.attribute
        assert bad.says in err.value.detail
        if isinstance(bad.event, dict):
            # In a batch, the same refusal, at its index, from either path.
            with pytest.raises(TidingsError) as caught:
                parse_batch(wire([ev(), ev(), bad.event]), topic="conformance")
            status, attribute, says = on_the_wire(bad)
            assert caught.value.status == status
            if status == 422:
                assert caught.value.fields["index"] == 2
                assert caught.value.detail.startswith("event 2: ")
            assert caught.value.fields.get("attribute") == attribute
            assert says in caught.value.detail


# -- the HTTP binding ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """An HTTP request to publish: its headers (Content-Type among them) and body."""

    headers: Mapping[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == "content-type":
                return value
        return None


@dataclass(frozen=True)
class Expect:
    """What a message makes: the attributes each event must have (checked one by one)."""

    message: Message
    events: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class Fails:
    message: Message
    status: int
    attribute: str | None
    says: str


@dataclass(frozen=True)
class HttpRule:
    section: str
    rule: str
    accepted: tuple[Expect, ...]
    refused: tuple[Fails, ...] = ()
    should: bool = False

    @property
    def id(self) -> str:
        return f"{self.section}: {self.rule}"


def binary(body: bytes = b"", content_type: str | None = None, **headers: str) -> Message:
    """A binary-mode message: ``ce_type="t"`` becomes the header ``ce-type: t``."""
    out = {"ce-specversion": "1.0", "ce-type": "com.example.someevent"}
    out |= {
        (key.replace("_", "-") if key.startswith("ce_") else key): value
        for key, value in headers.items()
    }
    if content_type is not None:
        out["content-type"] = content_type
    return Message(out, body)


def structured(event: Any, content_type: str = STRUCTURED, **headers: str) -> Message:
    """A structured-mode message; ``ce_id="x"`` adds a header ``ce-id: x``, which it ignores."""
    out = {"content-type": content_type}
    out |= {key.replace("_", "-"): value for key, value in headers.items()}
    return Message(out, wire(event))


def batch(*events: Any, content_type: str = BATCH) -> Message:
    return Message({"content-type": content_type}, wire(list(events)))


T = {"type": "com.example.someevent"}
THRIFT = "application/vnd.apache.thrift.binary"
EURO = "Euro € 😀"
SEND = "send application/cloudevents+json, application/cloudevents-batch+json"

HTTP_RULES = [
    HttpRule(
        f"{HTTP} 3",
        "the mode is told by Content-Type: application/cloudevents (structured), "
        "application/cloudevents-batch (batched), else binary",
        (
            Expect(structured(ev(data=1)), (T | {"data": 1},)),
            Expect(structured(ev(), "application/cloudevents+json; charset=UTF-8"), (T,)),
            Expect(structured(ev(), "Application/CloudEvents+JSON"), (T,)),
            Expect(batch(ev(), ev(), content_type=f"{BATCH}; charset=UTF-8"), (T, T)),
            Expect(binary(b'{"a": 1}', "application/json"), (T | {"data": {"a": 1}},)),
        ),
        (
            # A format the hub cannot handle (the binding lets it forward these; it stores).
            Fails(structured(ev(), "application/cloudevents+avro", ce_type="t"), 415, None, SEND),
            Fails(Message({"content-type": "application/json"}, b"{}"), 415, None, SEND),
            Fails(Message({}, b"{}"), 415, None, SEND),
        ),
    ),
    HttpRule(
        f"{HTTP} 3.1.1",
        "binary mode: Content-Type is datacontenttype; a ce-datacontenttype header MUST NOT be",
        (
            # Bytes of a type neither JSON nor text/* are kept as Binary (data_base64).
            Expect(
                binary(b"<much/>", "application/xml"),
                (T | {"datacontenttype": "application/xml", "data_base64": "PG11Y2gvPg=="},),
            ),
            Expect(
                binary(b"\x00\x01", THRIFT),
                (T | {"datacontenttype": THRIFT, "data_base64": "AAE="},),
            ),
        ),
        (
            Fails(
                binary(b"1", "application/json", ce_datacontenttype="application/json"),
                422,
                "datacontenttype",
                "not allowed in binary mode",
            ),
            Fails(binary(b"1", "json"), 422, "datacontenttype", "RFC 2046"),
        ),
    ),
    HttpRule(
        f"{HTTP} 3.1.2",
        "binary mode: the body is the data (JSON, text, bytes; an empty body is no data)",
        (
            Expect(
                binary(b'"I\'m just a string"', "application/json"),
                (T | {"data": "I'm just a string"},),
            ),
            Expect(binary(b"caf\xe9", "text/plain; charset=latin-1"), (T | {"data": "café"},)),
            Expect(binary(b"\xff\xd8", "image/jpeg"), (T | {"data_base64": "/9g="},)),
            Expect(binary(), (T,)),
        ),
        (
            Fails(binary(b"{not json", "application/json"), 400, None, "malformed JSON"),
            Fails(binary(b"\xff", "text/plain; charset=utf-8"), 400, None, "not valid utf-8"),
        ),
    ),
    HttpRule(
        f"{HTTP} 3.1.3.1",
        "binary mode: every attribute, extensions included, is a ce- header (any case)",
        (
            Expect(
                binary(
                    **{
                        "CE-ID": "A234-1234-1234",
                        "Ce-Source": "/mycontext",
                        "ce-time": "2018-04-05T17:31:00Z",
                        "ce-comexampleextension1": "value",
                        "ce-comexampleothervalue": "5",
                    }
                ),
                (
                    T
                    | {
                        "id": "A234-1234-1234",
                        "source": "/mycontext",
                        "time": "2018-04-05T17:31:00Z",
                        "comexampleextension1": "value",
                        "comexampleothervalue": "5",
                    },
                ),
            ),
        ),
        (
            Fails(binary(**{"ce-bad_name": "x"}), 422, "bad_name", "lower-case letters"),
            # core "Attribute Naming Convention": no attribute is named data.
            Fails(binary(b"1", ce_data="2"), 422, "data", "not allowed in binary mode"),
            Fails(
                binary(**{"ce-data_base64": "AA=="}), 422, "data_base64", "not allowed in binary"
            ),
            Fails(binary(ce_specversion="0.3"), 422, "specversion", 'must be "1.0"'),
            Fails(Message({"ce-specversion": "1.0"}), 422, "type", "is required"),
        ),
    ),
    HttpRule(
        f"{HTTP} 3.1.3.2",
        "header values: double-quoted strings unescaped, then one round of percent-decoding "
        "(lower-case hex and needless escapes accepted); invalid UTF-8 refused",
        (
            Expect(binary(ce_subject="Euro%20%E2%82%AC%20%F0%9F%98%80"), (T | {"subject": EURO},)),
            Expect(binary(ce_subject="euro%20%e2%82%ac"), (T | {"subject": "euro €"},)),
            Expect(binary(ce_subject="%41%42c"), (T | {"subject": "ABc"},)),
            Expect(binary(ce_subject='"a b \\"c\\""'), (T | {"subject": 'a b "c"'},)),
            Expect(binary(ce_subject="100%2525"), (T | {"subject": "100%25"},)),  # one round
        ),
        (
            Fails(binary(ce_subject="%C0%A0"), 422, "subject", "not valid percent-encoded UTF-8"),
            Fails(binary(ce_subject="%FF"), 422, "subject", "not valid percent-encoded UTF-8"),
            Fails(binary(ce_subject="%0A"), 422, "subject", "U+000A"),
            Fails(binary(ce_subject="caf\xe9"), 422, "subject", "outside US-ASCII"),
        ),
    ),
    HttpRule(
        f"{HTTP} 3.2",
        "structured mode: the body is one event in the JSON format; headers do not add to it",
        (
            Expect(
                structured(ev(id="B234", data={"a": 1}), ce_id="other", ce_subject="s"),
                (T | {"id": "B234", "data": {"a": 1}},),
            ),
        ),
        (
            Fails(structured([ev()]), 422, None, "send a batch as application/cloudevents-batch"),
            Fails(
                Message({"content-type": STRUCTURED}, b'{"type": "t",'), 400, None, "malformed JSON"
            ),
            Fails(
                Message({"content-type": STRUCTURED}, b'{"type": "\\ud800"}'),
                400,
                None,
                "surrogate",
            ),
        ),
    ),
    HttpRule(
        f"{JSON} 4, {HTTP} 3.3",
        "batched mode: a JSON array of events, which MAY be empty",
        (
            Expect(batch(), ()),
            Expect(Message({"content-type": BATCH}, b" [ ] "), ()),
            Expect(
                batch(
                    ev(id="B234", data_base64="AA==", datacontenttype=THRIFT),
                    ev(id="C234", data={"appinfoA": "abc"}),
                ),
                (
                    T | {"id": "B234", "data_base64": "AA=="},
                    T | {"id": "C234", "data": {"appinfoA": "abc"}},
                ),
            ),
        ),
        (
            Fails(batch(ev(), 1), 422, None, "event 1: event must be a JSON object"),
            Fails(structured(ev(), BATCH), 400, None, "batch must be a JSON array"),
            Fails(batch(ev(), {"type": ""}), 422, "type", "event 1:"),
        ),
    ),
    HttpRule(
        f"{HTTP} 3.3.2",
        "batched mode: every event has the same specversion",
        (Expect(batch(ev(specversion="1.0"), ev()), (T, T)),),
        (
            Fails(
                batch(ev(specversion="1.0"), ev(specversion="0.3")), 422, "specversion", "event 1:"
            ),
        ),
    ),
]


def _has(event: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    return all(name in event and event[name] == value for name, value in want.items())


def _local(message: Message) -> list[dict[str, Any]]:
    return parse_request(message.content_type, message.headers, message.body, topic="c")[0]


@pytest.mark.parametrize("rule", HTTP_RULES, ids=lambda r: r.id)
def test_http_rule_in_the_envelope(rule: HttpRule) -> None:
    assert rule.accepted, "every rule accepts something"
    assert rule.refused or rule.should, "every rule but a SHOULD refuses something"
    for case in rule.accepted:
        events = _local(case.message)
        assert len(events) == len(case.events)
        for event, want in zip(events, case.events, strict=True):
            assert _has(event, want), (event, want)
    for bad in rule.refused:
        with pytest.raises(TidingsError) as err:
            _local(bad.message)
        assert err.value.status == bad.status
        assert err.value.fields.get("attribute") == bad.attribute
        assert bad.says in err.value.detail


# -- a real hub ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cehub(module_hub_factory: HubFactory) -> HubProcess:
    return module_hub_factory.start("--webhook-allow-net", "127.0.0.0/8")


async def post(
    http: aiohttp.ClientSession, hub: HubProcess, topic: str, message: Message
) -> aiohttp.ClientResponse:
    return await http.post(
        f"{hub.base_url}/v1/topics/{topic}/events",
        data=message.body,
        headers=dict(message.headers),
        skip_auto_headers=["Content-Type"],
    )


async def offsets(http: aiohttp.ClientSession, hub: HubProcess, topic: str) -> list[int] | None:
    async with http.get(f"{hub.base_url}/v1/topics/{topic}") as resp:
        if resp.status == 404:
            return None
    return await next_offsets(http, hub.base_url, topic)


def sdk_reads(event: Mapping[str, Any]) -> None:
    """The reference SDK reads the event in the JSON format, attribute for attribute."""
    theirs = JSONFormat().read(None, orjson.dumps(event))
    assert theirs.get_id() == event["id"] and theirs.get_type() == event["type"]
    assert theirs.get_source() == event["source"] and theirs.get_specversion() == "1.0"
    assert theirs.get_time() == datetime.fromisoformat(event["time"])
    for name in ("subject", "datacontenttype", "dataschema"):
        assert theirs.get_attributes().get(name) == event.get(name)
    if "data_base64" in event:
        assert theirs.get_data() == base64.b64decode(event["data_base64"])
    elif "data" in event:
        assert theirs.get_data() == event["data"]


async def check_refused(
    http: aiohttp.ClientSession, hub: HubProcess, topic: str, message: Message, fails: Fails
) -> dict[str, Any]:
    before = await offsets(http, hub, topic)
    async with await post(http, hub, topic, message) as resp:
        problem = await expect_problem(resp, fails.status)
    assert problem.get("attribute") == fails.attribute, problem
    assert fails.says in problem["detail"], problem
    assert await offsets(http, hub, topic) == before, "a refused publish wrote"
    return problem


@pytest.mark.parametrize("rule", EVENT_RULES, ids=lambda r: r.id)
async def test_event_rule_on_a_hub(
    rule: Rule, cehub: HubProcess, http: aiohttp.ClientSession
) -> None:
    # A topic per mode: an id given twice on one topic is a duplicate (and appends nothing).
    for mode in ("structured", "batch"):
        topic = unique("ce")
        for case in rule.accepted:
            message = structured(case) if mode == "structured" else batch(ev(), case)
            async with await post(http, cehub, topic, message) as resp:
                await expect(resp, 202)
        for bad in rule.refused:
            if mode == "batch" and not isinstance(bad.event, dict):
                continue  # not an event at all: the batch rules below cover it
            message = structured(bad.event) if mode == "structured" else batch(ev(), bad.event)
            status, attribute, says = on_the_wire(bad)
            problem = await check_refused(
                http, cehub, topic, message, Fails(message, status, attribute, says)
            )
            if mode == "batch" and status == 422:
                assert problem["index"] == 1 and problem["detail"].startswith("event 1: ")
        records = await read_all(http, cehub.base_url, topic)
        wanted = [expected(c, topic) for c in rule.accepted]
        if mode == "batch":
            wanted = [w for c in wanted for w in (expected(ev(), topic), c)]
        assert len(records) == len(wanted)
        for record, want in zip(records, wanted, strict=True):
            assert _has(record["event"], want), (record["event"], want)
            sdk_reads(record["event"])


@pytest.mark.parametrize("rule", HTTP_RULES, ids=lambda r: r.id)
async def test_http_rule_on_a_hub(
    rule: HttpRule, cehub: HubProcess, http: aiohttp.ClientSession
) -> None:
    topic = unique("ce")
    wanted: list[Mapping[str, Any]] = []
    for case in rule.accepted:
        async with await post(http, cehub, topic, case.message) as resp:
            answer = await expect(resp, 202)
        assert len(answer["events"]) == len(case.events)
        wanted += case.events
    for bad in rule.refused:
        await check_refused(http, cehub, topic, bad.message, bad)
    records = (
        await read_all(http, cehub.base_url, topic)
        if await offsets(http, cehub, topic) is not None
        else []
    )
    assert len(records) == len(wanted)
    for record, want in zip(records, wanted, strict=True):
        assert _has(record["event"], want), (record["event"], want)
        sdk_reads(record["event"])


async def test_an_empty_batch_writes_nothing_and_makes_no_topic(
    cehub: HubProcess, http: aiohttp.ClientSession, hub_factory: HubFactory
) -> None:
    topic = unique("ce")
    for body in (b"[]", b"[ ]"):
        async with await post(http, cehub, topic, Message({"content-type": BATCH}, body)) as resp:
            assert await expect(resp, 202) == {"events": []}
    assert await offsets(http, cehub, topic) is None, "an empty batch made its topic"
    async with http.put(f"{cehub.base_url}/v1/topics/{topic}", json={"partitions": 2}) as resp:
        await expect(resp, 201)
    async with await post(http, cehub, topic, batch()) as resp:
        assert await expect(resp, 202) == {"events": []}
    assert await offsets(http, cehub, topic) == [0, 0]
    # Refused where a publish would be: a bad topic name; a topic that does not exist
    # on a hub that makes none.
    async with await post(http, cehub, "-bad", batch()) as resp:
        problem = await expect_problem(resp, 400)
    assert problem["field"] == "topic"
    strict = hub_factory.start("--no-auto-create")
    async with await post(http, strict, "absent", batch()) as resp:
        problem = await expect_problem(resp, 404)
    assert "auto-create" in problem["detail"]


# -- what the hub emits, read by the reference SDK ---------------------------------------------

SENT = [
    ev(
        id="e1",
        source="/mycontext",
        subject=EURO,
        time="2018-04-05T17:31:00Z",
        dataschema="https://example.com/s.json",
        comexampleextension1="value",
        comexampleothervalue=5,
        flag=True,
        data={"appinfoA": "abc"},
    ),
    ev(id="e2", datacontenttype=THRIFT, data_base64="AAEC"),
    ev(id="e3", datacontenttype="application/xml", data='<much wow="xml"/>'),
    ev(id="e4", data="I'm just a string"),
    ev(id="e5"),
]


def _same(theirs: Any, ours: Mapping[str, Any]) -> None:
    """The SDK's event holds what we sent, attribute by attribute."""
    attributes = theirs.get_attributes()
    for name, value in ours.items():
        if name == "time":
            assert theirs.get_time() == datetime.fromisoformat(value)
        elif name == "data":
            assert theirs.get_data() == value
        elif name == "data_base64":
            raw = base64.b64decode(value)
            # The SDK's binary-mode reader gives a body of a type it does not know as text.
            assert theirs.get_data() in (raw, raw.decode("utf-8", "replace"))
        else:
            assert attributes[name] == value, name


async def test_reads_and_sse_carry_events_the_sdk_reads(
    cehub: HubProcess, http: aiohttp.ClientSession
) -> None:
    topic = unique("ce")
    async with await post(http, cehub, topic, batch(*SENT)) as resp:
        await expect(resp, 202)
    records = await read_all(http, cehub.base_url, topic)
    assert [r["event"]["id"] for r in records] == ["e1", "e2", "e3", "e4", "e5"]
    for record, sent in zip(records, SENT, strict=True):
        theirs = JSONFormat().read(None, orjson.dumps(record["event"]))
        _same(theirs, sent)
    url = f"{cehub.base_url}/v1/topics/{topic}/sse?from=earliest"
    streamed: list[dict[str, Any]] = []
    async with http.get(url) as resp:
        assert resp.status == 200
        async with asyncio.timeout(20):
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("data:"):
                    streamed.append(orjson.loads(line[5:]))
                    if len(streamed) == len(SENT):
                        break
    assert [r["event"] for r in streamed] == [r["event"] for r in records]
    for record in streamed:
        sdk_reads(record["event"])


async def test_webhooks_deliver_structured_events_the_sdk_reads(
    cehub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    topic = unique("ce")
    async with http.post(
        f"{cehub.base_url}/v1/webhooks", json={"url": receiver.url, "topics": [topic]}
    ) as resp:
        await expect(resp, 201)
    async with await post(http, cehub, topic, batch(*SENT)) as resp:
        await expect(resp, 202)
    await receiver.wait_for(lambda: len(receiver.requests) >= len(SENT))
    by_id = {r.event["id"]: r for r in receiver.requests}
    for sent in SENT:
        delivery = by_id[sent["id"]]
        # HTTP binding 3.2.1: structured mode names the event format's media type.
        assert delivery.headers["content-type"] == STRUCTURED
        theirs = from_http_event(HTTPMessage(headers=dict(delivery.headers), body=delivery.body))
        _same(theirs, sent)


def test_binary_mode_we_send_is_what_the_binding_asks() -> None:
    """The SDK's binary mode (``to_binary``): 3.1.1 Content-Type, 3.1.3 ce- headers,
    3.1.3.2 percent-encoding in upper-case hex, JSON format 3.1.2 implied JSON made
    explicit; the reference SDK reads each event back as it was."""
    for sent in SENT:
        event = normalize_event(sent, topic="c")
        headers, body = to_binary(event)
        assert all(value.isascii() and value.isprintable() for value in headers.values())
        assert "ce-datacontenttype" not in headers and "ce-data" not in headers
        if "data" in sent and "datacontenttype" not in sent:
            assert headers["content-type"] == "application/json"
        theirs = from_http_event(HTTPMessage(headers=headers, body=body))
        # Header values are strings: an Integer or Boolean extension arrives as its
        # canonical string (core "Type System"), as it does to the SDK.
        as_text = {
            k: (str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, int) else v)
            for k, v in event.items()
        }
        _same(theirs, {k: v for k, v in as_text.items() if k not in ("flag",)})
        [ours] = _local(Message(headers, body))
        want = {k: v for k, v in as_text.items() if k not in ("data", "data_base64")}
        if "content-type" in headers:
            want["datacontenttype"] = headers["content-type"]
        assert {k: v for k, v in ours.items() if k not in ("data", "data_base64")} == want
    headers, _ = to_binary(normalize_event(ev(subject=EURO), topic="c"))
    assert headers["ce-subject"] == "Euro%20%E2%82%AC%20%F0%9F%98%80"


def test_every_rule_names_a_section_and_the_table_is_whole() -> None:
    rules: list[Rule | HttpRule] = [*EVENT_RULES, *HTTP_RULES]
    assert all(r.section.startswith((CORE, JSON, HTTP)) for r in rules)
    assert len({r.id for r in rules}) == len(rules), "each rule once"
    cases = sum(len(r.accepted) + len(r.refused) for r in rules)
    assert len(rules) >= 30 and cases >= 150
