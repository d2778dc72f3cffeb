"""A view served by two ``tidings serve`` nodes on one NATS server: a commit's compare
and set is JetStream's (the append carries ``Nats-Expected-Last-Sequence``), so
commits alternating through the two nodes with the right ``expect`` all land, and of
two commits at one offset through the two nodes at once exactly one lands and the
other gets 409 with the changelog's end; each node applies the commits made through
the other, and a read with ``min_position`` on one waits for a commit made on the
other. A view declared through one node after the other started is found by name on
the other at its first use."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import orjson
import pytest
from hubapi import expect, expect_problem, poll_until, publish, put_topic, read_all, unique
from hubproc import HubFactory, HubProcess
from viewhelp import commit_events

from tidings.cluster.natsproc import NatsServer

pytestmark = pytest.mark.timeout(180)




async def commit(
    http: aiohttp.ClientSession, node: HubProcess, name: str, at: int, seq: int,
    values: dict[str, Any], inputs: dict[str, dict[str, int]],
) -> tuple[int, Any]:  # fmt: skip
    body = {"generation": 0, "expect": at, "events": commit_events(name, 0, seq, values, inputs)}
    async with http.post(
        f"{node.base_url}/v1/views/{name}/commit",
        data=io.BytesIO(orjson.dumps(body)),
        headers={"content-type": "application/json"},
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def value_at(
    http: aiohttp.ClientSession, node: HubProcess, name: str, key: str, position: str
) -> Any:
    """The key's value once the view reflects input ``position`` (waits up to 20 s)."""
    url = f"{node.base_url}/v1/views/{name}/keys/{key}"
    async with http.get(url, params={"min_position": position, "wait": "20"}) as resp:
        return (await expect(resp, 200))["value"]


async def test_a_view_is_one_view_across_two_nodes(nodes: HubFactory, nats: NatsServer) -> None:
    a = nodes.start("--backend", nats.url)
    name, topic = unique("v"), unique()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        await put_topic(http, a.base_url, topic)
        spec = {"kind": "view", "inputs": [topic], "app": "tests"}
        async with http.put(f"{a.base_url}/v1/views/{name}", json=spec) as resp:
            await expect(resp, 201)
        b = nodes.start("--backend", nats.url)
        both = (a, b)

        # Commits alternating through the two nodes, each at the end the last answered:
        # every one lands, and each node reads what the other committed (min_position
        # waits for it).
        at, seq = 0, 0
        for i in range(6):
            [placed] = await publish(http, a.base_url, topic, {"type": "stock.set"})
            node = both[i % 2]
            status, body = await commit(
                http, node, name, at, seq, {"k": i, f"only-{i}": i},
                {topic: {"0": placed["offset"] + 1}},
            )  # fmt: skip
            assert status == 200, body
            assert body == {"offset": at, "next": at + 3}
            at, seq = body["next"], seq + 1
            position = f"0:{placed['offset']}"
            for reader in (both[(i + 1) % 2], node):
                assert await value_at(http, reader, name, "k", position) == i
                assert await value_at(http, reader, name, f"only-{i}", position) == i

        # Two commits at one offset through the two nodes at once: exactly one lands,
        # the other gets the end the winner left.
        for r in range(5):
            [placed] = await publish(http, b.base_url, topic, {"type": "stock.set"})
            inputs = {topic: {"0": placed["offset"] + 1}}
            answers = await asyncio.gather(*(
                commit(http, node, name, at, seq, {"k": f"{r}-{who}"}, inputs)
                for who, node in (("a", a), ("b", b))
            ))  # fmt: skip
            assert sorted(status for status, _ in answers) == [200, 409], answers
            won = next(body for status, body in answers if status == 200)
            lost = next(body for status, body in answers if status == 409)
            assert won == {"offset": at, "next": at + 2}
            assert (lost["field"], lost["next_offset"], lost["generation"]) == ("expect", at + 2, 0)
            winner = "ab"[[status for status, _ in answers].index(200)]
            at, seq = won["next"], seq + 1
            position = f"0:{placed['offset']}"
            got = [await value_at(http, node, name, "k", position) for node in both]
            assert got == [f"{r}-{winner}"] * 2

        # What both nodes serve is the changelog: every commit once, none lost.
        records = await read_all(http, a.base_url, f"__view.{name}")
        assert [rec["offset"] for rec in records] == list(range(at))
        for node in both:
            async with http.get(f"{node.base_url}/v1/views/{name}") as resp:
                info = await expect(resp, 200)
            assert info["changelog"]["next_offset"] == at and info["keys"] == 7
        # A stale expect on either node: 409 naming the end, nothing stored.
        for node in both:
            status, body = await commit(http, node, name, at - 1, seq, {"k": "late"}, {})
            assert status == 409 and body["next_offset"] == at, body
        async with http.get(f"{b.base_url}/v1/views/{name}/keys/k") as resp:
            assert (await expect(resp, 200))["value"] != "late"
        async with http.get(f"{a.base_url}/v1/views/{name}/keys/nope") as resp:
            await expect_problem(resp, 404)


