"""Dedupe across nodes: two ``tidings serve`` nodes on one NATS server answer a
publish retried on either with the first one's positions, stored once. Each record's
``Nats-Msg-Id`` comes from its event id (and topic), and an event without a
``partitionkey`` goes to the partition its id picks, so a retry through any node lands
in the stream the first one did, within JetStream's duplicate window."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
import pytest
from hubapi import publish, put_topic, read_all, unique
from hubproc import HubFactory
from natsproc import NatsServer

from tidings import AsyncClient, TidingsError
from tidings.backends.nats.log import DUPLICATE_WINDOW_MS
from tidings.client import Reconnect
from tidings.core.hub import HubOptions

pytestmark = pytest.mark.timeout(180)




def test_the_duplicate_window_is_as_long_as_the_hubs_dedupe_window() -> None:
    """A retry through another node is answered for as long as one through this node."""
    assert HubOptions().dedupe_window_ms == DUPLICATE_WINDOW_MS


def ev(eid: str, **attrs: Any) -> dict[str, Any]:
    return {"type": "order.placed", "id": eid, "data": {"id": eid}, **attrs}


async def test_a_publish_repeated_on_another_node_answers_the_first_positions(
    nodes: HubFactory, nats: NatsServer
) -> None:
    a = nodes.start("--backend", nats.url)
    topic = unique()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await put_topic(http, a.base_url, topic, partitions=3)
        b = nodes.start("--backend", nats.url)
        publishes = [
            [ev("one")],  # one event, no key: the partition comes from its id
            [ev("keyed", partitionkey="k1")],
            [ev(f"run-{i}") for i in range(20)],  # a batch, no key: one partition
            [ev(f"spread-{i}", partitionkey=f"k{i}") for i in range(12)],  # a linked append
            [ev("mixed-0"), ev("mixed-1", partitionkey="k3")],  # the careful path
        ]
        firsts = [await publish(http, a.base_url, topic, *events) for events in publishes]
        stored = await read_all(http, a.base_url, topic)
        for events, first in zip(publishes, firsts, strict=True):
            again = await publish(http, b.base_url, topic, *events)
            assert again == [{**f, "duplicate": True} for f in first], events[0]["id"]
        # a batch of ids stored before and new ones: the new ones stored, once
        more = [ev("run-3"), ev("fresh-1"), ev("fresh-2")]
        answered = await publish(http, b.base_url, topic, *more)
        assert answered[0] == {**firsts[2][3], "duplicate": True}
        assert ["duplicate" in x for x in answered[1:]] == [False, False]
        records = await read_all(http, b.base_url, topic)
        got = Counter(r["event"]["id"] for r in records)
        assert len(records) == len(stored) + 2
        assert max(got.values()) == 1
        assert {r["partition"] for r in records} == {0, 1, 2}
        # the same batch again on the first node, whose own window never saw it: a
        # batch's events without a key go where its first id picks
        again = await publish(http, a.base_url, topic, *more)
        assert again == [{**x, "duplicate": True} for x in answered]


async def test_a_node_killed_mid_publish_loses_nothing_and_stores_nothing_twice(
    nodes: HubFactory, nats: NatsServer
) -> None:
    """Clients given both nodes publish (single events and batches, with and without
    keys) while the first node is killed with SIGKILL: each request cut short is sent
    again to the second node under the same ids. Every acknowledged event is stored
    exactly once."""
    a = nodes.start("--backend", nats.url)
    topic = unique()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await put_topic(http, a.base_url, topic, partitions=3)
    b = nodes.start("--backend", nats.url)
    acked: list[str] = []
    unknown: list[str] = []
    started = asyncio.Event()

    async def producer(k: int) -> None:
        reconnect = Reconnect(initial_delay=0.05, max_delay=0.5)
        async with AsyncClient([a.base_url, b.base_url], reconnect=reconnect) as hub:
            for n in range(60):
                key = {"key": f"k{n % 5}"} if k % 2 else {}
                try:
                    if n % 3 == 0:
                        batch = [
                            {"type": "t", "id": f"p{k}-{n}-{j}", "data": j,
                             **({"partitionkey": f"k{j}"} if k % 2 else {})}
                            for j in range(5)
                        ]  # fmt: skip
                        out = await hub.publish_many(topic, batch)
                        acked.extend(o["id"] for o in out)
                    else:
                        eid = f"p{k}-{n}"
                        out1 = await hub.publish(topic, "t", n, id=eid, **key)
                        acked.append(out1["id"])
                except TidingsError:  # every node failed this one: not acknowledged
                    unknown.append(f"p{k}-{n}")
                if n == 10:
                    started.set()

    tasks = [asyncio.create_task(producer(k)) for k in range(6)]
    try:
        await asyncio.wait_for(started.wait(), 60)
        await asyncio.sleep(0.2)
        a.kill()
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    finally:
        for t in tasks:
            t.cancel()
    assert len(acked) > 300, (len(acked), unknown)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        records = await read_all(http, b.base_url, topic)
    got = Counter(r["event"]["id"] for r in records)
    twice = sorted(i for i, c in got.items() if c > 1)
    assert not twice, f"stored twice: {twice[:10]}"
    missing = sorted(set(acked) - set(got))
    assert not missing, f"acknowledged, not stored: {missing[:10]}"
