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
from tidings.events.envelope import normalize_event

VIEW_TOPIC_PREFIX = "__view."
KINDS = ("view", "window")
EMITS = ("final", "updates")
VALUE_TYPE = "tidings.view.value"
CHECKPOINT_TYPE = "tidings.view.checkpoint"
MAX_COMMIT_EVENTS = 100_000


def changelog_topic(view: str) -> str:
    return VIEW_TOPIC_PREFIX + view


def view_of(topic: str) -> str | None:
    """The view whose changelog ``topic`` is, if it is one."""
    return topic[len(VIEW_TOPIC_PREFIX) :] if topic.startswith(VIEW_TOPIC_PREFIX) else None


@dataclass(frozen=True, slots=True)
class Change:
    """A served key changed: its new value (or deleted), at this changelog offset."""

    key: str
    value: Any
    deleted: bool
    offset: int

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"key": self.key, "position": f"0:{self.offset}"}
        if self.deleted:
            d["deleted"] = True
        else:
            d["value"] = self.value
        return d


def change_of(offset: int, event: dict[str, Any]) -> Change | None:
    pk = event.get("partitionkey")
    if not isinstance(pk, str) or not pk.startswith("v:"):
        return None
    data = event.get("data")
    if isinstance(data, dict) and "value" in data:
        return Change(pk[2:], data["value"], False, offset)
    return Change(pk[2:], None, True, offset)


def whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{what} must be an integer >= 0, not {value!r}", field=what)
    return value


def parse_spec(
    spec: dict[str, Any],
) -> tuple[str, list[str], str | None, dict[str, Any] | None, str | None]:
    unknown = sorted(set(spec) - {"kind", "inputs", "app", "window", "emit"})
    if unknown:
        raise BadRequest(
            f"unknown field {unknown[0]!r}; expected kind, inputs, app, window, emit",
            field=unknown[0],
        )
    kind = spec.get("kind")
    if kind not in KINDS:
        raise BadRequest(f"kind must be one of {', '.join(KINDS)}, not {kind!r}", field="kind")
    inputs = spec.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("inputs must be a non-empty list of topic names", field="inputs")
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
        if not isinstance(window, dict):
            raise BadRequest("a window view needs window, an object", field="window")
        emit = "final" if emit is None else emit
        if emit not in EMITS:
            raise BadRequest(f"emit must be one of {', '.join(EMITS)}", field="emit")
    else:
        if window is not None or emit is not None:
            field_ = "window" if window is not None else "emit"
            raise BadRequest(f"a view of kind 'view' has no {field_}", field=field_)
    return kind, list(inputs), app, window, emit


def check_commit(
    name: str, generation: int, events: object, max_bytes: int
) -> list[dict[str, Any]]:
    """The commit's events, checked and filled: changes (``v:``/``s:``), then one
    checkpoint (``c``) of this generation, last."""
    if not isinstance(events, list) or not events:
        raise BadRequest(
            "events must be a non-empty list, ending with the checkpoint", field="events"
        )
    if len(events) > MAX_COMMIT_EVENTS:
        raise BadRequest(f"a commit holds at most {MAX_COMMIT_EVENTS} events", field="events")
    out: list[dict[str, Any]] = []
    last = len(events) - 1
    source = f"tidings/views/{name}"
    for n, raw in enumerate(events):
        where = f"events[{n}]"
        if not isinstance(raw, dict):
            raise BadRequest(f"{where} must be a CloudEvent object", field=where, index=n)
        ev = dict(raw)
        pk = ev.get("partitionkey")
        if n == last:
            if pk != "c":
                raise BadRequest(
                    f"{where}, the last, must be the checkpoint (partitionkey 'c')",
                    field=f"{where}.partitionkey", index=n,
                )  # fmt: skip
            _check_checkpoint(ev.get("data"), generation, where, n)
            ev.setdefault("type", CHECKPOINT_TYPE)
        else:
            if not isinstance(pk, str) or not (pk.startswith("v:") or pk.startswith("s:")):
                raise BadRequest(
                    f"{where}.partitionkey must be 'v:KEY' or 's:NAME' (only the last event "
                    f"is the checkpoint 'c'), not {pk!r}",
                    field=f"{where}.partitionkey", index=n,
                )  # fmt: skip
            data = ev.get("data")
            if data is not None and not (isinstance(data, dict) and set(data) == {"value"}):
                raise BadRequest(
                    f'{where}.data must be {{"value": ...}}, or absent for a deleted key',
                    field=f"{where}.data", index=n,
                )  # fmt: skip
            ev.setdefault("type", VALUE_TYPE)
        ev.setdefault("source", source)
        if "id" not in ev:
            seq = events[last].get("data", {}).get("seq") if isinstance(events[last], dict) else 0
            ev["id"] = f"{name}.{generation}.{seq}.{n}"
        try:
            checked = normalize_event(ev, topic=changelog_topic(name))
        except InvalidEvent as exc:
            exc.fields["index"] = n
            raise
        if len(orjson.dumps(checked)) > max_bytes:
            raise TooLarge(f"{where} is over the {max_bytes}-byte event limit", index=n)
        out.append(checked)
    return out


def _check_checkpoint(data: object, generation: int, where: str, n: int) -> None:
    if not isinstance(data, dict):
        raise BadRequest(
            f"{where}.data must be the checkpoint object", field=f"{where}.data", index=n
        )
    if data.get("generation") != generation:
        raise BadRequest(
            f"{where}.data.generation must be the commit's generation {generation}",
            field=f"{where}.data.generation", index=n,
        )  # fmt: skip
    inputs = data.get("inputs")
    if not isinstance(inputs, dict) or not all(
        isinstance(t, str)
        and isinstance(at, dict)
        and all(
            isinstance(p, str)
            and p.isdigit()
            and isinstance(o, int)
            and not isinstance(o, bool)
            and o >= 0
            for p, o in at.items()
        )
        for t, at in inputs.items()
    ):
        raise BadRequest(
            f'{where}.data.inputs must map each topic to {{"PARTITION": next offset}}',
            field=f"{where}.data.inputs", index=n,
        )  # fmt: skip
