"""The WebSocket session protocol alone: frames in, actions and frames out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tidings.core.groups import Delivery
from tidings.core.session import (
    TRANSITIONS,
    Position,
    Publish,
    Send,
    Session,
    Settle,
    Subscribe,
    SubscribeView,
    Unsubscribe,
)
from tidings.errors import TopicNotFound


def frame(**msg: Any) -> bytes:
    return orjson.dumps(msg)


def only_error(actions: list[Any]) -> dict[str, Any]:
    assert len(actions) == 1 and isinstance(actions[0], Send), actions
    out: dict[str, Any] = orjson.loads(actions[0].frame)
    assert out["type"] == "error"
    return out


def started(session: Session, sub: str = "s1", positions: dict[int, int] | None = None) -> None:
    [action] = session.receive(frame(type="subscribe", id=sub, topic="orders", **{"from": "0:0"}))
    assert isinstance(action, Subscribe)
    assert session.started(sub, positions or {0: 0, 1: 0}) is not None


def test_subscribe_resolves_then_answers_subscribed() -> None:
    s = Session()
    [action] = s.receive(
        frame(type="subscribe", id="s1", topic="orders", types=["order.*"], **{"from": "earliest"})
    )
    assert action == Subscribe("s1", "orders", ("order.*",), "earliest", None, None)
    out = orjson.loads(s.started("s1", {0: 3, 1: 5}) or b"")
    assert out == {"type": "subscribed", "id": "s1", "topic": "orders", "resume": "0:3,1:5"}


@pytest.mark.parametrize(
    ("given", "start", "from_time"),
    [
        ("latest", "latest", None),
        ("0:15,1:7", "0:15,1:7", None),
        ({"time": "2026-01-01T00:00:00Z"}, None, "2026-01-01T00:00:00Z"),
        ({"time": 1_700_000_000_000}, None, "1700000000000"),
    ],
)
def test_from_forms(given: object, start: str | None, from_time: str | None) -> None:
    [action] = Session().receive(frame(type="subscribe", id="a", topic="t", **{"from": given}))
    assert isinstance(action, Subscribe)
    assert (action.start, action.from_time) == (start, from_time)


def test_from_defaults_to_latest() -> None:
    [action] = Session().receive(frame(type="subscribe", id="a", topic="t"))
    assert isinstance(action, Subscribe) and action.start == "latest"


def test_each_event_carries_the_token_after_it() -> None:
    s = Session()
    started(s, positions={0: 10, 1: 20})
    frames = s.events(
        "s1", [(0, 10, b'{"type":"a"}'), (1, 20, b'{"type":"b"}'), (0, 11, b'{"type":"c"}')],
        {0: 12, 1: 21},
    )  # fmt: skip
    got = [orjson.loads(f) for f in frames]
    assert [g["resume"] for g in got] == ["0:11,1:20", "0:11,1:21", "0:12,1:21"]
    assert got[0] == {
        "type": "event",
        "sub": "s1",
        "topic": "orders",
        "resume": "0:11,1:20",
        "partition": 0,
        "offset": 10,
        "event": {"type": "a"},
    }
    # The type filter skipped records: the cursor is past them for the next token.
    s.events("s1", [], {0: 15, 1: 21})
    assert s.resume("s1") == "0:15,1:21"
    [nxt] = s.events("s1", [(1, 30, b"{}")], {1: 31})
    assert orjson.loads(nxt)["resume"] == "0:15,1:31"


def test_several_subscriptions_keep_their_own_cursor() -> None:
    s = Session()
    started(s, "a", {0: 0})
    started(s, "b", {0: 5})
    [fa] = s.events("a", [(0, 0, b"{}")], {0: 1})
    [fb] = s.events("b", [(0, 5, b"{}")], {0: 6})
    assert orjson.loads(fa)["resume"] == "0:1"
    assert orjson.loads(fb)["resume"] == "0:6"


def test_unsubscribe_stops_frames_and_allows_the_id_again() -> None:
    s = Session()
    started(s)
    [action] = s.receive(frame(type="unsubscribe", id="s1"))
    assert isinstance(action, Unsubscribe)
    assert orjson.loads(action.frame) == {"type": "unsubscribed", "id": "s1"}
    assert s.events("s1", [(0, 0, b"{}")], {0: 1}) == []
    started(s)


def test_unsubscribe_while_pending_means_started_is_ignored() -> None:
    s = Session()
    s.receive(frame(type="subscribe", id="s1", topic="orders"))
    s.receive(frame(type="unsubscribe", id="s1"))
    assert s.started("s1", {0: 0}) is None


def test_duplicate_and_unknown_ids() -> None:
    s = Session()
    started(s)
    err = only_error(s.receive(frame(type="subscribe", id="s1", topic="orders")))
    assert (err["status"], err["ref"], err["sub"]) == (409, "s1", "s1")
    err = only_error(s.receive(frame(type="unsubscribe", id="nope")))
    assert (err["status"], err["field"]) == (404, "id")


def test_subscription_limit() -> None:
    s = Session(max_subscriptions=2)
    started(s, "a")
    started(s, "b")
    assert only_error(s.receive(frame(type="subscribe", id="c", topic="t")))["status"] == 429


def test_failed_subscription_is_gone_with_an_error() -> None:
    s = Session()
    started(s)
    out = orjson.loads(s.failed("s1", TopicNotFound("topic 'orders' was deleted")) or b"")
    assert (out["type"], out["status"], out["sub"], out["ref"]) == ("error", 404, "s1", "s1")
    assert out["problem"].endswith("/topic-not-found")
    assert "s1" not in s.subscriptions


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"not json", None),
        (b"[1, 2]", None),
        (b'{"no": "type"}', "type"),
        (frame(type="dance"), "type"),
        (frame(type="subscribe", topic="t"), "id"),
        (frame(type="subscribe", id="", topic="t"), "id"),
        (frame(type="subscribe", id="a"), "topic"),
        (frame(type="subscribe", id="a", topic="bad name"), "topic"),
        (frame(type="subscribe", id="a", topic="t", types=[1]), "types"),
        (frame(type="subscribe", id="a", topic="t", types=["a.>.b"]), "types"),
        (frame(type="subscribe", id="a", topic="t", **{"from": "yesterday"}), "from"),
        (frame(type="subscribe", id="a", topic="t", **{"from": {"time": "soon"}}), "from.time"),
        (frame(type="subscribe", id="a", topic="t", group="g", **{"from": "0:1"}), "from"),
        (frame(type="subscribe", id="a", topic="t", extra=1), "extra"),
        (frame(type="publish", ref=1, topic="t"), "event"),
        (frame(type="publish", ref=[1], topic="t", event={"type": "x"}), "ref"),
        (frame(type="ack", leases=["l"]), "sub"),
        (frame(type="ack", sub="zz", leases=["l"]), "sub"),
    ],
)
def test_bad_frames_answer_400_and_change_nothing(data: bytes, field: str | None) -> None:
    s = Session()
    err = only_error(s.receive(data))
    assert err["status"] in (400, 404)
    assert err.get("field") == field
    assert err["detail"]
    assert s.subscriptions == {}


def test_bad_frames_as_text_too() -> None:
    err = only_error(Session().receive("{"))
    assert err["status"] == 400 and err["ref"] is None


def test_publish_checks_and_fills_the_event() -> None:
    s = Session()
    [action] = s.receive(frame(type="publish", ref="r1", topic="orders", event={"type": "a.b"}))
    assert isinstance(action, Publish)
    assert action.ref == "r1" and action.topic == "orders"
    assert action.event["specversion"] == "1.0" and action.event["id"]
    out = orjson.loads(s.published("r1", [Position("e1", 1, 42)]))
    assert out == {"type": "published", "ref": "r1", "id": "e1", "partition": 1, "offset": 42}
    dup = orjson.loads(s.published("r2", [Position("e1", 1, 42, True)]))
    assert dup["duplicate"] is True


def test_publish_of_an_invalid_event_is_422_with_its_ref() -> None:
    err = only_error(Session().receive(frame(type="publish", ref=7, topic="t", event={"a": 1})))
    assert (err["status"], err["ref"], err["attribute"]) == (422, 7, "type")


def test_group_mode_leases_and_settles() -> None:
    s = Session()
    [sub] = s.receive(frame(type="subscribe", id="g1", topic="orders", group="pay"))
    assert isinstance(sub, Subscribe) and sub.group == "pay"
    out = orjson.loads(s.started("g1", {0: 0}) or b"")
    assert out == {"type": "subscribed", "id": "g1", "topic": "orders", "group": "pay"}
    [ev] = s.leased("g1", [Delivery(0, 4, b'{"type":"x"}', "L1", 2)])
    got = orjson.loads(ev)
    assert got["lease"] == "L1" and got["deliveries"] == 2 and "resume" not in got
    [ack] = s.receive(frame(type="ack", leases=["L1"], ref=3))  # the one group: sub optional
    assert ack == Settle(3, "g1", "orders", "pay", ("L1",))
    assert orjson.loads(s.settled(ack, 1) or b"") == {"type": "acked", "ref": 3, "count": 1}
    [nack] = s.receive(frame(type="nack", sub="g1", leases=["L1"], delay="2s"))
    assert isinstance(nack, Settle) and nack.nack and nack.delay_ms == 2000
    assert s.settled(nack, 1) is None  # no ref, no answer


def test_ack_on_a_plain_subscription_is_refused() -> None:
    s = Session()
    started(s)
    err = only_error(s.receive(frame(type="ack", sub="s1", leases=["L"])))
    assert (err["status"], err["field"]) == (400, "sub")
    err = only_error(s.receive(frame(type="ack", sub="s1", leases=[])))
    assert err["status"] == 400


def test_transition_table_is_closed() -> None:
    states = {k[0] for k in TRANSITIONS} | {v for v in TRANSITIONS.values()}
    assert states == {None, "pending", "active"}
    s = Session()
    started(s)
    assert s.started("s1", {0: 9}) is None  # started twice: ignored, cursor kept
    assert s.resume("s1") == "0:0,1:0"


def test_a_view_subscription_has_no_topic_cursor() -> None:
    s = Session()
    [action] = s.receive(frame(type="subscribe", id="v1", view="stock", **{"from": "3@0:42"}))
    assert action == SubscribeView("v1", "stock", "3@0:42")
    assert orjson.loads(s.started("v1", {}) or b"") == {
        "type": "subscribed", "id": "v1", "view": "stock",
    }  # fmt: skip
    assert s.cursor("v1") is None and s.resume("v1") is None
    [gone] = s.receive(frame(type="unsubscribe", id="v1"))
    assert isinstance(gone, Unsubscribe)
    [fresh] = s.receive(frame(type="subscribe", id="v2", view="stock"))
    assert fresh == SubscribeView("v2", "stock", None)


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        ({"view": "stock", "from": "latest"}, "from"),
        ({"view": "stock", "types": ["a"]}, "types"),
        ({"view": "_x"}, "view"),
    ],
)
def test_a_bad_view_subscription_names_its_field(msg: dict[str, Any], field: str) -> None:
    s = Session()
    error = only_error(s.receive(frame(type="subscribe", id="v1", **msg)))
    assert error["status"] == 400 and error["field"] == field
    assert s.subscriptions == {}

