"""The end of one partition as this node sees it: an ordered push consumer that
JetStream feeds with the headers of the last record of each append (the records on
the stream's end subject, ``names.end_subject``), whichever node appended it; waiters
wake as it passes their offset. One message per append, not per record: a batch of
1000 costs the node one delivery."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from nats.js import api

from tidings.errors import StorageUnavailable

if TYPE_CHECKING:
    from tidings.backends.nats.log import NatsLog

# nats-py recreates an ordered consumer after two missed heartbeats (its server died)
TAIL_HEARTBEAT_S = 1.0


class Tail:
    """The end of one partition as this node sees it, kept by an ordered consumer that
    JetStream feeds with the headers of each append's last record; waiters wake as it
    passes them. ``subject``: the stream's end subject."""

    def __init__(self, log: NatsLog, stream: str, subject: str) -> None:
        self.log = log
        self.stream = stream
        self.subject = subject
        self.end = 0
        self.created: str | None = None  # the stream's, as first seen: which one it follows
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._sub: Any = None
        self._start: asyncio.Task[None] | None = None
        self._closed = False

    async def started(self) -> None:
        if self._start is None:
            self._start = asyncio.ensure_future(self._subscribe())
        try:
            await asyncio.shield(self._start)
        except BaseException:
            if self._start.done():
                self._start = None  # let the next wait try again
            raise

    async def _subscribe(self) -> None:
        _, end = await self.log._bounds(self.stream)  # sets self.created
        self.advance(end)

        async def on_msg(msg: Msg) -> None:
            self.advance(msg.metadata.sequence.stream)

        conn = self.log.conn
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=end + 1
        )
        deadline = time.monotonic() + conn.settings.retry_deadline_s
        while True:
            try:
                js = conn.client.jetstream(timeout=conn.settings.request_timeout_s)
                self._sub = await js.subscribe(
                    self.subject, stream=self.stream, cb=on_msg, ordered_consumer=True,
                    config=config, headers_only=True, idle_heartbeat=TAIL_HEARTBEAT_S,
                )  # fmt: skip
                return
            except Exception as exc:  # an election in progress: the API does not answer
                if time.monotonic() > deadline or self._closed:
                    raise StorageUnavailable(f"cannot follow {self.stream}: {exc}") from None
                await asyncio.sleep(0.1)

    def advance(self, end: int) -> None:
        if end <= self.end:
            return
        self.end = end
        keep = []
        for offset, fut in self._waiters:
            if offset < end:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((offset, fut))
        self._waiters = keep

    async def wait(self, offset: int, timeout: float | None) -> bool:
        if self.end > offset:
            return True
        if self._closed:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((offset, fut))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, timeout)
        return self.end > offset

    async def close(self) -> None:
        self._closed = True
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters = []
        if self._start is not None and not self._start.done():
            self._start.cancel()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
