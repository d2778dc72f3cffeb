"""Topics across nodes: each ``tidings serve`` node on one NATS server follows the
topics' bucket (``td_topics``) with a KV watch, so a topic made, grown or dropped
through one node is served by the other within about a second, with no restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from hubapi import publish, put_topic, read, read_all, unique
from hubproc import HubFactory, HubProcess
from natsproc import NatsServer

pytestmark = pytest.mark.timeout(120)

SEEN_WITHIN_S = 1.5  # "within about a second", with room for a loaded machine




async def topic_on(http: aiohttp.ClientSession, node: HubProcess, topic: str) -> Any:
    """The topic as ``node`` serves it; None where it answers 404."""
    async with http.get(f"{node.base_url}/v1/topics/{topic}") as resp:
        if resp.status == 404:
            return None
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def seen(check: Callable[[], Awaitable[bool]], what: str) -> float:
    """Seconds until ``check`` holds; fails past :data:`SEEN_WITHIN_S`."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < SEEN_WITHIN_S, f"{what}: not seen in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_a_topic_made_grown_and_dropped_on_one_node_is_seen_by_the_other(
    nodes: HubFactory, nats: NatsServer
) -> None:
    a = nodes.start("--backend", nats.url)
    b = nodes.start("--backend", nats.url)  # started before the topic exists
    topic = unique()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def partitions_on_b(n: int) -> bool:
            t = await topic_on(http, b, topic)
            return t is not None and len(t["partitions"]) == n

        await put_topic(http, a.base_url, topic, partitions=2)
        await seen(lambda: partitions_on_b(2), "made")
        # b publishes to it as the cluster holds it (no auto-creation refused)
        keyed = [{"type": "t", "partitionkey": f"k{i}", "data": i} for i in range(20)]
        sent = await publish(http, b.base_url, topic, *keyed)
        assert {s["partition"] for s in sent} == {0, 1}

        await put_topic(http, a.base_url, topic, partitions=4)
        await seen(lambda: partitions_on_b(4), "grown")
        # b follows the new partitions: a wait there wakes for a record a appends
        async def wait_on_b() -> dict[str, Any]:
            return await read(http, b.base_url, topic, partition=3, wait=10)

        waiting = asyncio.create_task(wait_on_b())
        await asyncio.sleep(0.2)
        for i in range(40):  # until one lands in partition 3
            [got] = await publish(http, a.base_url, topic, {"type": "t", "partitionkey": f"x{i}"})
            if got["partition"] == 3:
                break
        page = await asyncio.wait_for(waiting, 15)
        assert [r["offset"] for r in page["records"]] == [0]
        # and b's own publishes spread over all four
        spread = await publish(http, b.base_url, topic, *keyed)
        assert {s["partition"] for s in spread} == {0, 1, 2, 3}

        async with http.delete(f"{a.base_url}/v1/topics/{topic}") as resp:
            assert resp.status == 204, await resp.text()

        async def gone_on_b() -> bool:
            return await topic_on(http, b, topic) is None

        await seen(gone_on_b, "dropped")
        # b makes it again, anew (one partition), and a serves what b made
        [again] = await publish(http, b.base_url, topic, {"type": "t"})
        assert (again["partition"], again["offset"]) == (0, 0)

        async def remade_on_a() -> bool:
            t = await topic_on(http, a, topic)
            return t is not None and len(t["partitions"]) == 1

        await seen(remade_on_a, "made again")
        assert [r["event"]["id"] for r in await read_all(http, a.base_url, topic)] == [
            again["id"]
        ]
