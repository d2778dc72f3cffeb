"""The hub's HTTP protocol after an answer given before the request's body ended: the next
request's head keeps its timeout; a held head is dropped, not written, once the client left."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from hubproc import free_port

from tidings.server.protocol import HttpLimits, HubHttpProtocol


def early_answer_app() -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        # Answers at once, without reading the request's body (as a 401 or 413 does).
        body = b"no"
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.fixture
async def port() -> AsyncIterator[int]:
    p = free_port()
    config = uvicorn.Config(
        early_answer_app(), host="127.0.0.1", port=p, loop="uvloop",
        http=HubHttpProtocol.under(HttpLimits(header_timeout_s=0.5, body_timeout_s=0.5)),
        lifespan="on", log_level="warning", access_log=False, timeout_keep_alive=1,
    )
    srv = uvicorn.Server(config)
    task = asyncio.ensure_future(srv.serve())
    for _ in range(200):
        if srv.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield p
    finally:
        srv.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


async def test_a_partial_head_after_an_early_answer_still_times_out(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 401")
    assert await reader.readexactly(2) == b"no"
    # The rest of the body and the first bytes of the next request, in one packet.
    writer.write(b"helloGET /b HTTP/1.1\r\n")
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.write(b"Host: x\r\n")  # more of the head, never finished
    await writer.drain()
    try:
        # header_timeout 0.5 s (keep-alive 1 s): the hub answers 408 or closes by 3 s.
        got = await asyncio.wait_for(reader.read(1000), 3)
        assert got == b"" or got.startswith(b"HTTP/1.1 408")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()



def test_a_client_gone_before_the_body_is_not_an_app_error() -> None:
    """On uvloop (what `tidings serve` runs), a held head written after the
    connection was lost raises RuntimeError into the app's send."""
    import uvloop

    errors: list[BaseException] = []

    async def main() -> None:
        go = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await receive()
                await send({"type": "lifespan.startup.complete"})
                await receive()
                await send({"type": "lifespan.shutdown.complete"})
                return
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"2")]})
            await go.wait()  # as a FileResponse reads its file: the client leaves meanwhile
            try:
                await send({"type": "http.response.body", "body": b"ok"})
            except BaseException as exc:
                errors.append(exc)
                raise

        p = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=p, http=HubHttpProtocol.under(HttpLimits()),
            lifespan="on", log_level="critical", access_log=False,
        )
        srv = uvicorn.Server(config)
        task = asyncio.ensure_future(srv.serve())
        for _ in range(200):
            if srv.started:
                break
            await asyncio.sleep(0.02)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", p)
            writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.3)  # the hub sees the connection lost
            go.set()
            await asyncio.sleep(0.3)
        finally:
            srv.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)

    # uvloop, as `tidings serve` runs: its transports raise on a write once closed
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    assert errors == []  # a send after the client left is dropped quietly, as uvicorn does
