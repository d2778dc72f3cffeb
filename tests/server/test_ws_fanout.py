"""Live subscriptions share one tail reader per partition (``tidings.core.fanout``).

The server runs in this process (uvicorn on a real socket) so that the tests can
look at the endpoint's tails and connections, and set a small send buffer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from livehelp import PROTOCOL, in_process_hub, recv

from tidings.core.hub import Hub
from tidings.server.live import LiveOptions
from tidings.server.ws import WebSocketEndpoint

pytestmark = pytest.mark.timeout(90)

BUFFER = 64 * 1024

Server = tuple[str, Hub, WebSocketEndpoint]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with in_process_hub(
        tmp_path / "data", LiveOptions(send_buffer_bytes=BUFFER, slow_after_s=1.0)
    ) as served:
        yield served


async def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Wait for ``check`` to hold; fails only after a generous bound (no timing claim)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def followers(endpoint: WebSocketEndpoint, topic: str, partition: int = 0) -> int:
    tail = endpoint.tails.tails.get((topic, partition))
    return 0 if tail is None else len(tail.followers)


def events(n: int, start: int = 0, data: str = "", kind: str = "n.made") -> list[dict[str, Any]]:
    return [
        {"type": kind, "id": f"e-{start + i}", "specversion": "1.0", "source": "/t", "data": data}
        for i in range(n)
    ]


async def subscribe(url: str, topic: str, start: str = "latest", **kw: Any) -> Any:
    ws = await websockets.connect(url, subprotocols=[PROTOCOL], compression=None, **kw)
    msg = {"type": "subscribe", "id": "s", "topic": topic, "from": start}
    await ws.send(orjson.dumps(msg).decode())
    got = await recv(ws)
    assert got["type"] == "subscribed", got
    return ws


async def take(ws: Any, n: int) -> list[dict[str, Any]]:
    return [await recv(ws) for _ in range(n)]


def check_in_order(got: list[dict[str, Any]], first: int, count: int) -> None:
    """Offsets first..first+count-1 once each, in order, each with the token after it."""
    assert [e["offset"] for e in got] == list(range(first, first + count))
    assert [e["resume"] for e in got] == [f"0:{o + 1}" for o in range(first, first + count)]
    assert [e["event"]["id"] for e in got] == [f"e-{o}" for o in range(first, first + count)]


async def test_many_subscribers_share_one_tail_and_get_every_event_once_in_order(
    server: Server,
) -> None:
    url, hub, endpoint = server
    await hub.create_topic("fan")
    clients = [await subscribe(url, "fan") for _ in range(20)]
    try:
        await until(lambda: followers(endpoint, "fan") == 20, "20 followers of one tail")
        assert list(endpoint.tails.tails) == [("fan", 0)]
        for start in range(0, 300, 30):
            await hub.publish("fan", events(30, start))
        got = await asyncio.gather(*(take(ws, 300) for ws in clients))
        for g in got:
            check_in_order(g, 0, 300)
        assert followers(endpoint, "fan") == 20  # nobody had to leave
    finally:
        for ws in clients:
            await ws.close()


async def test_type_filters_apply_per_subscriber_on_the_shared_records(server: Server) -> None:
    url, hub, endpoint = server
    await hub.create_topic("mixed")
    every = await subscribe(url, "mixed")
    ws = await websockets.connect(url, subprotocols=[PROTOCOL], compression=None)
    msg = {"type": "subscribe", "id": "s", "topic": "mixed", "types": ["a.*"]}
    await ws.send(orjson.dumps(msg).decode())
    assert (await recv(ws))["type"] == "subscribed"
    try:
        await until(lambda: followers(endpoint, "mixed") == 2, "2 followers")
        batch = [{**e, "type": "a.x" if i % 3 == 0 else "b.y"} for i, e in enumerate(events(30))]
        await hub.publish("mixed", batch)
        check_in_order(await take(every, 30), 0, 30)
        some = await take(ws, 10)
        assert [e["offset"] for e in some] == list(range(0, 30, 3))
        assert [e["resume"] for e in some] == [f"0:{o + 1}" for o in range(0, 30, 3)]
    finally:
        await every.close()
        await ws.close()


async def test_a_late_subscriber_from_an_old_token_catches_up_then_joins(server: Server) -> None:
    url, hub, endpoint = server
    await hub.create_topic("late")
    live = await subscribe(url, "late")
    late = None
    try:
        await until(lambda: followers(endpoint, "late") == 1, "the first follower")
        for start in range(0, 1000, 100):
            await hub.publish("late", events(100, start))
        # Far behind the tail (990 records): it reads the log on its own first.
        late = await subscribe(url, "late", start="0:10")
        old = await take(late, 990)
        check_in_order(old, 10, 990)
        await until(lambda: followers(endpoint, "late") == 2, "the late one joining")
        await hub.publish("late", events(50, 1000))
        check_in_order(await take(late, 50), 1000, 50)
        check_in_order(await take(live, 1050), 0, 1050)
    finally:
        await live.close()
        if late is not None:
            await late.close()


async def test_a_slow_subscriber_does_not_hold_the_others_back(server: Server) -> None:
    url, hub, endpoint = server
    await hub.create_topic("mixed-speed")
    fast = [await subscribe(url, "mixed-speed") for _ in range(2)]
    before = set(endpoint.connections)
    # max_queue=1: past one message the client stops reading its socket.
    slow = await subscribe(url, "mixed-speed", max_queue=1)
    [slow_conn] = endpoint.connections - before
    try:
        await until(lambda: followers(endpoint, "mixed-speed") == 3, "3 followers")
        total = 5000  # 40 MiB: more than every socket buffer on the way can hold
        readers = [asyncio.create_task(take(ws, total)) for ws in fast]
        for start in range(0, total, 100):
            await hub.publish("mixed-speed", events(100, start, data="x" * 8000))
        for g in await asyncio.gather(*readers):
            check_in_order(g, 0, total)
        # The slow one left the tail when its buffer filled, then was closed (4008).
        await until(lambda: len(endpoint.connections) == 2, "the slow one closed")
        assert slow_conn.closed_with is not None and slow_conn.closed_with[0] == 4008
        assert endpoint.peak_buffer_bytes <= BUFFER + 9000  # the bound, plus one frame
        assert all(c.buffer.peak <= BUFFER + 9000 for c in endpoint.connections)
    finally:
        for ws in [*fast, slow]:
            await ws.close()


async def test_no_event_after_unsubscribed(server: Server) -> None:
    url, hub, endpoint = server
    await hub.create_topic("leave")
    ws = await subscribe(url, "leave")
    try:
        await until(lambda: followers(endpoint, "leave") == 1, "a follower")
        await ws.send(orjson.dumps({"type": "unsubscribe", "id": "s"}).decode())
        assert (await recv(ws)) == {"type": "unsubscribed", "id": "s"}
        await hub.publish("leave", events(5))
        await ws.send(orjson.dumps({"type": "publish", "ref": 1, "topic": "leave",
                                    "event": events(1, 5)[0]}).decode())  # fmt: skip
        # The answer to the publish comes; no event of the old subscription before it.
        assert (await recv(ws))["type"] == "published"
    finally:
        await ws.close()
