"""The records of a view's changelog, and what a declaration and a commit may hold.

A changelog (``__view.{name}``, streams design section 3) holds CloudEvents keyed
by ``partitionkey``: ``v:{key}`` a served value (``data`` ``{"value": V}``; no
data: the key is deleted), ``s:{name}`` the processor's own state, the same
shape, and ``c`` a checkpoint (``data`` ``{"generation", "seq", "owner",
"inputs": {topic: {"PARTITION": next offset}}, "horizon", "clock"}``). A commit
is changes then one checkpoint, last. Imported by :mod:`tidings.core.views`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tidings.core.positions import check_name
from tidings.errors import BadRequest, InvalidEvent, TooLarge
from tidings.events.envelope import normalize_event, now_rfc3339
from tidings.events.nesting import MAX_DEPTH

VIEW_TOPIC_PREFIX = "__view."
BY_KEY_SUFFIX = ".by-key"  # a repartitioned view's internal topic: __view.{name}.by-key
KINDS = ("view", "window")
EMITS = ("final", "updates")
VALUE_TYPE = "tidings.view.value"
CHECKPOINT_TYPE = "tidings.view.checkpoint"
MAX_COMMIT_EVENTS = 100_000
MAX_INPUTS = 100
MAX_TASKS = 1000  # partitions of a changelog (one per task): a topic's own limit
_MAX_INT = (1 << 63) - 1


def changelog_topic(view: str) -> str:
    return VIEW_TOPIC_PREFIX + view


def by_key_topic(view: str) -> str:
    """The internal topic a repartitioned view's routing stage publishes its copies to."""
    return VIEW_TOPIC_PREFIX + view + BY_KEY_SUFFIX


def result_topics(view: str) -> list[str]:
    """The topics a window view's processor publishes to: results, then late events."""
    return [view, f"{view}.late"]


def resume_token(generation: int, offsets: dict[int, int]) -> str:
    """Where a view's live feed goes on: ``G@0:N`` (``G@0:N,1:M,...`` for a view of
    several tasks), the next offset of each partition of generation G's changelog."""
    return f"{generation}@" + ",".join(f"{p}:{o}" for p, o in sorted(offsets.items()))


def parse_resume(text: str) -> tuple[int | None, dict[int, int]] | None:
    """``(generation, {partition: offset})`` of a resume token ``G@0:N,1:M``,
    generation None for a bare ``0:N`` (a feed resumed from one starts with a
    snapshot); None if it is neither."""
    gen, at, position = text.rpartition("@")
    if at and not _digits(gen):
        return None
    out: dict[int, int] = {}
    for part in position.split(","):
        p, sep, o = part.partition(":")
        if sep != ":" or not _digits(p) or not _digits(o) or int(p) >= MAX_TASKS or int(p) in out:
            return None
        out[int(p)] = int(o)
    return (int(gen) if at else None), out


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 19


def view_of(topic: str) -> str | None:
    """The view whose changelog (or repartition topic) ``topic`` is, if it is one."""
    if not topic.startswith(VIEW_TOPIC_PREFIX):
        return None
    return topic[len(VIEW_TOPIC_PREFIX) :].removesuffix(BY_KEY_SUFFIX)


@dataclass(frozen=True, slots=True)
class Change:
    """A served key changed: its new value (or deleted), at this changelog offset."""

    key: str
    value: Any
    deleted: bool
    offset: int
    partition: int = 0  # of the changelog: the task that owns the key

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"key": self.key, "position": f"{self.partition}:{self.offset}"}
        if self.deleted:
            d["deleted"] = True
        else:
            d["value"] = self.value
        return d


def change_of(offset: int, event: dict[str, Any], partition: int = 0) -> Change | None:
    pk = event.get("partitionkey")
    if not isinstance(pk, str) or not pk.startswith("v:"):
        return None
    data = event.get("data")
    if isinstance(data, dict) and "value" in data:
        return Change(pk[2:], data["value"], False, offset, partition)
    return Change(pk[2:], None, True, offset, partition)


def whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
        raise BadRequest(f"{what} must be an integer from 0 to 2**63-1, not {value!r}", field=what)
    return value


def parse_repartition(spec: dict[str, Any]) -> int | bool:
    """A declaration's ``repartition``: False (none), True (as many partitions as the
    input with the most) or a number of partitions of ``__view.{name}.by-key``."""
    value = spec.get("repartition", False)
    if not isinstance(value, bool) and (not isinstance(value, int) or not 1 <= value <= MAX_TASKS):
        raise BadRequest(
            f"repartition must be true, false or a number of partitions from 1 to "
            f"{MAX_TASKS}, not {value!r}",
            field="repartition",
        )
    if value is not False and spec.get("partitioned", False) is True:
        raise BadRequest(
            "a view is either partitioned (its key is the events' partitionkey) or "
            "repartitioned (its key is not: events are routed by key first), not both",
            field="repartition",
        )
    return value


