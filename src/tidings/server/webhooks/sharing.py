"""Endpoints shared by several nodes (NATS): each dispatched by the one that holds it.

With :class:`~tidings.core.webhooks.store.EndpointOwners`, every node of a hub knows
every endpoint (the store's ``changes`` keep its copies current), and only the node
that holds an endpoint's lease dispatches it and serves its consumer groups (the
endpoint's cursors: the hub's own groups, served where the webhook is). Every other
node forwards calls on it there (see ``WebhookService._forward``).

- **Taking over.** Each node tries, every quarter of the lease time, to claim each
  endpoint it does not dispatch; a claim succeeds once nobody holds it, or once the
  holder's lease has stood unrenewed for the lease time (it died, or cannot reach
  the cluster). The new holder loads the endpoint's groups as last saved (their
  positions, their nacked records and retry delays), and the attempts log's retry
  state, then dispatches: what the old holder leased and had not acked is delivered
  again (at least once, as after a restart).
- **Losing it.** A holder that could not renew its lease stops dispatching at once:
  it sends, acks and releases nothing more (the groups are the new holder's to save),
  and reloads the groups as saved, dropping its own leases of records. A dispatcher
  found running here without the lease is stopped so, and the endpoint claimed again.
- **Changes from elsewhere.** A node that does not dispatch an endpoint replaces its
  copy with each row written; the holder keeps its own (every change to its endpoint
  is forwarded to it), except a deletion, which stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from tidings.core.consuming import group_config
from tidings.core.groups import ConsumerGroup
from tidings.core.webhooks.config import Endpoint
from tidings.core.webhooks.store import EndpointOwners

if TYPE_CHECKING:
    from tidings.server.webhooks.dispatch import EndpointDispatcher
    from tidings.server.webhooks.service import WebhookService

logger = logging.getLogger("tidings.webhooks")


class SharedEndpoints:
    """The loops of one node: claiming endpoints, following changes, letting go."""

    def __init__(
        self, service: WebhookService, owners: EndpointOwners, claim_every_s: float = 2.5
    ) -> None:
        self.service = service
        self.owners = owners
        lease_s = getattr(owners, "lease_s", None)
        self.claim_every_s = lease_s / 4 if isinstance(lease_s, (int, float)) else claim_every_s
        self._tasks: list[asyncio.Task[None]] = []
        self._abandoning: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.owners.start(self.service.run_here, self._lost)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow()), loop.create_task(self._claim_loop())]

    async def stop(self) -> None:
        tasks = self._tasks + list(self._abandoning)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []

    # -- taking over -----------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while True:
            for id in list(self.service.endpoints):
                d = self.service.dispatchers.get(id)
                if d is not None and self.owners.holds(id):
                    continue
                try:
                    if d is not None:  # its lease is gone: stop it, then claim afresh
                        await self._abandon(id, d)
                    if await self.owners.claim(id):
                        await self.take_over(id)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("webhook %s: taking over its dispatch failed", id)
            await asyncio.sleep(self.claim_every_s)

    async def take_over(self, id: str) -> None:
        """Dispatch an endpoint this node has claimed, from its groups as saved (if no
        dispatcher of it runs here yet)."""
        s = self.service
        async with s._changing:
            ep = s.endpoints.get(id)
            if ep is None:  # deleted meanwhile
                await self.owners.release(id)
                return
            if not self.owners.holds(id):
                return
            d = s.dispatchers.get(id)
            if d is not None:
                if d.running:
                    return
                del s.dispatchers[id]  # halted when its lease was lost: not its groups
                await d.stop(grace_s=0, give_back=False)
            await self.load_groups(ep)
            await s._run(ep, resume=True)
            logger.info("webhook %s: dispatched from this node now", id)

    async def load_groups(self, ep: Endpoint) -> None:
        """The endpoint's groups as last saved, in place of this node's copies."""
        hub = self.service.hub
        saved = {
            topic: (cfg, positions, stats)
            for topic, name, cfg, positions, stats in await hub.storage.load_groups()
            if name == ep.group
        }
        for topic in ep.config.topics:
            t = hub.topics.get(topic)
            if t is None:
                continue  # deleted (or not known here): its pump waits for it
            row = saved.get(topic)
            if row is None:
                t.groups.pop(ep.group, None)
                await self.service.follow(ep, topic)
                continue
            cfg, positions, stats = row
            group = ConsumerGroup(topic, ep.group, group_config(cfg), positions, stats)
            hub._fill_positions(t, group)
            t.groups[ep.group] = group

    # -- losing it ---------------------------------------------------------------------------

    def _lost(self, id: str) -> None:
        d = self.service.dispatchers.get(id)
        if d is None:
            return
        d.halt()  # now: no send or ack more, before its stop gets its turn
        task = asyncio.get_running_loop().create_task(self._abandon(id, d))
        self._abandoning.add(task)
        task.add_done_callback(self._abandoning.discard)

    async def _abandon(self, id: str, d: EndpointDispatcher) -> None:
        s = self.service
        async with s._changing:
            if s.dispatchers.get(id) is not d:
                return  # stopped or replaced meanwhile
            del s.dispatchers[id]
            d.halt()
            logger.warning("webhook %s: lease lost; another node dispatches it", id)
            await d.stop(grace_s=0, give_back=False)
            with contextlib.suppress(Exception):
                await self.load_groups(d.ep)

    # -- changes from elsewhere -----------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            try:
                async for id, row in self.owners.changes():
                    async with self.service._changing:
                        await self._changed(id, row)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("following webhook changes failed; following again")
                await asyncio.sleep(1.0)

    async def _changed(self, id: str, row: dict[str, Any] | None) -> None:
        s = self.service
        d = s.dispatchers.get(id)
        if d is not None:
            if row is not None:
                return  # its own write, or one every change to it is forwarded past
            del s.dispatchers[id]  # deleted on a node that did not see it held
            await d.stop(grace_s=0)
            s.endpoints.pop(id, None)
            await self.owners.release(id)
            return
        old = s.endpoints.pop(id, None)
        fresh = None if row is None else Endpoint.from_row(row, s._health())
        if fresh is not None:
            s.endpoints[id] = fresh
        if old is not None:  # this node's copies of groups the holder deleted
            kept = set(fresh.config.topics) if fresh is not None else set()
            for topic in set(old.config.topics) - kept:
                t = s.hub.topics.get(topic)
                if t is not None:
                    t.groups.pop(old.group, None)


__all__ = ["SharedEndpoints"]
