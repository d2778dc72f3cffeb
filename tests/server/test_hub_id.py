"""The hub's id (server/hubid.py): made once per data directory, kept across restarts,
answered by ``/healthz`` and in the ``Tidings-Hub-Id`` header of every answer."""

from __future__ import annotations

import contextlib
from pathlib import Path

import aiohttp
import websockets
from hubproc import HubFactory

from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.log.memory import MemoryStorage

HEADER = "Tidings-Hub-Id"


async def test_every_answer_names_the_hub_and_a_restart_keeps_its_id(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    a, b = hub_factory.start(), hub_factory.start()
    async with http.get(f"{a.base_url}/healthz") as resp:
        health = await resp.json()
        first = resp.headers[HEADER]
    assert health == {"status": "ok", "hub_id": first}
    # Refusals and errors carry it too: a 404, a 405, a 401-less forged request.
    async with http.get(f"{a.base_url}/v1/topics/none") as resp:
        assert resp.status == 404 and resp.headers[HEADER] == first
    async with http.delete(f"{a.base_url}/healthz") as resp:
        assert resp.status == 405 and resp.headers[HEADER] == first
    async with http.post(
        f"{a.base_url}/v1/topics/t/events",
        data=b"{}",
        headers={"Origin": "http://evil.example", "Content-Type": "text/plain"},
    ) as resp:
        assert resp.status == 403 and resp.headers[HEADER] == first
    # The WebSocket handshake's 101.
    async with websockets.connect(
        a.base_url.replace("http://", "ws://") + "/v1/ws", subprotocols=["tidings.v1"]
    ) as ws:
        assert ws.response is not None and ws.response.headers[HEADER] == first
    # Another data directory: another hub.
    async with http.get(f"{b.base_url}/healthz") as resp:
        assert resp.headers[HEADER] != first
    a.kill()
    a.start()  # the same data directory, after a SIGKILL
    async with http.get(f"{a.base_url}/healthz") as resp:
        assert (await resp.json())["hub_id"] == resp.headers[HEADER] == first


def test_the_id_is_kept_in_the_data_directory(tmp_path: Path) -> None:
    root = tmp_path
    first = EmbeddedStorage(root / "a")
    again = EmbeddedStorage(root / "a")  # opened again: the id it made first
    other = EmbeddedStorage(root / "b")
    assert first.hub_id == again.hub_id != other.hub_id
    for s in (first, again, other):
        s._db.close()
    assert MemoryStorage().hub_id != MemoryStorage().hub_id


async def test_an_internal_error_names_the_hub_too() -> None:
    """A 500 is answered by Starlette's outermost layer: the id is put on outside it."""
    from tidings.core.hub import Hub, HubOptions
    from tidings.server.app import ServerOptions, create_app
    from tidings.server.auth import Auth

    hub = Hub(MemoryStorage(), HubOptions())
    app = create_app(hub, Auth([]), ServerOptions())

    def broken() -> list[dict[str, object]]:
        raise RuntimeError("a bug")

    async def ready(timeout: float = 10.0) -> None:
        return None  # not started: nothing to load

    hub.views.ready = ready  # type: ignore[method-assign]
    hub.views.list = broken  # type: ignore[method-assign]

    async def get(path: str) -> tuple[int, dict[bytes, bytes]]:
        sent: list[dict[str, object]] = []
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": b"", "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8700), "headers": [(b"host", b"127.0.0.1:8700")],
        }  # fmt: skip

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        with contextlib.suppress(RuntimeError):  # a 500 is raised on to the server
            await app(scope, receive, send)  # type: ignore[arg-type]
        start = next(m for m in sent if m["type"] == "http.response.start")
        return start["status"], dict(start["headers"])  # type: ignore[call-overload,return-value]

    status, headers = await get("/v1/views")
    assert status == 500
    assert headers[HEADER.lower().encode()] == hub.id.encode()
