"""The CloudEvents envelope: the three HTTP modes, filling, interop with the reference
SDK, and every way an event is refused."""

from __future__ import annotations

import base64
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings.http import (
    HTTPMessage,
    from_http_event,
    to_binary_event,
    to_structured_event,
)
from cloudevents.core.v1.event import CloudEvent
from hypothesis import given
from hypothesis import strategies as st

from tidings.errors import BadRequest, InvalidEvent, TooLarge, UnsupportedMediaType
from tidings.events.batch import new_event_ids
from tidings.events.envelope import (
    MAX_EVENT_BYTES,
    Event,
    Record,
    new_event_id,
    normalize_event,
    now_rfc3339,
    serialize,
)
from tidings.events.http import (
    parse_batch,
    parse_binary,
    parse_http,
    parse_request,
    parse_structured,
    to_binary,
)

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
NOW_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def order(**extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "order.placed",
        "partitionkey": "c-42",
        "data": {"order_id": "o-1", "total": 3998, "currency": "EUR"},
    }
    event.update(extra)
    return event


def full_event() -> dict[str, Any]:
    """An event with every attribute set, as normalize_event returns it."""
    return normalize_event(
        order(
            id="e-1",
            source="/shop/checkout",
            subject='Euro € 😀 "quoted" 100%',
            time="2026-11-27T03:26:25.123456Z",
            datacontenttype="application/json",
            dataschema="https://shop.example/schemas/order-placed.json",
            correlationid="o-1",
            causationid="e-0",
            traceparent=TRACEPARENT,
            tenant="acme",
        ),
        topic="orders",
    )


# -- the three modes ----------------------------------------------------------------------------


def test_structured_mode() -> None:
    body = orjson.dumps(order(id="e-1", source="/shop"))
    [event] = parse_http(f"{STRUCTURED}; charset=utf-8", {}, body, topic="orders")
    assert event["id"] == "e-1"
    assert event["source"] == "/shop"
    assert event["type"] == "order.placed"
    assert event["partitionkey"] == "c-42"
    assert event["data"] == {"order_id": "o-1", "total": 3998, "currency": "EUR"}
    again = parse_structured(body, topic="orders")
    assert again.pop("time") != "" and again == {k: v for k, v in event.items() if k != "time"}


def test_batch_mode() -> None:
    body = orjson.dumps([order(), order(type="order.paid"), {"type": "cart.changed"}])
    events = parse_http(BATCH, {}, body, topic="orders")
    assert [e["type"] for e in events] == ["order.placed", "order.paid", "cart.changed"]
    assert len({e["id"] for e in events}) == 3
    # One clock read per batch: the events it fills share one time.
    assert len({e["time"] for e in events}) == 1
    assert parse_batch(body, topic="orders")[2]["source"] == "/topics/orders"


def test_binary_mode_json_body() -> None:
    headers = {
        "CE-SpecVersion": "1.0",
        "ce-type": "order.placed",
        "ce-id": "e-1",
        "ce-source": "/shop",
        "ce-partitionkey": "c-42",
        "ce-subject": "Euro%20%E2%82%AC%20%F0%9F%98%80",
        "ce-tenant": '"acme \\"inc\\""',  # quoted, as older senders did (3.1.3.2)
        "Content-Type": "application/json; charset=utf-8",
    }
    [event] = parse_http(headers["Content-Type"], headers, b'{"order_id": "o-1"}', topic="orders")
    assert event["id"] == "e-1"
    assert event["specversion"] == "1.0"
    assert event["subject"] == "Euro € 😀"
    assert event["tenant"] == 'acme "inc"'
    assert event["partitionkey"] == "c-42"
    assert event["datacontenttype"] == "application/json; charset=utf-8"
    assert event["data"] == {"order_id": "o-1"}
    assert parse_binary(headers, b'{"order_id": "o-1"}', topic="orders")["data"] == event["data"]