def parse_spec(
    spec: dict[str, Any],
) -> tuple[str, list[str], str | None, dict[str, Any] | None, str | None, bool]:
    """``(kind, inputs, app, window, emit, partitioned)`` of a declaration (its
    ``repartition``: :func:`parse_repartition`)."""
    known = {"kind", "inputs", "app", "window", "emit", "partitioned", "repartition"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise BadRequest(
            f"unknown field {unknown[0]!r}; expected kind, inputs, app, window, emit, "
            "partitioned, repartition",
            field=unknown[0],
        )
    partitioned = spec.get("partitioned", False)
    if not isinstance(partitioned, bool):
        raise BadRequest(
            f"partitioned must be true (one task per input partition: the view's key is its "
            f"events' partitionkey) or false (one task), not {partitioned!r}",
            field="partitioned",
        )
    kind = spec.get("kind")
    if kind not in KINDS:
        raise BadRequest(f"kind must be one of {', '.join(KINDS)}, not {kind!r}", field="kind")
    inputs = spec.get("inputs")
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS:
        raise BadRequest(f"inputs must be a list of 1 to {MAX_INPUTS} topic names", field="inputs")
    for i, topic in enumerate(inputs):
        check_name(f"inputs[{i}]", topic)
    if len(set(inputs)) != len(inputs):
        raise BadRequest("inputs names a topic twice", field="inputs")
    app = spec.get("app")
    if app is not None:
        check_name("app", app)
    window = spec.get("window")
    emit = spec.get("emit")
    if kind == "window":
        check_window(window)
        emit = "final" if emit is None else emit
        if emit not in EMITS:
            raise BadRequest(f"emit must be one of {', '.join(EMITS)}", field="emit")
    else:
        if window is not None or emit is not None:
            field_ = "window" if window is not None else "emit"
            raise BadRequest(f"a view of kind 'view' has no {field_}", field=field_)
    return kind, list(inputs), app, window, emit, partitioned


# The window kinds as ``tidings.streams`` windows (and a join's) describe themselves
# (ms): the fields of each, and those that must be above 0.
WINDOWS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tumbling": (("size", "grace", "idle"), ("size",)),
    "hopping": (("size", "every", "grace", "idle"), ("size", "every")),
    "sliding": (("size", "grace", "idle"), ("size",)),
    "session": (("gap", "grace", "idle"), ("gap",)),
    "join": (("within", "grace", "idle"), ()),  # tidings.streams.joins.Join
}


def check_window(window: object) -> None:
    """A window view's ``window``: one that :meth:`tidings.streams.Window.describe`
    gives, durations in ms; else BadRequest naming the field."""
    if not isinstance(window, dict):
        raise BadRequest(
            "a window view needs window, an object like "
            '{"kind": "tumbling", "size": 60000, "grace": 0, "idle": 0}',
            field="window",
        )
    kind = window.get("kind")
    if kind not in WINDOWS:
        raise BadRequest(
            f"window.kind must be one of {', '.join(WINDOWS)}, not {kind!r}", field="window.kind"
        )
    fields, positive = WINDOWS[kind]
    for name in sorted(set(window) - {"kind", *fields}):
        raise BadRequest(
            f"a {kind} window has no {name!r}; its fields: kind, {', '.join(fields)}",
            field=f"window.{name}",
        )
    for name in fields:
        ms = window.get(name)
        low = 1 if name in positive else 0
        if isinstance(ms, bool) or not isinstance(ms, int) or not low <= ms <= _MAX_INT:
            raise BadRequest(
                f"window.{name} of a {kind} window must be an integer of ms from {low}, "
                f"not {ms!r}",
                field=f"window.{name}",
            )
    if kind == "hopping" and window["every"] > window["size"]:
        raise BadRequest(
            f"window.every ({window['every']} ms) must not be longer than window.size "
            f"({window['size']} ms)",
            field="window.every",
        )


@dataclass(frozen=True, slots=True)
class CheckedCommit:
    """A commit's records in the order they are written (the changes, then the
    checkpoint): ``payloads`` as the log stores them, ``events`` with the
    ``partitionkey`` and ``data`` that :meth:`tidings.core.viewstate.View.apply` reads."""

    events: list[dict[str, Any]]
    payloads: list[bytes]


