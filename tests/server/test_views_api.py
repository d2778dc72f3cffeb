"""``/v1/views`` against real hub processes: declare, commit (compare and set), rebuild,
lookups, scans, min_position, SSE and WebSocket feeds, scopes, and a hub killed mid-commit."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
import websockets
from hubapi import expect, expect_problem, publish, put_topic, read_all, unique
from hubproc import HubFactory, HubProcess
from livehelp import PROTOCOL, recv, ws_url
from test_sse import messages
from viewhelp import DELETE, commit_events
from yarl import URL

pytestmark = pytest.mark.timeout(180)

JSON = {"content-type": "application/json"}

@pytest.fixture(scope="module")
def hub(backend_hub: HubProcess) -> HubProcess:
    """This module's hub, on the embedded log and on NATS in turn (``backend_hub``)."""
    return backend_hub



async def declare(
    http: aiohttp.ClientSession,
    base: str,
    name: str,
    inputs: list[str],
    status: int = 201,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec = {"kind": "view", "inputs": inputs, "app": "tests"}
    async with http.put(f"{base}/v1/views/{name}", json=spec, headers=headers) as resp:
        return await expect(resp, status)  # type: ignore[no-any-return]


async def commit(
    http: aiohttp.ClientSession,
    base: str,
    name: str,
    generation: int,
    expect_at: int,
    values: dict[str, Any],
    inputs: dict[str, dict[str, int]],
    *,
    seq: int = 0,
    headers: dict[str, str] | None = None,
) -> aiohttp.ClientResponse:
    body = {
        "generation": generation,
        "expect": expect_at,
        "events": commit_events(name, generation, seq, values, inputs),
    }
    return await http.post(
        f"{base}/v1/views/{name}/commit",
        data=io.BytesIO(orjson.dumps(body)),
        headers={**JSON, **(headers or {})},
    )


async def get(http: aiohttp.ClientSession, url: str, status: int = 200, **params: str) -> Any:
    async with http.get(url, params=params) as resp:
        if status >= 400:
            return await expect_problem(resp, status)
        return await expect(resp, status)


async def test_declare_commit_and_read_a_view(hub: HubProcess, http: aiohttp.ClientSession) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await put_topic(http, base, topic)
    info = await declare(http, base, name, [topic])
    assert (info["generation"], info["keys"], info["lag"]) == (0, 0, {topic: 0})
    await declare(http, base, name, [topic], status=200)  # the same again: kept
    async with http.put(f"{base}/v1/views/{name}", json={"kind": "view", "inputs": ["x"]}) as r:
        assert (await expect_problem(r, 409))["field"] == "inputs"
    await publish(http, base, topic, {"type": "stock.set"}, {"type": "stock.set"})
    async with await commit(
        http, base, name, 0, 0, {"sku-1": 5, "sku-2": 7}, {topic: {"0": 1}}
    ) as r:
        assert await expect(r, 200) == {"offset": 0, "next": 3}
    one = await get(http, f"{base}/v1/views/{name}/keys/sku-1")
    assert one == {"key": "sku-1", "value": 5, "position": "0:0"}
    await get(http, f"{base}/v1/views/{name}/keys/nope", 404)
    info = await get(http, f"{base}/v1/views/{name}")
    assert info["keys"] == 2 and info["lag"] == {topic: 1} and info["positions"] == {topic: "0:1"}
    assert isinstance(info["last_commit"], int)
    listed = await get(http, f"{base}/v1/views")
    assert name in [v["name"] for v in listed["views"]]
    # The changelog is readable through the topic routes, with append times.
    records = await read_all(http, base, f"__view.{name}", appended="true")
    assert [r["event"]["partitionkey"] for r in records] == ["v:sku-1", "v:sku-2", "c"]


async def test_of_two_writers_at_one_offset_one_wins_the_other_gets_the_end(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await declare(http, base, name, [topic])
    async with await commit(http, base, name, 0, 0, {"a": 0}, {topic: {"0": 0}}) as r:
        await expect(r, 200)

    async def writer(who: str) -> tuple[int, Any]:
        async with await commit(http, base, name, 0, 2, {"a": who}, {topic: {"0": 1}}) as r:
            return r.status, await r.json(content_type=None)

    answers = await asyncio.gather(writer("left"), writer("right"))
    assert sorted(status for status, _ in answers) == [200, 409]
    (_, won), (_, lost) = sorted(answers, key=lambda a: a[0])
    assert won == {"offset": 2, "next": 4}
    assert (
        lost["next_offset"] == 4
        and lost["field"] == "expect"
        and "ends at offset 4" in lost["detail"]
    )
    value = (await get(http, f"{base}/v1/views/{name}/keys/a"))["value"]
    assert value in ("left", "right")


async def test_a_rebuild_starts_a_new_generation(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await declare(http, base, name, [topic])
    async with await commit(http, base, name, 0, 0, {"a": 1}, {topic: {"0": 3}}) as r:
        await expect(r, 200)
    async with http.post(f"{base}/v1/views/{name}/rebuild", json={}) as r:
        info = await expect(r, 200)
    assert (info["generation"], info["keys"], info["changelog"]["next_offset"]) == (1, 0, 0)
    async with await commit(http, base, name, 0, 0, {"a": 2}, {topic: {"0": 3}}) as r:
        stale = await expect_problem(r, 409)
    assert (stale["generation"], stale["field"]) == (1, "generation")
    async with await commit(http, base, name, 1, 0, {"a": 3}, {topic: {"0": 3}}) as r:
        await expect(r, 200)
    assert (await get(http, f"{base}/v1/views/{name}/keys/a"))["value"] == 3


async def test_keys_come_in_order_a_page_at_a_time(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await declare(http, base, name, [topic])
    values = {f"sku-{i:02d}@2026-12-05T10:0{i % 3}:00.000Z": i for i in range(25)} | {"z": 0}
    async with await commit(http, base, name, 0, 0, values, {topic: {"0": 0}}) as r:
        await expect(r, 200)
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params = {"prefix": "sku-", "limit": "7", **({"after": after} if after else {})}
        page = await get(http, f"{base}/v1/views/{name}/keys", **params)
        seen += [e["key"] for e in page["keys"]]
        pages += 1
        after = page["next"]
        if after is None:
            break
    assert seen == sorted(k for k in values if k.startswith("sku-")) and pages == 4
    bad = await get(http, f"{base}/v1/views/{name}/keys", 400, limit="0")
    assert bad["field"] == "limit"
    assert (await get(http, f"{base}/v1/views/{name}/keys", 400, colour="red"))["field"] == "colour"


async def test_min_position_waits_for_the_commit_that_covers_it(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await declare(http, base, name, [topic])
    [placed] = await publish(http, base, topic, {"type": "stock.set"})
    url = f"{base}/v1/views/{name}/keys/k"
    waiting = asyncio.create_task(get(http, url, min_position=f"0:{placed['offset']}", wait="30"))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    async with await commit(http, base, name, 0, 0, {"k": "new"}, {topic: {"0": 1}}) as r:
        await expect(r, 200)
    assert (await waiting)["value"] == "new"
    # Right after a commit, the next publish is not covered: 503 with Retry-After.
    await publish(http, base, topic, {"type": "stock.set"})
    async with http.get(url, params={"min_position": "latest", "wait": "0.2"}) as resp:
        behind = await expect_problem(resp, 503)
        assert resp.headers["retry-after"] == "1"
    assert behind["topic"] == topic
    assert (await get(http, url, 400, min_position="0:1", topic="other"))["field"] == "topic"
    assert (await get(http, url, 400, min_position="soon"))["field"] == "min_position"


async def test_sse_gives_a_snapshot_then_changes_and_resumes(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await declare(http, base, name, [topic])
    async with await commit(http, base, name, 0, 0, {"a": 1, "b": 2}, {topic: {"0": 0}}) as r:
        await expect(r, 200)
    async with http.get(f"{base}/v1/views/{name}/sse") as resp:
        assert resp.content_type == "text/event-stream"
        stream = messages(resp)
        assert await anext(stream) == {"retry": "2000"}
        snap = await anext(stream)
        assert snap["event"] == "snapshot" and snap["id"] == "0@0:3"
        data = orjson.loads(snap["data"])
        assert [(e["key"], e["value"]) for e in data["entries"]] == [("a", 1), ("b", 2)]
        assert data["first"] and data["last"]
        async with await commit(
            http, base, name, 0, 3, {"a": DELETE, "c": 3}, {topic: {"0": 0}}
        ) as r:
            await expect(r, 200)
        first = await anext(stream)
        second = await anext(stream)
    assert (first["event"], first["id"], orjson.loads(first["data"])) == (
        "change",
        "0@0:4",
        {"key": "a", "deleted": True, "position": "0:3"},
    )
    assert orjson.loads(second["data"])["key"] == "c" and second["id"] == "0@0:5"
    async with await commit(http, base, name, 0, 6, {"d": 4}, {topic: {"0": 0}}) as r:
        await expect(r, 200)
    async with http.get(f"{base}/v1/views/{name}/sse", headers={"Last-Event-ID": "0@0:5"}) as resp:
        stream = messages(resp)
        await anext(stream)
        resumed = await anext(stream)
    assert resumed["event"] == "change" and orjson.loads(resumed["data"])["key"] == "d"
    for bad in ("x@0:5", "0@0:", "0@0:5,0:6", "0@1000:5"):
        async with http.get(
            f"{base}/v1/views/{name}/sse", headers={"Last-Event-ID": bad}
        ) as resp:
            assert (await expect_problem(resp, 400))["field"] == "Last-Event-ID", bad
    # A token without a generation (or of another one), or of partitions the changelog
    # does not have (another layout's), starts again with a snapshot.
    for token in ("0:5", "1:5", "0@1:5", "0@0:5,1:0"):
        async with http.get(f"{base}/v1/views/{name}/sse", params={"from": token}) as resp:
            stream = messages(resp)
            await anext(stream)
            again = await anext(stream)
        assert again["event"] == "snapshot" and again["id"] == "0@0:8", token


async def test_a_feed_resumed_from_before_a_rebuild_starts_with_a_snapshot(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    """The token names its generation: resumed after a rebuild whose changelog grew past
    it, the feed is not taken up at that offset of another changelog."""
    base, name, topic = hub.base_url, unique("v"), unique()
    await declare(http, base, name, [topic])
    async with await commit(http, base, name, 0, 0, {"a": 1}, {topic: {"0": 0}}) as r:
        await expect(r, 200)
    async with http.get(f"{base}/v1/views/{name}/sse") as resp:
        stream = messages(resp)
        await anext(stream)
        token = (await anext(stream))["id"]
    assert token == "0@0:2"
    async with http.post(f"{base}/v1/views/{name}/rebuild", json={}) as r:
        await expect(r, 200)
    values = {k: i for i, k in enumerate("vwxyz")}
    async with await commit(http, base, name, 1, 0, values, {topic: {"0": 0}}) as r:
        await expect(r, 200)
    async with http.get(f"{base}/v1/views/{name}/sse", headers={"Last-Event-ID": token}) as resp:
        stream = messages(resp)
        await anext(stream)
        first = await anext(stream)
    assert first["event"] == "snapshot" and first["id"] == "1@0:6"
    assert [e["key"] for e in orjson.loads(first["data"])["entries"]] == list("vwxyz")
    async with websockets.connect(ws_url(base), subprotocols=[PROTOCOL]) as ws:
        await ws.send(json.dumps({"type": "subscribe", "id": "v1", "view": name, "from": token}))
        assert (await recv(ws))["type"] == "subscribed"
        snap = await recv(ws)
        assert snap["type"] == "view.snapshot" and snap["resume"] == "1@0:6"


async def test_a_websocket_follows_a_view(hub: HubProcess, http: aiohttp.ClientSession) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await declare(http, base, name, [topic])
    async with await commit(http, base, name, 0, 0, {"a": 1}, {topic: {"0": 0}}) as r:
        await expect(r, 200)
    async with websockets.connect(ws_url(base), subprotocols=[PROTOCOL]) as ws:
        await ws.send(json.dumps({"type": "subscribe", "id": "v1", "view": name}))
        assert await recv(ws) == {"type": "subscribed", "id": "v1", "view": name}
        snap = await recv(ws)
        assert snap["type"] == "view.snapshot" and snap["resume"] == "0@0:2"
        assert snap["entries"] == [{"key": "a", "value": 1, "position": "0:0"}]
        async with await commit(http, base, name, 0, 2, {"b": 2}, {topic: {"0": 0}}) as r:
            await expect(r, 200)
        change = await recv(ws)
        assert change == {
            "type": "view.change",
            "sub": "v1",
            "view": name,
            "key": "b",
            "value": 2,
            "position": "0:2",
            "resume": "0@0:3",
        }
        await ws.send(json.dumps({"type": "subscribe", "id": "v2", "view": "nope-" + name}))
        refused = await recv(ws)
        assert refused["type"] == "error" and refused["status"] == 404
        await ws.send(json.dumps({"type": "subscribe", "id": "v3", "view": name, "from": "0@0:3"}))
        assert (await recv(ws))["type"] == "subscribed"
        async with await commit(http, base, name, 0, 4, {"c": 3}, {topic: {"0": 0}}) as r:
            await expect(r, 200)
        got = {(f["sub"], f.get("key")) for f in [await recv(ws), await recv(ws)]}
        assert got == {("v1", "c"), ("v3", "c")}  # v3 resumed: no snapshot


async def test_clients_never_write_a_changelog(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await declare(http, base, name, [topic])
    changelog = f"__view.{name}"
    async with http.post(
        f"{base}/v1/topics/{changelog}/events",
        data=b'{"type":"x"}',
        headers={"content-type": "application/cloudevents+json"},
    ) as resp:
        problem = await expect_problem(resp, 403)
    assert f"POST /v1/views/{name}/commit" in problem["detail"]
    async with http.put(f"{base}/v1/topics/{changelog}/groups/g", json={}) as resp:
        await expect_problem(resp, 403)
    async with http.delete(f"{base}/v1/topics/{changelog}") as resp:
        await expect_problem(resp, 403)
    async with http.put(f"{base}/v1/topics/{changelog}", json={}) as resp:
        await expect_problem(resp, 403)


async def test_a_bad_commit_is_refused_and_names_the_field(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await declare(http, base, name, [topic])
    url = f"{base}/v1/views/{name}/commit"
    cases = [
        ({"generation": 0, "expect": 0}, "events"),
        ({"generation": "0", "expect": 0, "events": []}, "generation"),
        ({"generation": 0, "expect": -1, "events": []}, "expect"),
        (
            {"generation": 0, "expect": 0, "events": [{"type": "x", "partitionkey": "v:a"}]},
            "events[0].type",
        ),
        ({"generation": 0, "expect": 0, "events": [], "extra": 1}, "extra"),
    ]
    for body, field in cases:
        async with http.post(url, data=orjson.dumps(body), headers=JSON) as resp:
            assert (await expect_problem(resp, 400))["field"] == field, body
    async with http.post(f"{base}/v1/views/nope-{name}/commit", json={}) as resp:
        await expect_problem(resp, 404)


MINUTE = {"kind": "tumbling", "size": 60_000, "grace": 0, "idle": 0}


async def test_any_key_can_be_named_in_the_path(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await declare(http, base, name, [topic])
    keys = {"a/b": 1, "sp ace": 2, "a?b": 3, "%2F": 4, "/lead": 5}
    async with await commit(http, base, name, 0, 0, keys, {topic: {"0": 0}}) as r:
        await expect(r, 200)
    for key, value in keys.items():
        url = URL(f"{base}/v1/views/{name}/keys/{quote(key, safe='')}", encoded=True)
        async with http.get(url) as resp:
            assert (await expect(resp, 200)) == {
                "key": key, "value": value, "position": f"0:{list(keys).index(key)}",
            }, key  # fmt: skip
    for missing in ("no/such", "new\nline"):  # the view's 404, not a missing route's
        url = URL(f"{base}/v1/views/{name}/keys/{quote(missing, safe='')}", encoded=True)
        async with http.get(url) as resp:
            assert (await expect_problem(resp, 404))["key"] == missing


async def test_a_bad_declaration_is_refused_before_any_topic_is_made(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, topic = hub.base_url, unique("w"), unique()
    window = {"kind": "window", "inputs": [topic], "window": MINUTE}
    cases = [
        (name, {**window, "window": {"nonsense": True}}, 400, "window.kind"),
        (name, {**window, "window": {**MINUTE, "size": -5}}, 400, "window.size"),
        ("w" * 198, window, 400, "view"),  # its late topic would be 203 characters
        (topic, window, 400, "inputs"),  # it would read its own results
    ]
    for view, spec, status, field in cases:
        async with http.put(f"{base}/v1/views/{view}", json=spec) as resp:
            assert (await expect_problem(resp, status))["field"] == field, spec
    await publish(http, base, name, {"type": "x", "source": "t", "id": "1"})
    async with http.put(f"{base}/v1/views/{name}", json=window) as resp:
        problem = await expect_problem(resp, 409)  # a topic of other events: never taken
    assert problem["field"] == "view" and problem["topic"] == name
    async with http.get(f"{base}/v1/topics") as resp:
        names = {t["name"] for t in (await expect(resp, 200))["topics"]}
    assert not names & {topic, f"{name}.late", f"__view.{name}", "w" * 198, f"__view.{topic}"}


TOKENS = {
    "tokens": [
        {"name": "proc", "token": "proc-t", "subscribe": ["inv*"], "manage": ["inv*"],
         "publish": ["inv*"]},
        {"name": "reader", "token": "reader-t", "subscribe": ["inv*"]},
        {"name": "other", "token": "other-t", "subscribe": ["orders"], "manage": ["orders"]},
        {"name": "ops", "token": "ops-t", "admin": True},
    ]
}  # fmt: skip


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_scopes_of_views(
    hub_factory: HubFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(TOKENS))
    hub = hub_factory.start("--auth-file", str(path))
    base, name = hub.base_url, unique("v")
    await declare(http, base, name, ["inventory"], status=403, headers=bearer("reader-t"))
    await declare(http, base, name, ["inventory"], headers=bearer("proc-t"))
    async with await commit(
        http, base, name, 0, 0, {"a": 1}, {"inventory": {"0": 0}}, headers=bearer("other-t")
    ) as r:
        await expect_problem(r, 403)
    async with await commit(
        http, base, name, 0, 0, {"a": 1}, {"inventory": {"0": 0}}, headers=bearer("proc-t")
    ) as r:
        await expect(r, 200)
    url = f"{base}/v1/views/{name}/keys/a"
    async with http.get(url, headers=bearer("reader-t")) as r:
        assert (await expect(r, 200))["value"] == 1
    async with http.get(url, headers=bearer("other-t")) as r:
        assert "inventory" in (await expect_problem(r, 403))["detail"]
    async with http.get(f"{base}/v1/views", headers=bearer("other-t")) as r:
        assert (await expect(r, 200))["views"] == []
    async with http.get(f"{base}/v1/topics/__view.{name}/events", headers=bearer("reader-t")) as r:
        assert len((await expect(r, 200))["records"]) == 2
    async with http.post(
        f"{base}/v1/views/{name}/rebuild", json={}, headers=bearer("reader-t")
    ) as r:
        await expect_problem(r, 403)
    async with http.post(
        f"{base}/v1/topics/__view.{name}/events",
        data=b'{"type":"x"}',
        headers={"content-type": "application/cloudevents+json", **bearer("ops-t")},
    ) as r:
        await expect_problem(r, 403)  # admin included
    # A window view makes its result topics {name} and {name}.late: a token that could
    # not make them by publishing may not make them by declaring either.
    window = {"kind": "window", "inputs": ["orders"], "window": MINUTE}
    async with http.put(f"{base}/v1/topics/orders", json={}, headers=bearer("ops-t")) as r:
        await expect(r, 201)
    async with http.put(f"{base}/v1/views/payments", json=window, headers=bearer("other-t")) as r:
        problem = await expect_problem(r, 403)
    assert problem["topic"] == "payments" and "publish" in problem["detail"]
    async with http.get(f"{base}/v1/topics", headers=bearer("ops-t")) as r:
        names = {t["name"] for t in (await expect(r, 200))["topics"]}
    assert not names & {"payments", "payments.late", "__view.payments"}


async def test_a_hub_killed_mid_commit_serves_every_commit_whole_after_restart(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    hub = hub_factory.start(fsync="always")
    base, name, topic = hub.base_url, unique("v"), unique()
    await declare(http, base, name, [topic])
    committed: dict[str, Any] = {}
    at = 0
    for seq in range(5):
        values = {f"k{seq}-{i}": seq * 100 + i for i in range(50)}
        async with await commit(http, base, name, 0, at, values, {topic: {"0": seq}}, seq=seq) as r:
            at = (await expect(r, 200))["next"]
        committed.update(values)
    # Refused (stale expect): never served.
    async with await commit(http, base, name, 0, 0, {"ghost": 1}, {topic: {"0": 9}}) as r:
        await expect_problem(r, 409)
    # A big commit in flight when the hub dies: after the restart it is whole or absent.
    big = {f"big-{i:05d}": i for i in range(20_000)}
    sending = asyncio.create_task(commit(http, base, name, 0, at, big, {topic: {"0": 99}}, seq=9))
    await asyncio.sleep(0.3)
    hub.kill()
    with contextlib.suppress(aiohttp.ClientError):
        (await sending).close()
    hub.restart()
    keys: dict[str, Any] = {}
    after: str | None = None
    while True:
        params = {"limit": "1000", **({"after": after} if after else {})}
        page = await get(http, f"{base}/v1/views/{name}/keys", **params)
        keys.update({e["key"]: e["value"] for e in page["keys"]})
        after = page["next"]
        if after is None:
            break
    bigs = {k: v for k, v in keys.items() if k.startswith("big-")}
    assert bigs in ({}, big)  # all or nothing
    assert {k: v for k, v in keys.items() if not k.startswith("big-")} == committed
    info = await get(http, f"{base}/v1/views/{name}")
    assert info["positions"] == {topic: "0:99" if bigs else "0:4"}


async def test_a_restarted_hub_keeps_each_view_its_generation_and_state(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    hub = hub_factory.start()
    base, topic = hub.base_url, unique()
    await declare(http, base, "kept", [topic])
    async with http.put(
        f"{base}/v1/views/spm",
        json={"kind": "window", "inputs": [topic], "window": MINUTE, "emit": "updates"},
    ) as r:
        await expect(r, 201)
    async with await commit(http, base, "kept", 0, 0, {"a": 1}, {topic: {"0": 0}}) as r:
        await expect(r, 200)
    async with http.post(f"{base}/v1/views/kept/rebuild", json={}) as r:
        await expect(r, 200)
    async with await commit(http, base, "kept", 1, 0, {"b": 2}, {topic: {"0": 0}}) as r:
        await expect(r, 200)
    hub.restart()
    kept = await get(http, f"{base}/v1/views/kept")
    assert (kept["generation"], kept["keys"], kept["changelog"]["next_offset"]) == (1, 1, 2)
    assert (await get(http, f"{base}/v1/views/kept/keys/b"))["position"] == "0:0"
    await get(http, f"{base}/v1/views/kept/keys/a", 404)
    spm = await get(http, f"{base}/v1/views/spm")
    assert (spm["kind"], spm["window"], spm["emit"]) == ("window", MINUTE, "updates")
    async with await commit(http, base, "kept", 1, 2, {"c": 3}, {topic: {"0": 0}}) as r:
        await expect(r, 200)  # the processor goes on where the changelog ends


async def test_a_feed_open_across_a_rebuild_starts_again_with_a_snapshot(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await declare(http, base, name, [topic])
    async with await commit(http, base, name, 0, 0, {"a": 1}, {topic: {"0": 0}}) as r:
        await expect(r, 200)
    async with http.get(f"{base}/v1/views/{name}/sse") as resp:
        stream = messages(resp)
        await anext(stream)
        first = orjson.loads((await anext(stream))["data"])
        assert first["generation"] == 0 and len(first["entries"]) == 1
        async with http.post(f"{base}/v1/views/{name}/rebuild", json={}) as r:
            await expect(r, 200)
        again = await anext(stream)
        while again.get("event") != "snapshot" or orjson.loads(again["data"])["generation"] != 1:
            again = await anext(stream)
        assert orjson.loads(again["data"])["entries"] == [] and again["id"] == "1@0:0"
        async with await commit(http, base, name, 1, 0, {"b": 2}, {topic: {"0": 0}}) as r:
            await expect(r, 200)
        change = await anext(stream)
    assert change["event"] == "change" and orjson.loads(change["data"])["key"] == "b"


KILL_ROUNDS = 5
KEYS_PER_COMMIT = 40


async def test_commits_stay_whole_through_repeated_sigkills(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    """A writer commits without pause (each commit its own keys, all one seq) while the
    hub is killed at random moments: after each restart every acknowledged commit is
    served, and every commit is there with all its keys or none of them."""
    rng = random.Random(16)
    hub = hub_factory.start(fsync="always")
    base, name, topic = hub.base_url, unique("v"), unique()
    await declare(http, base, name, [topic])
    acked: set[int] = set()
    seq = 0
    for _ in range(KILL_ROUNDS):
        stop = asyncio.Event()

        async def writer(stop: asyncio.Event) -> None:
            nonlocal seq
            while not stop.is_set():
                try:
                    at = (await get(http, f"{base}/v1/views/{name}"))["changelog"]["next_offset"]
                    values = {f"c{seq:05d}-{i:02d}": seq for i in range(KEYS_PER_COMMIT)}
                    mine = seq
                    seq += 1
                    resp = await commit(
                        http, base, name, 0, at, values, {topic: {"0": mine}}, seq=mine
                    )
                    async with resp:
                        if resp.status == 200:
                            acked.add(mine)
                except (aiohttp.ClientError, AssertionError):
                    return  # the hub is gone

        task = asyncio.create_task(writer(stop))
        await asyncio.sleep(rng.uniform(0.3, 1.2))
        hub.kill()
        stop.set()
        await task
        hub.restart()
        served: dict[str, int] = {}
        after: str | None = None
        while True:
            params = {"limit": "1000", **({"after": after} if after else {})}
            page = await get(http, f"{base}/v1/views/{name}/keys", **params)
            served.update({e["key"]: e["value"] for e in page["keys"]})
            if (after := page["next"]) is None:
                break
        per_commit: dict[int, int] = {}
        for value in served.values():
            per_commit[value] = per_commit.get(value, 0) + 1
        assert all(n == KEYS_PER_COMMIT for n in per_commit.values()), per_commit
        assert acked <= set(per_commit), sorted(acked - set(per_commit))
    assert len(acked) >= KILL_ROUNDS  # commits were made between the kills
