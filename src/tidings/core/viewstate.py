"""One view's declaration and its state as the hub materializes it from the changelog.

:class:`View` holds what :mod:`tidings.core.views` declares, commits and rebuilds, what
:mod:`tidings.core.viewreads` serves and :mod:`tidings.core.viewrouting` routes: each
served key's latest value with the partition and offset of the record holding it,
each task's latest checkpoint, and how far each changelog partition is applied.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left, insort
from dataclasses import dataclass, field
from typing import Any

from tidings.core.viewmembers import Members
from tidings.core.viewrecords import Change, by_key_topic, changelog_topic

__all__ = ["View"]


@dataclass(slots=True)
class View:
    """One view's declaration and materialized state."""

    name: str
    kind: str
    inputs: list[str]
    app: str | None
    window: dict[str, Any] | None
    emit: str | None
    generation: int = 0
    partitioned: bool = False
    tasks: int = 1  # partitions of the changelog: one per input partition if partitioned
    # Repartitioned: the partitions of __view.{name}.by-key (stage 2 tasks 0..N-1), and
    # the input partitions routed by stage 1's tasks N, N+1, ... (0: not repartitioned).
    repartition: int = 0
    routers: list[tuple[str, int]] = field(default_factory=list)
    # As declared: True (as many as the input with the most, counted at each layout),
    # a number, or False; a rebuild lays the view out by it again.
    asked: int | bool = False
    # Routing tasks whose copies past their last checkpoint this hub has looked for
    # (see tidings.core.viewrouting.route_and_land).
    verified: set[int] = field(default_factory=set)
    already: dict[int, dict[str, tuple[int, int]]] = field(default_factory=dict)
    # key -> (value, changelog partition, offset)
    values: dict[str, tuple[Any, int, int]] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)  # the keys of values, sorted
    checkpoints: dict[int, dict[str, Any]] = field(default_factory=dict)  # task -> latest c
    checkpoint_offsets: dict[int, int] = field(default_factory=dict)
    commit_ms: dict[int, int] = field(default_factory=dict)  # task -> its last commit's time
    # Per changelog partition, the offset up to which the state reflects it.
    applied: list[int] = field(default_factory=lambda: [0])
    members: Members = field(default_factory=lambda: Members(1))
    failed: str | None = None  # why its changelog could not be read at start (503)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one commit or rebuild at a time
    # A commit's append and its apply, run apart from the caller (which may be
    # cancelled); whoever takes the lock next waits for it first.
    landing: asyncio.Task[int] | None = None
    pulse: asyncio.Event = field(default_factory=asyncio.Event)  # set (and replaced) on change

    @property
    def topic(self) -> str:
        return changelog_topic(self.name)

    @property
    def by_key(self) -> str:
        return by_key_topic(self.name)

    def declaration(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "inputs": list(self.inputs), "app": self.app,
            "window": self.window, "emit": self.emit, "generation": self.generation,
            "partitioned": self.partitioned, "tasks": self.tasks,
            "repartition": self.repartition, "routers": [list(r) for r in self.routers],
            "repartition_asked": self.asked,
        }  # fmt: skip

    def layout(self, tasks: int, repartition: int = 0,
               routers: list[tuple[str, int]] | None = None) -> None:
        """Empty the state for a changelog of ``tasks`` partitions."""
        self.repartition = repartition
        self.routers = list(routers or [])
        self.tasks = tasks
        self.reset()
        self.members.resize(tasks)

    def apply(self, partition: int, offset: int, ts: int, event: dict[str, Any]) -> Change | None:
        """Apply one record of changelog partition ``partition``; the served change it
        makes, if any."""
        self.applied[partition] = offset + 1
        pk = event.get("partitionkey")
        data = event.get("data")
        if pk == "c":
            if isinstance(data, dict):
                self.checkpoints[partition] = data
            self.checkpoint_offsets[partition] = offset
            self.commit_ms[partition] = ts
            return None
        if not isinstance(pk, str) or not pk.startswith("v:"):
            return None  # s: records are the processor's, not served
        key = pk[2:]
        if isinstance(data, dict) and "value" in data:
            if key not in self.values:
                insort(self.keys, key)
            self.values[key] = (data["value"], partition, offset)
            return Change(key, data["value"], False, offset, partition)
        if self.values.pop(key, None) is not None:
            del self.keys[bisect_left(self.keys, key)]
        return Change(key, None, True, offset, partition)

    def read_positions(self) -> dict[str, dict[str, int]]:
        """Per input, the next offset of each partition the tasks' last checkpoints
        name (each task names its own partitions)."""
        out: dict[str, dict[str, int]] = {}
        for task in sorted(self.checkpoints):
            inputs = self.checkpoints[task].get("inputs")
            for topic, at in (inputs if isinstance(inputs, dict) else {}).items():
                if isinstance(at, dict):
                    out.setdefault(topic, {}).update(at)
        return out

    def changed(self) -> None:
        """Wake whoever waits on this view (min_position, change feeds)."""
        pulse, self.pulse = self.pulse, asyncio.Event()
        pulse.set()

    def reset(self) -> None:
        self.verified.clear()
        self.already.clear()
        self.values.clear()
        self.keys.clear()
        self.checkpoints.clear()
        self.checkpoint_offsets.clear()
        self.commit_ms.clear()
        self.applied = [0] * self.tasks
