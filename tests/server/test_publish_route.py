"""A publish taken ahead of Starlette's stack (HubApp) answers exactly as the stack does.

One hub is served by uvicorn on a free loopback port behind a switch: a request
with ``x-via: stack`` goes through ``Starlette.__call__`` (error and exception
middleware, guard, budget, router, route), any other through the hub's app,
which takes a publish before all that. Each request below is sent both ways, to
topics of the same shape, and the answers must be the same: status, headers
that matter and body (ids and times aside, which differ by nature).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import uvicorn
from hubproc import free_port
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.core.hub import Hub, HubOptions
from tidings.log.config import FsyncPolicy, LogConfig
from tidings.server.app import ServerOptions, create_app
from tidings.server.auth import Auth
from tidings.server.publish import HubApp, publish_topic

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, HubApp]]:
    storage = EmbeddedStorage(tmp_path / "data", FsyncPolicy.parse("always"), LogConfig())
    hub = Hub(storage, HubOptions(max_event_bytes=2048))
    app = create_app(hub, Auth([]), ServerOptions(max_request_bytes=64 * 1024))
    app.add_middleware(Seen)  # middleware given to the app runs on both paths

    async def switch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (b"x-via", b"stack") in scope["headers"]:
            await Starlette.__call__(app, scope, receive, send)
        else:
            await app(scope, receive, send)

    port = free_port()
    config = uvicorn.Config(
        switch, host="127.0.0.1", port=port, loop="asyncio", lifespan="on", log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)


class Seen:
    """Adds ``x-seen: yes`` to every answer it sees start."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def seen(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-seen", b"yes")]
            await send(message)

        await self.app(scope, receive, seen)


def _event(**attrs: Any) -> bytes:
    return orjson.dumps({"type": "t.made", "source": "/s", "data": {"n": 1}, **attrs})


_DEEP: Any = 1
for _ in range(70):
    _DEEP = [_DEEP]

# (name, topic suffix, content type, body, extra headers)
CASES: list[tuple[str, str, str | None, bytes, dict[str, str]]] = [
    ("one event", "a", STRUCTURED, _event(), {}),
    ("one event with its id", "a", STRUCTURED, _event(id="fixed-1"), {}),
    ("the same id again", "a", STRUCTURED, _event(id="fixed-1"), {}),
    ("a batch", "a", BATCH, b"[" + b",".join([_event()] * 3) + b"]", {}),
    ("a keyed batch with ids", "a", BATCH,
     b"[" + b",".join(_event(id=f"k{i}", partitionkey=f"p{i}") for i in range(5)) + b"]", {}),
    ("an empty batch", "a", BATCH, b"[]", {}),
    ("binary mode", "a", "text/plain", b"hello",
     {"ce-specversion": "1.0", "ce-type": "t.made", "ce-source": "/s", "ce-id": "bin-1"}),
    ("a parameter on the content type", "a", STRUCTURED + "; charset=utf-8", _event(), {}),
    ("malformed JSON", "a", STRUCTURED, b'{"type": ', {}),
    ("an invalid event", "a", STRUCTURED, _event(time="yesterday"), {}),
    ("a bad event in a batch", "a", BATCH, b"[" + _event() + b"," + _event(id="") + b"]", {}),
    ("too deep", "a", STRUCTURED, _event(data=_DEEP), {}),
    ("an event over the size limit", "a", STRUCTURED, _event(data="x" * 4000), {}),
    ("a body over the request limit", "a", STRUCTURED, _event(data="x" * 70_000), {}),
    ("no content type", "a", None, _event(), {}),
    ("a form", "a", "application/x-www-form-urlencoded", b"a=1", {}),
    ("a foreign origin", "a", STRUCTURED, _event(), {"origin": "https://evil.example"}),
    ("a foreign host", "a", STRUCTURED, _event(), {"host": "evil.example"}),
    ("a bad topic name", "a b", STRUCTURED, _event(), {}),
    ("a batch that is not an array", "a", BATCH, _event(), {}),
]


def _masked(value: Any) -> Any:
    """The answer with what differs by nature (made ids and times) blanked."""
    if isinstance(value, dict):
        return {k: "*" if k in ("id", "time") else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


async def _send(
    http: aiohttp.ClientSession,
    base_url: str,
    topic: str,
    ctype: str | None,
    body: bytes,
    extra: dict[str, str],
    via: str,
) -> tuple[int, str | None, Any]:
    headers = {"x-via": via, **extra}
    if ctype is not None:
        headers["content-type"] = ctype
    url = f"{base_url}/v1/topics/{topic}/events"
    async with http.post(url, data=body, headers=headers, skip_auto_headers=["content-type"]) as r:
        raw = (await r.read()).replace(topic.encode(), b"{topic}")
        assert r.headers.get("x-seen") == "yes", (via, r.status)
        return r.status, r.headers.get("content-type"), orjson.loads(raw) if raw else None


async def test_a_publish_answers_the_same_ahead_of_the_stack_and_through_it(
    served: tuple[str, HubApp],
) -> None:
    base_url, app = served
    async with aiohttp.ClientSession() as http:
        for name, suffix, ctype, body, extra in CASES:
            fast = await _send(http, base_url, f"fast.{suffix}", ctype, body, extra, "fast")
            stack = await _send(http, base_url, f"stack.{suffix}", ctype, body, extra, "stack")
            assert (fast[0], fast[1]) == (stack[0], stack[1]), name
            assert _masked(fast[2]) == _masked(stack[2]), name
        # What was stored is the same too: the accepted events, in the same places.
        for side in ("fast", "stack"):
            async with http.get(f"{base_url}/v1/topics/{side}.a") as r:
                info = await r.json()
            assert info["events"] == 1 + 1 + 3 + 5 + 1 + 1, side
    assert app._publish_app is not None  # the publishes without x-via went ahead


@pytest.mark.parametrize(
    ("path", "topic"),
    [
        ("/v1/topics/orders/events", "orders"),
        ("/v1/topics/a.b-c_d/events", "a.b-c_d"),
        ("/v1/topics/events", None),
        ("/v1/topics//events", None),
        ("/v1/topics/a/b/events", None),
        ("/v1/topics/a/events/", None),
        ("/v1/topics/a/event", None),
        ("/v2/topics/a/events", None),
    ],
)
def test_the_publish_path_is_read_as_the_route_reads_it(path: str, topic: str | None) -> None:
    assert publish_topic(path) == topic
