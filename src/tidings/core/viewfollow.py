"""Keeping a view's materialized state up with its changelog, whoever appended to it.

Several hub nodes on one shared backend (NATS) serve the same views: a commit made
through one node lands in the changelog that every node reads. Each node applies
its own commits as they land (:meth:`tidings.core.views.Views.commit`); a
:class:`Follower` per view applies the rest: it waits on every changelog partition
past what the state reflects and, under the view's lock (so never in the middle of a
commit of this node), applies the records found there. A commit of this node first
applies the records of others below its own (:func:`catch_up`), so the state always
holds whole commits in changelog order. On one embedded hub every record is its own:
the follower finds nothing to apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson

from tidings.core.storage import PartitionStore
from tidings.errors import StorageUnavailable, TidingsError

if TYPE_CHECKING:
    from tidings.core.hub import Hub
    from tidings.core.viewstate import View

logger = logging.getLogger("tidings.views")

_BATCH = 1000
_WAIT_S = 5.0  # one wait on the changelog; then the layout is looked at again
_RETRIES = 50  # reads of a record known stored that come back empty (a replica behind)


async def catch_up(view: View, p: int, part: PartitionStore, until: int) -> bool:
    """Apply changelog partition ``p``'s records from what the state reflects up to
    ``until`` (under the view's lock); whether any was applied. A record known to be
    stored that no read answers in time: StorageUnavailable (the state stays whole,
    short of it)."""
    applied = False
    tries = 0
    while view.applied[p] < until:
        got = await part.read(view.applied[p], _BATCH)
        got = [r for r in got if r[0] < until]
        if not got:
            tries += 1
            if tries > _RETRIES:
                raise StorageUnavailable(
                    f"view {view.name!r}: changelog partition {p} holds offsets up to "
                    f"{until} that no read answered from {view.applied[p]}"
                )
            await part.wait(view.applied[p], 0.1)
            continue
        for o, ts, payload in got:
            view.apply(p, o, ts, orjson.loads(payload))
        applied = True
        await asyncio.sleep(0)  # others run meanwhile
    return applied


class Follower:
    """Applies what other nodes commit to one view (see the module doc)."""

    def __init__(
        self, hub: Hub, view: View, landed: Callable[[View], Awaitable[None]]
    ) -> None:
        self.hub = hub
        self.view = view
        self.landed = landed  # waits for this node's commit under way, if any
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task

    async def _run(self) -> None:
        view = self.view
        while not self.hub.closing:
            log = self.hub.topics.get(view.topic)
            if log is None or len(log.partitions) != len(view.applied):
                # dropped or laid out anew (a rebuild under way): wait for it to settle
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(view.pulse.wait(), 0.5)
                continue
            parts = list(log.partitions)
            try:
                if not await self._wait(parts):
                    await asyncio.sleep(0.05)  # a closed partition answers at once
                    continue
                async with view.lock:
                    await self.landed(view)
                    log = self.hub.topics.get(view.topic)
                    if log is None or list(log.partitions) != parts:
                        continue
                    moved = False
                    for p, part in enumerate(parts):
                        if view.applied[p] < part.end_offset:
                            moved = await catch_up(view, p, part, part.end_offset) or moved
                    if moved:
                        view.changed()
            except asyncio.CancelledError:
                raise
            except (TidingsError, OSError) as exc:
                logger.warning("view %r: following its changelog: %s", view.name, exc)
                await asyncio.sleep(1.0)

    async def _wait(self, parts: list[PartitionStore]) -> bool:
        """Whether a record past what the state reflects is readable on some partition,
        within one wait."""
        view = self.view
        if any(view.applied[p] < part.end_offset for p, part in enumerate(parts)):
            return True
        waits = [
            asyncio.ensure_future(part.wait(view.applied[p], _WAIT_S))
            for p, part in enumerate(parts)
        ]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        return any(not w.cancelled() and w.exception() is None and w.result() for w in done)
