"""Webhooks shared by two ``tidings serve`` nodes on one NATS server: an endpoint made
on one node is listed, changed and deleted on the other; one node at a time
dispatches it (each event delivered once in normal running, whichever node took the
publish); a SIGKILL of the dispatching node under a backlog hands the endpoint to the
other node, which delivers every event (at least once), in key order under
``ordering: key``. Receivers are real aiohttp servers; signatures are checked with
the ``standardwebhooks`` package."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from hubapi import expect, publish, put_topic, unique
from hubproc import HubFactory, HubProcess
from natsproc import NatsCluster, NatsServer
from receivers import Answer, Receiver, Tally
from standardwebhooks import Webhook

pytestmark = pytest.mark.timeout(180)

LEASE_S = 2.0
NODE_ARGS = (
    "--webhook-allow-net", "127.0.0.0/8",
    "--webhook-retry-schedule", "0,0.1,0.2,0.2,0.3",
    "--webhook-timeout", "2",
    "--lease-time", str(LEASE_S),
)  # fmt: skip





@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(force_close=True)  # nodes are killed under it
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=40)
    ) as session:
        yield session


def start(nodes: HubFactory, nats: NatsServer) -> HubProcess:
    return nodes.start("--backend", nats.url, *NODE_ARGS)


async def call(
    http: aiohttp.ClientSession, method: str, url: str, status: int = 200, **kw: Any
) -> Any:
    async with http.request(method, url, **kw) as resp:
        return await expect(resp, status)


async def eventually(
    http: aiohttp.ClientSession, url: str, check: Any, status: int = 200, within: float = 5.0
) -> float:
    """Seconds until GET ``url`` answers ``status`` and ``check(body)`` holds."""
    began = time.monotonic()
    last: Any = None
    while time.monotonic() - began < within:
        async with http.get(url) as resp:
            last = (resp.status, await resp.json(content_type=None))
        if last[0] == status and check(last[1]):
            return time.monotonic() - began
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} still answers {last} after {within} s")


async def test_an_endpoint_made_on_one_node_is_listed_changed_and_deleted_on_the_other(
    nodes: HubFactory, nats: NatsServer, http: aiohttp.ClientSession
) -> None:
    a = start(nodes, nats)
    topic = unique()
    await put_topic(http, a.base_url, topic, partitions=2)
    b = start(nodes, nats)
    receiver = await Receiver().start()
    try:
        wh = await call(
            http, "POST", f"{a.base_url}/v1/webhooks", 201,
            json={"url": receiver.url, "topics": [topic], "description": "one"},
        )  # fmt: skip
        url_b = f"{b.base_url}/v1/webhooks/{wh['id']}"
        seen = await eventually(http, url_b, lambda v: v["description"] == "one")
        listed = await call(http, "GET", f"{b.base_url}/v1/webhooks")
        assert wh["id"] in [w["id"] for w in listed["webhooks"]]
        # changed on b (the node that does not dispatch it): seen on a
        await call(http, "PATCH", url_b, json={"description": "two", "concurrency": 3})
        url_a = f"{a.base_url}/v1/webhooks/{wh['id']}"
        # (forwarded to a, which dispatches it; b's copy follows the bucket)
        await eventually(http, url_a, lambda v: v["description"] == "two" and v["concurrency"] == 3)
        changed = await eventually(
            http, f"{b.base_url}/v1/webhooks", lambda v: v["webhooks"][0]["description"] == "two"
        )
        # a secret rotated on b signs what a delivers
        rotated = await call(http, "POST", f"{url_b}/rotate-secret", json={"grace": 0})
        sent = await publish(http, b.base_url, topic, {"type": "order.placed", "data": {}})
        await receiver.wait_for(lambda: len(receiver.requests) >= 1)
        r = receiver.requests[0]
        assert r.headers["webhook-id"] == sent[0]["id"]
        Webhook(rotated["secret"]).verify(r.body, r.headers)
        # its attempts, listed on either node
        for base in (a.base_url, b.base_url):
            log = await call(http, "GET", f"{base}/v1/webhooks/{wh['id']}/attempts")
            assert [x["msg_id"] for x in log["attempts"]] == [sent[0]["id"]]
        # a replay asked of b moves a's cursor: the event comes again
        await call(http, "POST", f"{url_b}/replay", 202, json={"since": "2020-01-01T00:00:00Z"})
        await receiver.wait_for(lambda: len(receiver.requests) >= 2)
        assert receiver.requests[1].headers["webhook-id"] == sent[0]["id"]
        # a's errors come back through b as they are
        problem = await call(http, "PATCH", url_b, 400, json={"concurrency": 0})
        assert problem["field"] == "concurrency"
        problem = await call(http, "POST", f"{url_b}/replay", 400, json={"since": "latest"})
        assert problem["field"] == "since" and problem["title"] == "Bad position"
        # disabled on b: a stops delivering
        await call(http, "PATCH", url_b, json={"enabled": False})
        await eventually(http, url_a, lambda v: v["state"] == "disabled")
        await publish(http, a.base_url, topic, {"type": "order.placed", "data": {}})
        await asyncio.sleep(1.0)
        assert len(receiver.requests) == 2
        await call(http, "PATCH", url_b, json={"enabled": True})
        await receiver.wait_for(lambda: len(receiver.requests) >= 3)
        # b restarted loads the endpoint's groups with the others; a still dispatches it
        b.restart()
        groups = await call(http, "GET", f"{b.base_url}/v1/groups")
        assert [g for g in groups["groups"] if wh["id"] in g["name"]]
        # deleted on b: gone on a
        await call(http, "DELETE", url_b, 204)
        await eventually(http, url_a, lambda v: True, status=404)
        deleted = await eventually(http, url_b, lambda v: True, status=404)
        for base in (a.base_url, b.base_url):  # its groups, gone from both
            groups = await call(http, "GET", f"{base}/v1/groups")
            assert not [g for g in groups["groups"] if wh["id"] in g["name"]], groups
        print(f"on b: made seen in {seen:.3f} s, changed {changed:.3f} s, "
              f"deleted {deleted:.3f} s")  # fmt: skip
        assert max(seen, changed, deleted) < 1.5
    finally:
        await receiver.close()


async def make_endpoint(
    http: aiohttp.ClientSession, base: str, url: str, topic: str, **body: Any
) -> dict[str, Any]:
    wh: dict[str, Any] = await call(
        http, "POST", f"{base}/v1/webhooks", 201, json={"url": url, "topics": [topic], **body}
    )
    return wh


async def publish_keyed(
    http: aiohttp.ClientSession, bases: list[str], topic: str, n: int, keys: int
) -> list[str]:
    """``n`` events over ``keys`` keys, batches of 50 sent to each node in turn."""
    ids: list[str] = []
    for i, start_at in enumerate(range(0, n, 50)):
        batch = [
            {"type": "order.placed", "partitionkey": f"k{j % keys}", "data": {"n": j}}
            for j in range(start_at, min(n, start_at + 50))
        ]
        ids += [x["id"] for x in await publish(http, bases[i % len(bases)], topic, *batch)]
    return ids


async def test_two_nodes_deliver_each_event_once(
    nodes: HubFactory, nats: NatsServer, http: aiohttp.ClientSession
) -> None:
    a = start(nodes, nats)
    topic = unique()
    await put_topic(http, a.base_url, topic, partitions=3)
    b = start(nodes, nats)
    tally = Tally(lambda r, n: Answer(200))
    receiver = await Receiver(tally).start()
    try:
        wh = await make_endpoint(http, b.base_url, receiver.url, topic, concurrency=8)
        await eventually(http, f"{a.base_url}/v1/webhooks/{wh['id']}", lambda v: True)
        ids = await publish_keyed(http, [a.base_url, b.base_url], topic, 300, keys=30)
        await receiver.wait_for(lambda: len(tally.succeeded) >= len(ids), timeout=60)
        await asyncio.sleep(1.5)  # anything delivered twice would come by now
        assert sorted(tally.succeeded) == sorted(ids)
        twice = {m: len(rs) for m, rs in tally.succeeded.items() if len(rs) > 1}
        assert not twice, f"delivered more than once: {twice}"
        for r in receiver.requests:
            Webhook(wh["secret"]).verify(r.body, r.headers)
    finally:
        await receiver.close()


async def test_the_other_node_takes_over_when_the_dispatching_node_is_killed(
    nodes: HubFactory, nats: NatsServer, http: aiohttp.ClientSession
) -> None:
    """a dispatches (it made the endpoint before b started); a backlog of 400 events
    over 8 keys under ordering: key, a slow receiver; SIGKILL of a after 60 arrived:
    b takes the endpoint over after the lease time and delivers the rest."""
    await dispatching_node_killed(lambda: start(nodes, nats), http)


async def test_the_other_node_takes_over_on_a_3_server_cluster(
    nodes: HubFactory, cluster: NatsCluster, http: aiohttp.ClientSession
) -> None:
    """As above, the hubs on three routed nats-servers with R3 streams and buckets."""
    servers = ",".join(cluster.urls)
    await dispatching_node_killed(
        lambda: nodes.start("--backend", servers, "--replicas", "3", *NODE_ARGS), http
    )


async def dispatching_node_killed(
    start_node: Callable[[], HubProcess], http: aiohttp.ClientSession
) -> None:
    a = start_node()
    topic = unique()
    await put_topic(http, a.base_url, topic, partitions=2)
    tally = Tally(lambda r, n: Answer(200, delay=0.03))
    receiver = await Receiver(tally).start()
    try:
        wh = await make_endpoint(
            http, a.base_url, receiver.url, topic, ordering="key", concurrency=4
        )
        await call(http, "PATCH", f"{a.base_url}/v1/webhooks/{wh['id']}", json={"enabled": False})
        b = start_node()
        await eventually(http, f"{b.base_url}/v1/webhooks/{wh['id']}", lambda v: True)
        ids = await publish_keyed(http, [a.base_url, b.base_url], topic, 400, keys=8)
        await call(http, "PATCH", f"{a.base_url}/v1/webhooks/{wh['id']}", json={"enabled": True})
        await receiver.wait_for(lambda: len(receiver.requests) >= 60, timeout=60)
        a.kill()
        killed_at = time.monotonic()
        before = len(receiver.requests)
        # before b takes it over, b answers for it from its own copy
        view = await call(http, "GET", f"{b.base_url}/v1/webhooks/{wh['id']}")
        assert view["id"] == wh["id"] and time.monotonic() - killed_at < LEASE_S
        await receiver.wait_for(lambda: len(receiver.requests) > before + 4, timeout=30)
        # the first arrivals after the kill may be a's last answers in flight
        resumed = next(r.at for r in receiver.requests[before:] if r.at > killed_at + 0.2)
        await receiver.wait_for(lambda: len(tally.succeeded) >= len(ids), timeout=90)
        print(f"takeover: first delivery from b {resumed - killed_at:.2f} s after the "
              f"SIGKILL (lease {LEASE_S} s); {len(receiver.requests)} requests for "
              f"{len(ids)} events")  # fmt: skip
        assert sorted(tally.succeeded) == sorted(ids)  # every event, at least once
        assert resumed - killed_at < 2 * LEASE_S + 3
        for r in receiver.requests:
            Webhook(wh["secret"]).verify(r.body, r.headers)
        check_key_order(receiver.requests, killed_at)
        view = await call(http, "GET", f"{b.base_url}/v1/webhooks/{wh['id']}")
        assert view["state"] == "healthy"
    finally:
        await receiver.close()


def check_key_order(requests: list[Any], killed_at: float) -> None:
    """Per key, each node's deliveries go in offset order, one record after another;
    b starts a key again no later than the record after the last one a finished."""
    for span in (
        [r for r in requests if r.at <= killed_at],
        [r for r in requests if r.at > killed_at],
    ):
        per_key: dict[str, list[int]] = {}
        for r in span:
            event = r.event
            per_key.setdefault(event["partitionkey"], []).append(event["data"]["n"])
        for key, ns in per_key.items():
            # with 8 keys over 400 events, a key's events are n, n+8, n+16...
            assert all(y - x == 8 for x, y in itertools.pairwise(ns)), (key, ns)


async def test_a_change_made_while_nobody_holds_the_endpoint_takes_it_and_delivers(
    nodes: HubFactory, nats: NatsServer, http: aiohttp.ClientSession
) -> None:
    """The holder stops cleanly (its lease deleted) and a PATCH lands on the other node
    before that node's claim loop looks again (every 15 s under a 60 s lease): the
    node takes the lease before it changes the endpoint, and delivers it from then on
    (a dispatcher started without the lease would stop at once and block the claims)."""
    args = ("--webhook-allow-net", "127.0.0.0/8", "--lease-time", "60")
    a = nodes.start("--backend", nats.url, *args)
    topic = unique()
    await put_topic(http, a.base_url, topic)
    b = nodes.start("--backend", nats.url, *args)
    receiver = await Receiver().start()
    try:
        wh = await make_endpoint(http, a.base_url, receiver.url, topic)
        await eventually(http, f"{b.base_url}/v1/webhooks/{wh['id']}", lambda v: True)
        a.stop()  # clean: a releases the lease
        await call(http, "PATCH", f"{b.base_url}/v1/webhooks/{wh['id']}",
                   json={"concurrency": 2})  # fmt: skip
        await publish(http, b.base_url, topic, {"type": "t", "data": {}})
        await receiver.wait_for(lambda: len(receiver.requests) >= 1, timeout=40)
        view = await call(http, "GET", f"{b.base_url}/v1/webhooks/{wh['id']}")
        assert view["concurrency"] == 2
    finally:
        await receiver.close()
