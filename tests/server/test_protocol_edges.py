"""The protocol edges a client may lean on (issue 13, hole 9), against real hub processes.

- A 405 names in ``Allow`` every method its path takes (RFC 9110 section 15.5.6).
- The auth scheme is case-insensitive (RFC 9110 section 11.1): ``bearer``, ``BEARER``.
- A WebSocket text frame that is not UTF-8 is closed with 1007, a frame over the
  size limit with 1009 (RFC 6455 section 7.4.1), and neither leaves a traceback
  in the hub's log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
from pathlib import Path

import aiohttp
import pytest
from hubapi import expect, expect_problem, unique
from hubproc import HubFactory, HubProcess

Session = aiohttp.ClientSession


def _allow(resp: aiohttp.ClientResponse) -> set[str]:
    return {m.strip() for m in resp.headers.get("allow", "").split(",") if m.strip()}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v1/topics/t", {"GET", "HEAD", "PUT", "DELETE"}),
        ("PATCH", "/v1/topics/t/events", {"GET", "HEAD", "POST"}),
        ("POST", "/v1/topics/t/groups/g", {"GET", "HEAD", "PUT", "DELETE"}),
        ("DELETE", "/v1/webhooks", {"GET", "HEAD", "POST"}),
        ("PUT", "/v1/webhooks/w1", {"GET", "HEAD", "PATCH", "DELETE"}),
        ("GET", "/v1/topics/t/groups/g/fetch", {"POST"}),
    ],
)
async def test_a_405_allows_every_method_of_its_path(
    hub: HubProcess, http: Session, method: str, path: str, allowed: set[str]
) -> None:
    # A JSON content type, as the browser guard asks of every POST, so the answer
    # is about the method.
    headers = {"content-type": "application/json"}
    async with http.request(method, hub.base_url + path, headers=headers) as resp:
        await expect_problem(resp, 405)
        assert _allow(resp) == allowed


@pytest.fixture(scope="module")
def auth_hub(
    module_hub_factory: HubFactory, tmp_path_factory: pytest.TempPathFactory
) -> HubProcess:
    path: Path = tmp_path_factory.mktemp("edges-auth") / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"name": "ops", "token": "s3cret", "admin": True}]}))
    return module_hub_factory.start("--auth-file", str(path))


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_the_bearer_scheme_is_case_insensitive(
    auth_hub: HubProcess, http: Session, scheme: str
) -> None:
    headers = {"Authorization": f"{scheme} s3cret"}
    async with http.put(f"{auth_hub.base_url}/v1/topics/{unique()}", headers=headers) as resp:
        await expect(resp, 201)
    async with http.get(f"{auth_hub.base_url}/v1/topics", headers=headers) as resp:
        await expect(resp, 200)


# -- WebSocket frames a client gets wrong ---------------------------------------------------


async def ws_handshake(hub: HubProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    key = base64.b64encode(os.urandom(16))
    writer.write(
        b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: tidings.v1\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def frame_head(opcode: int, length: int) -> bytes:
    """A final, masked client frame's head (RFC 6455 section 5.2), mask of zeros."""
    first = bytes([0x80 | opcode])
    if length < 126:
        return first + bytes([0x80 | length]) + b"\0" * 4
    if length < 1 << 16:
        return first + bytes([0x80 | 126]) + struct.pack("!H", length) + b"\0" * 4
    return first + bytes([0x80 | 127]) + struct.pack("!Q", length) + b"\0" * 4


async def read_close(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The code and reason of the close frame the hub sends (frames before it skipped)."""
    while True:
        b0, b1 = await asyncio.wait_for(reader.readexactly(2), 10)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        payload = await reader.readexactly(length)
        if b0 & 0x0F == 0x8:
            return struct.unpack("!H", payload[:2])[0], payload[2:]


async def test_a_text_frame_not_utf8_is_closed_1007_without_a_traceback(
    hub: HubProcess,
) -> None:
    reader, writer = await ws_handshake(hub)
    bad = b"\xff\xfe{}"
    writer.write(frame_head(0x1, len(bad)) + bad)
    code, _ = await read_close(reader)
    writer.close()
    assert code == 1007
    assert "Traceback" not in hub.log_text()
    assert "UnicodeDecodeError" not in hub.log_text()


async def test_a_frame_over_the_limit_is_closed_1009_not_reset(hub: HubProcess) -> None:
    """The client is still sending its frame when the hub refuses it: it gets 1009."""
    reader, writer = await ws_handshake(hub)
    size = 64 << 20
    writer.write(frame_head(0x1, size))
    closing = asyncio.ensure_future(read_close(reader))
    chunk = b"x" * (256 * 1024)
    with contextlib.suppress(ConnectionError):
        for _ in range(size // len(chunk)):
            if closing.done():
                break
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 10)
            await asyncio.sleep(0)
    code, reason = await closing
    writer.close()
    assert code == 1009, reason
    assert "Traceback" not in hub.log_text()


async def test_the_websocket_message_limit_is_a_setting(hub_factory: HubFactory) -> None:
    hub = hub_factory.start("--ws-max-message-bytes", str(64 * 1024))
    reader, writer = await ws_handshake(hub)
    writer.write(frame_head(0x1, 70 * 1024) + b"x" * (70 * 1024))
    code, _ = await read_close(reader)
    writer.close()
    assert code == 1009


@pytest.mark.parametrize(
    "raw",
    [
        b"BLAH\r\n\r\n",
        b"GET /v1/topics/\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /v1/topics/%ff%fe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX: \x01\r\n\r\n",
        b"POST /v1/topics/t/events HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"\r\nzz\r\n",
        b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\n\r\n",
        b"POST /v1/topics/t/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 3\r\n\r\n\xff\xfe\xfd",
    ],
)
async def test_a_malformed_request_is_a_4xx_without_a_traceback(
    hub: HubProcess, raw: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    writer.write(raw)
    line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert 400 <= int(line.split(b" ", 2)[1]) < 500, line
    assert "Traceback" not in hub.log_text()
