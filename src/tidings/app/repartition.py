"""A repartitioned view's routing tasks (stage 1): each input partition, keyed anew.

A view declared ``repartition`` (its key is not its events' ``partitionkey``) runs
as two stages of tasks that the app's processes share through the hub
(:mod:`tidings.core.viewrouting` describes them). Its view tasks are
:class:`~tidings.app.processor.TaskRunner` s over ``__view.{name}.by-key``; its
routing tasks are :class:`RouterRunner` s. A routing task's session:

1. Declare the view (its generation and layout: which input partition this task
   routes) and read the task's changelog partition for its last checkpoint: the
   next offset of that input partition to route.
2. Read the input partition from there (of the view's ``types``); for each event
   compute the view's key (None: not for this view, nothing to route) and make a
   copy keyed by it, with an id derived from where it was read
   (``{view}.{generation}.{topic}.{partition}.{offset}``), its ``time`` kept, and
   its own id and partitionkey (and topic, when the view has several inputs)
   recorded with it (:func:`tidings.core.viewrouting.make_copy`).
3. Commit the copies with a checkpoint naming the next offset (``route``): the hub
   publishes the copies, then appends the checkpoint, compared and set as any
   commit. A crash (of this process or of the hub) before the checkpoint redoes
   the read: the copies get the same ids and the hub's dedupe stores none twice.
   A 409 (the task moved, or a rebuild) starts a new session, as for a view task.

Copies are published in the order they were read, so a key's events keep their
order within an input partition; the repartition topic's order, once written, is
what every replay of stage 2 reads.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tidings.app.changelog import READ_LIMIT, changelog_events, load_changelog
from tidings.app.processor import _ROUND_INTERVAL_S, TaskRunner, _Gone, _Reload
from tidings.app.transport import TimedBatch
from tidings.core.positions import format_token
from tidings.core.viewrouting import make_copy
from tidings.errors import NotFound
from tidings.streams import Output
from tidings.streams.eventview import EventView

__all__ = ["ROUTE_LIMIT", "RouterRunner"]

logger = logging.getLogger("tidings.app")

ROUTE_LIMIT = 1000  # events read, and copies sent, per routing commit at most
_GENERATION_CHECK_S = 2.0


class RouterRunner(TaskRunner):
    """One routing task of a repartitioned view: an input partition, keyed by the
    view's key into its repartition topic (see the module docstring)."""

    async def _session(self) -> None:
        proc = self.processor
        spec, t, task = proc.spec, self.transport, self.task
        assert task is not None and spec.route_key is not None
        info = await t.put_view(spec.name, spec.declaration)
        generation = int(info["generation"])
        stages = info.get("repartition") or {}
        first = int(stages.get("partitions", 0))
        routers = stages.get("routers") or []
        if not stages or not first <= task < first + len(routers):
            raise _Gone(f"task {task} routes no input partition any more")
        topic, partition = str(routers[task - first][0]), int(routers[task - first][1])
        proc.generation = generation
        loaded = await load_changelog(t, spec.name, task)
        ckpt = loaded.checkpoint or {}
        if ckpt and int(ckpt.get("generation", -1)) != generation:
            raise _Reload(f"the changelog is of generation {ckpt.get('generation')}")
        at: int | None = ((ckpt.get("inputs") or {}).get(topic) or {}).get(str(partition))
        self.committed = {} if at is None else {topic: {str(partition): at}}
        expect, seq = loaded.end, int(ckpt.get("seq", -1)) + 1
        key, several = spec.route_key, len(spec.inputs) > 1
        prefix = f"{spec.name}.{generation}.{topic}.{partition}."
        loop = asyncio.get_running_loop()
        last_check = loop.time()
        idle = full = False
        read_started = -_ROUND_INTERVAL_S
        while not self._stopping:
            start = "earliest" if at is None else format_token({partition: at})
            limit = min(ROUTE_LIMIT, READ_LIMIT, self.commit_records)
            if not idle and not full:  # events flow: a read at most every _ROUND_INTERVAL_S
                pause = read_started + _ROUND_INTERVAL_S - loop.time()
                if pause > 0:
                    await self._pause(pause)
                if self._stopping:
                    break
            read_started = loop.time()
            batch = await self._read(topic, start, limit, partition, idle)
            if batch is None:
                break  # stopping
            after = batch.next.get(partition, at)
            if not batch.records and after == at:
                # Everything appended before the read's horizon is routed.
                self.settled_horizon = batch.horizon
                idle = True
                if loop.time() - last_check >= _GENERATION_CHECK_S:
                    last_check = loop.time()
                    await self._check_generation(generation)
                continue
            idle, full = False, len(batch.records) >= limit
            copies: list[dict[str, Any]] = []
            for _, offset, _, ev in batch.records:
                k = key(EventView(ev))
                if k is None:
                    continue  # not for this view
                copies.append(make_copy(ev, prefix + str(offset), str(k),
                                        topic if several else None))
            checkpoint = {
                "generation": generation, "seq": seq, "owner": self.owner,
                "inputs": {topic: {str(partition): after}},
            }  # fmt: skip
            events = changelog_events(spec.name, generation, seq, Output(), checkpoint, task)
            expect = await t.commit_view(spec.name, generation, expect, events, task, copies)
            seq += 1
            at = after
            self.committed = {topic: {str(partition): int(after or 0)}}
            self.settled_horizon = batch.horizon
            self.failures = 0
            proc.processed += len(batch.records)
            proc.commits += 1

    async def _read(
        self, topic: str, start: str, limit: int, partition: int, wait: bool
    ) -> TimedBatch | None:
        """One read of the input partition; waiting for new events if ``wait``, until
        they come or the task stops (None)."""
        read = self.transport.read_timed(
            topic, start, limit, self.poll_wait if wait else 0, self.processor.spec.types,
            partition,
        )
        if not wait:
            return await read
        reading = asyncio.ensure_future(read)
        stop = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({reading, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not reading.done():
                reading.cancel()
        if reading.cancelled() or not reading.done():
            return None
        return reading.result()

    async def _check_generation(self, generation: int) -> None:
        """While idle, notice a rebuild (which no commit of ours would meet)."""
        try:
            info = await self.transport.view_info(self.processor.spec.name)
        except NotFound as exc:
            raise _Reload("the view is gone") from exc
        if int(info.get("generation", generation)) != generation:
            raise _Reload(f"the view is now of generation {info['generation']}")
