"""``/v1/topics/{topic}/sse`` against a real hub process, read with aiohttp."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from hubapi import expect_problem, put_topic, unique
from hubproc import HubFactory, HubProcess
from livehelp import Publisher, check_exactly_once

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def hub(backend_hub: HubProcess) -> HubProcess:
    """This module's hub, on the embedded log and on NATS in turn (``backend_hub``)."""
    return backend_hub


async def messages(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, str]]:
    """SSE messages as field dicts; comments come as ``{"comment": ...}``."""
    fields: dict[str, str] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if fields:
                yield fields
            fields = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


async def test_stream_opens_with_retry_and_gives_tokens(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    topic = unique()
    await put_topic(http, hub.base_url, topic, partitions=2)
    pub = Publisher(hub.base_url, topic, 4, keys=2)
    await pub.run(http)
    url = f"{hub.base_url}/v1/topics/{topic}/sse?from=earliest"
    async with http.get(url) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        assert resp.headers["cache-control"] == "no-cache"
        stream = messages(resp)
        assert await anext(stream) == {"retry": "2000"}
        got = [await anext(stream) for _ in range(4)]
    records = [orjson.loads(m["data"]) for m in got]
    check_exactly_once(records, pub.ids)
    assert "event" not in got[0]
    # Each id is the token after its message: partition moved, others unchanged.
    pos: dict[int, int] = {0: 0, 1: 0}
    for m, r in zip(got, records, strict=True):
        pos[r["partition"]] = r["offset"] + 1
        assert m["id"] == ",".join(f"{p}:{o}" for p, o in sorted(pos.items()))


async def test_last_event_id_wins_over_from(hub: HubProcess, http: aiohttp.ClientSession) -> None:
    topic = unique()
    pub = Publisher(hub.base_url, topic, 5)
    await pub.run(http)
    url = f"{hub.base_url}/v1/topics/{topic}/sse?from=latest"
    async with http.get(url, headers={"Last-Event-ID": "0:3"}) as resp:
        stream = messages(resp)
        await anext(stream)
        got = [orjson.loads((await anext(stream))["data"]) for _ in range(2)]
    assert [r["offset"] for r in got] == [3, 4]


async def test_bad_last_event_id_and_types(hub: HubProcess, http: aiohttp.ClientSession) -> None:
    topic = unique()
    await put_topic(http, hub.base_url, topic)
    base = f"{hub.base_url}/v1/topics/{topic}/sse"
    async with http.get(base, headers={"Last-Event-ID": "bogus"}) as resp:
        assert (await expect_problem(resp, 400))["field"] == "Last-Event-ID"
    async with http.get(base + "?types=a.>.b") as resp:
        await expect_problem(resp, 400)
    async with http.get(f"{hub.base_url}/v1/topics/{unique()}/sse") as resp:
        await expect_problem(resp, 404)


async def _follow(
    base_url: str,
    topic: str,
    http: aiohttp.ClientSession,
    records: list[dict[str, Any]],
    total: int,
    last_id: str | None,
    stop_after: int,
) -> str | None:
    """Read one SSE connection until ``stop_after`` records or the end; the last id."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    url = f"{base_url}/v1/topics/{topic}/sse?from=earliest"
    taken = 0
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
        async with http.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(sock_read=30)
        ) as resp:
            assert resp.status == 200
            async for m in messages(resp):
                if "data" not in m:
                    continue
                records.append(orjson.loads(m["data"]))
                last_id = m["id"]
                taken += 1
                if taken >= stop_after or len(records) >= total:
                    break
    return last_id


async def test_resume_across_client_drops_with_last_event_id(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    topic = unique()
    await put_topic(http, hub.base_url, topic, partitions=3)
    pub = Publisher(hub.base_url, topic, 500)
    task = asyncio.create_task(pub.run(http))
    records: list[dict[str, Any]] = []
    last: str | None = None
    try:
        for stop_after in (40, 100, 150, 10**9):
            last = await _follow(hub.base_url, topic, http, records, 500, last, stop_after)
        await task
    finally:
        task.cancel()
    check_exactly_once(records, pub.ids)


async def test_resume_across_a_hub_restart_with_last_event_id(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    hub = hub_factory.start(fsync="always")
    topic = unique()
    await put_topic(http, hub.base_url, topic, partitions=2)
    pub = Publisher(hub.base_url, topic, 300)
    task = asyncio.create_task(pub.run(http))
    records: list[dict[str, Any]] = []
    last: str | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    try:
        last = await _follow(hub.base_url, topic, http, records, 300, last, 100)
        restart = asyncio.create_task(asyncio.to_thread(hub.restart, hard=True))
        while len(records) < 300:
            assert loop.time() < deadline, f"stuck at {len(records)} records"
            last = await _follow(hub.base_url, topic, http, records, 300, last, 10**9)
            if len(records) < 300:
                await asyncio.sleep(0.1)
        await restart
        await task
    finally:
        task.cancel()
    assert hub.starts == 2
    check_exactly_once(records, pub.ids)


async def test_eventsource_authenticates_with_a_ticket_not_a_token_in_the_url(
    hub_factory: HubFactory, http: aiohttp.ClientSession, tmp_path: Any
) -> None:
    """EventSource sets no header: a one-use ticket goes in the URL, never the token."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text('{"tokens": [{"name": "ops", "token": "r3ad", "admin": true}]}')
    hub = hub_factory.start("--auth-file", str(tokens))
    bearer = {"Authorization": "Bearer r3ad"}
    topic = unique()
    async with http.put(f"{hub.base_url}/v1/topics/{topic}", json={}, headers=bearer) as resp:
        assert resp.status == 201
    url = f"{hub.base_url}/v1/topics/{topic}/sse?from=earliest"
    async with http.get(f"{url}&token=r3ad") as resp:
        assert resp.status == 401  # before reading: an accepted stream never ends
        problem = await expect_problem(resp, 401)
    assert "ticket" in problem["detail"]
    async with http.post(f"{hub.base_url}/v1/ws/ticket", json={}, headers=bearer) as resp:
        assert resp.status == 200
        ticket = (await resp.json())["ticket"]
    async with http.get(f"{url}&ticket={ticket}") as resp:
        assert resp.status == 200
        assert await anext(messages(resp)) == {"retry": "2000"}
    async with http.get(f"{url}&ticket={ticket}") as resp:  # spent
        await expect_problem(resp, 401)