def test_binary_mode_text_bytes_and_no_body() -> None:
    text = parse_binary(
        {"ce-type": "note", "content-type": "text/plain; charset=latin-1"},
        "crème".encode("latin-1"),
        topic="t",
    )
    assert text["data"] == "crème"
    png = parse_binary({"ce-type": "img", "content-type": "image/png"}, b"\x89PNG\0", topic="t")
    assert png["data_base64"] == base64.b64encode(b"\x89PNG\0").decode()
    assert "data" not in png
    # No content type: the body is opaque bytes (RFC 9110 8.3), not sniffed for JSON.
    untyped = parse_binary({"ce-type": "x"}, b'{"a": 1}', topic="t")
    assert untyped["data_base64"] == base64.b64encode(b'{"a": 1}').decode()
    assert "datacontenttype" not in untyped
    # An event may have no data at all, and then needs no content type either.
    [empty] = parse_http(None, {"ce-specversion": "1.0", "ce-type": "ping"}, b"", topic="t")
    assert "data" not in empty
    assert "data_base64" not in empty


# -- filling ------------------------------------------------------------------------------------


def test_fills_what_is_missing() -> None:
    before = datetime.now(UTC)
    event = normalize_event({"type": "order.placed"}, topic="orders")
    after = datetime.now(UTC)
    assert event["specversion"] == "1.0"
    assert uuid.UUID(event["id"]).version == 7
    assert event["source"] == "/topics/orders"
    assert NOW_FORMAT.fullmatch(event["time"])
    stamped = datetime.fromisoformat(event["time"])
    assert before - timedelta(milliseconds=1) <= stamped <= after + timedelta(milliseconds=1)
    assert "data" not in event


def test_keeps_what_is_given() -> None:
    given_event = order(
        specversion="1.0", id="e-1", source="urn:shop", time="2026-01-01T00:00:00+01:00"
    )
    event = normalize_event(given_event, topic="orders", now="2030-01-01T00:00:00.000000Z")
    assert {k: event[k] for k in ("specversion", "id", "source", "time")} == {
        "specversion": "1.0",
        "id": "e-1",
        "source": "urn:shop",
        "time": "2026-01-01T00:00:00+01:00",
    }
    assert event is not given_event
    assert "specversion" in given_event and len(given_event) == 7  # input left alone


def test_now_is_used_when_time_is_missing() -> None:
    event = normalize_event(order(), topic="orders", now="2026-11-27T03:26:25.000001Z")
    assert event["time"] == "2026-11-27T03:26:25.000001Z"


def test_lower_case_t_and_z_are_accepted_and_stored_upper_case() -> None:
    event = normalize_event(order(time="2026-11-27t03:26:25.5z"), topic="orders")
    assert event["time"] == "2026-11-27T03:26:25.5Z"
    datetime.fromisoformat(event["time"])


def test_null_attributes_are_absent_but_null_data_is_kept() -> None:
    event = normalize_event(
        {"type": "t", "id": None, "subject": None, "tenant": None, "data": None}, topic="x"
    )
    assert "subject" not in event
    assert "tenant" not in event
    assert event["id"]
    assert "data" in event and event["data"] is None  # an explicit null payload (3.1.1)


def test_extension_values_of_every_allowed_type() -> None:
    event = normalize_event(
        order(tenant="acme", retries=3, urgent=True, low=-(2**31), high=2**31 - 1, nbsp="a\xa0b"),
        topic="orders",
    )
    assert (event["retries"], event["urgent"], event["low"], event["high"]) == (
        3,
        True,
        -(2**31),
        2**31 - 1,
    )
    assert event["nbsp"] == "a\xa0b"