async def test_a_view_declared_on_one_node_is_found_on_the_other(
    nodes: HubFactory, nats: NatsServer
) -> None:
    a = nodes.start("--backend", nats.url)
    b = nodes.start("--backend", nats.url)
    name, topic = unique("v"), unique()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        async with http.get(f"{b.base_url}/v1/views/{name}") as resp:
            await expect_problem(resp, 404)
        await put_topic(http, a.base_url, topic)
        spec = {"kind": "view", "inputs": [topic], "app": "tests"}
        async with http.put(f"{a.base_url}/v1/views/{name}", json=spec) as resp:
            await expect(resp, 201)
        [placed] = await publish(http, a.base_url, topic, {"type": "stock.set"})
        inputs = {topic: {"0": placed["offset"] + 1}}
        status, body = await commit(http, a, name, 0, 0, {"k": "first"}, inputs)
        assert (status, body) == (200, {"offset": 0, "next": 2})
        # b learns the view at its first request, with what a committed.
        assert await value_at(http, b, name, "k", f"0:{placed['offset']}") == "first"
        status, body = await commit(http, b, name, 2, 1, {"k": "second"}, inputs)
        assert (status, body) == (200, {"offset": 2, "next": 4})
        assert await value_at(http, a, name, "k", f"0:{placed['offset']}") in ("first", "second")
        for node in (a, b):  # a applies b's commit once its changelog tail shows it

            async def second(node: HubProcess = node) -> bool:
                async with http.get(f"{node.base_url}/v1/views/{name}/keys/k") as resp:
                    got = await expect(resp, 200)
                return bool(got == {"key": "k", "value": "second", "position": "0:2"})

            await poll_until(second, timeout=10, what=f"b's commit served by {node.base_url}")
        # Declared again on b: the same view, kept (200), not made anew.
        async with http.put(f"{b.base_url}/v1/views/{name}", json=spec) as resp:
            await expect(resp, 200)
        async with http.get(f"{b.base_url}/v1/views/{name}/keys/k") as resp:
            assert (await expect(resp, 200))["value"] == "second"


async def test_a_view_rebuilt_through_one_node_is_rebuilt_on_the_other(
    nodes: HubFactory, nats: NatsServer
) -> None:
    """A rebuild drops the changelog and makes it again under the next generation: the
    node that did not run it serves the new, empty state (not the old one), refuses
    commits of the old generation and takes those of the new."""
    a = nodes.start("--backend", nats.url)
    b = nodes.start("--backend", nats.url)
    name, topic = unique("v"), unique()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        await put_topic(http, a.base_url, topic)
        spec = {"kind": "view", "inputs": [topic], "app": "tests"}
        async with http.put(f"{a.base_url}/v1/views/{name}", json=spec) as resp:
            await expect(resp, 201)
        [placed] = await publish(http, a.base_url, topic, {"type": "stock.set"})
        inputs = {topic: {"0": placed["offset"] + 1}}
        status, body = await commit(http, a, name, 0, 0, {"old": 1}, inputs)
        assert status == 200, body
        assert await value_at(http, b, name, "old", f"0:{placed['offset']}") == 1

        async with http.post(f"{a.base_url}/v1/views/{name}/rebuild", json={}) as resp:
            info = await expect(resp, 200)
        assert info["generation"] == 1

        async def rebuilt_on_b() -> bool:
            async with http.get(f"{b.base_url}/v1/views/{name}") as resp:
                got = await resp.json(content_type=None)
            return resp.status == 200 and got["generation"] == 1 and got["keys"] == 0

        await poll_until(rebuilt_on_b, timeout=15)
        async with http.get(f"{b.base_url}/v1/views/{name}/keys/old") as resp:
            await expect_problem(resp, 404)
        # The old generation's commit is refused through b; the new one's lands there.
        stale = {"generation": 0, "expect": 0,
                 "events": commit_events(name, 0, 1, {"stale": 1}, inputs)}  # fmt: skip
        async with http.post(f"{b.base_url}/v1/views/{name}/commit", json=stale) as resp:
            assert (await expect_problem(resp, 409))["generation"] == 1
        fresh = {"generation": 1, "expect": 0,
                 "events": commit_events(name, 1, 0, {"new": 2}, inputs)}  # fmt: skip
        async with http.post(f"{b.base_url}/v1/views/{name}/commit", json=fresh) as resp:
            await expect(resp, 200)
        for node in (a, b):
            assert await value_at(http, node, name, "new", f"0:{placed['offset']}") == 2
