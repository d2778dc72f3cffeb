"""A replay request that comes while the dispatcher is still listing the dead letters
marked for replay (a store whose reads await, as NATS's do) lists them again: the dead
letter it marked is sent, not left marked until a restart or another replay."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from tidings.server.webhooks.dispatch import EndpointDispatcher


class SlowStore:
    """Dead letters whose listing takes a round trip (NATS KV and streams)."""

    def __init__(self) -> None:
        self.marked: list[int] = []

    async def dead_letters(
        self, endpoint: str, limit: int, before: Any, replaying: Any
    ) -> list[Any]:
        seen = list(self.marked)  # read at the server now...
        await asyncio.sleep(0.05)  # ...answered a round trip later
        return [SimpleNamespace(id=i) for i in seen]

    async def mark_replaying(self, ids: list[int]) -> None:
        self.marked += ids


async def test_a_replay_asked_during_a_listing_is_not_lost() -> None:
    store = SlowStore()
    service = SimpleNamespace(hub=SimpleNamespace(), store=store)
    ep = SimpleNamespace(
        id="ep", group="g", config=SimpleNamespace(rate_limit=None, concurrency=1, topics=[])
    )
    d = EndpointDispatcher(service, ep)  # type: ignore[arg-type]
    sent: list[int] = []

    async def resend(dead: Any) -> None:
        sent.append(dead.id)

    d._resend = resend  # type: ignore[method-assign]
    d.running = True
    await store.mark_replaying([1])
    d.replay_dead_letters()  # what service._replay_dead_letters does, for [1]
    await asyncio.sleep(0.01)  # the listing has read, its answer not back yet
    await store.mark_replaying([2])
    d.replay_dead_letters()  # ... and for [2]
    await asyncio.sleep(0.3)
    assert 2 in sent  # the second replay request is honoured
