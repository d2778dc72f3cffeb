"""Who may reach a consumer group (README "Security"), and re-drives that run at once.

Real hub processes on loopback. A group belongs to whoever may consume its topic
(fetch, ack, nack, a WebSocket join need ``subscribe``); creating, changing,
seeking, deleting and re-driving it need ``manage``. The hub's own groups (a
webhook's cursor ``webhook.{id}``, a re-drive cursor ``redrive.…``, anything
under ``tidings.``) are out of reach of every client, whatever its token.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets
from hubapi import (
    expect,
    expect_problem,
    fetch_all,
    get_group,
    group_post,
    poll_until,
    publish,
    put_group,
    read_all,
    unique,
)
from hubproc import BackendHubs, HubProcess
from livehelp import PROTOCOL, recv, ws_url
from receivers import Receiver

pytestmark = pytest.mark.timeout(120)

WEBHOOKS = ("--webhook-allow-net", "127.0.0.0/8", "--webhook-retry-schedule", "0,0.1")
TOKENS = {
    "tokens": [
        {"name": "reader", "token": "reader-t", "subscribe": ["*"]},
        {
            "name": "service",
            "token": "service-t",
            "publish": ["orders*"],
            "subscribe": ["*"],
            "manage": ["orders*"],
        },
        {"name": "ops", "token": "ops-t", "admin": True},
    ]
}
READER = {"authorization": "Bearer reader-t"}
SERVICE = {"authorization": "Bearer service-t"}
OPS = {"authorization": "Bearer ops-t"}


@pytest.fixture(scope="module")
def auth_hub(
    backend_hubs: BackendHubs, tmp_path_factory: pytest.TempPathFactory
) -> HubProcess:
    path: Path = tmp_path_factory.mktemp("scopes") / "tokens.json"
    path.write_text(json.dumps(TOKENS))
    return backend_hubs.start("--auth-file", str(path), *WEBHOOKS)


@pytest.fixture(scope="module")
def open_hub(backend_hubs: BackendHubs) -> HubProcess:
    """On the embedded log and on NATS in turn (``backend_hubs``)."""
    return backend_hubs.start(*WEBHOOKS)


async def request(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> tuple[int, Any]:
    """The status and JSON body of one call (a problem checked as RFC 9457)."""
    async with http.request(method, url, json=body, headers=headers or {}) as resp:
        if resp.status >= 400:
            return resp.status, await expect_problem(resp, resp.status)
        return resp.status, None if resp.status == 204 else await resp.json(content_type=None)


async def ws_join(base: str, topic: str, group: str, token: str | None = None) -> dict[str, Any]:
    """The answer to a WebSocket subscribe that joins ``group``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with websockets.connect(
        ws_url(base), subprotocols=[PROTOCOL], additional_headers=headers
    ) as ws:
        frame = {"type": "subscribe", "id": "s", "topic": topic, "group": group}
        await ws.send(orjson.dumps(frame).decode())
        return await recv(ws)


# Every group route, with a body that would be accepted on a group of the client's own.
GROUP_CALLS: list[tuple[str, str, Any]] = [
    ("PUT", "", {}),
    ("PUT", "", {"types": ["nothing.*"]}),
    ("GET", "", None),
    ("POST", "/seek", {"to": "earliest"}),
    ("POST", "/fetch", {"max": 10}),
    ("POST", "/ack", {"leases": ["0:0:1:x"]}),
    ("POST", "/nack", {"leases": ["0:0:1:x"]}),
    ("POST", "/redrive", {}),
    ("DELETE", "", None),
]


async def refused_everywhere(
    http: aiohttp.ClientSession,
    base: str,
    topic: str,
    group: str,
    headers: dict[str, str] | None,
    token: str | None,
) -> None:
    url = f"{base}/v1/topics/{topic}/groups/{group}"
    for method, path, body in GROUP_CALLS:
        status, problem = await request(http, method, url + path, headers, body)
        assert status == 403, (method, path, headers, problem)
        assert problem["group"] == group and "the hub keeps it" in problem["detail"], problem
    got = await ws_join(base, topic, group, token)
    assert (got["type"], got["status"]) == ("error", 403), got
    assert "the hub keeps it" in got["detail"], got


async def webhook_cursor(
    http: aiohttp.ClientSession, base: str, topic: str, headers: dict[str, str] | None
) -> dict[str, Any]:
    """The webhook's group on ``topic`` as ``GET /v1/groups`` lists it."""
    _, listing = await request(http, "GET", f"{base}/v1/groups", headers)
    [cursor] = [g for g in listing["groups"] if g["topic"] == topic]
    return cursor  # type: ignore[no-any-return]


