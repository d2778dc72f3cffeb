"""Deeply nested events against a real hub: refused where they are parsed, creating nothing.

orjson parses 1024 levels but serializes only 254, so an event nested between the
two used to parse, create its topic, enter the catalogue, and then fail to store
(HTTP 500, WebSocket 1011). Every publish mode now answers 422 naming the limit.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
import websockets
from hubapi import BATCH, STRUCTURED, expect, expect_problem, publish, put_topic, unique
from hubproc import HubProcess
from livehelp import PROTOCOL, recv, ws_url

MAX_DEPTH = 64  # the documented limit (tidings.events.nesting.MAX_DEPTH)

pytestmark = pytest.mark.timeout(120)


def nested_json(levels: int) -> bytes:
    """JSON arrays nested ``levels`` deep (written out: past 254 orjson cannot dump it)."""
    return b"[" * levels + b"1" + b"]" * levels


def request(
    mode: str, data_levels: int, etype: str = "deep.one"
) -> tuple[bytes, dict[str, str]]:
    data = nested_json(data_levels)
    event = b'{"type":"%s","data":%s}' % (etype.encode(), data)
    if mode == "structured":
        return event, {"content-type": STRUCTURED}
    if mode == "batch":
        beside = b'{"type":"%s.beside"}' % etype.encode()
        return b"[" + beside + b"," + event + b"]", {"content-type": BATCH}
    headers = {"content-type": "application/json", "ce-type": etype, "ce-specversion": "1.0"}
    return data, headers


async def catalogue(http: aiohttp.ClientSession, hub: HubProcess) -> dict[str, Any]:
    async with http.get(hub.base_url + "/asyncapi.json") as resp:
        return await expect(resp, 200)  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", ["structured", "batch", "binary"])
@pytest.mark.parametrize("levels", [MAX_DEPTH, 300, 1100])
async def test_too_deep_an_event_is_refused_and_creates_nothing(
    hub: HubProcess, http: aiohttp.ClientSession, mode: str, levels: int
) -> None:
    topic, existing = unique(), unique()
    await publish(http, hub.base_url, existing, {"type": "shallow.one"})
    for name in (topic, existing):
        body, headers = request(mode, levels)
        async with http.post(
            f"{hub.base_url}/v1/topics/{name}/events", data=body, headers=headers
        ) as resp:
            problem = await expect_problem(resp, 422)
        assert problem["max_depth"] == MAX_DEPTH, problem
        assert str(MAX_DEPTH) in problem["detail"], problem
        assert problem["attribute"] == "data", problem
        if mode == "batch" and levels < 1024:
            assert problem["index"] == 1, problem
    async with http.get(f"{hub.base_url}/v1/topics/{topic}") as resp:
        await expect_problem(resp, 404)
    doc = await catalogue(http, hub)
    assert topic not in doc["channels"]
    assert sorted(doc["channels"][existing]["messages"]) == ["shallow.one"]
    assert "deep.one" not in doc["components"]["messages"]
    assert "deep.one.beside" not in doc["components"]["messages"]


@pytest.mark.parametrize("mode", ["structured", "batch", "binary"])
async def test_an_event_at_the_limit_is_stored(
    hub: HubProcess, http: aiohttp.ClientSession, mode: str
) -> None:
    topic = unique()
    # The event object is the 64th level.
    body, headers = request(mode, MAX_DEPTH - 1, "deep.fits")
    async with http.post(
        f"{hub.base_url}/v1/topics/{topic}/events", data=body, headers=headers
    ) as resp:
        await expect(resp, 202)
    async with http.get(f"{hub.base_url}/v1/topics/{topic}/events?from=earliest") as resp:
        records = (await expect(resp, 200))["records"]
    data = records[-1]["event"]["data"]
    assert orjson.dumps(data) == nested_json(MAX_DEPTH - 1)


@pytest.mark.parametrize("levels", [MAX_DEPTH, 300, 1100])
async def test_too_deep_a_websocket_publish_is_refused_and_the_socket_goes_on(
    hub: HubProcess, http: aiohttp.ClientSession, levels: int
) -> None:
    topic, existing = unique(), unique()
    await put_topic(http, hub.base_url, existing)
    async with websockets.connect(ws_url(hub.base_url), subprotocols=[PROTOCOL]) as ws:
        for ref, name in enumerate((topic, existing)):
            frame = (
                b'{"type":"publish","ref":%d,"topic":"%s","event":{"type":"deep.one","data":'
                % (ref, name.encode())
                + nested_json(levels)
                + b"}}"
            )
            await ws.send(frame.decode())
            got = await recv(ws)
            assert got["type"] == "error" and got["status"] == 422, got
            assert got["max_depth"] == MAX_DEPTH, got
            if levels < 1000:
                assert got["ref"] == ref, got
        # The connection is still open and publishes.
        event = {"type": "shallow.one", "data": {"a": [1]}}
        await ws.send(orjson.dumps({"type": "publish", "ref": "ok", "topic": existing,
                                    "event": event}).decode())
        got = await recv(ws)
        assert got["type"] == "published" and got["ref"] == "ok", got
    async with http.get(f"{hub.base_url}/v1/topics/{topic}") as resp:
        await expect_problem(resp, 404)
    doc = await catalogue(http, hub)
    assert topic not in doc["channels"]
    assert "deep.one" not in doc["components"]["messages"]
