"""What a consumer's handlers publish, gathered into one request per topic.

Handlers hand their events in (:meth:`Outbox.submit`) and await the answer.
Everything handed in while the loop finishes its current turn, or while the
previous request is out, goes in the next request: a batch of handlers that
each return an event costs one publish, not one per event. One request is out
at a time, so what was handed in earlier is stored earlier (the order of a
key's events holds). A request is all or nothing: if one that holds several
handlers' events fails, each handler's events are sent again on their own, so a
handler gets the error only if its own events cannot be stored, as if it had
published alone (its event is then retried; ids of chained events are fixed,
so a retry stores nothing twice).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tidings.errors import BadRequest, InvalidEvent, TooLarge

# Refusals that name an event of the request: worth sending each handler's alone.
_ABOUT_THE_EVENTS = (BadRequest, InvalidEvent, TooLarge)

__all__ = ["Outbox"]

# At most this many events in one request; more are sent as several, in order.
MAX_EVENTS_PER_REQUEST = 1000

Publish = Callable[[str, Sequence[dict[str, Any]]], Awaitable[None]]


class Outbox:
    """One consumer's publishes, sent one request per topic at a time."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        # In the order handed in: (topic, events, the future its handler awaits).
        self._pending: list[tuple[str, Sequence[dict[str, Any]], asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None

    def submit(self, topic: str, events: Sequence[dict[str, Any]]) -> asyncio.Future[None]:
        """Queue ``events`` for ``topic``; the future is done once they are stored."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((topic, events, fut))
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send_all())
        return fut

    async def _send_all(self) -> None:
        taken: list[tuple[str, Sequence[dict[str, Any]], asyncio.Future[None]]] = []
        try:
            while self._pending:
                await asyncio.sleep(0)  # the rest of this turn's handlers join the request
                taken, self._pending = self._pending, []
                by_topic: dict[
                    str, list[tuple[Sequence[dict[str, Any]], asyncio.Future[None]]]
                ] = {}
                for topic, events, fut in taken:
                    by_topic.setdefault(topic, []).append((events, fut))
                for topic, items in by_topic.items():
                    await self._send(topic, items)
        finally:
            # Cancelled (the loop is closing): no handler is left waiting for ever.
            for _, _, fut in [*taken, *self._pending]:
                if not fut.done():
                    fut.cancel()

    async def _send(
        self, topic: str, items: list[tuple[Sequence[dict[str, Any]], asyncio.Future[None]]]
    ) -> None:
        # Cut between handlers, never inside one handler's events (all or nothing each).
        chunk: list[tuple[Sequence[dict[str, Any]], asyncio.Future[None]]] = []
        size = 0
        for item in items:
            if chunk and size + len(item[0]) > MAX_EVENTS_PER_REQUEST:
                await self._request(topic, chunk)
                chunk, size = [], 0
            chunk.append(item)
            size += len(item[0])
        if chunk:
            await self._request(topic, chunk)

    async def _request(
        self, topic: str, chunk: list[tuple[Sequence[dict[str, Any]], asyncio.Future[None]]]
    ) -> None:
        events = [ev for evs, _ in chunk for ev in evs] if len(chunk) > 1 else chunk[0][0]
        try:
            await self._publish(topic, events)
        except asyncio.CancelledError:
            for _, fut in chunk:
                if not fut.done():
                    fut.cancel()
            raise
        except Exception as exc:
            if len(chunk) > 1 and isinstance(exc, _ABOUT_THE_EVENTS):
                # Nothing of it was stored. Each handler's events go again on their own,
                # so that one handler's bad event fails that handler alone. (A hub that is
                # down, busy or refusing the token fails every handler at once instead:
                # one request each would only wait out the same fault again and again.)
                for item in chunk:
                    await self._request(topic, [item])
                return
            for _, fut in chunk:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for _, fut in chunk:
            if not fut.done():
                fut.set_result(None)
