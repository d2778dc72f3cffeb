"""How the hub's HTTP protocol writes an answer, on a real uvicorn server and socket.

An answer with a content-length goes out as one write: its head waits for the body.
A stream (no content-length: SSE, chunked) writes its head at once, so a client
sees the answer start before the first event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from hubproc import free_port

from tidings.server.protocol import HttpLimits, HubHttpProtocol

Go = dict[str, asyncio.Event]


def app_with_pause(go: Go) -> Any:
    """Answers the start of a response, then waits for ``go[path]`` before the body."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()
        path = scope["path"]
        body = b'{"ok":true}'
        headers = [(b"content-type", b"application/json")]
        if path != "/stream":
            headers.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await go[path].wait()
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, Go]]:
    go: Go = {"/sized": asyncio.Event(), "/stream": asyncio.Event(), "/head": asyncio.Event()}
    port = free_port()
    config = uvicorn.Config(
        app_with_pause(go),
        host="127.0.0.1",
        port=port,
        http=HubHttpProtocol.under(HttpLimits()),
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
    srv = uvicorn.Server(config)
    task = asyncio.ensure_future(srv.serve())
    for _ in range(200):
        if srv.started:
            break
        await asyncio.sleep(0.02)
    assert srv.started
    try:
        yield port, go
    finally:
        srv.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


async def ask(port: int, method: str, path: str) -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def nothing_yet(reader: asyncio.StreamReader) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.3)


async def test_a_sized_answer_waits_for_its_body_and_goes_whole(server: tuple[int, Go]) -> None:
    port, go = server
    reader, writer = await ask(port, "POST", "/sized")
    await nothing_yet(reader)  # the head is held while the body is not there
    go["/sized"].set()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 202") and b"content-length: 11" in head
    assert await asyncio.wait_for(reader.readexactly(11), 5) == b'{"ok":true}'
    # The connection goes on: a second request on it is answered too.
    writer.write(b"POST /sized HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 202")
    writer.close()


async def test_a_stream_writes_its_head_at_once(server: tuple[int, Go]) -> None:
    port, go = server
    reader, writer = await ask(port, "POST", "/stream")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # before any body
    assert b"transfer-encoding: chunked" in head
    go["/stream"].set()
    assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
    writer.close()


async def test_a_head_request_gets_its_head(server: tuple[int, Go]) -> None:
    port, go = server
    reader, writer = await ask(port, "HEAD", "/head")
    go["/head"].set()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 202") and b"content-length: 11" in head
    await nothing_yet(reader)  # and no body
    writer.close()
