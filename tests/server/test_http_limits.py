"""What one HTTP connection may take from the hub (issue 13, hole 6), on raw sockets.

A request's head is bounded in bytes and fields (431), a slow head or body is
cut off (408), an idle connection is closed, and past a cap new connections are
refused (503) instead of taking the process's last descriptors. Each against a
real hub process; memory is the hub's own peak RSS (``VmHWM`` in /proc).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from hubproc import HubFactory, HubProcess, free_port, hub_env, serve_command

MiB = 1 << 20


def peak_rss(hub: HubProcess) -> int:
    """The hub process's peak resident memory in bytes."""
    assert hub.proc is not None
    with open(f"/proc/{hub.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


async def connect(hub: HubProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", hub.port)


async def read_response(reader: asyncio.StreamReader, timeout: float = 10.0) -> tuple[int, bytes]:
    """The status and body of one response, read until the hub closes the connection."""
    raw = await asyncio.wait_for(reader.read(), timeout)
    assert raw.startswith(b"HTTP/1.1 "), raw[:200]
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def request(hub: HubProcess, head: bytes, timeout: float = 5.0) -> int:
    reader, writer = await connect(hub)
    try:
        writer.write(head)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        return int(line.split(b" ", 2)[1])
    finally:
        writer.close()


def _problem(body: bytes, status: int, setting: str) -> None:
    problem = orjson.loads(body)
    assert problem["status"] == status, problem
    assert setting in problem["detail"], problem


async def test_an_endless_header_is_a_431_and_costs_the_hub_little(hub: HubProcess) -> None:
    before = peak_rss(hub)
    reader, writer = await connect(hub)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ")
    chunk = b"a" * (256 * 1024)
    sent = 0
    answer = asyncio.ensure_future(read_response(reader, timeout=30))
    with contextlib.suppress(ConnectionError):
        while sent < 64 * MiB and not answer.done():
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 10)
            sent += len(chunk)
            await asyncio.sleep(0)  # let the answer in as soon as it comes
    status, body = await answer
    writer.close()
    assert status == 431
    _problem(body, 431, "max_header_bytes")
    grew = peak_rss(hub) - before
    assert grew < 16 * MiB, f"the hub's peak RSS grew {grew / MiB:.0f} MiB"
    assert "Traceback" not in hub.log_text()


async def test_a_head_over_the_byte_or_field_limit_is_a_431(hub: HubProcess) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(99))
    ok = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + fields + b"\r\n"
    assert await request(hub, ok) == 200  # 100 fields
    reader, writer = await connect(hub)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + fields + b"X-F99: v\r\n\r\n")
    status, body = await read_response(reader)
    writer.close()
    assert status == 431
    _problem(body, 431, "max_headers")
    big = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * (64 * 1024) + b"\r\n\r\n"
    assert await request(hub, big) == 431
    long_url = b"GET /healthz?" + b"q" * (64 * 1024) + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    assert await request(hub, long_url) == 431