def check_commit(name: str, generation: int, events: object, max_bytes: int) -> CheckedCommit:
    """The commit's events, checked and filled (``source``, ``id``, ``time``), in the
    order they are written: the changes (``v:``/``s:``) as given, then the one
    checkpoint (``c``). The events given are left as they are.

    A change in the shape a processor sends (``specversion`` "1.0", ``id``, the
    view's ``source``, ``type``, ``partitionkey`` and ``data`` ``{"value": ...}``
    or none, nothing else) is checked where it lies, in one pass, and serialized
    once with the commit's ``time`` added. Any other event, and the checkpoint, is
    checked and filled as a published event is
    (:func:`~tidings.events.envelope.normalize_event`). The one pass accepts only
    events the full check accepts, and leaves every doubt to it, so a refusal
    names the same event and the same fault either way.
    """
    if not isinstance(events, list) or not events:
        raise BadRequest(
            "events must be a non-empty list: the changes and one checkpoint", field="events"
        )
    if len(events) > MAX_COMMIT_EVENTS:
        raise BadRequest(f"a commit holds at most {MAX_COMMIT_EVENTS} events", field="events")
    source = f"tidings/views/{name}"
    seq = _seq(events)
    now = now_rfc3339()
    tail = b',"time":"' + now.encode() + b'"}'  # a JSON object ends with its "}"
    changes: list[dict[str, Any]] = []
    payloads: list[bytes] = []
    values: list[Any] = []  # the value of each change checked in place: for the depth check
    checkpoint: dict[str, Any] | None = None
    last = b""
    dumps = orjson.dumps
    try:
        for n, raw in enumerate(events):
            if (
                type(raw) is dict
                and raw.keys() <= _CHANGE_KEYS
                and (pk := raw.get("partitionkey")).__class__ is str
                and pk[:2] in _CHANGE_PREFIXES
                and raw.get("type") == VALUE_TYPE
                and raw.get("specversion") == "1.0"
                and raw.get("source") == source
                and (eid := raw.get("id")).__class__ is str
                and eid
                and eid.isprintable()
                and pk.isprintable()
                and (
                    (data := raw.get("data", _ABSENT)) is _ABSENT
                    or (data.__class__ is dict and data.keys() == _VALUE_KEYS)
                )
            ):
                if data is not _ABSENT:
                    values.append(data["value"])  # a dict with one key, "value"
                payload = dumps(raw)[:-1] + tail
                if len(payload) > max_bytes:
                    raise TooLarge(
                        f"events[{n}] is over the {max_bytes}-byte event limit", index=n
                    )
                changes.append(raw)
                payloads.append(payload)
                continue
            ev, payload = _check_event(name, generation, seq, now, raw, n, max_bytes, checkpoint)
            if ev.get("partitionkey") == "c":
                checkpoint = ev
                last = payload
            else:
                changes.append(ev)
                payloads.append(payload)
    except Exception:
        # A fault (or a value orjson cannot write, nested past its limit): the full
        # check, event by event, names the first, which may be a change before it
        # that nests too deep (its depth is checked below, all at once).
        return _check_all(name, generation, events, max_bytes)
    if checkpoint is None:
        raise BadRequest("a commit needs one checkpoint (partitionkey 'c')", field="events")
    if _too_deep(values):
        # A change nests too deep: the full check, event by event, names the first.
        return _check_all(name, generation, events, max_bytes)
    changes.append(checkpoint)
    payloads.append(last)
    return CheckedCommit(changes, payloads)


_CHANGE_KEYS = frozenset({"specversion", "id", "source", "type", "partitionkey", "data"})
_CHANGE_PREFIXES = frozenset({"v:", "s:"})
_VALUE_KEYS = {"value": None}.keys()
_ABSENT: Any = object()  # "data" not there (None would be a null value)


def _seq(events: list[Any]) -> object:
    """The checkpoint's ``seq``, which the ids filled in are made of."""
    cps = [e for e in events if isinstance(e, dict) and e.get("partitionkey") == "c"]
    return cps[0]["data"].get("seq") if cps and isinstance(cps[0].get("data"), dict) else None


def _too_deep(values: list[Any]) -> bool:
    """Whether an event whose data is ``{"value": V}``, V one of ``values``, nests
    deeper than :data:`~tidings.events.nesting.MAX_DEPTH` (the event object and its
    ``data`` are two levels): level by level, over all of them at once."""
    level = [v for v in values if v.__class__ is dict or v.__class__ is list]
    room = MAX_DEPTH - 2
    while level:
        if room <= 0:
            return True
        level = [
            c
            for v in level
            for c in (v.values() if v.__class__ is dict else v)
            if c.__class__ is dict or c.__class__ is list
        ]
        room -= 1
    return False


