"""Webhooks against a real hub process and real receivers on loopback (allow-listed).

The hub runs with a compressed retry schedule and a one-second timeout; every
receiver is an aiohttp server whose answers the test scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from hubapi import STRUCTURED, expect, expect_problem, publish, unique
from hubproc import BackendHubs, HubFactory, HubProcess
from receivers import Answer, Receiver, Tally, always
from standardwebhooks import Webhook

from tidings import webhooks

SCHEDULE = "0,0.1,0.2,0.2,0.3"
HUB_ARGS = (
    "--webhook-allow-net", "127.0.0.0/8",
    "--webhook-retry-schedule", SCHEDULE,
    "--webhook-timeout", "1",
)  # fmt: skip


@pytest.fixture(scope="module")
def whub(backend_hubs: BackendHubs) -> HubProcess:
    """This module's hub, on the embedded log and on NATS in turn (``backend_hubs``)."""
    return backend_hubs.start(*HUB_ARGS)


@pytest.fixture
async def http_fresh() -> AsyncIterator[aiohttp.ClientSession]:
    """A session with no kept-alive connections: the hub restarts under it."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def create(
    http: aiohttp.ClientSession, base: str, status: int = 201, **body: Any
) -> dict[str, Any]:
    async with http.post(f"{base}/v1/webhooks", json=body) as resp:
        return await expect(resp, status)  # type: ignore[no-any-return]


async def call(
    http: aiohttp.ClientSession, method: str, url: str, status: int = 200, **kw: Any
) -> Any:
    async with http.request(method, url, **kw) as resp:
        return await expect(resp, status)


async def publish_n(
    http: aiohttp.ClientSession, base: str, topic: str, n: int, keys: int = 0
) -> list[str]:
    events = [
        {"type": "order.placed", "data": {"n": i}, **({"partitionkey": f"k{i % keys}"} if keys else {})}  # noqa: E501
        for i in range(n)
    ]
    ids: list[str] = []
    for start in range(0, n, 100):
        answered = await publish(http, base, topic, *events[start : start + 100])
        ids.extend(a["id"] for a in answered)
    return ids


async def settled(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """The endpoint's view once its lag is zero (acks follow answers by a moment),
    or as it is after five seconds."""
    for _ in range(50):
        view: dict[str, Any] = await call(http, "GET", url)
        if not any(view["lag"].values()):
            break
        await asyncio.sleep(0.1)
    return view


async def attempts(http: aiohttp.ClientSession, base: str, wh: str, **params: str) -> list[Any]:
    page = await call(http, "GET", f"{base}/v1/webhooks/{wh}/attempts", params=params)
    return page["attempts"]  # type: ignore[no-any-return]


# -- delivery and signatures -------------------------------------------------------------


async def test_events_arrive_signed_as_cloudevents_with_their_position(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    topic = unique()
    wh = await create(http, whub.base_url, url=receiver.url, topics=[topic], types=["order.*"])
    assert wh["secret"].startswith("whsec_") and wh["id"].startswith("wh_")
    ids = await publish_n(http, whub.base_url, topic, 20)
    await publish(http, whub.base_url, topic, {"type": "cart.changed"})  # filtered out
    await receiver.wait_for(lambda: len(receiver.requests) >= 20)
    await asyncio.sleep(0.3)
    got = receiver.requests
    assert sorted(r.headers["webhook-id"] for r in got) == sorted(ids)
    for r in got:
        assert r.headers["content-type"] == STRUCTURED
        event = Webhook(wh["secret"]).verify(r.body, r.headers)  # the reference implementation
        assert event == webhooks.verify(wh["secret"], r.headers, r.body)
        assert event["specversion"] == "1.0" and event["type"] == "order.placed"
        theirs = from_http_event(HTTPMessage(headers=r.headers, body=r.body))  # the CE SDK
        assert theirs.get_id() == event["id"] and theirs.get_data() == event["data"]
        assert event["id"] == r.headers["webhook-id"]
        assert abs(int(r.headers["webhook-timestamp"]) - time.time()) < 60
        t, p, o = r.position
        assert (t, p) == (topic, 0) and event["data"]["n"] == o
    view = await settled(http, f"{whub.base_url}/v1/webhooks/{wh['id']}")
    assert view["state"] == "healthy" and view["lag"] == {topic: 0}
    assert "secret" not in view
    log = await attempts(http, whub.base_url, wh["id"])
    assert len(log) == 20 and all(a["outcome"] == "success" and a["status"] == 200 for a in log)
    assert all(a["response"] == "ok" and a["latency_ms"] >= 0 for a in log)


async def test_a_rotated_secret_and_the_old_one_both_sign_during_the_grace(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    topic = unique()
    wh = await create(http, whub.base_url, url=receiver.url, topics=[topic])
    rotated = await call(
        http, "POST", f"{whub.base_url}/v1/webhooks/{wh['id']}/rotate-secret", json={"grace": "1h"}
    )
    assert rotated["secret"] != wh["secret"]
    await publish(http, whub.base_url, topic, {"type": "a"})
    await receiver.wait_for(lambda: len(receiver.requests) >= 1)
    r = receiver.requests[0]
    assert len(r.headers["webhook-signature"].split()) == 2
    Webhook(wh["secret"]).verify(r.body, r.headers)
    Webhook(rotated["secret"]).verify(r.body, r.headers)
    # a zero grace retires the old secret at once
    again = await call(
        http, "POST", f"{whub.base_url}/v1/webhooks/{wh['id']}/rotate-secret", json={"grace": 0}
    )
    await publish(http, whub.base_url, topic, {"type": "b"})
    await receiver.wait_for(lambda: len(receiver.requests) >= 2)
    r = receiver.requests[1]
    assert len(r.headers["webhook-signature"].split()) == 1
    Webhook(again["secret"]).verify(r.body, r.headers)
    with pytest.raises(Exception, match="signature"):
        webhooks.verify(rotated["secret"], r.headers, r.body)


# -- retries ---------------------------------------------------------------------------------


async def test_a_flapping_endpoint_gets_every_event_at_least_once(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    rng = random.Random(5)

    def decide(r: Any, n: int) -> Answer:
        roll = rng.random() if n < 3 else 1.0  # each event fails three times at most
        if roll < 0.25:
            return Answer(500)
        if roll < 0.35:
            return Answer(502, body=b"x" * 5000)
        if roll < 0.4:
            return Answer(200, delay=1.5)  # past the timeout: a failure for the hub
        return Answer(200)

    tally = Tally(decide)
    receiver.answer = tally
    topic = unique()
    wh = await create(
        http, whub.base_url, url=receiver.url, topics=[topic], concurrency=8
    )
    ids = await publish_n(http, whub.base_url, topic, 200)
    await receiver.wait_for(lambda: set(ids) <= set(tally.succeeded), timeout=90)
    log = await attempts(http, whub.base_url, wh["id"], status="failed", limit="1000")
    assert log, "the script failed some attempts"
    long = [a for a in log if a["status"] == 502]
    assert long and all(len(a["response"]) == 1024 for a in long)  # the first KiB only
    timeouts = [a for a in log if a["error"] and "timed out" in a["error"]]
    assert timeouts
    dead = await call(http, "GET", f"{whub.base_url}/v1/webhooks/{wh['id']}/dead-letters")
    assert dead["dead_letters"] == []


async def test_key_order_holds_while_other_keys_flow(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    rng = random.Random(9)
    tally = Tally(lambda r, n: Answer(503 if n < 2 and rng.random() < 0.3 else 200))
    receiver.answer = tally
    topic = unique()
    await call(http, "PUT", f"{whub.base_url}/v1/topics/{topic}", 201, json={"partitions": 2})
    await create(
        http, whub.base_url, url=receiver.url, topics=[topic], ordering="key", concurrency=10
    )
    ids = await publish_n(http, whub.base_url, topic, 150, keys=6)
    await receiver.wait_for(lambda: set(ids) <= set(tally.succeeded), timeout=90)
    per_key: dict[str, list[int]] = {}
    for r in tally.order:
        event = r.event
        per_key.setdefault(event["partitionkey"], []).append(event["data"]["n"])
    for key, ns in per_key.items():
        firsts = list(dict.fromkeys(ns))
        assert firsts == sorted(firsts), f"key {key} out of order: {firsts}"
    # several keys were in flight at once: the deliveries interleave keys
    keys_seen = [r.event["partitionkey"] for r in tally.order[:30]]
    assert len(set(keys_seen)) > 1


async def test_429_with_retry_after_is_honoured(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    tally = Tally(lambda r, n: Answer(429, headers={"Retry-After": "1"}) if n == 0 else Answer())
    receiver.answer = tally
    topic = unique()
    await create(http, whub.base_url, url=receiver.url, topics=[topic])
    await publish(http, whub.base_url, topic, {"type": "a"})
    await receiver.wait_for(lambda: len(receiver.requests) >= 2, timeout=20)
    first, second = receiver.requests[:2]
    assert second.at - first.at >= 0.9  # the schedule alone would retry after 0.1 s
    assert second.headers["tidings-attempt"] == "2"


async def test_exhausted_attempts_are_dead_lettered_and_replayable(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.answer = always(500, body=b"broken")
    topic = unique()
    wh = await create(http, whub.base_url, url=receiver.url, topics=[topic])
    base = f"{whub.base_url}/v1/webhooks/{wh['id']}"
    ids = await publish_n(http, whub.base_url, topic, 3)
    deadline = time.monotonic() + 60
    while True:
        dead = (await call(http, "GET", base + "/dead-letters"))["dead_letters"]
        if len(dead) == 3 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert sorted(d["msg_id"] for d in dead) == sorted(ids)
    assert all(d["attempts"] == 5 and "all 5 attempts failed" in d["reason"] for d in dead)
    failed = await attempts(http, whub.base_url, wh["id"], status="failed", limit="100")
    assert len(failed) == 15 and all(a["response"] == "broken" for a in failed)
    assert await attempts(http, whub.base_url, wh["id"], status="succeeded") == []
    # the endpoint is fixed: replay two of the dead letters, then the rest
    receiver.answer = always(200)
    before = len(receiver.requests)
    answer = await call(
        http, "POST", base + "/dead-letters/replay", 202,
        json={"ids": [dead[0]["id"], dead[1]["id"]]},
    )  # fmt: skip
    assert answer["replaying"] == 2
    await receiver.wait_for(lambda: len(receiver.requests) >= before + 2)
    await call(http, "POST", base + "/dead-letters/replay", 202, json={})
    await receiver.wait_for(lambda: len(receiver.requests) >= before + 3)
    resent = {r.headers["webhook-id"] for r in receiver.requests[before:]}
    assert resent == set(ids)
    for _ in range(50):
        if not (await call(http, "GET", base + "/dead-letters"))["dead_letters"]:
            break
        await asyncio.sleep(0.1)
    assert (await call(http, "GET", base + "/dead-letters"))["dead_letters"] == []
    ok = await attempts(http, whub.base_url, wh["id"], status="succeeded")
    assert {a["trigger"] for a in ok} == {"dead-letter"}


# -- endpoint state ----------------------------------------------------------------------------


async def test_410_disables_and_enabling_drains_in_order(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.answer = always(410)
    topic = unique()
    wh = await create(http, whub.base_url, url=receiver.url, topics=[topic], concurrency=1)
    base = f"{whub.base_url}/v1/webhooks/{wh['id']}"
    await publish(http, whub.base_url, topic, {"type": "first"})
    await receiver.wait_for(lambda: len(receiver.requests) >= 1)
    for _ in range(50):
        view = await call(http, "GET", base)
        if view["state"] == "disabled":
            break
        await asyncio.sleep(0.1)
    assert view["state"] == "disabled" and "410" in view["disabled_reason"]
    assert not view["enabled"]
    ids = await publish_n(http, whub.base_url, topic, 10)
    await asyncio.sleep(0.5)
    assert len(receiver.requests) == 1  # nothing goes to a disabled endpoint
    assert (await call(http, "GET", base))["lag"][topic] == 11
    receiver.answer = always(200)
    enabled = await call(http, "PATCH", base, json={"enabled": True})
    assert enabled["state"] == "healthy"
    await receiver.wait_for(lambda: len(receiver.requests) >= 12)
    drained = [r.event["type"] for r in receiver.requests[1:]]
    assert drained[0] == "first"
    assert [r.headers["webhook-id"] for r in receiver.requests[2:]] == ids  # in order


async def test_an_outage_ends_with_an_automatic_drain(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.answer = always(503)
    topic = unique()
    wh = await create(http, whub.base_url, url=receiver.url, topics=[topic])
    ids = await publish_n(http, whub.base_url, topic, 30)
    await receiver.wait_for(lambda: len(receiver.requests) >= 3)
    view = await call(http, "GET", f"{whub.base_url}/v1/webhooks/{wh['id']}")
    assert view["state"] == "failing" and view["failing_since"]
    # while it is down, new events wait in the log: one probe at a time, not a flood
    await asyncio.sleep(0.5)
    assert len({r.headers["webhook-id"] for r in receiver.requests}) < 20
    tally = Tally(lambda r, n: Answer())
    receiver.answer = tally
    await receiver.wait_for(lambda: set(ids) <= set(tally.succeeded), timeout=30)
    view = await call(http, "GET", f"{whub.base_url}/v1/webhooks/{wh['id']}")
    assert view["state"] == "healthy"


async def test_a_redirect_is_not_followed(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    other = await Receiver().start()
    try:
        receiver.answer = always(302, headers={"Location": other.url})
        topic = unique()
        wh = await create(http, whub.base_url, url=receiver.url, topics=[topic])
        await publish(http, whub.base_url, topic, {"type": "a"})
        await receiver.wait_for(lambda: len(receiver.requests) >= 2)
        assert other.requests == []
        log = await attempts(http, whub.base_url, wh["id"])
        assert log and all(a["status"] == 302 and a["outcome"] == "failed" for a in log)
    finally:
        await other.close()


async def test_rate_limit_spaces_deliveries(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    topic = unique()
    await create(http, whub.base_url, url=receiver.url, topics=[topic], rate_limit=20)
    await publish_n(http, whub.base_url, topic, 30)
    await receiver.wait_for(lambda: len(receiver.requests) >= 30)
    span = receiver.requests[-1].at - receiver.requests[0].at
    assert span >= 29 / 20 * 0.9  # 20 a second, a burst of 20 at most: at least ~0.5 s
    later = receiver.requests[20:]
    gaps = [b.at - a.at for a, b in itertools.pairwise(later)]
    assert sum(gaps) / len(gaps) >= 0.03


# -- replay ------------------------------------------------------------------------------------


async def test_replay_since_a_time_delivers_what_was_never_sent(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    topic = unique()
    early = await publish_n(http, whub.base_url, topic, 5)  # before the endpoint existed
    wh = await create(http, whub.base_url, url=receiver.url, topics=[topic], concurrency=1)
    later = await publish_n(http, whub.base_url, topic, 3)
    await receiver.wait_for(lambda: len(receiver.requests) >= 3)
    await asyncio.sleep(0.2)
    assert [r.headers["webhook-id"] for r in receiver.requests] == later
    base = f"{whub.base_url}/v1/webhooks/{wh['id']}"
    moved = await call(http, "POST", base + "/replay", 202, json={"since": 0})
    assert moved["topics"] == {topic: "0:0"}
    await receiver.wait_for(lambda: len(receiver.requests) >= 11)
    assert [r.headers["webhook-id"] for r in receiver.requests[3:]] == early + later
    # by position (one topic): from offset 6
    await call(http, "POST", base + "/replay", 202, json={"since": "0:6", "topic": topic})
    await receiver.wait_for(lambda: len(receiver.requests) >= 13)
    assert [r.headers["webhook-id"] for r in receiver.requests[11:]] == later[1:]


# -- durability ----------------------------------------------------------------------------------


# Embedded only: kills and restarts a hub of its own.
async def test_nothing_is_lost_when_the_hub_is_killed_mid_retry(
    hub_factory: HubFactory, http_fresh: aiohttp.ClientSession, receiver: Receiver
) -> None:
    hub = hub_factory.start(
        "--webhook-allow-net", "127.0.0.0/8", "--webhook-retry-schedule", "0,0.2,0.5,1,1,1,1,1,1,1"
    )
    tally = Tally(lambda r, n: Answer(500))
    receiver.answer = tally
    topic = unique()
    wh = await create(http_fresh, hub.base_url, url=receiver.url, topics=[topic], ordering="key")
    ids = await publish_n(http_fresh, hub.base_url, topic, 40, keys=4)
    await receiver.wait_for(lambda: len(receiver.requests) >= 4)
    hub.kill()  # SIGKILL while deliveries wait for their retries
    tally.decide = lambda r, n: Answer(200)
    hub.start()
    await receiver.wait_for(lambda: set(ids) <= set(tally.succeeded), timeout=60)
    view = await settled(http_fresh, f"{hub.base_url}/v1/webhooks/{wh['id']}")
    assert view["state"] == "healthy" and view["lag"] == {topic: 0}
    # a clean restart after everything was acknowledged delivers nothing again
    count = len(receiver.requests)
    hub.restart()
    await asyncio.sleep(1.0)
    assert len(receiver.requests) == count


# Embedded only: restarts a hub of its own.
async def test_endpoints_survive_a_restart(
    hub_factory: HubFactory, http_fresh: aiohttp.ClientSession, receiver: Receiver
) -> None:
    hub = hub_factory.start(*HUB_ARGS)
    topic = unique()
    wh = await create(
        http_fresh, hub.base_url, url=receiver.url, topics=[topic], description="shop"
    )
    hub.restart(hard=True)
    listed = await call(http_fresh, "GET", f"{hub.base_url}/v1/webhooks")
    assert [w["id"] for w in listed["webhooks"]] == [wh["id"]]
    assert listed["webhooks"][0]["description"] == "shop"
    await publish(http_fresh, hub.base_url, topic, {"type": "a"})
    await receiver.wait_for(lambda: len(receiver.requests) >= 1)
    Webhook(wh["secret"]).verify(receiver.requests[0].body, receiver.requests[0].headers)


# -- the rest of the API, and its errors ---------------------------------------------------------


async def test_test_patch_delete(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    topic, other = unique(), unique()
    wh = await create(http, whub.base_url, url=receiver.url, topics=[topic])
    base = f"{whub.base_url}/v1/webhooks/{wh['id']}"
    # A POST always says its body is JSON, even an empty one (see server/guard.py).
    tested = await call(http, "POST", base + "/test", json={})
    assert tested["attempt"]["outcome"] == "success" and tested["attempt"]["trigger"] == "test"
    sent = receiver.requests[-1]
    assert sent.event["type"] == "tidings.webhook.test"
    Webhook(wh["secret"]).verify(sent.body, sent.headers)
    patched = await call(
        http, "PATCH", base, json={"topics": [other], "description": "moved", "concurrency": 3}
    )
    assert patched["topics"] == [other] and patched["concurrency"] == 3
    await publish(http, whub.base_url, topic, {"type": "old-topic"})
    await publish(http, whub.base_url, other, {"type": "new-topic"})
    await receiver.wait_for(lambda: len(receiver.requests) >= 2)
    await asyncio.sleep(0.3)
    assert [r.event["type"] for r in receiver.requests[1:]] == ["new-topic"]
    listed = await call(http, "GET", f"{whub.base_url}/v1/groups")
    assert f"webhook.{wh['id']}" not in {g["name"] for g in listed["groups"] if g["topic"] == topic}
    await call(http, "DELETE", base, 204)
    async with http.get(base) as resp:
        problem = await expect_problem(resp, 404)
    assert problem["title"] == "Webhook not found"
    await publish(http, whub.base_url, other, {"type": "after-delete"})
    await asyncio.sleep(0.3)
    assert len(receiver.requests) == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"topics": ["t"]}, "url"),
        ({"url": "http://127.0.0.1:9/x"}, "topics"),
        ({"url": "http://127.0.0.1:9/x", "topics": []}, "topics"),
        ({"url": "http://127.0.0.1:9/x", "topics": ["bad name"]}, "topic"),
        ({"url": "http://127.0.0.1:9/x", "topics": ["t"], "types": "order.*"}, "types"),
        ({"url": "http://127.0.0.1:9/x", "topics": ["t"], "ordering": "fifo"}, "ordering"),
        ({"url": "http://127.0.0.1:9/x", "topics": ["t"], "concurrency": 0}, "concurrency"),
        ({"url": "http://127.0.0.1:9/x", "topics": ["t"], "concurrency": True}, "concurrency"),
        ({"url": "http://127.0.0.1:9/x", "topics": ["t"], "rate_limit": -1}, "rate_limit"),
        ({"url": "http://127.0.0.1:9/x", "topics": ["t"], "secret": "x"}, "secret"),
        ({"url": "ftp://127.0.0.1/x", "topics": ["t"]}, "url"),
        ({"url": "http://user:pw@127.0.0.1/x", "topics": ["t"]}, "url"),
        ({"url": 7, "topics": ["t"]}, "url"),
    ],
)
async def test_bad_registrations_are_refused_and_change_nothing(
    whub: HubProcess, http: aiohttp.ClientSession, body: dict[str, Any], field: str
) -> None:
    before = await call(http, "GET", f"{whub.base_url}/v1/webhooks")
    async with http.post(f"{whub.base_url}/v1/webhooks", json=body) as resp:
        problem = await expect_problem(resp, 400)
    assert problem["field"] == field, problem
    assert await call(http, "GET", f"{whub.base_url}/v1/webhooks") == before


@pytest.mark.parametrize("rate", [5e-324, 0.0005, 100_001, 1e308])
async def test_rate_limit_out_of_range_is_refused_and_changes_nothing(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver, rate: float
) -> None:
    """A rate the token bucket cannot wait for (5e-324 made its wait overflow every
    second) is refused at registration and at update, naming the field and range."""
    topic = unique()
    before = await call(http, "GET", f"{whub.base_url}/v1/webhooks")
    body = {"url": receiver.url, "topics": [topic], "rate_limit": rate}
    async with http.post(f"{whub.base_url}/v1/webhooks", json=body) as resp:
        problem = await expect_problem(resp, 400)
    assert problem["field"] == "rate_limit", problem
    assert "0.001" in problem["detail"] and "100000" in problem["detail"], problem
    assert await call(http, "GET", f"{whub.base_url}/v1/webhooks") == before

    wh = await create(http, whub.base_url, url=receiver.url, topics=[topic], rate_limit=50)
    base = f"{whub.base_url}/v1/webhooks/{wh['id']}"
    async with http.patch(base, json={"rate_limit": rate}) as resp:
        problem = await expect_problem(resp, 400)
    assert problem["field"] == "rate_limit", problem
    view = await call(http, "GET", base)
    assert view["rate_limit"] == 50
    # The endpoint still delivers.
    await publish(http, whub.base_url, topic, {"type": "order.placed", "data": {}})
    await receiver.wait_for(lambda: len(receiver.requests) >= 1, timeout=10)
    await call(http, "DELETE", base, 204)


async def test_bad_calls_on_an_endpoint(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    topic = unique()
    wh = await create(http, whub.base_url, url=receiver.url, topics=[topic, unique()])
    base = f"{whub.base_url}/v1/webhooks/{wh['id']}"
    cases: list[tuple[str, str, dict[str, Any], int, str | None]] = [
        ("PATCH", base, {"json": {"enabled": "yes"}}, 400, "enabled"),
        ("PATCH", base, {"json": {"url": "http://10.0.0.1/x"}}, 400, "url"),
        ("POST", base + "/rotate-secret", {"json": {"grace": "forever"}}, 400, "grace"),
        ("POST", base + "/replay", {"json": {}}, 400, "since"),
        ("POST", base + "/replay", {"json": {"since": "0:0"}}, 400, "since"),
        ("POST", base + "/replay", {"json": {"since": "yesterday"}}, 400, "since"),
        ("POST", base + "/replay", {"json": {"since": 0, "topic": "nope"}}, 400, "topic"),
        ("POST", base + "/replay", {"json": {"since": "9:0", "topic": topic}}, 400, "since"),
        ("POST", base + "/rotate-secret", {"json": {"grace": 2592000.0001}}, 400, "grace"),
        ("POST", base + "/test", {"json": {"note": "hi"}}, 400, "note"),
        ("POST", base + "/dead-letters/replay", {"json": {"ids": ["1"]}}, 400, "ids"),
        ("GET", base + "/attempts", {"params": {"status": "odd"}}, 400, "status"),
        ("GET", base + "/attempts", {"params": {"limit": "0"}}, 400, "limit"),
        ("GET", base + "/attempts", {"params": {"before": "x"}}, 400, "before"),
        ("GET", base + "/attempts", {"params": {"before": str(1 << 70)}}, 400, "before"),
        ("GET", base + "/dead-letters", {"params": {"before": str(1 << 63)}}, 400, "before"),
        ("POST", base + "/dead-letters/replay", {"json": {"ids": [1 << 63]}}, 400, "ids"),
        ("POST", base + "/dead-letters/replay", {"json": {"ids": [-1]}}, 400, "ids"),
        ("GET", f"{whub.base_url}/v1/webhooks/wh_nope", {}, 404, None),
        ("POST", f"{whub.base_url}/v1/webhooks/wh_nope/test", {"json": {}}, 404, None),
        ("DELETE", f"{whub.base_url}/v1/webhooks/wh_nope", {}, 404, None),
    ]
    for method, url, kw, status, field in cases:
        async with http.request(method, url, **kw) as resp:
            problem = await expect_problem(resp, status)
        assert problem.get("field") == field, (method, url, kw, problem)
    view = await call(http, "GET", base)
    assert view["url"] == receiver.url and view["enabled"]


async def test_webhooks_need_an_admin_token(
    backend_hubs: BackendHubs, http: aiohttp.ClientSession, tmp_path: Any
) -> None:
    auth = tmp_path / "auth.json"
    auth.write_bytes(orjson.dumps({"tokens": [
        {"name": "app", "token": "app-t", "publish": ["*"], "subscribe": ["*"]},
        {"name": "ops", "token": "ops-t", "admin": True},
    ]}))  # fmt: skip
    hub = backend_hubs.start("--auth-file", str(auth), *HUB_ARGS)
    body = {"url": "http://127.0.0.1:9/x", "topics": ["t"]}
    async with http.post(f"{hub.base_url}/v1/webhooks", json=body) as resp:
        await expect_problem(resp, 401)
    headers = {"authorization": "Bearer app-t"}
    async with http.post(f"{hub.base_url}/v1/webhooks", json=body, headers=headers) as resp:
        await expect_problem(resp, 403)
    async with http.get(f"{hub.base_url}/v1/webhooks", headers=headers) as resp:
        await expect_problem(resp, 403)
    ops = {"authorization": "Bearer ops-t"}
    async with http.post(f"{hub.base_url}/v1/webhooks", json=body, headers=ops) as resp:
        await expect(resp, 201)


# -- SSRF ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_hub(backend_hubs: BackendHubs) -> HubProcess:
    """A hub with no allow-list: only public addresses."""
    return backend_hubs.start("--webhook-retry-schedule", "0,0.1")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x", "http://[::1]/x", "http://localhost:8080/x",
        "http://10.0.0.1/x", "http://172.16.5.4/x", "http://192.168.0.10/x", "http://[fd00::1]/x",
        "http://169.254.169.254/latest/meta-data", "http://[fe80::1]/x",
        "http://100.64.0.1/x",
        "http://224.0.0.1/x", "http://[ff02::1]/x",
        "http://240.0.0.1/x", "http://0.0.0.0/x", "http://[::ffff:10.0.0.1]/x",
    ],
)  # fmt: skip
async def test_non_public_addresses_are_refused_at_registration(
    strict_hub: HubProcess, http: aiohttp.ClientSession, url: str
) -> None:
    async with http.post(
        f"{strict_hub.base_url}/v1/webhooks", json={"url": url, "topics": ["t"]}
    ) as resp:
        problem = await expect_problem(resp, 400)
    assert problem["field"] == "url" and problem["title"] == "Webhook URL not allowed"
    assert "address" in problem["detail"]


# Embedded only: restarts a hub of its own with other settings.
async def test_an_address_refused_at_delivery_is_never_connected(
    hub_factory: HubFactory, http_fresh: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """Registered while loopback was allowed; the hub restarted without it: each
    attempt is refused before connecting, and logged."""
    hub = hub_factory.start(*HUB_ARGS)
    topic = unique()
    for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
        await create(http_fresh, hub.base_url, url=url, topics=[topic])
    hub.stop()
    hub.extra = ("--webhook-retry-schedule", "0,0.1,0.1")
    hub.start()
    await publish(http_fresh, hub.base_url, topic, {"type": "a"})
    listed = (await call(http_fresh, "GET", f"{hub.base_url}/v1/webhooks"))["webhooks"]
    for wh in listed:
        for _ in range(100):
            log = await attempts(http_fresh, hub.base_url, wh["id"])
            if len(log) >= 3:
                break
            await asyncio.sleep(0.1)
        assert len(log) >= 3, log
        assert all(a["status"] is None and a["error"].startswith("refused") for a in log)
    assert receiver.requests == []


async def test_publish_still_answers_while_an_endpoint_hangs(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.answer = always(200, delay=3)
    topic = unique()
    await create(http, whub.base_url, url=receiver.url, topics=[topic])
    start = time.monotonic()
    async with http.post(
        f"{whub.base_url}/v1/topics/{topic}/events",
        data=orjson.dumps({"type": "a"}),
        headers={"content-type": STRUCTURED},
    ) as resp:
        assert resp.status == 202
    assert time.monotonic() - start < 2.5


async def test_an_endpoint_failing_past_disable_after_is_disabled(
    backend_hubs: BackendHubs, http_fresh: aiohttp.ClientSession, receiver: Receiver
) -> None:
    hub = backend_hubs.start(
        "--webhook-allow-net", "127.0.0.0/8",
        "--webhook-retry-schedule", ",".join(["0.05"] * 50),
        "--webhook-disable-after", "1s",
    )  # fmt: skip
    receiver.answer = always(500)
    topic = unique()
    wh = await create(http_fresh, hub.base_url, url=receiver.url, topics=[topic])
    await publish(http_fresh, hub.base_url, topic, {"type": "a"})
    base = f"{hub.base_url}/v1/webhooks/{wh['id']}"
    for _ in range(100):
        view = await call(http_fresh, "GET", base)
        if view["state"] == "disabled":
            break
        await asyncio.sleep(0.1)
    assert view["disabled_reason"] == "no successful delivery for 1 seconds"
    # the event was not dead-lettered: it waits in the log for the endpoint
    assert (await call(http_fresh, "GET", base + "/dead-letters"))["dead_letters"] == []
    assert view["lag"] == {topic: 1}
    receiver.answer = always(200)
    await call(http_fresh, "PATCH", base, json={"enabled": True})
    assert (await settled(http_fresh, base))["lag"] == {topic: 0}


# Embedded only: kills and restarts a hub of its own.
async def test_a_restart_goes_on_with_the_schedule_where_it_was(
    hub_factory: HubFactory, http_fresh: aiohttp.ClientSession, receiver: Receiver
) -> None:
    hub = hub_factory.start(
        "--webhook-allow-net", "127.0.0.0/8", "--webhook-retry-schedule", "0,0.1,4,0.1"
    )
    receiver.answer = always(500)
    topic = unique()
    await create(http_fresh, hub.base_url, url=receiver.url, topics=[topic])
    await publish(http_fresh, hub.base_url, topic, {"type": "a"})
    await receiver.wait_for(lambda: len(receiver.requests) >= 2)
    await asyncio.sleep(0.5)  # the attempts log is written every 200 ms
    hub.kill()
    hub.start()
    await receiver.wait_for(lambda: len(receiver.requests) >= 3, timeout=20)
    second, third = receiver.requests[1], receiver.requests[2]
    assert third.headers["tidings-attempt"] == "3"
    assert third.at - second.at >= 3.0  # its 4 s wait went on across the restart


# Embedded only: kills and restarts a hub of its own.
async def test_the_schedule_holds_across_a_kill_right_after_an_attempt(
    hub_factory: HubFactory, http_fresh: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """Killed before the attempts log (written every 200 ms) has the second attempt:
    the group saved its delivery count and due time with the nack, so the third
    attempt is still the third, after the schedule's 4 s."""
    hub = hub_factory.start(
        "--webhook-allow-net", "127.0.0.0/8", "--webhook-retry-schedule", "0,0.1,4,0.1"
    )
    receiver.answer = always(500)
    topic = unique()
    wh = await create(http_fresh, hub.base_url, url=receiver.url, topics=[topic])
    await publish(http_fresh, hub.base_url, topic, {"type": "a"})
    await receiver.wait_for(lambda: len(receiver.requests) >= 2)
    name = f"webhook.{wh['id']}"
    for _ in range(400):  # until the hub has nacked the answer (its lease is given back)
        groups = (await call(http_fresh, "GET", f"{hub.base_url}/v1/groups"))["groups"]
        if next(g for g in groups if g["name"] == name)["pending"] == 0:
            break
        await asyncio.sleep(0.005)
    hub.kill()
    hub.start()
    await receiver.wait_for(lambda: len(receiver.requests) >= 3, timeout=20)
    second, third = receiver.requests[1], receiver.requests[2]
    assert third.headers["tidings-attempt"] == "3"
    assert third.at - second.at >= 3.0


