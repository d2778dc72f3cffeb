"""The hub's identity on every answer: the ``Tidings-Hub-Id`` response header.

The id is the storage's (:attr:`tidings.core.storage.Storage.hub_id`): made once
for a data directory, the same after a restart, and the same on every node that
serves one shared backend. A client given several node URLs reads it from the
first answer and refuses to move to a URL that answers another id: those are
separate hubs, whose offsets and resume tokens mean different records.

The header goes on every HTTP answer and on the WebSocket handshake's 101.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HUB_ID_HEADER", "HubIdHeader"]

HUB_ID_HEADER: Final = "Tidings-Hub-Id"
_NAME: Final = HUB_ID_HEADER.lower().encode()


class HubIdHeader:
    """ASGI middleware adding ``Tidings-Hub-Id: <id>`` to every response it sees start."""

    def __init__(self, app: ASGIApp, hub_id: str) -> None:
        self.app = app
        self.header = (_NAME, hub_id.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = self.header

        async def send_with_id(message: Message) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.accept", "websocket.http.response.start"):
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)
