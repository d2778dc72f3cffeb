"""The WebSocket session protocol ``tidings.v1``, sans-I/O: frames in, actions out.

The asyncio layer (:mod:`tidings.server.ws`) feeds each text frame the client
sends to :meth:`Session.receive` and carries out the actions it gets back; what
the hub answers comes back in through :meth:`Session.started`,
:meth:`Session.events`, :meth:`Session.published` and the like, which hand out
the frames to send. Nothing here awaits or touches a socket, so the tests feed
frames and assert on actions.

Client → hub (JSON text frames, ``type`` says which)::

    {"type": "subscribe", "id": "s1", "topic": "orders", "types": ["order.*"],
     "from": "latest" | "earliest" | "0:15,1:7" | {"time": "2026-01-01T00:00:00Z"},
     "group": "payments"}                       # group optional
    {"type": "subscribe", "id": "v1", "view": "stock", "from": "0:42"}   # from optional
    {"type": "unsubscribe", "id": "s1"}
    {"type": "publish", "ref": 7, "topic": "orders", "event": {...}}
    {"type": "ack", "sub": "s1", "leases": [...], "ref": 8}          # group mode
    {"type": "nack", "sub": "s1", "leases": [...], "delay": 5, "ref": 9}

Hub → client::

    {"type": "subscribed", "id": "s1", "topic": "orders", "resume": "0:15,1:7"}
    {"type": "subscribed", "id": "v1", "view": "stock"}
    {"type": "view.snapshot", "sub": "v1", "view": "stock", "generation": 0,
     "entries": [{"key", "value", "position"}, ...], "first": true, "last": true,
     "resume": "0@0:42"}
    {"type": "view.change", "sub": "v1", "view": "stock", "key": "sku-1",
     "value": 3 | "deleted": true, "position": "0:42", "resume": "0@0:43"}
    {"type": "event", "sub": "s1", "resume": "0:16,1:7", "topic": "orders",
     "partition": 0, "offset": 15, "event": {...}}
    {"type": "event", "sub": "s1", "topic": "orders", "partition": 0, "offset": 15,
     "lease": "...", "deliveries": 1, "event": {...}}                # group mode
    {"type": "unsubscribed", "id": "s1"}
    {"type": "published", "ref": 7, "id": "...", "partition": 0, "offset": 15}
    {"type": "acked", "ref": 8, "count": 1}     {"type": "nacked", "ref": 9, "count": 1}
    {"type": "error", "ref": 7, "status": 422, "title": "...", "detail": "...",
     "problem": "https://tidings.dev/problems/invalid-event", ...}

Rules:

- ``resume`` is a position token (:mod:`tidings.core.positions`): the next offset
  of every partition. In an ``event`` frame it is the token *after* that event:
  its partition moves to ``offset + 1``, the others stay. Subscribing again with
  ``from`` = the last token received continues with no gap and no duplicate.
  ``subscribed`` carries the token where the subscription starts, so a client
  that got no event yet can resume too.
- Group mode has no ``resume``: the group's committed positions are the cursor,
  and what is not acked is delivered again after ``ack_wait``.
- A bad frame (not JSON, unknown type, a missing or wrong field) is answered
  with ``error`` (400, ``field`` names what is wrong) and changes nothing; the
  connection stays open. ``error`` carries the frame's ``ref`` (for a subscribe
  or unsubscribe, its ``id``, also as ``sub``).
- ``ack`` and ``nack`` name their subscription in ``sub``; it may be left out
  when the connection has exactly one group subscription.
- ``acked`` and ``nacked`` are sent only when the frame had a ``ref``.
- A view subscription (``view`` instead of ``topic``) gets a snapshot of every
  key (in chunks, ``first`` to ``last``), then each change; ``resume`` is
  ``G@0:N``, offset N in generation G's changelog. Subscribing with ``from`` = the
  last ``resume`` goes on with the changes after it, or with a new snapshot if the
  view was rebuilt since (another generation; a bare ``0:N`` too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

import orjson

from tidings.core.patterns import MAX_TYPE_PATTERNS, TypeFilter
from tidings.core.positions import (
    check_name,
    format_token,
    is_token,
    parse_duration_ms,
    parse_time_ms,
)
from tidings.core.viewrecords import parse_resume
from tidings.errors import BadRequest, Conflict, NotFound, RateLimited, TidingsError
from tidings.events.envelope import normalize_event
from tidings.events.nesting import too_deep

SUBPROTOCOL = "tidings.v1"
MAX_SUBSCRIPTIONS = 100
MAX_ID_CHARS = 200

Ref = str | int | None

# -- actions: what the I/O layer is asked to do -------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Resolve the start (``hub.positions``), then call :meth:`Session.started`."""

    id: str
    topic: str
    types: tuple[str, ...]
    start: str | None  # earliest | latest | a position token; None with from_time
    from_time: str | None
    group: str | None


