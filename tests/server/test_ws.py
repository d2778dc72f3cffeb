"""``/v1/ws`` against a real hub process, with the ``websockets`` client library."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets
from hubapi import put_group, put_topic, unique
from hubproc import HubFactory, HubProcess
from livehelp import PROTOCOL, Publisher, check_exactly_once, recv, ws_url

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def hub(backend_hub: HubProcess) -> HubProcess:
    """This module's hub, on the embedded log and on NATS in turn (``backend_hub``)."""
    return backend_hub


async def send(ws: websockets.ClientConnection, **frame: Any) -> None:
    await ws.send(orjson.dumps(frame).decode())


async def subscribe(ws: websockets.ClientConnection, sub: str, topic: str, **kw: Any) -> str:
    await send(ws, type="subscribe", id=sub, topic=topic, **kw)
    got = await recv(ws)
    assert got["type"] == "subscribed" and got["id"] == sub, got
    return str(got.get("resume", ""))


async def test_publish_and_subscribe_over_one_socket(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    topic = unique()
    await put_topic(http, hub.base_url, topic, partitions=3)
    async with websockets.connect(ws_url(hub.base_url), subprotocols=[PROTOCOL]) as ws:
        assert ws.subprotocol == "tidings.v1"
        start = await subscribe(ws, "s1", topic, types=["order.*"], **{"from": "latest"})
        assert start == "0:0,1:0,2:0"
        for i in range(6):
            event = {"type": "order.placed", "partitionkey": f"o-{i}", "data": {"i": i}}
            await send(ws, type="publish", ref=i, topic=topic, event=event)
        await send(ws, type="publish", ref="skip", topic=topic, event={"type": "cart.changed"})
        published: dict[Any, dict[str, Any]] = {}
        events: list[dict[str, Any]] = []
        while len(published) < 7 or len(events) < 6:
            got = await recv(ws)
            if got["type"] == "published":
                published[got["ref"]] = got
            else:
                assert got["type"] == "event", got
                events.append(got)
        assert sorted(published, key=str) == sorted([*range(6), "skip"], key=str)
        for e in events:
            p = published[e["event"]["data"]["i"]]
            assert (e["partition"], e["offset"]) == (p["partition"], p["offset"])
            assert e["sub"] == "s1" and e["topic"] == topic
        # Each token resumes after its event: a fresh subscription from the third
        # token gets exactly the events after the third.
        third = events[2]["resume"]
        await send(ws, type="unsubscribe", id="s1")
        assert (await recv(ws)) == {"type": "unsubscribed", "id": "s1"}
        await subscribe(ws, "s2", topic, types=["order.*"], **{"from": third})
        again = [await recv(ws) for _ in range(3)]
        key = lambda e: (e["partition"], e["offset"])  # noqa: E731
        assert sorted(map(key, again)) == sorted(map(key, events[3:]))


async def test_bad_frames_get_errors_and_the_socket_stays_open(hub: HubProcess) -> None:
    topic = unique()
    async with websockets.connect(ws_url(hub.base_url), subprotocols=[PROTOCOL]) as ws:
        bad: list[tuple[Any, int]] = [
            ("not json", 400),
            (b"\x00\x01binary", 400),
            ("[]", 400),
            (json.dumps({"type": "dance"}), 400),
            (json.dumps({"type": "subscribe", "topic": topic}), 400),
            (json.dumps({"type": "subscribe", "id": "x", "topic": "no such topic"}), 400),
            (json.dumps({"type": "subscribe", "id": "x", "topic": unique()}), 404),
            (json.dumps({"type": "publish", "ref": 1, "topic": topic, "event": {}}), 422),
            (json.dumps({"type": "ack", "leases": ["nope"]}), 400),
        ]
        for frame, status in bad:
            await ws.send(frame)
            got = await recv(ws)
            assert got["type"] == "error" and got["status"] == status, (frame, got)
            assert got["detail"] and got["problem"].startswith("https://")
        await send(ws, type="publish", ref="ok", topic=topic, event={"type": "a"})
        assert (await recv(ws))["type"] == "published"


async def test_group_mode_acks_and_redelivers(hub: HubProcess, http: aiohttp.ClientSession) -> None:
    topic, group = unique(), unique("g")
    await put_topic(http, hub.base_url, topic)
    await put_group(http, hub.base_url, topic, group, ack_wait=1, start="earliest")
    async with websockets.connect(ws_url(hub.base_url), subprotocols=[PROTOCOL]) as ws:
        for i in range(3):
            await send(ws, type="publish", ref=i, topic=topic, event={"type": "job", "data": i})
            assert (await recv(ws))["type"] == "published"
        await send(ws, type="subscribe", id="g", topic=topic, group=group)
        assert (await recv(ws)) == {"type": "subscribed", "id": "g", "topic": topic, "group": group}
        first = [await recv(ws) for _ in range(3)]
        assert [e["event"]["data"] for e in first] == [0, 1, 2]
        assert all(e["deliveries"] == 1 and "resume" not in e for e in first)
        await send(ws, type="ack", sub="g", ref="a", leases=[first[0]["lease"]])
        await send(ws, type="nack", ref="n", leases=[first[1]["lease"]])
        replies: dict[str, Any] = {}
        again: dict[int, dict[str, Any]] = {}
        # Event 1 comes back at once (nack) and is acked at once; event 2 comes back
        # after ack_wait (1 s); event 0 (acked) never.
        while 1 not in again or 2 not in again or len(replies) < 3:
            got = await recv(ws)
            if got["type"] in ("acked", "nacked"):
                replies[got["ref"]] = got
                continue
            data = got["event"]["data"]
            assert data in (1, 2) and data not in again, got
            again[data] = got
            assert got["deliveries"] == 2
            if data == 1:
                await send(ws, type="ack", sub="g", ref="b", leases=[got["lease"]])
        assert replies["a"] == {"type": "acked", "ref": "a", "count": 1}
        assert replies["n"] == {"type": "nacked", "ref": "n", "count": 1}
        assert replies["b"]["count"] == 1
        await send(ws, type="ack", sub="g", ref="c", leases=[first[2]["lease"]])
        stale = await recv(ws)
        assert stale["type"] == "error" and stale["status"] == 409 and stale["ref"] == "c"


async def test_resume_across_client_drops_while_publishing(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    topic = unique()
    await put_topic(http, hub.base_url, topic, partitions=3)
    pub = Publisher(hub.base_url, topic, 600)
    task = asyncio.create_task(pub.run(http))
    records: list[dict[str, Any]] = []
    token: str = "earliest"
    try:
        for drop_after in (50, 120, 200, 10**9):
            async with websockets.connect(ws_url(hub.base_url), subprotocols=[PROTOCOL]) as ws:
                await subscribe(ws, "s", topic, **{"from": token})
                taken = 0
                while taken < drop_after and len(records) < len(pub.ids):
                    e = await recv(ws)
                    records.append(e)
                    token = e["resume"]
                    taken += 1
            # Leaving the block closes the socket with frames still in flight.
        await task
    finally:
        task.cancel()
    check_exactly_once(records, pub.ids)


async def test_resume_across_a_hub_restart(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    hub = hub_factory.start(fsync="always")
    topic = unique()
    await put_topic(http, hub.base_url, topic, partitions=2)
    pub = Publisher(hub.base_url, topic, 400)
    task = asyncio.create_task(pub.run(http))
    records: list[dict[str, Any]] = []
    token = "earliest"
    restarted = False
    try:
        while len(records) < len(pub.ids):
            try:
                async with websockets.connect(
                    ws_url(hub.base_url), subprotocols=[PROTOCOL], open_timeout=5
                ) as ws:
                    await subscribe(ws, "s", topic, **{"from": token})
                    while len(records) < len(pub.ids):
                        e = await recv(ws, timeout=30)
                        records.append(e)
                        token = e["resume"]
                        if len(records) == 150 and not restarted:
                            restarted = True
                            await asyncio.to_thread(hub.restart, hard=True)
            except (websockets.ConnectionClosed, OSError):
                await asyncio.sleep(0.1)  # the hub is down or restarting: come back
        await task
    finally:
        task.cancel()
    assert restarted and hub.starts == 2
    check_exactly_once(records, pub.ids)


@pytest.fixture(scope="module")
def auth_hub(
    module_hub_factory: HubFactory, tmp_path_factory: pytest.TempPathFactory
) -> HubProcess:
    path: Path = tmp_path_factory.mktemp("wsauth") / "tokens.json"
    path.write_text(
        json.dumps(
            {
                "tokens": [
                    {"name": "reader", "token": "r3ad", "subscribe": ["open-*"]},
                    {"name": "writer", "token": "wr1te", "publish": ["*"], "subscribe": ["*"]},
                ]
            }
        )
    )
    return module_hub_factory.start("--auth-file", str(path))


async def test_handshake_needs_a_token_with_tokens_configured(auth_hub: HubProcess) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(ws_url(auth_hub.base_url), subprotocols=[PROTOCOL]):
            pass
    assert info.value.response.status_code == 401
    assert b'"status":401' in info.value.response.body


def bearer(token: str) -> str:
    """The subprotocol that carries a token, as /static/tidings.js offers it."""
    return "tidings.bearer." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


async def ticket(base_url: str, token: str) -> str:
    async with aiohttp.ClientSession() as http, http.post(
        f"{base_url}/v1/ws/ticket", json={}, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
    assert answer["expires_in"] == 30
    return str(answer["ticket"])


async def test_token_by_header_subprotocol_or_ticket_and_scopes_per_frame(
    auth_hub: HubProcess,
) -> None:
    headers = {"Authorization": "Bearer r3ad"}
    async with websockets.connect(
        ws_url(auth_hub.base_url), subprotocols=[PROTOCOL], additional_headers=headers
    ) as ws:
        await send(ws, type="publish", ref=1, topic="open-x", event={"type": "a"})
        got = await recv(ws)
        assert (got["type"], got["status"], got["ref"]) == ("error", 403, 1)
    async with websockets.connect(
        ws_url(auth_hub.base_url), subprotocols=[PROTOCOL, bearer("wr1te")]
    ) as ws:
        assert ws.subprotocol == PROTOCOL  # the token is never echoed back
        await send(ws, type="publish", ref=2, topic="open-x", event={"type": "a"})
        assert (await recv(ws))["type"] == "published"
    read = await ticket(auth_hub.base_url, "r3ad")
    async with websockets.connect(
        ws_url(auth_hub.base_url, f"ticket={read}"), subprotocols=[PROTOCOL]
    ) as ws:
        await send(ws, type="subscribe", id="s", topic="secret")
        got = await recv(ws)
        assert (got["type"], got["status"], got["sub"]) == ("error", 403, "s")
        await subscribe(ws, "t", "open-x", **{"from": "earliest"})
        assert (await recv(ws))["event"]["type"] == "a"


async def test_a_token_in_the_url_or_a_spent_ticket_is_refused(auth_hub: HubProcess) -> None:
    """A URL is written to logs: ?token= is refused, and a ticket works once."""
    spent = await ticket(auth_hub.base_url, "wr1te")
    async with websockets.connect(
        ws_url(auth_hub.base_url, f"ticket={spent}"), subprotocols=[PROTOCOL]
    ):
        pass
    for query in ["token=wr1te", f"ticket={spent}", "ticket=tkt_made-up"]:
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(
                ws_url(auth_hub.base_url, query), subprotocols=[PROTOCOL]
            ):
                pass
        assert info.value.response.status_code == 401, query
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(
            ws_url(auth_hub.base_url), subprotocols=[PROTOCOL, bearer("wrong")]
        ):
            pass
    assert info.value.response.status_code == 401
    async with aiohttp.ClientSession() as http, http.post(
        f"{auth_hub.base_url}/v1/ws/ticket", json={}, headers={"Authorization": "Bearer nope"}
    ) as resp:
        assert resp.status == 401


async def test_foreign_origins_are_refused(hub: HubProcess) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(
            ws_url(hub.base_url),
            subprotocols=[PROTOCOL],
            origin=websockets.Origin("https://evil.example"),
        ):
            pass
    assert info.value.response.status_code == 403
    async with websockets.connect(
        ws_url(hub.base_url),
        subprotocols=[PROTOCOL],
        origin=websockets.Origin("http://localhost:3000"),
    ) as ws:
        await send(ws, type="publish", ref=1, topic=unique(), event={"type": "a"})
        assert (await recv(ws))["type"] == "published"


async def test_allowed_origins_flag_replaces_the_default(hub_factory: HubFactory) -> None:
    hub = hub_factory.start("--allowed-origin", "https://shop.example")

    async def status(origin: str) -> int:
        try:
            async with websockets.connect(
                ws_url(hub.base_url), subprotocols=[PROTOCOL], origin=websockets.Origin(origin)
            ):
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    assert await status("https://shop.example") == 101
    assert await status("https://evil.example") == 403
    assert await status("http://localhost:3000") == 403  # the list replaces the default