async def test_webhook_metrics(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    topic = unique()
    wh = await create(http, whub.base_url, url=receiver.url, topics=[topic])
    await publish(http, whub.base_url, topic, {"type": "a"})
    await receiver.wait_for(lambda: len(receiver.requests) >= 1)
    lag = f'tidings_group_lag{{topic="{topic}",group="webhook.{wh["id"]}"}} 0'
    for _ in range(50):  # the ack follows the answer by a moment
        async with http.get(f"{whub.base_url}/metrics") as resp:
            text = await resp.text()
        if lag in text:
            break
        await asyncio.sleep(0.1)
    assert lag in text
    assert f'tidings_webhook_attempts_total{{webhook="{wh["id"]}",outcome="success"}} 1' in text


async def test_a_deleted_topic_stays_deleted_and_is_followed_when_it_returns(
    whub: HubProcess, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    topic = unique()
    await create(http, whub.base_url, url=receiver.url, topics=[topic])
    await publish(http, whub.base_url, topic, {"type": "before"})
    await receiver.wait_for(lambda: len(receiver.requests) >= 1)
    await call(http, "DELETE", f"{whub.base_url}/v1/topics/{topic}", 204)
    await asyncio.sleep(2.0)
    listed = await call(http, "GET", f"{whub.base_url}/v1/topics")
    assert topic not in [t["name"] for t in listed["topics"]]
    await call(http, "PUT", f"{whub.base_url}/v1/topics/{topic}", 201, json={})
    await publish(http, whub.base_url, topic, {"type": "after"})
    await receiver.wait_for(lambda: len(receiver.requests) >= 2)
    assert [r.event["type"] for r in receiver.requests] == ["before", "after"]


async def test_a_refused_connection_is_a_failed_attempt_retried(
    whub: HubProcess, http: aiohttp.ClientSession
) -> None:
    from hubproc import free_port

    url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    topic = unique()
    wh = await create(http, whub.base_url, url=url, topics=[topic])
    await publish(http, whub.base_url, topic, {"type": "a"})
    for _ in range(100):
        log = await attempts(http, whub.base_url, wh["id"])
        if len(log) >= 3:
            break
        await asyncio.sleep(0.1)
    assert len(log) >= 3
    assert all(a["status"] is None and "connection failed" in a["error"] for a in log)
    assert [a["attempt"] for a in log[::-1][:3]] == [1, 2, 3]


# Embedded only: edits the hub's SQLite file on disk, then restarts it.
async def test_groups_no_endpoint_owns_are_removed_at_start(
    hub_factory: HubFactory, http_fresh: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """What a registration cut short by a crash leaves behind: a group and no endpoint."""
    hub = hub_factory.start(*HUB_ARGS)
    topic = unique()
    wh = await create(http_fresh, hub.base_url, url=receiver.url, topics=[topic])
    gone = await create(http_fresh, hub.base_url, url=receiver.url, topics=[topic])
    # No client may make a webhook's group (it is the hub's own): the crash is made
    # on disk instead, the endpoint's row lost and its group kept.
    hub.stop()
    with contextlib.closing(sqlite3.connect(hub.data_dir / "webhooks.sqlite3")) as db:
        db.execute("DELETE FROM endpoints WHERE id = ?", (gone["id"],))
        db.commit()
    hub.start()
    groups = (await call(http_fresh, "GET", f"{hub.base_url}/v1/groups"))["groups"]
    assert [g["name"] for g in groups if g["topic"] == topic] == [f"webhook.{wh['id']}"]
