"""Helpers of the live-channel tests: a publisher that keeps going, and the exactly-once check."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvicorn
import websockets
from hubapi import STRUCTURED
from hubproc import free_port

from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.core.hub import Hub
from tidings.log.config import FsyncPolicy, LogConfig
from tidings.server.app import ServerOptions, create_app
from tidings.server.live import LiveOptions
from tidings.server.ws import WebSocketEndpoint

PROTOCOL = websockets.Subprotocol("tidings.v1")


def ws_url(base_url: str, query: str = "") -> str:
    return base_url.replace("http://", "ws://") + "/v1/ws" + (f"?{query}" if query else "")


async def recv(ws: websockets.ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
    return out


class Publisher:
    """Publishes ``count`` keyed events over HTTP, retrying each (same id) until a 202.

    It goes on through client drops and hub restarts: a refused connection is
    retried, and the dedupe window answers a retry of an event already stored.
    """

    def __init__(self, base_url: str, topic: str, count: int, keys: int = 6) -> None:
        self.base_url = base_url
        self.topic = topic
        self.ids = [f"e-{i:05d}" for i in range(count)]
        self.keys = keys
        self.done = 0
        self.progress = asyncio.Event()

    async def run(self, http: aiohttp.ClientSession, deadline_s: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        url = f"{self.base_url}/v1/topics/{self.topic}/events"
        for i, eid in enumerate(self.ids):
            body = orjson.dumps(
                {"type": "n.made", "id": eid, "partitionkey": f"k{i % self.keys}", "data": i}
            )
            while True:
                assert loop.time() < end, f"publisher stuck at {eid}"
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with http.post(
                        url, data=body, headers={"content-type": STRUCTURED}, timeout=5
                    ) as resp:
                        if resp.status == 202:
                            break
                await asyncio.sleep(0.05)
            self.done = i + 1
            self.progress.set()

    async def reached(self, n: int, timeout: float = 30.0) -> None:
        async def wait() -> None:
            while self.done < n:
                self.progress.clear()
                await self.progress.wait()

        await asyncio.wait_for(wait(), timeout)


class GatedPublisher:
    """Publishes keyed events over HTTP as ``livehelp.Publisher`` does (each retried with
    the same id until a 202), but stops before each count in ``holds`` until let go.

    So that a kill lands while the subscription still has events to come; the test
    lets the publisher go as soon as the hub is killed, and it keeps publishing
    (retrying) while the hub is down and after it is back.
    """

    def __init__(self, base_url: str, topic: str, count: int, holds: tuple[int, ...]) -> None:
        self.url = f"{base_url}/v1/topics/{topic}/events"
        self.ids = [f"e-{i:05d}" for i in range(count)]
        self.held = {n: asyncio.Event() for n in holds}
        self.go = {n: asyncio.Event() for n in holds}

    async def run(self, http: aiohttp.ClientSession, deadline_s: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        for i, eid in enumerate(self.ids):
            if i in self.go:
                self.held[i].set()
                await asyncio.wait_for(self.go[i].wait(), deadline_s)
            body = orjson.dumps({"type": "n.made", "id": eid, "partitionkey": f"k{i % 6}"})
            while True:
                assert loop.time() < end, f"publisher stuck at {eid}"
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with http.post(
                        self.url, data=body, headers={"content-type": STRUCTURED}, timeout=5
                    ) as resp:
                        if resp.status == 202:
                            break
                await asyncio.sleep(0.05)


def check_exactly_once(records: list[dict[str, Any]], ids: list[str]) -> None:
    """Every id once, and offsets strictly increasing with no gap within each partition."""
    got = [r["event"]["id"] for r in records]
    dupes = {i for i in got if got.count(i) > 1} if len(set(got)) != len(got) else set()
    assert not dupes, f"duplicates: {sorted(dupes)[:10]}"
    missing = sorted(set(ids) - set(got))
    assert not missing, f"{len(missing)} missing, first {missing[:10]}"
    by_part: dict[int, list[int]] = defaultdict(list)
    for r in records:
        by_part[r["partition"]].append(r["offset"])
    for p, offsets in by_part.items():
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), f"partition {p}"


@contextlib.asynccontextmanager
async def in_process_hub(
    data_dir: Path, live: LiveOptions
) -> AsyncIterator[tuple[str, Hub, WebSocketEndpoint]]:
    """A hub served by uvicorn inside the test's process, for live options that
    ``tidings serve`` has no flag for; yields its ``/v1/ws`` URL, the hub, the endpoint."""
    storage = EmbeddedStorage(data_dir, FsyncPolicy.parse("never"), LogConfig())
    hub = Hub(storage)
    app = create_app(hub, options=ServerOptions(live=live))
    [route] = [r for r in app.routes if getattr(r, "path", None) == "/v1/ws"]
    endpoint = route.endpoint.__self__  # type: ignore[attr-defined]
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{port}/v1/ws", hub, endpoint
    finally:
        srv.should_exit = True
        await asyncio.wait_for(task, 20)
