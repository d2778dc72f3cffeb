"""Problem details back into tidings.errors, without a hub: the cases a hub rarely sends."""

from __future__ import annotations

import orjson
import pytest

from tidings.client.problems import error_from_response, unbatched
from tidings.errors import (
    BadPosition,
    BadRequest,
    Conflict,
    CorruptLog,
    GroupNotFound,
    InvalidEvent,
    NotFound,
    OffsetOutOfRange,
    RateLimited,
    StaleLease,
    StorageUnavailable,
    TidingsError,
    TooLarge,
    TopicNotFound,
)


def answer(err: TidingsError) -> bytes:
    return orjson.dumps({**err.to_problem(), "instance": "/v1/x"})


@pytest.mark.parametrize(
    "err",
    [
        TopicNotFound("topic 'x' does not exist", topic="x"),
        GroupNotFound("no group", topic="x", group="g"),
        StaleLease("1 lease(s) expired", stale=["0.1.1.ab"]),
        OffsetOutOfRange("offset 9 is past the end", field="from"),
        BadPosition("bad token", field="from"),
        InvalidEvent("event 2: bad time", attribute="time", index=2),
        TooLarge("event is too big", size=2, limit=1),
        RateLimited("slow down"),
        StorageUnavailable("shutting down"),
    ],
)
def test_every_class_comes_back_as_itself(err: TidingsError) -> None:
    back = error_from_response(err.status, answer(err), "GET /v1/x")
    assert type(back) is type(err)
    assert back.detail == err.detail and str(back) == err.detail
    assert back.fields == err.fields
    if isinstance(err, InvalidEvent):
        assert isinstance(back, InvalidEvent) and back.attribute == err.attribute


def test_corrupt_log_keeps_the_hub_detail() -> None:
    err = CorruptLog("bad CRC", file="00.log", position=12)
    back = error_from_response(500, answer(err), "GET /v1/x")
    assert isinstance(back, CorruptLog)
    assert (back.detail, back.file, back.position) == (err.detail, "00.log", 12)


def test_title_chooses_when_type_is_about_blank() -> None:
    body = orjson.dumps({"type": "about:blank", "title": "Stale lease", "status": 409})
    assert type(error_from_response(409, body, "POST /ack")) is StaleLease
    body = orjson.dumps({"type": "about:blank", "title": "Not found", "status": 404, "detail": "?"})
    back = error_from_response(404, body, "GET /nowhere")
    assert type(back) is NotFound and back.detail == "?"


def test_status_chooses_when_title_is_unknown() -> None:
    body = orjson.dumps({"type": "https://example.com/other", "title": "Other", "status": 409})
    back = error_from_response(409, body, "PUT /v1/topics/x")
    assert type(back) is Conflict and back.detail == "Other"


def test_an_answer_that_is_not_json() -> None:
    back = error_from_response(502, b"<html>Bad Gateway</html>", "GET /healthz")
    assert type(back) is TidingsError
    assert back.detail == "HTTP 502 from GET /healthz: <html>Bad Gateway</html>"
    assert back.fields == {"status": 502}
    assert type(error_from_response(400, b"", "GET /")) is BadRequest


def test_unbatched_drops_the_index() -> None:
    err = InvalidEvent("bad time", attribute="time").at_index(3)
    single = unbatched(err)
    assert isinstance(single, InvalidEvent)
    assert (single.detail, single.fields, single.attribute) == (
        "bad time",
        {"attribute": "time"},
        "time",
    )
