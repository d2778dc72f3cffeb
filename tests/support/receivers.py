"""Webhook receivers for the tests: real aiohttp servers on free loopback ports.

A test scripts what each answers (``answer``); every request is recorded with
its headers, body and arrival time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass(frozen=True, slots=True)
class Received:
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic()
    path: str

    @property
    def event(self) -> dict[str, Any]:
        return orjson.loads(self.body)  # type: ignore[no-any-return]

    @property
    def position(self) -> tuple[str, int, int]:
        h = self.headers
        return h["tidings-topic"], int(h["tidings-partition"]), int(h["tidings-offset"])


@dataclass(frozen=True, slots=True)
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Script = Callable[[Received], Answer | Awaitable[Answer]]


def always(status: int = 200, **kw: Any) -> Script:
    return lambda _r: Answer(status, **kw)


class Receiver:
    def __init__(self, answer: Script | None = None) -> None:
        self.answer: Script = answer or always(200)
        self.requests: list[Received] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._arrived = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> Receiver:
        app = web.Application(client_max_size=32 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        got = Received(
            {k.lower(): v for k, v in request.headers.items()},
            await request.read(),
            time.monotonic(),
            request.path,
        )
        self.requests.append(got)
        self._arrived.set()
        answer = self.answer(got)
        if not isinstance(answer, Answer):
            answer = await answer
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    async def wait_for(self, check: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"timed out; {len(self.requests)} requests arrived: "
                    + ", ".join(str(r.headers.get("tidings-offset")) for r in self.requests[-20:])
                )
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, 0.2))


class Tally:
    """A script that answers from a function of (request, how many times its event
    came before), and counts the events it answered with a 2xx."""

    def __init__(self, decide: Callable[[Received, int], Answer]) -> None:
        self.decide = decide
        self.seen: dict[str, int] = {}
        self.succeeded: dict[str, list[Received]] = {}
        self.order: list[Received] = []  # successful deliveries, in arrival order

    def __call__(self, r: Received) -> Answer:
        msg = r.headers["webhook-id"]
        n = self.seen.get(msg, 0)
        self.seen[msg] = n + 1
        answer = self.decide(r, n)
        if 200 <= answer.status < 300:
            self.succeeded.setdefault(msg, []).append(r)
            self.order.append(r)
        return answer