def _check_all(name: str, generation: int, events: list[Any], max_bytes: int) -> CheckedCommit:
    """:func:`check_commit` with every event through the full check."""
    seq = _seq(events)
    now = now_rfc3339()
    changes: list[tuple[dict[str, Any], bytes]] = []
    checkpoint: tuple[dict[str, Any], bytes] | None = None
    for n, raw in enumerate(events):
        ev, payload = _check_event(
            name, generation, seq, now, raw, n, max_bytes, checkpoint and checkpoint[0]
        )
        if ev.get("partitionkey") == "c":
            checkpoint = ev, payload
        else:
            changes.append((ev, payload))
    if checkpoint is None:
        raise BadRequest("a commit needs one checkpoint (partitionkey 'c')", field="events")
    changes.append(checkpoint)
    return CheckedCommit([e for e, _ in changes], [p for _, p in changes])


def _check_event(
    name: str,
    generation: int,
    seq: object,
    now: str,
    raw: object,
    n: int,
    max_bytes: int,
    checkpoint: dict[str, Any] | None,
) -> tuple[dict[str, Any], bytes]:
    """Event ``n`` of a commit checked and filled as a published event is (a copy), and
    its serialization; ``checkpoint`` is the one met before it, if any."""
    where = f"events[{n}]"
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be a CloudEvent object", field=where, index=n)
    ev = dict(raw)
    pk = ev.get("partitionkey")
    if "data_base64" in ev:
        raise BadRequest(
            f"{where} has data_base64: a changelog record's data is JSON",
            field=f"{where}.data_base64", index=n,
        )  # fmt: skip
    if "data" in ev and ev["data"] is None:
        # A deletion is a record without data: compaction removes it as a tombstone,
        # which it would not do for a present (null) value.
        del ev["data"]
    if pk == "c":
        if checkpoint is not None:
            raise BadRequest(
                f"{where} is a second checkpoint (partitionkey 'c'): a commit has one",
                field=f"{where}.partitionkey", index=n,
            )  # fmt: skip
        _check_checkpoint(ev.get("data"), generation, where, n)
        wanted = CHECKPOINT_TYPE
    elif isinstance(pk, str) and pk.startswith(("v:", "s:")):
        data = ev.get("data")
        if data is not None and not (isinstance(data, dict) and set(data) == {"value"}):
            raise BadRequest(
                f'{where}.data must be {{"value": ...}}, or absent (or null) for a deleted key',
                field=f"{where}.data", index=n,
            )  # fmt: skip
        wanted = VALUE_TYPE
    else:
        raise BadRequest(
            f"{where}.partitionkey must be 'v:KEY' (a served value), 's:NAME' (state) "
            f"or 'c' (the checkpoint), not {pk!r}",
            field=f"{where}.partitionkey", index=n,
        )  # fmt: skip
    if ev.get("type") != wanted:
        raise BadRequest(
            f"{where}.type must be {wanted!r} for partitionkey {pk!r}",
            field=f"{where}.type", index=n,
        )  # fmt: skip
    ev.setdefault("source", f"tidings/views/{name}")
    ev.setdefault("id", f"{name}.{generation}.{seq}.{n}")
    try:
        checked = normalize_event(ev, topic=changelog_topic(name), now=now)
    except InvalidEvent as exc:
        exc.fields["index"] = n
        raise
    payload = orjson.dumps(checked)
    if len(payload) > max_bytes:
        raise TooLarge(f"{where} is over the {max_bytes}-byte event limit", index=n)
    return checked, payload


def _check_checkpoint(data: object, generation: int, where: str, n: int) -> None:
    if not isinstance(data, dict):
        raise BadRequest(
            f"{where}.data must be the checkpoint object", field=f"{where}.data", index=n
        )
    g = data.get("generation")
    if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g <= _MAX_INT:
        raise BadRequest(
            f"{where}.data.generation must be an integer >= 0",
            field=f"{where}.data.generation", index=n,
        )  # fmt: skip
    if g != generation:
        # Judged against the commit's generation, the view's (the commit passed the CAS).
        raise BadRequest(
            f"{where}.data.generation {g} is not the commit's generation {generation}",
            field="events", index=n,
        )  # fmt: skip
    inputs = data.get("inputs")
    if not isinstance(inputs, dict) or not all(
        isinstance(at, dict)
        and all(
            _partition(p)
            and isinstance(o, int)
            and not isinstance(o, bool)
            and 0 <= o <= _MAX_INT
            for p, o in at.items()
        )
        for at in inputs.values()
    ):
        raise BadRequest(
            f'{where}.data.inputs must map each topic to {{"PARTITION": next offset}}, '
            "each PARTITION a partition number (at most 6 digits) without leading zeros",
            field=f"{where}.data.inputs", index=n,
        )  # fmt: skip


def _partition(p: str) -> bool:
    """Whether ``p`` names a partition as a checkpoint writes it: a number of at most
    six digits (the commit checks it against the input's partitions), no leading
    zero."""
    return 0 < len(p) <= 6 and p.isascii() and p.isdigit() and (p == "0" or p[0] != "0")
