"""Nodes in front of a real hub, for failover tests: every URL reaches the same hub.

:class:`ForwardingNode` listens on 127.0.0.1 and passes each HTTP request to the
hub, byte for byte, and its answer back, or, as told for a request, does
something a failing node does: forwards it and drops the connection before
answering (the hub applied it; the client cannot know), forwards it and never
answers, or answers 503 as an unavailable node without forwarding. WebSocket
upgrades are tunnelled both ways. :meth:`ForwardingNode.kill` closes the
listener and every connection at once, as a node that dies.

:class:`SilentPort` is a node down from the start: a socket bound for the test's
duration and never listening, so a connect is refused and no other test can be
given its port. :class:`FullBacklog` is a node whose connections time out: a
listener with a full backlog, whose SYNs the kernel drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Literal

Action = Literal["forward", "drop", "hang", "unavailable"]

_UNAVAILABLE = (
    b'{"type":"https://tidings.dev/problems/storage-unavailable","title":"Storage unavailable",'
    b'"status":503,"detail":"the hub is shutting down"}'
)


class ForwardingNode:
    """A node at :attr:`url` in front of the hub at ``127.0.0.1:upstream``.

    ``rule(method, path)`` says what to do with each request (``forward`` by
    default); :attr:`seen` lists every ``(method, path, action)`` in order.
    """

    def __init__(self, upstream: int, rule: Callable[[str, str], Action] | None = None) -> None:
        self.upstream = upstream
        self.rule: Callable[[str, str], Action] = rule or (lambda method, path: "forward")
        self.seen: list[tuple[str, str, Action]] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.url = ""

    async def start(self) -> ForwardingNode:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def count(self, method: str, path: str) -> int:
        """How many requests of ``method`` on ``path`` reached this node."""
        return sum(1 for m, p, _ in self.seen if m == method and p.split("?")[0] == path)

    async def kill(self) -> None:
        """Stop at once: no more connections, and every open one cut."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> ForwardingNode:
        return self if self._server is not None else await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.kill()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method, path = head.split(b" ", 2)[:2]
                fields = _fields(head)
                action = self.rule(method.decode(), path.decode())
                self.seen.append((method.decode(), path.decode(), action))
                body = await reader.readexactly(int(fields.get(b"content-length", b"0")))
                if action == "unavailable":
                    writer.write(
                        b"HTTP/1.1 503 Service Unavailable\r\n"
                        b"content-type: application/problem+json\r\n"
                        b"content-length: %d\r\n\r\n" % len(_UNAVAILABLE) + _UNAVAILABLE
                    )
                    await writer.drain()
                    continue
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
                up_writer.write(head + body)
                await up_writer.drain()
                if fields.get(b"upgrade", b"").lower() == b"websocket":
                    await _tunnel(reader, writer, up_reader, up_writer)
                    return
                answer = await _read_answer(up_reader)
                up_writer.close()
                up_writer = None
                if action == "drop":  # the hub has answered: applied, and the answer lost
                    writer.transport.abort()
                    return
                if action == "hang":  # until the client gives up (or the node is killed)
                    while await reader.read(65536):
                        pass
                    return
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            return
        finally:
            self._writers.discard(writer)
            if up_writer is not None:
                up_writer.transport.abort()
            writer.transport.abort()


def _fields(head: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


async def _read_answer(reader: asyncio.StreamReader) -> bytes:
    """One whole HTTP answer (head and body: by length, or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    fields = _fields(head)
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            chunk = await reader.readexactly(int(size_line.split(b";")[0], 16) + 2)
            body += size_line + chunk
            if size_line.strip() == b"0":
                return head + body
    return head + await reader.readexactly(int(fields.get(b"content-length", b"0")))


async def _tunnel(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.transport.abort()

    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


class SilentPort:
    """A loopback port bound and never listening: connects are refused."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


class FullBacklog:
    """A loopback listener that never accepts, its backlog filled: the kernel drops
    further SYNs, so a connect to :attr:`url` times out."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.fill: list[socket.socket] = []
        for _ in range(3):
            conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            conn.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                conn.connect(("127.0.0.1", port))
            self.fill.append(conn)

    def close(self) -> None:
        for conn in self.fill:
            conn.close()
        self.sock.close()