@dataclass(frozen=True, slots=True)
class SubscribeView:
    """Check the token may read the view, call :meth:`Session.started`, then follow it."""

    id: str
    view: str
    resume: str | None  # a view's resume token ("3@0:42"); None: a snapshot first


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Stop the subscription's reader; the ``unsubscribed`` frame is in ``frame``."""

    id: str
    frame: bytes


@dataclass(frozen=True, slots=True)
class Publish:
    ref: Ref
    topic: str
    event: dict[str, Any]  # checked and filled by ``normalize_event``


@dataclass(frozen=True, slots=True)
class Settle:
    """Ack (``nack`` False) or nack leases of a group subscription."""

    ref: Ref
    sub: str
    topic: str
    group: str
    leases: tuple[str, ...]
    nack: bool = False
    delay_ms: int = 0


@dataclass(frozen=True, slots=True)
class Send:
    frame: bytes


Action = Subscribe | SubscribeView | Unsubscribe | Publish | Settle | Send


class Position(NamedTuple):
    """Where a publish landed, as the hub answers it."""

    id: str
    partition: int
    offset: int
    duplicate: bool = False


# -- subscription states: one table ---------------------------------------------------------

State = Literal["pending", "active"]
_Event = Literal["subscribe", "started", "failed", "unsubscribe"]
#: (state, event) → next state; None is gone. A pair not in the table is refused.
TRANSITIONS: dict[tuple[State | None, _Event], State | None] = {
    (None, "subscribe"): "pending",
    ("pending", "started"): "active",
    ("pending", "failed"): None,
    ("pending", "unsubscribe"): None,
    ("active", "failed"): None,
    ("active", "unsubscribe"): None,
}


@dataclass(slots=True)
class Subscription:
    id: str
    topic: str
    group: str | None
    state: State = "pending"
    positions: dict[int, int] = field(default_factory=dict)
    # The frame prefix shared by every event of this subscription.
    head: bytes = b""
    view: str | None = None  # a view subscription: it has no topic cursor