def test_ids_are_unique_and_sort_in_creation_order() -> None:
    ids = [new_event_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids


def test_ids_made_for_a_batch_are_uuid7s_in_creation_order() -> None:
    ids: list[str] = []
    for count in (1, 2, 1000, 1, 5000, 3):
        ids.append(new_event_id())
        ids.extend(new_event_ids(count))
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert [str(u) for u in parsed] == ids
    assert new_event_ids(0) == []


def test_ids_for_a_batch_whose_count_would_overflow(monkeypatch: pytest.MonkeyPatch) -> None:
    made = iter(range(100))
    near_the_top = 0x01A21BD3_DAB4_7211_B37C_CE13FFFFFFFE

    def fake_uuid7() -> uuid.UUID:
        return uuid.UUID(int=near_the_top + next(made))

    monkeypatch.setattr("tidings.events.batch.uuid7", fake_uuid7)
    ids = new_event_ids(3)
    assert ids == [str(uuid.UUID(int=near_the_top + k)) for k in range(3)]
    monkeypatch.setattr("tidings.events.batch.uuid7", lambda: uuid.UUID(int=near_the_top - 10))
    assert new_event_ids(3)[2] == str(uuid.UUID(int=near_the_top - 8))


def test_now_rfc3339() -> None:
    stamp = now_rfc3339()
    assert NOW_FORMAT.fullmatch(stamp)
    assert abs(datetime.fromisoformat(stamp) - datetime.now(UTC)) < timedelta(seconds=2)
    stamps = [now_rfc3339() for _ in range(1000)]
    assert stamps == sorted(stamps)


# -- round trips --------------------------------------------------------------------------------


def test_binary_round_trip() -> None:
    event = full_event()
    headers, body = to_binary(event)
    assert headers["ce-subject"] == "Euro%20%E2%82%AC%20%F0%9F%98%80%20%22quoted%22%20100%25"
    assert headers["content-type"] == "application/json"
    assert "ce-data" not in headers
    assert parse_binary(headers, body, topic="elsewhere") == event


def test_binary_round_trip_of_text_bytes_and_null_data() -> None:
    for extra in (
        {"datacontenttype": "text/plain", "data": "hello\nworld"},
        {"datacontenttype": "image/png", "data_base64": "iVBORw0KGgo="},
        {"datacontenttype": "application/json", "data": None},
    ):
        event = normalize_event({"type": "t"} | extra, topic="x")
        assert parse_binary(*to_binary(event), topic="x") == event


def test_binary_makes_implicit_json_explicit_and_sends_values_as_strings() -> None:
    event = normalize_event(
        {"type": "t", "data": "just a string", "retries": 3, "ok": True}, topic="x"
    )
    headers, body = to_binary(event)
    assert headers["content-type"] == "application/json"  # JSON format 3.1.2
    assert body == b'"just a string"'
    back = parse_binary(headers, body, topic="x")
    assert back["data"] == "just a string"
    assert (back["retries"], back["ok"]) == ("3", "true")  # binary mode carries strings


@given(
    st.text(st.characters(exclude_categories=("Cc", "Cs", "Cn")), min_size=1, max_size=50).filter(
        lambda s: s.strip(" \t") == s and not (s.startswith('"') and s.endswith('"'))
    )
)
def test_header_values_round_trip(subject: str) -> None:
    event = normalize_event({"type": "t", "subject": subject}, topic="x")
    headers, body = to_binary(event)
    assert all(0x21 <= ord(c) <= 0x7E for c in headers["ce-subject"])
    assert parse_binary(headers, body, topic="x")["subject"] == subject


def test_event_round_trip() -> None:
    d = full_event()
    event = Event.from_dict(d)
    assert event.to_dict() == d
    assert orjson.loads(serialize(event.to_dict())) == orjson.loads(serialize(d))
    assert event.extensions["tenant"] == "acme"
    assert event.partitionkey == "c-42"
    assert event.correlationid == "o-1"
    assert event.causationid == "e-0"
    assert event.get("traceparent") == TRACEPARENT
    assert event.get("subject") == d["subject"]
    assert event.get("dataschema") == d["dataschema"]
    assert event.get("nothing", "default") == "default"
    assert event.get("data_base64", "none") == "none"


def test_event_for_sdk_users() -> None:
    event = Event(
        type="payment.succeeded",
        data={"order_id": "o-1"},
        extensions={"correlationid": "o-1"},
        topic="payments",
    )
    d = event.to_dict()
    assert d == {
        "specversion": "1.0",
        "type": "payment.succeeded",
        "correlationid": "o-1",
        "data": {"order_id": "o-1"},
    }
    assert "topic" not in d  # where it goes, not what it is
    assert Event(type="t").partitionkey is None
    filled = normalize_event(d, topic="payments")
    assert Event.from_dict(filled).id == filled["id"]
    with pytest.raises(InvalidEvent) as err:
        Event(type="t", extensions={"subject": "s"})
    assert err.value.attribute == "subject"


def test_record_round_trip() -> None:
    d = {"topic": "orders", "partition": 2, "offset": 41, "event": full_event()}
    record = Record.from_dict(d)
    assert (record.topic, record.partition, record.offset) == ("orders", 2, 41)
    assert record.event.partitionkey == "c-42"
    assert record.to_dict() == d
    with pytest.raises(ValueError, match="'offset'"):
        Record.from_dict({**d, "offset": -1})


# -- interop with the reference SDK (cloudevents) -----------------------------------------------


def test_reference_sdk_reads_our_structured_events() -> None:
    event = full_event()
    theirs = from_http_event(
        HTTPMessage(headers={"content-type": STRUCTURED}, body=serialize(event))
    )
    assert theirs.get_specversion() == "1.0"
    assert theirs.get_id() == event["id"]
    assert theirs.get_source() == event["source"]
    assert theirs.get_type() == event["type"]
    assert theirs.get_subject() == event["subject"]
    assert theirs.get_time() == datetime.fromisoformat(event["time"])
    assert theirs.get_dataschema() == event["dataschema"]
    for name in ("partitionkey", "correlationid", "causationid", "traceparent", "tenant"):
        assert theirs.get_extension(name) == event[name]
    assert theirs.get_data() == event["data"]

    binary = normalize_event({"type": "t", "data_base64": "iVBORw0KGgo="}, topic="x")
    theirs = from_http_event(
        HTTPMessage(headers={"content-type": STRUCTURED}, body=serialize(binary))
    )
    assert theirs.get_data() == base64.b64decode("iVBORw0KGgo=")


def test_reference_sdk_reads_our_binary_events() -> None:
    event = full_event()
    headers, body = to_binary(event)
    theirs = from_http_event(HTTPMessage(headers=headers, body=body))
    assert theirs.get_id() == event["id"]
    assert theirs.get_type() == event["type"]
    assert theirs.get_subject() == event["subject"]
    assert theirs.get_time() == datetime.fromisoformat(event["time"])
    assert theirs.get_datacontenttype() == "application/json"
    assert theirs.get_extension("traceparent") == TRACEPARENT
    assert theirs.get_data() == event["data"]


def test_we_read_the_reference_sdks_events() -> None:
    attributes = {
        "type": "order.placed",
        "source": "/shop",
        "id": "e-9",
        "subject": "Euro € 😀",
        "datacontenttype": "application/json",
        "partitionkey": "c-42",
    }
    theirs = CloudEvent(dict(attributes), {"order_id": "o-1"})
    structured = to_structured_event(theirs)
    binary = to_binary_event(theirs)
    for message in (structured, binary):
        [event] = parse_http(
            message.headers.get("content-type"), message.headers, message.body, topic="x"
        )
        assert {k: event[k] for k in attributes} == attributes
        assert event["data"] == {"order_id": "o-1"}
        assert datetime.fromisoformat(event["time"]) == theirs.get_time()


# -- refusals -----------------------------------------------------------------------------------

BAD_EVENTS = [
    ("missing type", {}, "type", "is required"),
    ("null type", {"type": None}, "type", "is required"),
    ("empty type", {"type": ""}, "type", "must not be empty"),
    ("non-string type", {"type": 7}, "type", "must be a string, not an integer"),
    ("type with a newline", {"type": "a\nb"}, "type", "U+000A"),
    ("specversion 0.3", {"type": "t", "specversion": "0.3"}, "specversion", 'must be "1.0"'),
    ("specversion number", {"type": "t", "specversion": 1.0}, "specversion", 'must be "1.0"'),
    ("empty id", {"type": "t", "id": ""}, "id", "must not be empty"),
    ("non-string id", {"type": "t", "id": 5}, "id", "must be a string"),
    ("source with a space", {"type": "t", "source": "my service"}, "source", "URI-reference"),
    ("empty source", {"type": "t", "source": ""}, "source", "must not be empty"),
    ("non-string subject", {"type": "t", "subject": 3}, "subject", "must be a string"),
    (
        "bad datacontenttype",
        {"type": "t", "datacontenttype": "json"},
        "datacontenttype",
        "RFC 2046",
    ),
    ("relative dataschema", {"type": "t", "dataschema": "/s.json"}, "dataschema", "absolute URI"),
    (
        "upper-case extension",
        {"type": "t", "Tenant": "a"},
        "Tenant",
        "lower-case letters or digits",
    ),
    ("underscore extension", {"type": "t", "Bad_Name": "a"}, "Bad_Name", "lower-case letters"),
    ("empty extension name", {"type": "t", "": "a"}, "", "lower-case letters or digits"),
    ("object extension", {"type": "t", "meta": {"a": 1}}, "meta", "not an object"),
    ("array extension", {"type": "t", "tags": ["a"]}, "tags", "not an array"),
    ("float extension", {"type": "t", "amount": 9.99}, "amount", "no floating-point type"),
    ("int64 extension", {"type": "t", "big": 2**31}, "big", "32-bit integer range"),
    ("whole float past int32", {"type": "t", "big": 2.0**31}, "big", "32-bit integer range"),
    ("control char extension", {"type": "t", "note": "a\x00"}, "note", "U+0000"),
    ("C1 control in subject", {"type": "t", "subject": "a\x85"}, "subject", "U+0085"),
    ("non-character in id", {"type": "t", "id": "a\ufffe"}, "id", "U+FFFE"),
    ("plane 1 non-character", {"type": "t", "tenant": "\U0001ffff"}, "tenant", "U+1FFFF"),
    ("non-string partitionkey", {"type": "t", "partitionkey": 42}, "partitionkey", "a string"),
    ("non-string correlationid", {"type": "t", "correlationid": True}, "correlationid", "string"),
    ("non-string causationid", {"type": "t", "causationid": ["e"]}, "causationid", "string"),
    (
        "data and data_base64",
        {"type": "t", "data": 1, "data_base64": "AA=="},
        "data_base64",
        "both",
    ),
    ("bad data_base64", {"type": "t", "data_base64": "not base64!"}, "data_base64", "base64"),
    ("unpadded data_base64", {"type": "t", "data_base64": "aGVsbG8"}, "data_base64", "padding"),
    ("non-string data_base64", {"type": "t", "data_base64": 12}, "data_base64", "base64 string"),
    (
        "non-string data for text",
        {"type": "t", "datacontenttype": "text/plain", "data": {"a": 1}},
        "data",
        "must be a string when datacontenttype",
    ),
    ("time not a timestamp", {"type": "t", "time": "yesterday"}, "time", "RFC 3339"),
    ("time without offset", {"type": "t", "time": "2026-11-27T03:26:25"}, "time", "RFC 3339"),
    ("time month 13", {"type": "t", "time": "2026-13-01T00:00:00Z"}, "time", "RFC 3339"),
    ("time 30 February", {"type": "t", "time": "2026-02-30T00:00:00Z"}, "time", "does not exist"),
    ("time hour 24", {"type": "t", "time": "2026-01-01T24:00:00Z"}, "time", "RFC 3339"),
    ("time as number", {"type": "t", "time": 1764213985}, "time", "RFC 3339"),
    ("time with space", {"type": "t", "time": "2026-01-01 00:00:00Z"}, "time", "RFC 3339"),
    ("traceparent short", {"type": "t", "traceparent": "00-abc-def-01"}, "traceparent", "W3C"),
    (
        "traceparent zero trace id",
        {"type": "t", "traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"},
        "traceparent",
        "not all zero",
    ),
    (
        "traceparent version ff",
        {"type": "t", "traceparent": "ff" + TRACEPARENT[2:]},
        "traceparent",
        "version not ff",
    ),
    (
        "traceparent upper case",
        {"type": "t", "traceparent": TRACEPARENT.upper()},
        "traceparent",
        "lower-case hex",
    ),
    ("traceparent number", {"type": "t", "traceparent": 1}, "traceparent", "W3C traceparent"),
]


@pytest.mark.parametrize(
    ("event", "attribute", "reason"),
    [pytest.param(e, a, r, id=name) for name, e, a, r in BAD_EVENTS],
)
def test_bad_event(event: dict[str, Any], attribute: str, reason: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        normalize_event(event, topic="orders")
    assert err.value.attribute == attribute
    assert err.value.status == 422
    assert repr(attribute) in err.value.detail
    assert reason in err.value.detail
    assert err.value.to_problem()["attribute"] == attribute


@pytest.mark.parametrize("obj", [[{"type": "t"}], "order.placed", 7, None])
def test_event_must_be_an_object(obj: object) -> None:
    with pytest.raises(InvalidEvent, match="event must be a JSON object") as err:
        normalize_event(obj, topic="orders")
    assert err.value.attribute is None
    with pytest.raises(InvalidEvent, match="event must be a JSON object"):
        parse_structured(orjson.dumps(obj), topic="orders")


def test_structured_array_points_to_batch_mode() -> None:
    with pytest.raises(InvalidEvent, match=re.escape(BATCH)):
        parse_structured(b'[{"type": "t"}]', topic="orders")


@pytest.mark.parametrize("body", [b'{"type": "t"', b"", b"\xff", b"{'type': 't'}"])
def test_malformed_json(body: bytes) -> None:
    for parse in (parse_structured, parse_batch):
        with pytest.raises(BadRequest, match="malformed JSON") as err:
            parse(body, topic="orders")
        assert err.value.status == 400
    with pytest.raises(BadRequest, match="malformed JSON in body"):
        parse_binary({"ce-type": "t", "content-type": "application/json"}, body or b"{", topic="o")


@pytest.mark.parametrize("body", [b'{"type": "t"}', b'"t"', b"null"])
def test_batch_must_be_an_array(body: bytes) -> None:
    with pytest.raises(BadRequest, match="batch must be a JSON array"):
        parse_batch(body, topic="orders")


def test_empty_batch_is_a_batch_of_no_events() -> None:
    assert parse_batch(b"[]", topic="orders") == []


def test_bad_element_is_named_by_index() -> None:
    body = orjson.dumps([order(), order(), order(Bad_Name="x"), order()])
    with pytest.raises(InvalidEvent) as err:
        parse_batch(body, topic="orders")
    assert err.value.fields["index"] == 2
    assert err.value.attribute == "Bad_Name"
    assert err.value.detail.startswith("event 2: extension name 'Bad_Name'")
    problem = err.value.to_problem()
    assert (problem["status"], problem["index"], problem["attribute"]) == (422, 2, "Bad_Name")


def test_non_object_element_is_named_by_index() -> None:
    with pytest.raises(InvalidEvent, match="event 1: event must be a JSON object") as err:
        parse_batch(b'[{"type": "t"}, 5]', topic="orders")
    assert err.value.fields["index"] == 1


def test_too_large() -> None:
    big = orjson.dumps(order(data="x" * 2000))
    with pytest.raises(TooLarge, match="over the limit of 1000") as err:
        parse_structured(big, topic="orders", max_event_bytes=1000)
    assert err.value.status == 413
    # Just under the limit as sent, over it once id, time and source are filled.
    small = orjson.dumps({"type": "t", "data": "x" * 900})
    with pytest.raises(TooLarge):
        parse_structured(small, topic="orders", max_event_bytes=len(small) + 10)
    with pytest.raises(TooLarge):
        parse_binary(
            {"ce-type": "t", "content-type": "text/plain"},
            b"x" * 1001,
            topic="o",
            max_event_bytes=1000,
        )
    assert MAX_EVENT_BYTES == 1 << 20


def test_too_large_in_batch_names_the_index() -> None:
    body = orjson.dumps([order(), order(data="x" * 2000), order()])
    with pytest.raises(TooLarge, match="event 1:") as err:
        parse_batch(body, topic="orders", max_event_bytes=1000)
    assert err.value.fields["index"] == 1


@pytest.mark.parametrize(
    ("content_type", "headers"),
    [
        ("application/json", {}),
        (None, {}),
        ("text/plain", {"x-ce-type": "t"}),
        ("application/cloudevents+xml", {"ce-type": "t"}),
    ],
)
def test_unsupported_media_type(content_type: str | None, headers: dict[str, str]) -> None:
    with pytest.raises(UnsupportedMediaType) as err:
        parse_http(content_type, headers, orjson.dumps(order()), topic="orders")
    assert err.value.status == 415
    assert STRUCTURED in err.value.detail
    assert BATCH in err.value.detail
    assert STRUCTURED in err.value.fields["accepted"]


@pytest.mark.parametrize(
    ("headers", "attribute", "reason"),
    [
        ({"ce-type": "t", "ce-datacontenttype": "text/plain"}, "datacontenttype", "Content-Type"),
        ({"ce-type": "t", "ce-data": "x"}, "data", "body"),
        ({"ce-type": "t", "ce-subject": "%C0%A0"}, "subject", "percent-encoded UTF-8"),
        ({"ce-specversion": "1.0"}, "type", "is required"),
        ({"ce-type": "t", "ce-Bad_Name": "x"}, "bad_name", "lower-case letters or digits"),
        ({"ce-type": "t", "ce-time": "now"}, "time", "RFC 3339"),
    ],
)
def test_bad_binary_event(headers: dict[str, str], attribute: str, reason: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        parse_binary(headers, b"", topic="orders")
    assert err.value.attribute == attribute
    assert reason in err.value.detail


def test_text_that_its_charset_cannot_carry() -> None:
    event = normalize_event(
        {"type": "t", "datacontenttype": "text/plain; charset=latin-1", "data": "€"}, topic="x"
    )
    with pytest.raises(InvalidEvent, match="cannot be encoded as latin-1") as err:
        to_binary(event)
    assert err.value.attribute == "data"


def test_binary_text_in_the_wrong_charset() -> None:
    with pytest.raises(BadRequest, match="not valid utf-8"):
        parse_binary({"ce-type": "t", "content-type": "text/plain"}, b"\xff\xfe", topic="o")
    with pytest.raises(BadRequest, match="unknown charset"):
        parse_binary({"ce-type": "t", "content-type": "text/plain;charset=nope"}, b"a", topic="o")


@pytest.mark.parametrize(
    "data",
    [
        b"1e400",
        b'{"v": -2.5E+308}',
        b"[" + b"9" * 400 + b"]",
        b'{"x": "\xff"}',
        b'"a\nb"',
        b"NaN",
        b'"\\ud800"',
    ],
)
def test_batch_refuses_data_that_readers_could_not_parse(data: bytes) -> None:
    """What the hub stores, every reader must be able to parse."""
    body = b'[{"type": "ok"}, {"type": "a", "data": ' + data + b"}]"
    with pytest.raises(BadRequest, match="malformed JSON"):
        parse_batch(body, topic="t")


# -- a batch at once, as event by event -----------------------------------------------------------

BATCH_NOW = "2026-11-27T03:26:25.000001Z"


def _batch_and_reference(
    events: list[Any], monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Any]:
    """parse_batch of ``events`` and what normalize_event gives each, as (items, error).

    Generated ids are masked in both, since each path draws its own.
    """
    monkeypatch.setattr("tidings.events.http.now_rfc3339", lambda: BATCH_NOW)

    def mask(given: Any, filled: dict[str, Any]) -> list[tuple[str, Any]]:
        out = list(filled.items())
        if not (isinstance(given, dict) and given.get("id") is not None):
            out = [(k, "<new>" if k == "id" else v) for k, v in out]
        return out

    def run(fn: Any) -> tuple[Any, Any]:
        try:
            return fn(), None
        except InvalidEvent as err:
            return None, (err.detail, err.attribute, err.fields.get("index"))

    def reference() -> list[list[tuple[str, Any]]]:
        out = []
        for index, event in enumerate(events):
            try:
                out.append(mask(event, normalize_event(event, topic="orders", now=BATCH_NOW)))
            except InvalidEvent as err:
                raise err.at_index(index) from None
        return out

    def batch() -> list[list[tuple[str, Any]]]:
        parsed = parse_batch(orjson.dumps(events), topic="orders")
        return [mask(given, filled) for given, filled in zip(events, parsed, strict=True)]

    return run(batch), run(reference)


def test_batch_of_one_shape_fills_only_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    events = [
        {"type": "order.placed", "source": "/shop", "time": "2026-11-27T03:26:25.1Z", "data": i}
        for i in range(50)
    ]
    got, want = _batch_and_reference(events, monkeypatch)
    assert got == want
    assert got[0] is not None
    assert [k for k, _ in got[0][0]] == ["type", "source", "time", "data", "specversion", "id"]
    # The whole batch at once: no event goes through the event-by-event fill once
    # its extension names are known (the first batch to name one checks it).
    events = [order(tenant="acme") for _ in range(3)] + [order(traceparent=TRACEPARENT)]
    parse_batch(orjson.dumps(events), topic="orders")
    monkeypatch.setattr("tidings.events.http._fill", None)
    parsed = parse_batch(orjson.dumps(events), topic="orders")
    assert [e["time"] for e in parsed] == [BATCH_NOW] * 4
    assert len({e["id"] for e in parsed}) == 4


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(order(id="e-2"), id="one id given"),
        pytest.param(order(time="2026-11-27t03:26:25Z"), id="lower-case time"),
        pytest.param(order(time="2026-11-27T03:26:25Z"), id="time on one"),
        pytest.param(order(subject=None), id="null subject"),
        pytest.param(order(specversion=None), id="null specversion"),
        pytest.param(order(retries=3), id="integer extension"),
        pytest.param(order(tenant=None), id="null extension"),
        pytest.param(order(fresh="x"), id="new extension name"),
        pytest.param(order(traceparent=TRACEPARENT), id="traceparent"),
        pytest.param({"type": "blob", "data_base64": "AA=="}, id="data_base64"),
        pytest.param(
            order(datacontenttype="text/plain", data="hi"), id="text datacontenttype"
        ),
        pytest.param(order(subject="a\xa0b", nbsp="a\u200db"), id="printable in spirit"),
        pytest.param(order(time="2028-02-29T00:00:00Z"), id="leap day"),
        pytest.param(order(source="urn:other"), id="another source"),
        pytest.param(order(dataschema="https://s.example/o.json"), id="dataschema"),
    ],
)
def test_batch_with_an_odd_event_fills_as_event_by_event(
    second: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for events in ([order(), second, order()], [second, second], [second]):
        got, want = _batch_and_reference(events, monkeypatch)
        assert got == want
        assert got[0] is not None


@pytest.mark.parametrize(
    "bad", [pytest.param(e, id=name) for name, e, _, _ in BAD_EVENTS]
)
def test_batch_names_a_bad_event_as_event_by_event(
    bad: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for events in ([order(), order(), bad, order()], [bad, bad], [bad]):
        got, want = _batch_and_reference(events, monkeypatch)
        assert got == want
        assert got[1] is not None and got[1][2] == events.index(bad)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**32), 2**32),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            "",
            "1.0",
            "0.3",
            "/shop",
            "urn:shop",
            "my shop",
            "order.placed",
            "a\nb",
            "a\xa0b",
            "2026-11-27T03:26:25Z",
            "2026-11-27t03:26:25z",
            "2026-02-30T00:00:00Z",
            "2026-11-27T03:26:25Z\n2026-11-27T03:26:25Z",
            "application/json",
            "text/plain",
            "json",
            "https://s.example/o.json",
            "AA==",
            TRACEPARENT,
        ]
    ),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=2),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 9), max_size=2),
)
_NAMES = st.sampled_from(
    [
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
        "partitionkey",
        "tenant",
        "traceparent",
        "Bad_Name",
    ]
)
_EVENT = st.dictionaries(_NAMES, _VALUES, max_size=6).map(lambda e: {"type": "t", **e})