async def test_no_token_reaches_a_webhooks_cursor_and_the_webhook_delivers_as_before(
    auth_hub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    base, t = auth_hub.base_url, "orders-" + unique()
    body = {"url": receiver.url, "topics": [t]}
    async with http.post(f"{base}/v1/webhooks", json=body, headers=OPS) as resp:
        wh = await expect(resp, 201)
    [first] = await publish(http, base, t, {"type": "order.placed"}, headers=OPS)
    await receiver.wait_for(lambda: len(receiver.requests) == 1)
    # Listed read-only to a reader of the topic, as the hub's own.
    cursor = await webhook_cursor(http, base, t, READER)
    assert cursor["name"] == f"webhook.{wh['id']}"
    for headers, token in [(READER, "reader-t"), (SERVICE, "service-t"), (OPS, "ops-t")]:
        await refused_everywhere(http, base, t, cursor["name"], headers, token)
    assert cursor["internal"] is True

    [second] = await publish(http, base, t, {"type": "order.placed"}, headers=OPS)
    await receiver.wait_for(lambda: len(receiver.requests) >= 2)
    await poll_until(lambda: _lag_is_zero(http, base, t), what="the webhook's cursor to catch up")
    await asyncio.sleep(0.3)  # room for a delivery that should not come
    assert [r.event["id"] for r in receiver.requests] == [first["id"], second["id"]]
    after = await webhook_cursor(http, base, t, OPS)
    assert after["config"] == cursor["config"]


async def _lag_is_zero(http: aiohttp.ClientSession, base: str, topic: str) -> bool:
    return (await webhook_cursor(http, base, topic, OPS))["lag"] == 0


async def test_no_client_reaches_the_hubs_own_groups_on_an_open_hub(
    open_hub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    base, t = open_hub.base_url, unique()
    async with http.post(f"{base}/v1/webhooks", json={"url": receiver.url, "topics": [t]}) as resp:
        wh = await expect(resp, 201)
    await publish(http, base, t, {"type": "order.placed"})
    await receiver.wait_for(lambda: len(receiver.requests) == 1)
    await refused_everywhere(http, base, t, f"webhook.{wh['id']}", None, None)

    # A re-drive cursor, made by a re-drive of a group's dead letters.
    await put_group(http, base, t, "g", max_deliver=1)
    leases = [r["lease"] for r in await fetch_all(http, base, t, "g")]
    await group_post(http, base, t, "g", "nack", {"leases": leases})
    assert (await group_post(http, base, t, "g", "redrive", {}))["redriven"] == 1
    _, listing = await request(http, "GET", f"{base}/v1/groups")
    [redrive] = [g for g in listing["groups"] if g["topic"] == f"{t}.dlq"]
    assert redrive["name"] == "redrive.g" and redrive["internal"] is True
    await refused_everywhere(http, base, f"{t}.dlq", "redrive.g", None, None)

    # No client may make a group in the reserved names.
    for name in ("webhook.mine", "redrive.g2", "tidings.views"):
        status, problem = await request(http, "PUT", f"{base}/v1/topics/{t}/groups/{name}", body={})
        assert status == 403 and problem["group"] == name, problem
        assert "are reserved" in problem["detail"], problem
        got = await ws_join(base, t, name)
        assert (got["type"], got["status"]) == ("error", 403), got
    _, listing = await request(http, "GET", f"{base}/v1/groups")
    assert {g["name"] for g in listing["groups"] if g["topic"] == t} == {
        "g",
        f"webhook.{wh['id']}",
    }


async def test_concurrent_redrives_send_each_dead_letter_back_once(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, t = hub.base_url, unique()
    await put_group(http, base, t, "g", max_deliver=1)
    n = 300
    events = [
        {"type": "order.placed", "id": f"e{i}", "partitionkey": f"k{i % 7}"} for i in range(n)
    ]
    for start in range(0, n, 100):
        await publish(http, base, t, *events[start : start + 100])
    leases = [r["lease"] for r in await fetch_all(http, base, t, "g")]
    assert len(leases) == n
    await group_post(http, base, t, "g", "nack", {"leases": leases})
    assert (await get_group(http, base, t, "g"))["dead_lettered"] == n

    answers = await asyncio.gather(
        *(group_post(http, base, t, "g", "redrive", {}) for _ in range(4))
    )
    assert sum(a["redriven"] for a in answers) == n, answers
    copies = Counter(r["event"]["id"] for r in await read_all(http, base, t))
    assert set(copies.values()) == {2} and len(copies) == n  # the original and one re-drive


async def test_a_subscribe_token_consumes_a_group_and_only_a_manage_token_runs_it(
    auth_hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, t = auth_hub.base_url, "orders-" + unique()
    group = f"{base}/v1/topics/{t}/groups"
    await publish(http, base, t, *({"type": "order.placed"} for _ in range(3)), headers=OPS)

    status, problem = await request(http, "PUT", f"{group}/g", READER, {"max_deliver": 1})
    assert status == 403 and "may not manage groups on topic" in problem["detail"], problem
    assert (await request(http, "GET", f"{group}/g", OPS))[0] == 404  # nothing was made
    status, made = await request(http, "PUT", f"{group}/g", SERVICE, {"max_deliver": 1})
    assert status == 201 and made["config"]["max_deliver"] == 1

    # The reader consumes: fetch, ack, nack, describe, join over the WebSocket.
    _, got = await request(http, "POST", f"{group}/g/fetch", READER, {"max": 10})
    leases = [r["lease"] for r in got["records"]]
    assert len(leases) == 3
    acked = await request(http, "POST", f"{group}/g/ack", READER, {"leases": leases[:2]})
    assert acked == (200, {"acked": 2})
    # Its last delivery: dead-lettered to the default t.dlq, which the hub writes to
    # on the group's behalf though this token may not publish there.
    status, _ = await request(http, "POST", f"{group}/g/nack", READER, {"leases": leases[2:]})
    assert status == 200
    _, info = await request(http, "GET", f"{group}/g", READER)
    assert info["dead_lettered"] == 1 and info["lag"] == 0
    _, dlq = await request(http, "GET", f"{base}/v1/topics/{t}.dlq", OPS)
    assert dlq["events"] == 1
    joined = await ws_join(base, t, "g", "reader-t")
    assert joined["type"] == "subscribed", joined

    # ... and runs nothing: no seek, change, delete, re-drive, nor a join that makes a group.
    for method, path, body in [
        ("POST", "/g/seek", {"to": "earliest"}),
        ("PUT", "/g", {"max_deliver": 9}),
        ("DELETE", "/g", None),
        ("POST", "/g/redrive", {}),
    ]:
        status, problem = await request(http, method, group + path, READER, body)
        assert status == 403 and "may not manage groups on topic" in problem["detail"], path
    refused = await ws_join(base, t, "g2", "reader-t")
    assert (refused["type"], refused["status"]) == ("error", 403), refused
    assert "may not manage groups" in refused["detail"]
    _, info = await request(http, "GET", f"{group}/g", OPS)
    assert info["config"]["max_deliver"] == 1 and info["lag"] == 0
    assert (await request(http, "GET", f"{group}/g2", OPS))[0] == 404

    # The manage token does all of it.
    assert (await request(http, "POST", f"{group}/g/seek", SERVICE, {"to": "earliest"}))[0] == 200
    assert (await request(http, "GET", f"{group}/g", OPS))[1]["lag"] == 3
    _, answer = await request(http, "POST", f"{group}/g/redrive", SERVICE, {})
    assert answer["redriven"] == 1
    joined = await ws_join(base, t, "g3", "service-t")
    assert joined["type"] == "subscribed", joined
    assert (await request(http, "DELETE", f"{group}/g", SERVICE))[0] == 204
    assert (await request(http, "GET", f"{group}/g", OPS))[0] == 404


async def test_an_explicit_dead_letter_topic_needs_publish_there(
    auth_hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, t = auth_hub.base_url, "orders-" + unique()
    url = f"{base}/v1/topics/{t}/groups/g"
    await publish(http, base, t, {"type": "order.placed"}, headers=OPS)
    status, problem = await request(http, "PUT", url, SERVICE, {"dead_letter_topic": "audit"})
    assert status == 403 and "may not publish on topic 'audit'" in problem["detail"], problem
    assert (await request(http, "GET", url, OPS))[0] == 404
    status, made = await request(http, "PUT", url, SERVICE, {"dead_letter_topic": f"{t}.failed"})
    assert status == 201 and made["config"]["dead_letter_topic"] == f"{t}.failed"
    status, _ = await request(http, "PUT", url, SERVICE, {"dead_letter_topic": "audit"})
    assert status == 403
    _, info = await request(http, "GET", url, OPS)
    assert info["config"]["dead_letter_topic"] == f"{t}.failed"  # the refused PUT changed nothing
    # An admin may send a group's dead letters anywhere.
    status, _ = await request(http, "PUT", url, OPS, {"dead_letter_topic": "audit"})
    assert status == 200