class Leased(Protocol):
    """What :meth:`Session.leased` reads of a delivery (``tidings.core.groups.Delivery``)."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def lease(self) -> str: ...
    @property
    def deliveries(self) -> int: ...


class Session:
    """The protocol state of one connection: its subscriptions and their cursors."""

    def __init__(
        self,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
        max_type_patterns: int = MAX_TYPE_PATTERNS,
    ) -> None:
        self.max_subscriptions = max_subscriptions
        self.max_type_patterns = max_type_patterns
        self.subscriptions: dict[str, Subscription] = {}

    # -- client frames -------------------------------------------------------------------

    def receive(self, data: str | bytes) -> list[Action]:
        """The actions for one client frame; a bad frame gives one ``error`` frame."""
        ref: Ref = None
        sub: str | None = None
        try:
            try:
                msg = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                if str(exc).startswith("depth limit exceeded"):
                    raise too_deep() from None
                raise BadRequest(f"frame is not JSON: {exc}") from None
            if not isinstance(msg, dict):
                raise BadRequest("frame must be a JSON object with a 'type'")
            ref = _ref(msg)
            kind = msg.get("type")
            if kind == "subscribe":
                ref = sub = _id(msg)
                return [self._subscribe(msg)]
            if kind == "unsubscribe":
                ref = sub = _id(msg)
                return [self._unsubscribe(msg)]
            if kind == "publish":
                return [self._publish(msg, ref)]
            if kind in ("ack", "nack"):
                return [self._settle(msg, ref, kind == "nack")]
            raise BadRequest(
                f"unknown frame type {kind!r}; expected subscribe, unsubscribe, publish, "
                "ack or nack",
                field="type",
            )
        except TidingsError as exc:
            return [Send(error_frame(ref, exc, sub))]

    def _new_id(self, msg: dict[str, Any]) -> str:
        sub_id = _id(msg)
        if sub_id in self.subscriptions:
            raise Conflict(f"subscription {sub_id!r} already exists", field="id")
        if len(self.subscriptions) >= self.max_subscriptions:
            raise RateLimited(
                f"at most {self.max_subscriptions} subscriptions per connection", field="id"
            )
        return sub_id

    def _subscribe_view(self, msg: dict[str, Any]) -> SubscribeView:
        _only(msg, {"type", "id", "view", "from"})
        sub_id = self._new_id(msg)
        view = check_name("view", _required(msg, "view"))
        start = msg.get("from")
        if start is not None and not (isinstance(start, str) and parse_resume(start)):
            raise BadRequest(
                'from of a view subscription is a resume token like "3@0:42" (leave it '
                "out for a snapshot first)",
                field="from",
            )
        self._move(None, "subscribe")
        self.subscriptions[sub_id] = Subscription(sub_id, "", None, view=view)
        return SubscribeView(sub_id, view, start)

    def _subscribe(self, msg: dict[str, Any]) -> Subscribe | SubscribeView:
        if "view" in msg:
            return self._subscribe_view(msg)
        _only(msg, {"type", "id", "topic", "types", "from", "group"})
        sub_id = self._new_id(msg)
        topic = check_name("topic", _required(msg, "topic"))
        types = msg.get("types", [])
        if isinstance(types, str):
            types = [types]
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise BadRequest("types must be a list of type patterns", field="types")
        TypeFilter(types, limit=self.max_type_patterns)  # checks the patterns and their count
        group = msg.get("group")
        if group is not None:
            check_name("group", group)
        start, from_time = _start(msg.get("from", "latest"))
        if group is not None and (from_time is not None or start not in ("earliest", "latest")):
            raise BadRequest(
                "a group subscription goes on from the group's positions; from may only be "
                "earliest or latest (where a new group starts)",
                field="from",
            )
        self._move(None, "subscribe")
        self.subscriptions[sub_id] = Subscription(sub_id, topic, group)
        return Subscribe(sub_id, topic, tuple(types), start, from_time, group)

    def _unsubscribe(self, msg: dict[str, Any]) -> Unsubscribe:
        _only(msg, {"type", "id"})
        sub = self._sub(_id(msg), "id")
        self._move(sub.state, "unsubscribe")
        del self.subscriptions[sub.id]
        return Unsubscribe(sub.id, _dumps({"type": "unsubscribed", "id": sub.id}))

    def _publish(self, msg: dict[str, Any], ref: Ref) -> Publish:
        _only(msg, {"type", "ref", "topic", "event"})
        topic = check_name("topic", _required(msg, "topic"))
        if "event" not in msg:
            raise BadRequest("publish needs 'event'", field="event")
        return Publish(ref, topic, normalize_event(msg["event"], topic=topic))

    def _settle(self, msg: dict[str, Any], ref: Ref, nack: bool) -> Settle:
        _only(msg, {"type", "ref", "sub", "leases"} | ({"delay"} if nack else set()))
        sub_id = msg.get("sub")
        if sub_id is None:
            groups = [s for s in self.subscriptions.values() if s.group is not None]
            if len(groups) != 1:
                raise BadRequest(
                    f"name the group subscription in 'sub' (the connection has {len(groups)})",
                    field="sub",
                )
            sub = groups[0]
        else:
            if not isinstance(sub_id, str):
                raise BadRequest("sub must be a subscription id", field="sub")
            sub = self._sub(sub_id, "sub")
        if sub.group is None:
            raise BadRequest(
                f"subscription {sub.id!r} has no group; only group events have leases",
                field="sub",
            )
        leases = msg.get("leases")
        if (
            not isinstance(leases, list)
            or not leases
            or not all(isinstance(x, str) for x in leases)
        ):
            raise BadRequest("leases must be a non-empty list of lease strings", field="leases")
        delay_ms = parse_duration_ms(msg.get("delay", 0), "delay") if nack else 0
        return Settle(ref, sub.id, sub.topic, sub.group, tuple(leases), nack, delay_ms)

    # -- what the hub answers --------------------------------------------------------------

    def started(self, sub_id: str, positions: dict[int, int]) -> bytes | None:
        """The subscription reads from ``positions``: its ``subscribed`` frame.

        None if it was unsubscribed meanwhile (its reader must not start).
        """
        sub = self.subscriptions.get(sub_id)
        if sub is None or sub.state != "pending":
            return None
        sub.state = self._move(sub.state, "started") or "active"
        if sub.view is not None:
            return _dumps({"type": "subscribed", "id": sub.id, "view": sub.view})
        sub.positions = dict(positions)
        sub.head = (
            b'{"type":"event","sub":'
            + orjson.dumps(sub.id)
            + b',"topic":'
            + orjson.dumps(sub.topic)
        )
        frame: dict[str, Any] = {"type": "subscribed", "id": sub.id, "topic": sub.topic}
        if sub.group is None:
            frame["resume"] = format_token(positions)
        else:
            frame["group"] = sub.group
        return _dumps(frame)

    def failed(self, sub_id: str, exc: TidingsError) -> bytes | None:
        """The subscription could not start or its reader stopped: it is gone."""
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            return None
        self._move(sub.state, "failed")
        del self.subscriptions[sub_id]
        return error_frame(sub_id, exc, sub_id)

    def events(
        self, sub_id: str, records: Iterable[tuple[int, int, bytes]], next_positions: dict[int, int]
    ) -> list[bytes]:
        """``event`` frames for records read from the log, each with its resume token.

        ``next_positions`` is where the read ended (past records the type filter
        skipped); the cursor moves there after the last frame.
        """
        sub = self.subscriptions.get(sub_id)
        if sub is None or sub.state != "active":
            return []
        frames = [event_frame(sub, p, o, event_body(p, o, payload)) for p, o, payload in records]
        sub.positions.update(next_positions)
        return frames

    def cursor(self, sub_id: str) -> Subscription | None:
        """The active log subscription ``sub_id`` (None if gone, pending or in a group).

        The I/O layer builds its frames with :func:`event_frame`, which moves its
        ``positions``; nothing else may change them.
        """
        sub = self.subscriptions.get(sub_id)
        if sub is None or sub.group is not None or sub.view is not None or sub.state != "active":
            return None
        return sub

    def leased(self, sub_id: str, deliveries: Iterable[Leased]) -> list[bytes]:
        """``event`` frames of a group subscription, each with its lease."""
        sub = self.subscriptions.get(sub_id)
        if sub is None or sub.state != "active":
            return []
        return [
            sub.head
            + b',"partition":%d,"offset":%d,"lease":%s,"deliveries":%d,"event":'
            % (d.partition, d.offset, orjson.dumps(d.lease), d.deliveries)
            + d.payload
            + b"}"
            for d in deliveries
        ]

    def published(self, ref: Ref, positions: Sequence[Position]) -> bytes:
        p = positions[0]
        frame: dict[str, Any] = {
            "type": "published",
            "ref": ref,
            "id": p.id,
            "partition": p.partition,
            "offset": p.offset,
        }
        if p.duplicate:
            frame["duplicate"] = True
        return _dumps(frame)

    def settled(self, action: Settle, count: int) -> bytes | None:
        if action.ref is None:
            return None
        kind = "nacked" if action.nack else "acked"
        return _dumps({"type": kind, "ref": action.ref, "count": count})

    def resume(self, sub_id: str) -> str | None:
        """The token a subscription would resume from now (None if gone or in a group)."""
        sub = self.subscriptions.get(sub_id)
        if sub is None or sub.group is not None or sub.view is not None or sub.state != "active":
            return None
        return format_token(sub.positions)

    # -- helpers ---------------------------------------------------------------------------

    def _sub(self, sub_id: str, name: str) -> Subscription:
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            raise NotFound(f"no subscription {sub_id!r} on this connection", field=name)
        return sub

    @staticmethod
    def _move(state: State | None, event: _Event) -> State | None:
        key = (state, event)
        if key not in TRANSITIONS:
            raise Conflict(f"cannot {event} a subscription that is {state or 'absent'}")
        return TRANSITIONS[key]


def event_body(partition: int, offset: int, payload: bytes) -> bytes:
    """The part of an ``event`` frame after its resume token: the same for every subscriber."""
    return b'","partition":%d,"offset":%d,"event":' % (partition, offset) + payload + b"}"


def event_frame(sub: Subscription, partition: int, offset: int, body: bytes) -> bytes:
    """The ``event`` frame of ``sub`` for the record at ``offset``; its cursor moves past it.

    ``body`` is :func:`event_body` of the record, made once for all subscribers.
    """
    pos = sub.positions
    pos[partition] = offset + 1
    one = len(pos) == 1
    token = b"%d:%d" % (partition, offset + 1) if one else format_token(pos).encode()
    return sub.head + b',"resume":"' + token + body


def error_frame(ref: Ref, exc: TidingsError, sub: str | None = None) -> bytes:
    """``error``: the problem+json members beside ``ref``; ``problem`` is its type URI."""
    frame: dict[str, Any] = {"type": "error", "ref": ref}
    if sub is not None:
        frame["sub"] = sub
    problem = exc.to_problem()
    frame["problem"] = problem.pop("type")
    frame.update(problem)
    frame["type"] = "error"
    return _dumps(frame)


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _ref(msg: dict[str, Any]) -> Ref:
    ref = msg.get("ref")
    if ref is None or (isinstance(ref, str | int) and not isinstance(ref, bool)):
        return ref
    raise BadRequest("ref must be a string or an integer", field="ref")


def _id(msg: dict[str, Any]) -> str:
    sub_id = msg.get("id")
    if not isinstance(sub_id, str) or not sub_id or len(sub_id) > MAX_ID_CHARS:
        raise BadRequest(
            f"id must be a string of 1 to {MAX_ID_CHARS} characters naming the subscription",
            field="id",
        )
    return sub_id


def _required(msg: dict[str, Any], name: str) -> Any:
    if name not in msg:
        raise BadRequest(f"{msg.get('type')} needs {name!r}", field=name)
    return msg[name]


def _only(msg: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(msg) - allowed)
    if unknown:
        raise BadRequest(
            f"unknown field {unknown[0]!r} in {msg.get('type')}; expected {sorted(allowed)}",
            field=unknown[0],
        )


def _start(raw: object) -> tuple[str | None, str | None]:
    """``from`` as ``(start, from_time)`` for ``Hub.positions``."""
    if raw in ("earliest", "latest"):
        return str(raw), None
    if isinstance(raw, str) and is_token(raw):
        return raw, None
    if isinstance(raw, dict) and set(raw) == {"time"}:
        t = raw["time"]
        if isinstance(t, str | int) and not isinstance(t, bool):
            parse_time_ms(t, "from.time")
            return None, str(t)
    raise BadRequest(
        'from must be "earliest", "latest", a resume token like "0:15,1:7" or '
        '{"time": <RFC 3339 or ms>}',
        field="from",
    )