@given(st.lists(st.one_of(_EVENT, st.just(order())), min_size=1, max_size=6))
def test_any_batch_fills_or_fails_as_event_by_event(events: list[dict[str, Any]]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        got, want = _batch_and_reference(events, monkeypatch)
    assert got == want


def test_batch_with_a_time_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    times = [f"2028-02-{d:02d}T03:26:{s:02d}.{s}Z" for d in (27, 28, 29) for s in range(20)]
    events = [order(time=t) for t in times]
    got, want = _batch_and_reference(events, monkeypatch)
    assert got == want
    assert got[0] is not None and [dict(e)["time"] for e in got[0]] == times
    for bad in ("2027-02-29T00:00:00Z", "2028-02-30T00:00:00Z", "2028-02-28T00:00:60Z"):
        events[41] = order(time=bad)
        got, want = _batch_and_reference(events, monkeypatch)
        assert got == want
        assert got[1] is not None and got[1][2] == 41
    # All distinct times checked at once: no event by event.
    monkeypatch.setattr("tidings.events.http._fill", None)
    events[41] = order(time="2028-02-29T00:00:00+01:00")
    assert len(parse_batch(orjson.dumps(events), topic="orders")) == len(events)


def test_a_whole_float_extension_is_an_integer() -> None:
    # JSON has one number type: 7.0 is the CloudEvents Integer 7, as JSON Schema says.
    event = normalize_event({"type": "t", "qty": 7.0, "n": 7}, topic="orders")
    assert event["qty"] == 7 and type(event["qty"]) is int
    assert event["n"] == 7


def test_a_structured_event_says_whether_its_id_was_made_here() -> None:
    made = parse_request(STRUCTURED, {}, b'{"type":"t","source":"/s"}', topic="t")
    given = parse_request(STRUCTURED, {}, b'{"type":"t","source":"/s","id":"a"}', topic="t")
    null = parse_request(STRUCTURED, {}, b'{"type":"t","source":"/s","id":null}', topic="t")
    assert made[1] is True and null[1] is True and given[1] is False
    assert given[0][0]["id"] == "a" and made[0][0]["id"] != null[0][0]["id"]
