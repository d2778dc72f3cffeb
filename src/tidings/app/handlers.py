"""What ``@app.on(...)`` registers: a handler's options, how its payload is decoded,
what it returns, and the context it is given.

- :class:`Backoff` says how long a failed event waits before its next delivery.
- :class:`HandlerSpec` is one registered handler: its topic, group, types and
  options, checked when the decorator runs, and the decoder its first
  parameter's annotation chose (a pydantic model, a plain ``dict``, an
  :class:`~tidings.Event`, or any type pydantic can validate).
- :class:`Context` is the handler's second parameter: the event's attributes,
  position, delivery count, and ``publish``.
- :class:`Envelope` is what middleware sees, consuming and publishing alike.

An event a handler returns (or publishes through ``ctx``) is chained to the one
it handles: ``causationid`` is the handled event's id, ``correlationid`` is
carried over (or starts as the handled event's id), and ``traceparent`` and
``partitionkey`` are carried over when the new event has none. Its ``id`` is
derived from the group, the handled event's id and its place in the result, so
a handler run twice publishes the same ids and the hub's dedupe window drops
the repeat.
"""

from __future__ import annotations

import inspect
import re
import sys
import types as pytypes
import typing
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tidings.core.groups import INTERNAL_GROUP_PREFIXES, internal_group
from tidings.events.envelope import Event

if TYPE_CHECKING:
    from tidings.app.runner import Consumer
    from tidings.app.transport import Incoming

