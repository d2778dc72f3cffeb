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

A view declared through another node after this one started is found by name on
first use (:func:`adopt`): its declaration is in its changelog topic's saved config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from tidings.core.storage import PartitionStore
from tidings.core.viewrecords import by_key_topic, changelog_topic
from tidings.core.viewstate import View
from tidings.errors import StorageUnavailable, TidingsError

if TYPE_CHECKING:
    from tidings.core.hub import Hub
    from tidings.core.views import Views

logger = logging.getLogger("tidings.views")

_BATCH = 1000
_WAIT_S = 5.0  # one wait on the changelog; then the layout is looked at again
_RETRIES = 50  # reads of a record known stored that come back empty (a replica behind)


async def catch_up(view: View, p: int, part: PartitionStore, until: int) -> bool:
    """Apply changelog partition ``p``'s records from what the state reflects up to
    ``until`` (under the view's lock); whether any was applied. Each commit's records
    are applied together, with no await between them (reads of the view do not take
    its lock), so a reader never sees part of a commit however the reads cut it. A
    record known to be stored that no read answers in time: StorageUnavailable (the
    state stays whole, short of it)."""
    applied = False
    tries = 0
    pending: list[tuple[int, int, dict[str, Any]]] = []  # read past the last whole commit
    at = view.applied[p]
    while at < until:
        got = await part.read(at, _BATCH)
        if got and got[0][0] >= until:  # a gap up to it: nothing below it to apply
            at = until
            break
        got = [r for r in got if r[0] < until]
        if not got:
            tries += 1
            if tries > _RETRIES:
                raise StorageUnavailable(
                    f"view {view.name!r}: changelog partition {p} holds offsets up to "
                    f"{until} that no read answered from {at}"
                )
            await part.wait(at, 0.1)
            continue
        pending += [(o, ts, orjson.loads(payload)) for o, ts, payload in got]
        at = got[-1][0] + 1
        ends = [i for i, (_, _, e) in enumerate(pending) if e.get("partitionkey") == "c"]
        if ends:  # whole commits, each ending at its checkpoint
            for o, ts, event in pending[: ends[-1] + 1]:
                view.apply(p, o, ts, event)
            del pending[: ends[-1] + 1]
            applied = True
        await asyncio.sleep(0)  # others run meanwhile
    for o, ts, event in pending:  # past the last checkpoint (a commit is one append)
        view.apply(p, o, ts, event)
        applied = True
    view.applied[p] = max(view.applied[p], at)
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
            except Exception:
                logger.exception("view %r: following its changelog failed", view.name)
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


def view_from(name: str, decl: dict[str, Any], tasks: int) -> View:
    """View ``name`` as its saved declaration says, laid out over ``tasks`` changelog
    partitions (its state empty: read from the changelog next)."""
    view = View(
        name, decl["kind"], list(decl["inputs"]), decl.get("app"), decl.get("window"),
        decl.get("emit"), int(decl.get("generation", 0)), bool(decl.get("partitioned", False)),
    )  # fmt: skip
    # A changelog made before views had tasks has one partition: one task.
    routers = [(str(t), int(p)) for t, p in decl.get("routers") or []]
    view.layout(tasks, int(decl.get("repartition") or 0), routers)
    asked = decl.get("repartition_asked", view.repartition or False)
    view.asked = asked if isinstance(asked, bool | int) else view.repartition
    return view


async def adopt(views: Views, name: str) -> None:
    """Know view ``name`` if the storage holds its declaration (declared through another
    node sharing it): its changelog (and repartition topic, and the inputs this node
    does not know) opened here, read, and followed. Nothing if there is none (the
    caller answers 404 or declares it)."""
    from tidings.core.hub import _retention  # the hub imports this module

    hub = views.hub
    async with views._declaring:
        if name in views.views:
            return
        topics = await hub.storage.load_topics()
        cfg = topics.get(changelog_topic(name)) or {}
        decl = cfg.get("view")
        if not isinstance(decl, dict) or changelog_topic(name) in hub.unavailable:
            return
        # Its inputs too, if made through another node since (reads wait on them).
        inputs = [str(t) for t in decl.get("inputs") or []]
        for topic in (changelog_topic(name), by_key_topic(name), *inputs):
            saved = topics.get(topic)
            if saved is not None and topic not in hub.topics and topic not in hub.unavailable:
                await hub._open_topic(
                    topic, int(saved["partitions"]), _retention(saved.get("retention")),
                    save=False, schemas=str(saved.get("schemas", "off")),
                )  # fmt: skip
        view = view_from(name, decl, len(hub.topic(changelog_topic(name)).partitions))
        await views._load(view)
        views.views[name] = view
        views._follow(view)
        logger.info("view %r declared through another node: known here now", name)