async def test_the_head_limits_are_settings(hub_factory: HubFactory) -> None:
    hub = hub_factory.start("--max-header-bytes", "2048", "--max-headers", "10")
    assert await request(hub, b"GET /healthz HTTP/1.1\r\nX: " + b"x" * 3000 + b"\r\n\r\n") == 431
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(11))
    assert await request(hub, b"GET /healthz HTTP/1.1\r\n" + fields + b"\r\n") == 431
    assert await request(hub, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == 200


@pytest.fixture
def quick_hub(hub_factory: HubFactory) -> HubProcess:
    return hub_factory.start(
        "--header-timeout", "1", "--body-timeout", "1", "--keep-alive-timeout", "1"
    )


async def test_slow_heads_and_bodies_are_cut_off_with_408(quick_hub: HubProcess) -> None:
    """Slowloris: a client that sends nothing, or a byte at a time, loses its connection."""

    async def trickle(first: bytes, drip: bytes) -> tuple[int, bytes, float]:
        reader, writer = await connect(quick_hub)
        started = time.monotonic()
        writer.write(first)
        got = asyncio.ensure_future(read_response(reader))
        with contextlib.suppress(ConnectionError):
            for _ in range(40):  # 8 s of one byte every 0.2 s, far past the timeout
                if got.done():
                    break
                writer.write(drip)
                await writer.drain()
                await asyncio.sleep(0.2)
        status, body = await got
        writer.close()
        return status, body, time.monotonic() - started

    silent, head, body = await asyncio.gather(
        trickle(b"", b""),
        trickle(b"GET /healthz HTTP/1.1\r\n", b"X"),
        trickle(
            b"POST /v1/topics/slow/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/cloudevents+json\r\nContent-Length: 1000\r\n\r\n{",
            b" ",
        ),
    )
    for (status, problem, elapsed), setting in [
        (silent, "header_timeout"),
        (head, "header_timeout"),
        (body, "body_timeout"),
    ]:
        assert status == 408, (setting, problem)
        _problem(problem, 408, setting)
        assert elapsed < 4, f"{setting}: cut off after {elapsed:.1f} s"
    assert "Traceback" not in quick_hub.log_text()


async def test_an_idle_keep_alive_connection_is_closed(quick_hub: HubProcess) -> None:
    reader, writer = await connect(quick_hub)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), 5)  # the response, then end of stream
    assert data.startswith(b"HTTP/1.1 200")
    assert time.monotonic() - started < 4
    writer.close()


async def test_slow_connections_cannot_lock_everyone_out(hub_factory: HubFactory) -> None:
    """256 silent connections under a 256-descriptor limit: others are refused, then served."""
    hub = hub_factory.start("--header-timeout", "1", "--max-connections", "100")
    assert hub.proc is not None
    resource.prlimit(hub.proc.pid, resource.RLIMIT_NOFILE, (256, 256))
    silent = [await connect(hub) for _ in range(256)]
    try:
        # Past the cap a connection is refused at once (503, or a reset if the hub's
        # answer came before the request), not left hanging.
        try:
            refused = await request(hub, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 3)
        except ConnectionResetError:
            refused = 503
        assert refused == 503
        # The silent ones are dropped after the header timeout; then everyone is served.
        deadline = time.monotonic() + 8
        status = 0
        while time.monotonic() < deadline and status != 200:
            with contextlib.suppress(TimeoutError, ConnectionError, IndexError, ValueError):
                status = await request(hub, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 1)
            await asyncio.sleep(0.2)
        assert status == 200, "no request was served while slow connections were open"
        closed = 0
        for reader, _ in silent:
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(), 0.5)
                closed += 1
        assert closed == len(silent)
    finally:
        for _, writer in silent:
            writer.close()


async def test_the_connection_cap_leaves_descriptors_under_the_open_file_limit(
    tmp_path: Path,
) -> None:
    """Under a hard limit of 256 open files the default cap of 1024 is lowered to 128."""
    port = free_port()
    log = (tmp_path / "hub.log").open("wb")
    proc = subprocess.Popen(
        serve_command(port, tmp_path / "data", "interval:5", ()),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=hub_env(),
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)),
    )
    hub = HubProcess(tmp_path / "data", port, "interval:5", ())
    hub.proc = proc
    try:
        hub._wait_healthy()
        held = [await connect(hub) for _ in range(127)]  # and the one below: 128
        assert await request(hub, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == 200
        await asyncio.sleep(0.5)  # the hub has seen the request's connection close
        held.append(await connect(hub))  # the 128th
        await asyncio.sleep(0.5)
        try:
            status = await request(hub, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 3)
        except ConnectionResetError:
            status = 503
        assert status == 503
        for _, writer in held:
            writer.close()
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
    assert "taking 128" in (tmp_path / "hub.log").read_text()
