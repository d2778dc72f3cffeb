"""The hub's id (server/hubid.py): made once per data directory, kept across restarts,
answered by ``/healthz`` and in the ``Tidings-Hub-Id`` header of every answer."""

from __future__ import annotations

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
