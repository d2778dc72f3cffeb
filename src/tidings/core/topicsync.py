"""Topics made, grown or dropped by another process that shares the hub's storage.

Several nodes may serve one hub over a shared backend (NATS JetStream): each keeps
the topics it knows in memory. ``Storage.topic_changes`` tells a node of every
change to the topics' metadata from the time it loaded them (its own changes too);
:func:`follow_topics` reads each such topic again (``Storage.load_topic``) and makes
the hub hold it as the storage does, idempotently:

- a topic it does not know: its partitions opened (their tails followed), no
  metadata written (it is there already);
- one it knows with more partitions now: the new ones opened, and every consumer
  group of the topic given them from their start; retention and schema checks as
  saved;
- one dropped: forgotten here (its dedupe window, catalogue and index rows), its
  partitions closed; the storage deleted it already;
- a view's changelog made again, or saved at another generation than this node
  serves (a rebuild through another node): the changelog and the view's repartition
  topic opened anew, and the view read again from them (``Views.reload``).

Each change is applied under the hub's topic lock, so it finds the topics as a
creation or deletion of this node left them. A storage that no other process shares
has no changes to tell: the task ends at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from tidings.core.viewrecords import by_key_topic, changelog_topic, view_of

if TYPE_CHECKING:
    from tidings.core.hub import Hub

logger = logging.getLogger("tidings.hub")

RETRY_S = 1.0  # after the storage's watch failed (the backend unreachable)


async def follow_topics(hub: Hub) -> None:
    """Apply ``hub.storage.topic_changes()`` to ``hub`` until cancelled; a failed watch
    is started again after :data:`RETRY_S` (it goes on from the last change it told)."""
    while True:
        try:
            async for name in hub.storage.topic_changes():
                try:
                    await apply_change(hub, name)
                except Exception:
                    logger.exception("could not apply the change of topic %r", name)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("following the topics failed (%s); again in %.0f s", exc, RETRY_S)
            await asyncio.sleep(RETRY_S)


async def apply_change(hub: Hub, name: str) -> None:
    """Make ``hub`` hold topic ``name`` as the storage holds it now: read under the
    hub's topic lock, so no creation or deletion of this node comes between. A view
    whose changelog was made again is read again once the lock is let go (reading it
    may open topics)."""
    relaid = await _apply(hub, name)
    if relaid is not None:
        await hub.views.reload(relaid)


async def _apply(hub: Hub, name: str) -> str | None:
    async with hub._creating:
        if name in hub._deleting or name in hub.unavailable:
            return None  # this node's own deletion, or a topic it cannot open: left alone
        t = hub.topics.get(name)
        config = await hub.storage.load_topic(name)
        if config is None:
            if t is not None:
                await _forget(hub, name)
            return None
        from tidings.core.hub import _retention  # the hub imports this module

        partitions = int(config["partitions"])
        retention = _retention(config.get("retention"))
        schemas = str(config.get("schemas", "off"))
        view = _relaid_view(hub, name, config)
        if t is not None and view is not None:
            # Rebuilt through another node: its changelog (and repartition topic) were
            # dropped and made again, whether or not this node saw them gone.
            await _forget(hub, name)
            by_key = by_key_topic(view)
            if by_key in hub.topics:
                await _forget(hub, by_key)
            t = None
        if t is None:
            await hub._make_topic(name, partitions, retention, False, schemas)
            logger.info("topic %r made by another node: %d partitions", name, partitions)
            if view is not None or (view_of(name) in hub.views.views and _is_changelog(name)):
                return view_of(name)
            return None
        t.schemas = schemas
        if retention != t.retention:  # each partition's, as the storage opens them
            for i in range(len(t.partitions)):
                await hub.storage.open_partition(name, i, retention)
            t.retention = retention
        for i in range(len(t.partitions), partitions):
            part = await hub.storage.open_partition(name, i, retention)
            t.partitions.append(part)
            for group in t.groups.values():
                group.add_partitions({i: part.start_offset})
            logger.info("topic %r grown by another node: partition %d opened", name, i)
        return None


def _is_changelog(topic: str) -> bool:
    view = view_of(topic)
    return view is not None and topic == changelog_topic(view)


def _relaid_view(hub: Hub, topic: str, config: dict[str, Any]) -> str | None:
    """The view whose changelog ``topic`` is, if this node serves it at another
    generation than the one saved (a rebuild made through another node)."""
    if not _is_changelog(topic):
        return None
    name = view_of(topic)
    view = hub.views.views.get(name or "")
    decl = config.get("view")
    if view is None or not isinstance(decl, dict):
        return None
    return name if int(decl.get("generation", 0)) != view.generation else None


async def _forget(hub: Hub, name: str) -> None:
    """What ``Hub.delete_topic`` does here, without deleting what the storage holds.
    The caller holds the topic lock: a publish that makes the topic again meanwhile
    waits for it (instead of being refused as during a deletion of this node's)."""
    del hub.topics[name]
    hub.dedupe.drop_topic(name)
    hub.catalog.drop(name)
    await hub.index.forget(name)
    await hub.storage.forget_topic(name)
    for key in [k for k in hub._group_changed if k[0] == name]:
        hub._group_changed.pop(key).set()
    logger.info("topic %r dropped by another node", name)
