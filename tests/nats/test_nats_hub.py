"""Two ``tidings serve`` nodes on one NATS server serve one hub: the same hub id, the
records one node took read on the other, a live stream on one fed by publishes on the
other, and a publish over several partitions (a linked append) read whole; a node
started before a topic was made publishes to it as made (topics across nodes:
``test_nats_topics``). A node killed under load loses nothing acknowledged;
``tidings serve`` refuses a bad ``--backend``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
from hubapi import expect, publish, put_topic, read_all, unique
from hubproc import HubFactory, HubProcess, free_port, hub_env
from livehelp import Publisher, check_exactly_once

from tidings.cluster.natsproc import NatsServer

pytestmark = pytest.mark.timeout(120)




async def test_two_nodes_serve_one_hub(nodes: HubFactory, nats: NatsServer) -> None:
    a = nodes.start("--backend", nats.url)
    topic = unique()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await put_topic(http, a.base_url, topic, partitions=3)
        first = [
            {"type": "order.placed", "partitionkey": f"k{i}", "data": {"n": i}} for i in range(30)
        ]
        taken = await publish(http, a.base_url, topic, *first)
        b = nodes.start("--backend", nats.url)
        ids = []
        for node in (a, b):
            async with http.get(f"{node.base_url}/healthz") as resp:
                ids.append((await expect(resp, 200))["hub_id"])
        assert ids[0] == ids[1]
        # a publish over three partitions is one linked append; read whole on the other
        records = await read_all(http, b.base_url, topic)
        assert sorted(r["event"]["id"] for r in records) == sorted(e["id"] for e in taken)
        assert {r["partition"] for r in records} == {0, 1, 2}
        await live_on_b_sees_publishes_on_a(http, a, b, topic)


async def live_on_b_sees_publishes_on_a(
    http: aiohttp.ClientSession, a: HubProcess, b: HubProcess, topic: str
) -> None:
    url = f"{b.base_url}/v1/topics/{topic}/sse?from=latest"
    async with http.get(url, timeout=aiohttp.ClientTimeout(sock_read=20)) as resp:
        assert resp.status == 200
        await resp.content.readline()  # retry: the stream is open
        sent = await publish(http, a.base_url, topic, {"type": "order.paid", "data": {}})
        got = None
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data:"):
                got = orjson.loads(line[5:])
                break
    assert got is not None and got["event"]["id"] == sent[0]["id"]


async def test_a_node_started_before_a_topic_was_made_publishes_to_it_whole(
    nodes: HubFactory, nats: NatsServer
) -> None:
    """b started before a made the topic: b learns it from its watch of the topics
    (no auto-creation of one partition refused, as before it followed them) and
    publishes over both partitions. A creation that still loses the race is refused
    with 409, never shrinking the topic (``test_nats_storage``)."""
    a = nodes.start("--backend", nats.url)
    b = nodes.start("--backend", nats.url)
    topic = unique()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await put_topic(http, a.base_url, topic, partitions=2)
        await publish(http, a.base_url, topic, {"type": "order.placed", "data": {}})
        for _ in range(100):
            async with http.get(f"{b.base_url}/v1/topics/{topic}") as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.02)
        keyed = [{"type": "order.placed", "partitionkey": f"k{i}"} for i in range(10)]
        sent = await publish(http, b.base_url, topic, *keyed)
        assert {s["partition"] for s in sent} == {0, 1}
        assert len(await read_all(http, a.base_url, topic)) == 11


def serve_fails(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    argv = [sys.executable, "-m", "tidings", "serve", "--data-dir", str(tmp_path), *args]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env={**hub_env(), **(env or {})}
    )
    assert out.returncode == 2, out.stderr
    return out.stderr


@pytest.mark.timeout(300)  # five starts of the CLI, one of them waits for the 30 s deadline
def test_serve_refuses_a_bad_backend_and_replicas(tmp_path: Path, nats: NatsServer) -> None:
    assert "'redis://x:1' is not nats://HOST:PORT" in serve_fails(
        tmp_path, "--backend", "redis://x:1"
    )
    err = serve_fails(tmp_path, env={"TIDINGS_BACKEND": f"{nats.url},nats://h"})
    assert "'nats://h' is not nats://HOST:PORT" in err
    assert "--replicas must be 1, 3 or 5, not 2" in serve_fails(
        tmp_path, "--backend", nats.url, "--replicas", "2"
    )
    assert "--lease-time must be 0.1 to 3600 seconds, not 0" in serve_fails(
        tmp_path, "--backend", nats.url, "--lease-time", "0"
    )
    port = free_port()  # nothing listens there
    assert "cannot connect to NATS" in serve_fails(
        tmp_path, "--backend", f"nats://127.0.0.1:{port}"
    )


async def test_a_node_killed_under_load_loses_no_acknowledged_event(
    nodes: HubFactory, nats: NatsServer
) -> None:
    """SIGKILL of a node while a client publishes (retrying each event under its id
    until a 202): once it is back, every event is read once, offsets dense. What was
    acknowledged was in JetStream before the 202; the dedupe window the node rebuilds
    from the log answers a retry of one stored before the kill."""
    hub = nodes.start("--backend", nats.url)
    topic = unique()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await put_topic(http, hub.base_url, topic, partitions=2)
        pub = Publisher(hub.base_url, topic, 300, keys=4)
        task = asyncio.create_task(pub.run(http, deadline_s=100))
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while pub.done < 100:
                assert asyncio.get_running_loop().time() < deadline, f"{pub.done} published"
                await asyncio.sleep(0.02)
            hub.restart(hard=True)
            await task
        finally:
            task.cancel()
        check_exactly_once(await read_all(http, hub.base_url, topic), pub.ids)