__all__ = ["Backoff", "Context", "Envelope", "HandlerSpec", "Middleware", "Next"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# Emitted ids: uuid5 in a namespace of our own, so that a handler run twice for one
# event emits the same ids (https://www.rfc-editor.org/rfc/rfc9562#section-5.5).
_EMIT_NAMESPACE = uuid.UUID("5f3b8a0e-2c1d-4e6f-9a7b-0d1c2e3f4a5b")


def check_name(kind: str, name: object) -> str:
    """A topic, group or app name as the hub accepts it; ValueError otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{kind} {name!r} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,199}}")
    return name


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before redelivery after the ``n``-th failed delivery:
    ``min(max, initial * factor ** (n - 1))`` seconds."""

    initial: float = 1.0
    factor: float = 2.0
    max: float = 60.0

    def __post_init__(self) -> None:
        for name in ("initial", "factor", "max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"Backoff {name} must be a non-negative number, not {value!r}")

    def delay(self, deliveries: int) -> float:
        return float(min(self.max, self.initial * self.factor ** max(deliveries - 1, 0)))


@dataclass(frozen=True, slots=True)
class _Schedule:
    """An explicit list of delays; the last one repeats."""

    delays: tuple[float, ...]

    def delay(self, deliveries: int) -> float:
        return self.delays[min(deliveries, len(self.delays)) - 1]


def backoff_of(value: object) -> Backoff | _Schedule:
    if isinstance(value, Backoff):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"backoff must be non-negative seconds, not {value!r}")
        return Backoff(initial=float(value))
    if isinstance(value, Sequence) and not isinstance(value, str) and value:
        delays = tuple(value)
        if all(isinstance(d, int | float) and not isinstance(d, bool) and d >= 0 for d in delays):
            return _Schedule(tuple(float(d) for d in delays))
    raise ValueError(
        f"backoff must be seconds, a list of seconds or a Backoff, not {value!r}"
    )


# -- middleware -----------------------------------------------------------------------


@dataclass(slots=True)
class Envelope:
    """One event passing through middleware.

    ``kind`` is ``"consume"`` (about to be handled) or ``"publish"`` (about to be
    published). ``event`` is the dict of CloudEvents attributes; middleware may
    change it before calling ``call_next``. ``ctx`` is the handled event's
    context (for a publish from a handler), else None.
    """

    kind: Literal["consume", "publish"]
    topic: str
    event: dict[str, Any]
    app: str
    group: str | None = None
    ctx: Context | None = None


Next = Callable[[Envelope], Awaitable[Any]]
Middleware = Callable[[Envelope, Next], Awaitable[Any]]
"""``async def mw(envelope, call_next)``: the same shape for consume and publish.
``await call_next(envelope)`` runs the handler (answering what it returned) or
publishes (answering the hub's positions)."""


def chain(middleware: Sequence[Middleware], last: Next) -> Next:
    """``last`` wrapped in ``middleware``, the first given outermost."""
    call = last
    for mw in reversed(middleware):
        call = _bind(mw, call)
    return call


def _bind(mw: Middleware, call_next: Next) -> Next:
    async def call(envelope: Envelope) -> Any:
        return await mw(envelope, call_next)

    return call


# -- the handler --------------------------------------------------------------------


Decode = Callable[[dict[str, Any]], Any]


class BadPayload(Exception):
    """The event's data does not validate as the handler's payload type."""


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One ``@app.on(...)`` registration, checked."""

    func: Callable[..., Awaitable[Any]]
    topic: str
    group: str
    types: tuple[str, ...]
    retries: int
    backoff: Backoff | _Schedule
    concurrency: int
    ordering: Literal["none", "key"]
    ack_wait: float
    start: Literal["earliest", "latest"]
    dead_letter_topic: str
    payload_type: Any
    decode: Decode
    wants_ctx: bool
    emits: tuple[Any, ...] = field(default=())
    # The payload's pydantic model when its validator may be called on the event's
    # data directly (the model keeps pydantic's model_validate): see data_validator.
    model: Any = None

    @property
    def name(self) -> str:
        return getattr(self.func, "__qualname__", repr(self.func))


def make_spec(
    func: Callable[..., Awaitable[Any]],
    *,
    app: str,
    topic: str,
    types: str | Iterable[str] | None,
    group: str | None,
    retries: int,
    backoff: object,
    concurrency: int,
    ordering: str,
    ack_wait: float,
    start: str,
    dead_letter_topic: str | None,
) -> HandlerSpec:
    """Check every argument of ``@app.on`` and the handler's signature."""
    check_name("topic", topic)
    group = check_name("group", app if group is None else group)
    if internal_group(group) is not None:
        reserved = ", ".join(p + "*" for p in INTERNAL_GROUP_PREFIXES)
        raise ValueError(
            f"group {group!r} is in the hub's own names ({reserved}), which no client may "
            "use; give the handler a group= (or the app a name) outside them"
        )
    if not _is_int(retries) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, not {retries!r}")
    if not _is_int(concurrency) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, not {concurrency!r}")
    if ordering not in ("none", "key"):
        raise ValueError(f"ordering must be 'none' or 'key', not {ordering!r}")
    if start not in ("earliest", "latest"):
        raise ValueError(f"start must be 'earliest' or 'latest', not {start!r}")
    if isinstance(ack_wait, bool) or not isinstance(ack_wait, int | float) or ack_wait <= 0:
        raise ValueError(f"ack_wait must be a positive number of seconds, not {ack_wait!r}")
    dlq = check_name("dead_letter_topic", dead_letter_topic or f"{topic}.dlq")
    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"handler {func!r} must be an async function (async def)")
    params = [
        p
        for p in inspect.signature(func).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not 1 <= len(params) <= 2:
        raise TypeError(
            f"handler {func.__qualname__} must take (payload) or (payload, ctx), "
            f"not {len(params)} positional parameters"
        )
    hints = _hints(func)
    payload_type = hints.get(params[0].name, Any)
    decode = _decoder(payload_type)
    model_type = getattr(payload_type, "event_type", None)
    type_list = _types(types)
    if not type_list and isinstance(model_type, str):
        type_list = (model_type,)
    return HandlerSpec(
        func=func,
        topic=topic,
        group=group,
        types=type_list,
        retries=retries,
        backoff=backoff_of(backoff),
        concurrency=concurrency,
        ordering=typing.cast(Literal["none", "key"], ordering),
        ack_wait=float(ack_wait),
        start=typing.cast(Literal["earliest", "latest"], start),
        dead_letter_topic=dlq,
        payload_type=payload_type,
        decode=decode,
        wants_ctx=len(params) == 2,
        emits=_emitted_models(hints.get("return")),
        model=payload_type if _plain_model(payload_type) else None,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _types(types: str | Iterable[str] | None) -> tuple[str, ...]:
    if types is None:
        return ()
    items = [types] if isinstance(types, str) else list(types)
    for t in items:
        if not isinstance(t, str) or not t or t != t.strip():
            raise ValueError(f"types must be non-empty type patterns, not {t!r}")
    return tuple(items)


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception:  # a forward reference that does not resolve: fall back to raw
        return dict(getattr(func, "__annotations__", {}))


def _model_base() -> type | None:
    """pydantic's BaseModel, if pydantic was imported (a model annotation means it was)."""
    module = sys.modules.get("pydantic")
    return None if module is None else typing.cast(type, module.BaseModel)


def is_model(tp: object) -> bool:
    base = _model_base()
    return base is not None and isinstance(tp, type) and issubclass(tp, base)


def _decoder(tp: Any) -> Decode:
    """How the handler's first argument is made from the event dict."""
    if tp is Any or tp is inspect.Parameter.empty or tp is dict or tp is object:
        return _data
    origin = typing.get_origin(tp)
    if origin is dict or tp is Mapping or origin is Mapping:
        return _data
    if tp is Event:
        return Event.from_dict
    if isinstance(tp, str):
        raise TypeError(
            f"the payload annotation {tp!r} does not resolve to a type: "
            "define it before the handler, at module level"
        )
    from pydantic import TypeAdapter, ValidationError

    if is_model(tp):
        if _plain_model(tp):
            # What model_validate does, without its Python wrapper around the
            # validator (about half the cost of validating a small model). Looked
            # up at each call: a model with forward references gets its validator
            # once they resolve.

            def model(ev: dict[str, Any]) -> Any:
                try:
                    return tp.__pydantic_validator__.validate_python(ev.get("data"))
                except ValidationError as exc:
                    raise BadPayload(_short(exc, tp.__name__)) from None

            return model
        validate = tp.model_validate  # the model's own

        def own(ev: dict[str, Any]) -> Any:
            try:
                return validate(ev.get("data"))
            except ValidationError as exc:
                raise BadPayload(_short(exc, tp.__name__)) from None

        return own
    adapter: TypeAdapter[Any] = TypeAdapter(tp)

    def adapted(ev: dict[str, Any]) -> Any:
        try:
            return adapter.validate_python(ev.get("data"))
        except ValidationError as exc:
            raise BadPayload(_short(exc, str(tp))) from None

    return adapted


def _plain_model(tp: Any) -> bool:
    """A pydantic model that keeps pydantic's own ``model_validate``."""
    if not is_model(tp):
        return False
    base = typing.cast(Any, _model_base())
    return getattr(tp.model_validate, "__func__", None) is base.model_validate.__func__


class _NeverRaised(Exception):
    """What a loop catches as the validator's error when it calls no validator."""


def data_validator(spec: HandlerSpec) -> tuple[Callable[[Any], Any] | None, type[Exception]]:
    """The payload model's validator (``validate_python``) and its error, for a loop
    that validates a batch's event data itself, without the decoder's call around it:
    ``(None, an error never raised)`` when the spec has no such model, or while the
    model's validator is not built yet (forward references unresolved; the decoder
    then says why). Read once per batch: a model rebuilt gets its new validator.
    Its error is the handler's :class:`BadPayload` (see :func:`bad_payload`)."""
    tp = spec.model
    if tp is None:
        return None, _NeverRaised
    from pydantic_core import SchemaValidator, ValidationError

    validator = getattr(tp, "__pydantic_validator__", None)
    if not isinstance(validator, SchemaValidator):
        return None, _NeverRaised
    return validator.validate_python, ValidationError


def bad_payload(spec: HandlerSpec, exc: Exception) -> str:
    """Why the event's data did not validate as the spec's model (see data_validator)."""
    return _short(exc, getattr(spec.model, "__name__", str(spec.model)))


def _data(ev: dict[str, Any]) -> Any:
    return ev.get("data")


def _short(exc: Exception, name: str) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = [
            f"{'.'.join(str(x) for x in e.get('loc', ())) or '(data)'}: {e.get('msg')}"
            for e in errors()[:5]
        ]
        return f"data does not validate as {name}: " + "; ".join(parts)
    return f"data does not validate as {name}: {exc}"


def _emitted_models(tp: Any) -> tuple[Any, ...]:
    """The models with an ``event_type`` named in a return annotation (for AsyncAPI)."""
    if tp is None:
        return ()
    out: list[Any] = []
    stack = [tp]
    while stack:
        t = stack.pop()
        if is_model(t) and isinstance(getattr(t, "event_type", None), str):
            out.append(t)
        elif typing.get_origin(t) in (typing.Union, pytypes.UnionType, list, tuple, Sequence):
            stack.extend(reversed(typing.get_args(t)))
    return tuple(out)


# -- what handlers emit ---------------------------------------------------------------


def emitted(
    result: object,
    handled: Mapping[str, Any],
    default_topic: str,
    group: str,
    start: int = 0,
    source: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """``(topic, event dict)`` for each event in a handler's result, chained to ``handled``."""
    if result is None:
        return []
    items = result if isinstance(result, list | tuple) else [result]
    out: list[tuple[str, dict[str, Any]]] = []
    for n, item in enumerate(items, start):
        topic, ev = _event_of(item)
        out.append((topic or default_topic, chained(ev, handled, group, n, source)))
    return out


def _event_of(item: object) -> tuple[str | None, dict[str, Any]]:
    if isinstance(item, Event):
        return item.topic, item.to_dict()
    if isinstance(item, Mapping):
        ev = dict(item)
        topic = ev.pop("topic", None)
        if not isinstance(ev.get("type"), str):
            raise TypeError(f"an emitted event needs a string 'type': {item!r}")
        return topic, ev
    if is_model(type(item)):
        etype = getattr(type(item), "event_type", None)
        if isinstance(etype, str):
            data = item.model_dump(mode="json")  # type: ignore[attr-defined]
            return getattr(type(item), "event_topic", None), {"type": etype, "data": data}
    raise TypeError(
        f"a handler returned {type(item).__name__}; return an Event, a dict with 'type', "
        "a model with an event_type class variable, a list of them, or None"
    )


def app_source(app: str) -> str:
    """The CloudEvents ``source`` of what an app emits."""
    return f"/apps/{app}"


def chained(
    ev: dict[str, Any],
    handled: Mapping[str, Any],
    group: str,
    n: int,
    source: str | None = None,
) -> dict[str, Any]:
    """``ev`` with causation, correlation, trace context, key and a stable id filled,
    and ``source`` (the app that emits it, ``/apps/{name}``) unless it has its own."""
    if source is not None:
        ev.setdefault("source", source)
    hid = handled.get("id")
    if hid is not None:
        ev.setdefault("causationid", hid)
        ev.setdefault("correlationid", handled.get("correlationid") or hid)
        ev.setdefault("id", str(uuid.uuid5(_EMIT_NAMESPACE, f"{group}/{hid}/{n}")))
    for name in ("traceparent", "tracestate", "partitionkey"):
        value = handled.get(name)
        if value is not None:
            ev.setdefault(name, value)
    return ev


# -- the context ----------------------------------------------------------------------


class Context:
    """What a handler knows of the event it handles, and how it publishes more.

    ``attributes`` is the event's CloudEvents attributes as a dict; ``event`` the
    same as an :class:`~tidings.Event`. ``deliveries`` counts this delivery (1 the
    first time).
    """

    # Made for every event a handler with ctx takes: two slots set, the rest read
    # from the delivery when asked; ``_event`` and ``_emitted`` are set on first use.
    __slots__ = ("_consumer", "_emitted", "_event", "_msg")

    _event: Event
    _emitted: int

    def __init__(self, consumer: Consumer, msg: Incoming) -> None:
        self._consumer = consumer
        self._msg = msg

    @property
    def topic(self) -> str:
        return self._msg.topic

    @property
    def partition(self) -> int:
        return self._msg.partition

    @property
    def offset(self) -> int:
        return self._msg.offset

    @property
    def lease(self) -> str:
        return self._msg.lease

    @property
    def deliveries(self) -> int:
        return self._msg.deliveries

    @property
    def attributes(self) -> dict[str, Any]:
        return self._msg.event

    @property
    def event(self) -> Event:
        try:
            return self._event
        except AttributeError:
            self._event = Event.from_dict(self.attributes)
            return self._event

    @property
    def id(self) -> str:
        return str(self.attributes.get("id", ""))

    @property
    def type(self) -> str:
        return str(self.attributes.get("type", ""))

    @property
    def key(self) -> str | None:
        return self.attributes.get("partitionkey")

    @property
    def correlationid(self) -> str | None:
        return self.attributes.get("correlationid")

    @property
    def traceparent(self) -> str | None:
        return self.attributes.get("traceparent")

    @property
    def group(self) -> str:
        return self._consumer.spec.group

    @property
    def app(self) -> str:
        return self._consumer.app_name

    @property
    def position(self) -> tuple[str, int, int]:
        """``(topic, partition, offset)`` of the handled event."""
        return self.topic, self.partition, self.offset

    async def publish(
        self,
        topic: str | None = None,
        type: str | None = None,
        data: Any = None,
        *,
        event: Event | Mapping[str, Any] | None = None,
        key: str | None = None,
        id: str | None = None,
        subject: str | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish now, chained to the handled event (to its topic unless ``topic``)."""
        if event is None:
            if type is None:
                raise TypeError("ctx.publish needs type= or event=")
            ev: dict[str, Any] = {"type": type}
            if data is not None:
                ev["data"] = data
        else:
            given_topic, ev = _event_of(event)
            topic = topic or given_topic
        if extensions:
            ev.update(extensions)
        for name, value in (("partitionkey", key), ("id", id), ("subject", subject)):
            if value is not None:
                ev[name] = value
        # Numbered after what the handler may return, so the ids never collide.
        emitted = getattr(self, "_emitted", 0)
        n = 1_000_000 + emitted
        self._emitted = emitted + 1
        chained(ev, self.attributes, self.group, n, app_source(self.app))
        await self._consumer.publish_from(self, topic or self.topic, [ev])
