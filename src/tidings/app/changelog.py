"""A view's changelog as its processor reads and writes it: the state it restores, and
the records of one commit (``v:``/``s:`` changes, then the ``c`` checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tidings.app.transport import Transport
from tidings.core.positions import format_token
from tidings.streams import DELETED, Output

__all__ = ["CHANGELOG_PREFIX", "READ_LIMIT", "ChangelogState", "changelog_events",
           "load_changelog"]

CHANGELOG_PREFIX = "__view."
READ_LIMIT = 5000


@dataclass(slots=True)
class ChangelogState:
    """What a changelog holds: served values, operator state, the last checkpoint."""

    values: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] | None = None
    end: int = 0  # the changelog's end offset: a commit's `expect`


async def load_changelog(transport: Transport, name: str, task: int = 0) -> ChangelogState:
    """Read partition ``task`` of the changelog of view ``name`` (task ``task``'s state)
    from earliest to its end (section 3)."""
    out = ChangelogState()
    start = "earliest"
    while True:
        batch = await transport.read_timed(
            CHANGELOG_PREFIX + name, start, READ_LIMIT, 0, partition=task
        )
        for _, _, _, ev in batch.records:
            pk = ev.get("partitionkey")
            if not isinstance(pk, str):
                continue
            if pk == "c":
                out.checkpoint = ev.get("data")
            elif pk.startswith("v:"):
                _apply(out.values, pk[2:], ev)
            elif pk.startswith("s:"):
                _apply(out.state, pk[2:], ev)
        out.end = batch.next.get(task, out.end)
        if not batch.records:
            return out
        start = format_token(batch.next)


def _apply(into: dict[str, Any], key: str, ev: dict[str, Any]) -> None:
    data = ev.get("data")
    if isinstance(data, dict) and "value" in data:
        into[key] = data["value"]
    else:  # a tombstone
        into.pop(key, None)


def changelog_events(
    name: str, generation: int, seq: int, out: Output, checkpoint: dict[str, Any],
    task: int = 0,
) -> list[dict[str, Any]]:
    """One commit's records: changed values, changed state, then the checkpoint."""
    source = f"tidings/views/{name}"
    events: list[dict[str, Any]] = []
    prefix = f"{name}.{generation}.{seq}." if task == 0 else f"{name}.{generation}.{task}.{seq}."

    def add(pk: str, etype: str, data: Any) -> None:
        ev: dict[str, Any] = {
            "specversion": "1.0",
            "id": prefix + str(len(events)),
            "source": source,
            "type": etype,
            "partitionkey": pk,
        }
        if data is not DELETED:
            ev["data"] = data
        events.append(ev)

    for key, value in out.values.items():
        add("v:" + key, "tidings.view.value", value if value is DELETED else {"value": value})
    for key, value in out.state.items():
        add("s:" + key, "tidings.view.value", value if value is DELETED else {"value": value})
    add("c", "tidings.view.checkpoint", checkpoint)
    return events
