"""Hub nodes on a 3-server NATS cluster (R3 streams), killed with SIGKILL under load.

Two ``tidings serve`` nodes share the cluster. An SDK client given both URLs
publishes with ids of its own while a WebSocket subscription (the SDK's) and an
SSE stream (read by hand, resuming with ``Last-Event-ID``) follow the topic; the
node they all talk to is killed. The client fails over to the other node, the
subscriptions resume there, and: every event the client saw acknowledged is stored
once and readable from both nodes (the killed one restarted), and each live
reader got every record once, in offset order per partition, with no gap.

Then the NATS server leading the topic's streams is killed under the same load:
publishes stall for the election, then go on; nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from hubapi import put_topic, read_all, unique
from hubproc import HubFactory, HubProcess
from livehelp import check_exactly_once
from natsproc import NatsCluster

from tidings import AsyncClient
from tidings.client.nodes import Reconnect

pytestmark = pytest.mark.timeout(240)

EVENTS = 600
PARTITIONS = 2




def start_node(nodes: HubFactory, cluster: NatsCluster) -> HubProcess:
    return nodes.start("--backend", ",".join(cluster.urls), "--replicas", "3")


class Producer:
    """Publishes ``EVENTS`` keyed events through one SDK client given every node,
    one at a time; ``acked`` holds the ids of those answered 202."""

    def __init__(self, urls: list[str], topic: str) -> None:
        self.urls = urls
        self.topic = topic
        self.acked: list[str] = []

    async def run(self, deadline_s: float) -> None:
        quick = Reconnect(initial_delay=0.05, max_delay=0.5)
        async with AsyncClient(self.urls, timeout=10, reconnect=quick) as client:
            end = time.monotonic() + deadline_s
            for i in range(EVENTS):
                event_id = f"{self.topic}-{i}"
                while True:
                    assert time.monotonic() < end, f"{len(self.acked)} of {EVENTS} acknowledged"
                    try:
                        await client.publish(
                            self.topic, "order.placed", {"n": i}, key=f"k{i % 5}", id=event_id
                        )
                        break
                    except Exception:  # every node failed this once: try again
                        await asyncio.sleep(0.2)
                self.acked.append(event_id)


async def sse_records(
    http: aiohttp.ClientSession, urls: list[str], topic: str, want: int, deadline_s: float
) -> list[dict[str, Any]]:
    """An SSE reader that moves to the next URL when its stream breaks and resumes
    with ``Last-Event-ID``, until it has ``want`` records."""
    got: list[dict[str, Any]] = []
    last: str | None = None
    end = time.monotonic() + deadline_s
    node = 0
    while len(got) < want:
        assert time.monotonic() < end, f"SSE got {len(got)} of {want}"
        url = f"{urls[node % len(urls)]}/v1/topics/{topic}/sse?from=earliest"
        headers = {"Last-Event-ID": last} if last else {}
        try:
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                fields: dict[str, str] = {}
                async for raw in resp.content:
                    line = raw.decode().rstrip("\n")
                    if line:
                        if not line.startswith(":"):
                            name, _, value = line.partition(":")
                            fields[name] = value.removeprefix(" ")
                        continue
                    if "data" in fields:
                        r = orjson.loads(fields["data"])
                        got.append(
                            {"id": r["event"]["id"], "partition": r["partition"],
                             "offset": r["offset"]}
                        )  # fmt: skip
                        last = fields["id"]
                        if len(got) >= want:
                            return got
                    fields = {}
        except (TimeoutError, aiohttp.ClientError):
            pass
        node += 1
        await asyncio.sleep(0.1)
    return got


async def ws_records(urls: list[str], topic: str, want: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    quick = Reconnect(initial_delay=0.05, max_delay=0.5)
    async with AsyncClient(urls, timeout=10, reconnect=quick) as client:
        sub = client.subscribe(topic, start="earliest", reconnect=quick)
        async for record in sub:
            got.append(
                {"id": record.event.id, "partition": record.partition, "offset": record.offset}
            )
            if len(got) >= want:
                break
    return got


def check_in_order(records: list[dict[str, Any]], ids: list[str], what: str) -> None:
    """Each id once, and per partition the offsets dense from 0 (no gap, no repeat)."""
    got = [r["id"] for r in records]
    assert sorted(got) == sorted(ids), f"{what}: {len(got)} records for {len(ids)} ids"
    for p in range(PARTITIONS):
        offsets = [r["offset"] for r in records if r["partition"] == p]
        assert offsets == list(range(len(offsets))), f"{what}: partition {p} {offsets[:20]}"


@contextlib.asynccontextmanager
async def readers(urls: list[str], topic: str) -> AsyncIterator[list[asyncio.Task[Any]]]:
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
    tasks = [
        asyncio.create_task(ws_records(urls, topic, EVENTS)),
        asyncio.create_task(sse_records(http, urls, topic, EVENTS, 180)),
    ]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        await http.close()


async def wait_for(producer: Producer, count: int, limit_s: float = 60) -> None:
    end = time.monotonic() + limit_s
    while len(producer.acked) < count:
        assert time.monotonic() < end, f"{len(producer.acked)} acknowledged"
        await asyncio.sleep(0.02)


async def test_a_killed_hub_node_loses_nothing_and_its_clients_go_on_elsewhere(
    cluster: NatsCluster, nodes: HubFactory
) -> None:
    a = start_node(nodes, cluster)
    topic = unique()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await put_topic(http, a.base_url, topic, partitions=PARTITIONS)
        b = start_node(nodes, cluster)
        urls = [a.base_url, b.base_url]
        await wait_known(http, b.base_url, topic)
        producer = Producer(urls, topic)
        async with readers(urls, topic) as (ws, sse):
            publishing = asyncio.create_task(producer.run(180))
            await wait_for(producer, EVENTS // 3)
            a.kill()  # SIGKILL: the node every client was on
            await asyncio.wait_for(publishing, 180)
            live_ws = await asyncio.wait_for(ws, 60)
            live_sse = await asyncio.wait_for(sse, 60)
        a.start()
        for node in (a, b):
            check_exactly_once(await read_all(http, node.base_url, topic), producer.acked)
    check_in_order(live_ws, producer.acked, "WebSocket")
    check_in_order(live_sse, producer.acked, "SSE")


async def test_a_killed_stream_leader_loses_no_acknowledged_event(
    cluster: NatsCluster, nodes: HubFactory
) -> None:
    a = start_node(nodes, cluster)
    topic = unique()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await put_topic(http, a.base_url, topic, partitions=PARTITIONS)
        b = start_node(nodes, cluster)
        urls = [a.base_url, b.base_url]
        await wait_known(http, b.base_url, topic)
        producer = Producer(urls, topic)
        async with readers(urls, topic) as (ws, sse):
            publishing = asyncio.create_task(producer.run(180))
            await wait_for(producer, EVENTS // 3)
            leader = await stream_leader(cluster, topic)
            cluster.by_name(leader).kill()
            killed_at = len(producer.acked)
            await asyncio.wait_for(publishing, 180)
            assert len(producer.acked) == EVENTS > killed_at  # publishes went on after it
            live_ws = await asyncio.wait_for(ws, 60)
            live_sse = await asyncio.wait_for(sse, 60)
        for node in (a, b):
            check_exactly_once(await read_all(http, node.base_url, topic), producer.acked)
    check_in_order(live_ws, producer.acked, "WebSocket")
    check_in_order(live_sse, producer.acked, "SSE")


async def wait_known(http: aiohttp.ClientSession, base: str, topic: str) -> None:
    """Until node ``base`` serves ``topic`` (made on another node)."""
    end = time.monotonic() + 30
    while True:
        async with http.get(f"{base}/v1/topics/{topic}") as resp:
            if resp.status == 200:
                body = await resp.json()
                if len(body["partitions"]) == PARTITIONS:
                    return
        assert time.monotonic() < end, f"{base} does not know {topic}"
        await asyncio.sleep(0.2)


async def stream_leader(cluster: NatsCluster, topic: str) -> str:
    """The server name leading partition 0's stream, as JetStream reports it."""
    import nats

    from tidings.backends.nats.names import stream_name

    nc = await nats.connect(servers=cluster.urls, connect_timeout=5)
    try:
        info = await nc.jetstream().stream_info(stream_name(topic, 0))
        assert info.cluster is not None and info.cluster.leader
        return str(info.cluster.leader)
    finally:
        await nc.close()
