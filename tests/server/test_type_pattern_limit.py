"""Type patterns per request are bounded (issue 13, hole 5), against real hub processes.

One subscribe, read, fetch, group or webhook naming 100,000 type patterns froze
the whole hub for seconds while it compiled them. Each now names at most
``--max-type-patterns`` (100 by default) and more is a 400 naming the limit,
answered at once while the hub goes on serving everyone else.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import aiohttp
import orjson
import websockets
from hubapi import expect, expect_problem, put_group, put_topic, unique
from hubproc import HubFactory, HubProcess
from livehelp import PROTOCOL, recv, ws_url

Session = aiohttp.ClientSession
LIMIT = 100


def _patterns(n: int) -> list[str]:
    return [f"p{i}.*" for i in range(n)]


def _check_limit_problem(problem: dict[str, Any], limit: int = LIMIT) -> None:
    assert problem["field"] == "types", problem
    assert problem["limit"] == limit, problem
    assert "max_type_patterns" in problem["detail"], problem


async def test_http_requests_over_the_limit_are_refused_naming_it(
    hub: HubProcess, http: Session
) -> None:
    base, topic = hub.base_url, unique()
    await put_topic(http, base, topic)
    await put_group(http, base, topic, "g")
    over, at = _patterns(LIMIT + 1), _patterns(LIMIT)
    T = f"{base}/v1/topics/{topic}"
    async with http.get(f"{T}/events", params={"types": ",".join(over)}) as resp:
        _check_limit_problem(await expect_problem(resp, 400))
    async with http.get(f"{T}/sse", params={"types": ",".join(over)}) as resp:
        _check_limit_problem(await expect_problem(resp, 400))
    async with http.post(f"{T}/groups/g/fetch", json={"types": over}) as resp:
        _check_limit_problem(await expect_problem(resp, 400))
    async with http.put(f"{T}/groups/g2", json={"types": over}) as resp:
        _check_limit_problem(await expect_problem(resp, 400))
    hook = {"url": "https://example.com/hook", "topics": [topic], "types": over}
    async with http.post(f"{base}/v1/webhooks", json=hook) as resp:
        _check_limit_problem(await expect_problem(resp, 400))
    # Nothing was made; at the limit each is taken.
    async with http.get(f"{T}/groups/g2") as resp:
        await expect_problem(resp, 404)
    async with http.get(f"{base}/v1/webhooks") as resp:
        assert (await expect(resp, 200))["webhooks"] == []
    async with http.get(f"{T}/events", params={"types": ",".join(at)}) as resp:
        await expect(resp, 200)
    async with http.post(f"{T}/groups/g/fetch", json={"types": at}) as resp:
        await expect(resp, 200)
    async with http.put(f"{T}/groups/g2", json={"types": at}) as resp:
        await expect(resp, 201)


async def test_a_websocket_subscribe_over_the_limit_is_refused_naming_it(
    hub: HubProcess, http: Session
) -> None:
    topic = unique()
    await put_topic(http, hub.base_url, topic)
    async with websockets.connect(ws_url(hub.base_url), subprotocols=[PROTOCOL]) as ws:
        frame = {"type": "subscribe", "id": "s", "topic": topic, "types": _patterns(LIMIT + 1)}
        await ws.send(orjson.dumps(frame).decode())
        got = await recv(ws)
        assert (got["type"], got["status"], got["sub"]) == ("error", 400, "s"), got
        _check_limit_problem(got)
        frame["types"] = _patterns(LIMIT)
        await ws.send(orjson.dumps(frame).decode())
        got = await recv(ws)
        assert got["type"] == "subscribed", got


async def test_the_limit_is_a_setting(hub_factory: HubFactory, http: Session) -> None:
    hub = hub_factory.start("--max-type-patterns", "3")
    topic = unique()
    await put_topic(http, hub.base_url, topic)
    url = f"{hub.base_url}/v1/topics/{topic}/events"
    async with http.get(url, params={"types": "a,b,c,d"}) as resp:
        _check_limit_problem(await expect_problem(resp, 400), limit=3)
    async with http.get(url, params={"types": "a,b,c"}) as resp:
        await expect(resp, 200)


async def test_a_hundred_thousand_patterns_do_not_stall_the_hub(
    hub: HubProcess, http: Session
) -> None:
    """While one client sends 100,000 patterns, another's requests are answered at once."""
    base, topic = hub.base_url, unique()
    await put_topic(http, base, topic)
    huge = _patterns(100_000)
    stalls: list[float] = []

    async def probe(done: asyncio.Event) -> None:
        while not done.is_set():
            started = time.monotonic()
            async with http.get(f"{base}/healthz") as resp:
                await expect(resp, 200)
            stalls.append(time.monotonic() - started)
            await asyncio.sleep(0.01)

    async def flood() -> None:
        async with websockets.connect(
            ws_url(base), subprotocols=[PROTOCOL], max_size=None
        ) as ws:
            for i in range(3):
                frame = {"type": "subscribe", "id": f"s{i}", "topic": topic, "types": huge}
                await ws.send(orjson.dumps(frame).decode())
                got = await recv(ws, timeout=30)
                assert got["type"] == "error" and got["status"] == 400, got
        for _ in range(3):
            async with http.post(
                f"{base}/v1/topics/{topic}/groups/g/fetch",
                data=io.BytesIO(orjson.dumps({"types": huge})),
                headers={"content-type": "application/json"},
            ) as resp:
                await expect_problem(resp, 400)

    done = asyncio.Event()
    prober = asyncio.create_task(probe(done))
    try:
        await flood()
    finally:
        done.set()
        await prober
    assert max(stalls) < 1.0, f"the hub stalled {max(stalls):.2f} s (probes: {len(stalls)})"
