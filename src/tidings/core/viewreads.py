"""Reading views: one key, a page of keys, waits on input positions, the description
with lag, and the change feed over every partition of a changelog.

A view's changelog has one partition per task; a key lives in one task, so its
value and the position of the record holding it (``P:N``) come from one partition.
What a view reflects of its inputs is the union of its tasks' last checkpoints
(each names its own input partitions). Mixed into :class:`tidings.core.views.Views`.
"""

from __future__ import annotations

import asyncio
import contextlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from tidings.core.viewrecords import Change, change_of
from tidings.core.viewrouting import stages
from tidings.errors import BadRequest, StorageUnavailable, ViewNotFound

if TYPE_CHECKING:
    from tidings.core.hub import Hub
    from tidings.core.viewstate import View

MAX_SCAN = 1000


@dataclass(frozen=True, slots=True)
class Feed:
    """What :meth:`ViewReads.changes` answers: changes from a position, the position
    after them (per changelog partition), and ``reset`` when the cursor no longer fits
    the changelog (a rebuild): the reader takes a new snapshot."""

    changes: list[Change]
    next: dict[int, int]
    reset: bool = False


class ViewReads:
    """The reads of :class:`~tidings.core.views.Views`."""

    hub: Hub
    views: dict[str, View]

    def view(self, name: str) -> View:
        raise NotImplementedError

    async def ready(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def _check_loaded(self) -> None:
        raise NotImplementedError

    def get(self, name: str, key: str) -> tuple[Any, int, int]:
        """The value of ``key`` and the changelog partition and offset of its record."""
        view = self.view(name)
        found = view.values.get(key)
        if found is None:
            raise ViewNotFound(f"view {name!r} has no key {key!r}", view=name, key=key)
        return found

    def scan(
        self, name: str, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> tuple[list[tuple[str, Any, int, int]], str | None]:
        """Keys in order from ``prefix`` (past ``after``, the last key of the previous
        page), at most ``limit``, each ``(key, value, partition, offset)``; and the key
        to pass as ``after`` next (None: no more)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SCAN:
            raise BadRequest(f"limit must be from 1 to {MAX_SCAN}", field="limit")
        view = self.view(name)
        keys = view.keys
        i = bisect_left(keys, prefix) if after is None else bisect_right(keys, max(after, prefix))
        page: list[tuple[str, Any, int, int]] = []
        while i < len(keys) and keys[i].startswith(prefix) and len(page) < limit:
            key = keys[i]
            page.append((key, *view.values[key]))
            i += 1
        more = i < len(keys) and keys[i].startswith(prefix)
        return page, (page[-1][0] if more and page else None)

    def input_of(self, name: str, topic: str | None) -> str:
        """The input a ``min_position`` is about: ``topic``, or the only input."""
        view = self.view(name)
        if topic is None:
            if len(view.inputs) > 1:
                raise BadRequest(
                    f"view {name!r} has several inputs ({', '.join(view.inputs)}): "
                    "say which topic min_position is about with topic=",
                    field="topic",
                )
            return view.inputs[0]
        if topic not in view.inputs:
            raise BadRequest(
                f"topic {topic!r} is not an input of view {name!r} "
                f"(its inputs: {', '.join(view.inputs)})",
                field="topic",
            )
        return topic

    def reflects(self, name: str, topic: str, positions: dict[int, int]) -> bool:
        """Whether the view's tasks' last checkpoints cover every event of ``topic`` at
        or before ``positions`` (partition -> offset). For a repartitioned view, that
        its routing tasks have routed them (see :meth:`wait_for` for the rest)."""
        read = self.view(name).read_positions().get(topic, {})
        return all(int(read.get(str(p), 0)) > o for p, o in positions.items())

    async def wait_for(
        self, name: str, topic: str, positions: dict[int, int], timeout: float
    ) -> bool:
        """Wait up to ``timeout`` s until :meth:`reflects`; whether it does (after the
        changelogs are read at start). A repartitioned view then waits for its second
        stage to have processed the copies its routing tasks had published by then
        (their checkpoints' ``routed``): both stages reflect the positions."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.ready(timeout)

        async def until(reached: Callable[[], bool]) -> bool:
            while not reached():
                remaining = deadline - loop.time()
                if remaining <= 0 or self.hub.closing:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.view(name).pulse.wait(), remaining)
            return True

        if not await until(lambda: self.reflects(name, topic, positions)):
            return False
        view = self.view(name)
        if not view.repartition:
            return True
        target: dict[str, int] = {}
        for i, (t, p) in enumerate(view.routers):
            if t != topic or p not in positions:
                continue
            routed = view.checkpoints.get(view.repartition + i, {}).get("routed") or {}
            for q, o in routed.items():
                target[q] = max(target.get(q, 0), int(o))
        by_key = view.by_key

        def processed() -> bool:
            read = self.view(name).read_positions().get(by_key, {})
            return all(int(read.get(q, 0)) >= o for q, o in target.items())

        return await until(processed)

    def info(self, name: str) -> dict[str, Any]:
        return self._info(self.view(name))

    def _info(self, view: View) -> dict[str, Any]:
        read = view.read_positions()
        positions: dict[str, str | None] = {}
        lag: dict[str, int | None] = {}
        # A repartitioned view lags by what is not routed yet (per input) and by what
        # is routed and not processed yet (its repartition topic): both stages.
        for topic in [*view.inputs, *([view.by_key] if view.repartition else [])]:
            t = self.hub.topics.get(topic)
            at = read.get(topic, {})
            positions[topic] = ",".join(
                f"{p}:{o}" for p, o in sorted(at.items(), key=lambda po: int(po[0]))
            ) or None
            if t is None:
                lag[topic] = None
                continue
            lag[topic] = sum(
                max(0, part.end_offset - max(int(at.get(str(p), 0)), part.start_offset))
                for p, part in enumerate(t.partitions)
            )
        log = self.hub.topics.get(view.topic)
        ends = [part.end_offset for part in log.partitions] if log else [0] * view.tasks
        checkpoints = [
            {
                "task": task, "position": f"{task}:{view.checkpoint_offsets[task]}",
                "seq": cp.get("seq"), "owner": cp.get("owner"), "horizon": cp.get("horizon"),
                "last_commit": view.commit_ms.get(task),
            }
            for task, cp in sorted(view.checkpoints.items())
        ]  # fmt: skip
        latest = max(checkpoints, key=lambda c: c["last_commit"] or 0, default=None)
        failed = {} if view.failed is None else {"failed": view.failed}
        return failed | {
            "name": view.name, "kind": view.kind, "inputs": list(view.inputs), "app": view.app,
            "window": view.window, "emit": view.emit, "generation": view.generation,
            "partitioned": view.partitioned, "tasks": view.tasks, **stages(view),
            "keys": len(view.values), "positions": positions, "lag": lag,
            "last_commit": max(view.commit_ms.values(), default=None),
            "checkpoint": None if latest is None else {
                k: latest[k] for k in ("position", "seq", "owner", "horizon")
            },
            "checkpoints": checkpoints,
            "members": view.members.describe(self.hub.clock.time_ms())["members"],
            "changelog": {
                "topic": view.topic, "next_offset": sum(ends),
                "next": ",".join(f"{p}:{o}" for p, o in enumerate(ends)),
            },
        }  # fmt: skip

    # -- change feed ------------------------------------------------------------------

    def snapshot(self, name: str) -> tuple[int, dict[int, int], list[tuple[str, Any, int, int]]]:
        """``(generation, positions, entries)``: every served key, sorted, as of the
        changelog ``positions`` (partition -> offset); changes from there on follow
        with :meth:`changes`."""
        view = self.view(name)
        entries = [(k, *view.values[k]) for k in view.keys]
        return view.generation, dict(enumerate(view.applied)), entries

    async def changes(
        self, name: str, generation: int, at: dict[int, int], limit: int = 1000,
        wait_s: float = 0.0,
    ) -> Feed:
        """Served changes after changelog positions ``at`` of ``generation`` (waiting up
        to ``wait_s`` for one); ``reset`` if the changelog is not that one any more."""
        view = self.view(name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        at = dict(at)
        while True:
            log = self.hub.topics.get(view.topic)
            applied = dict(enumerate(view.applied))
            if log is None:  # dropped by a rebuild under way: a new snapshot once it is done
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(view.pulse.wait(), max(deadline - loop.time(), 0.01))
                return Feed([], applied, reset=True)
            parts = log.partitions
            if (
                view.generation != generation
                or set(at) != set(range(len(parts)))
                or not all(parts[p].start_offset <= o <= applied[p] for p, o in at.items())
            ):
                return Feed([], applied, reset=True)
            out: list[Change] = []
            read_any = False
            for p, part in enumerate(parts):
                offset = at[p]
                if offset >= applied[p]:
                    continue
                try:
                    got = await part.read(offset, limit)
                except StorageUnavailable:
                    if view.generation != generation:  # a rebuild closed it meanwhile
                        return Feed([], applied, reset=True)
                    raise
                read_any = read_any or bool(got)
                for o, _, payload in got:
                    if o >= applied[p]:  # compaction left a gap up to the end
                        offset = applied[p]
                        break
                    change = change_of(o, orjson.loads(payload), p)
                    if change is not None:
                        out.append(change)
                    offset = o + 1
                at[p] = offset
            if view.generation != generation:  # rebuilt while the reads were awaited
                return Feed([], applied, reset=True)
            if out:
                return Feed(out, at)
            if read_any:
                continue  # only checkpoints and state: read on
            remaining = deadline - loop.time()
            if remaining <= 0 or self.hub.closing:
                return Feed([], at)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(view.pulse.wait(), remaining)
            view = self.view(name)

    def list(self) -> list[dict[str, Any]]:  # last: the name shadows the builtin below it
        """Every view's :meth:`info`, by name."""
        self._check_loaded()
        return [self._info(self.views[name]) for name in sorted(self.views)]
