"""A client that stops reading is closed with 4008, and the hub's buffer for it stays bounded.

Also the SSE heartbeat, with a short interval.

The server runs in this process (uvicorn on a real socket) so that the test can
set a small buffer and a short patience, and read the buffer's measured peak.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import websockets
from livehelp import PROTOCOL, in_process_hub, recv

from tidings.core.hub import Hub
from tidings.server.live import LiveOptions
from tidings.server.ws import WebSocketEndpoint

pytestmark = pytest.mark.timeout(60)

BUFFER = 64 * 1024
EVENT_DATA = "x" * 8000


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, Hub, WebSocketEndpoint]]:
    async with in_process_hub(
        tmp_path / "data",
        LiveOptions(send_buffer_bytes=BUFFER, slow_after_s=1.0, sse_heartbeat_s=0.2),
    ) as served:
        yield served


async def test_a_client_that_never_reads_gets_4008_and_memory_stays_bounded(
    server: tuple[str, Hub, WebSocketEndpoint],
) -> None:
    url, hub, endpoint = server
    # max_queue=1: past one buffered message the client library stops reading the
    # socket, so the kernel buffers fill and the hub cannot send.
    async with websockets.connect(
        url, subprotocols=[PROTOCOL], max_queue=1, compression=None
    ) as ws:
        await hub.create_topic("flood")
        await ws.send(orjson.dumps({"type": "subscribe", "id": "s", "topic": "flood"}).decode())
        assert (await recv(ws))["type"] == "subscribed"
        total = 0
        # 40 MiB: more than every socket buffer on the way can hold.
        for _ in range(50):
            events = [
                {"type": "x", "id": f"{total + i}", "specversion": "1.0", "source": "/t",
                 "data": EVENT_DATA}
                for i in range(100)
            ]  # fmt: skip
            await hub.publish("flood", events)
            total += len(events)
        [conn] = endpoint.connections
        for _ in range(200):
            if conn.closed_with is not None:
                break
            await asyncio.sleep(0.05)
        assert conn.closed_with is not None and conn.closed_with[0] == 4008
        assert conn.buffer.peak <= BUFFER + 9000  # the bound, plus at most one frame
        # Now read: what the socket held, then the close frame.
        received = 0
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
                received += 1
        assert ws.close_code == 4008
        assert ws.close_reason.startswith("too slow")
        assert received < total
    for _ in range(100):
        if not endpoint.connections:
            break
        await asyncio.sleep(0.05)
    assert endpoint.peak_buffer_bytes <= BUFFER + 9000


async def test_a_slow_but_steady_reader_is_not_closed(
    server: tuple[str, Hub, WebSocketEndpoint],
) -> None:
    url, hub, endpoint = server
    await hub.create_topic("steady")
    async with websockets.connect(
        url, subprotocols=[PROTOCOL], max_queue=1, compression=None
    ) as ws:
        await ws.send(
            orjson.dumps(
                {"type": "subscribe", "id": "s", "topic": "steady", "from": "earliest"}
            ).decode()
        )
        assert (await recv(ws))["type"] == "subscribed"
        events = [
            {"type": "x", "id": str(i), "specversion": "1.0", "source": "/t", "data": EVENT_DATA}
            for i in range(500)
        ]
        await hub.publish("steady", events)
        offsets = [(await recv(ws))["offset"] for _ in range(500)]
        assert offsets == list(range(500))
        assert endpoint.peak_buffer_bytes <= BUFFER + 9000
        [conn] = endpoint.connections
        assert conn.buffer.peak <= BUFFER + 9000 and conn.closed_with is None


async def test_sse_sends_heartbeat_comments_while_idle(
    server: tuple[str, Hub, WebSocketEndpoint],
) -> None:
    url, hub, _ = server
    await hub.create_topic("quiet")
    base = url.replace("ws://", "http://").removesuffix("/v1/ws")
    async with aiohttp.ClientSession() as http, http.get(f"{base}/v1/topics/quiet/sse") as resp:
        lines = [await asyncio.wait_for(resp.content.readline(), 10) for _ in range(6)]
    assert lines[:2] == [b"retry: 2000\n", b"\n"]
    assert lines[2:] == [b": ping\n", b"\n", b": ping\n", b"\n"]
