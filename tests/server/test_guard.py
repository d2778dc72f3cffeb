"""What a foreign web page could make a browser send, against a real open hub.

Forged ``Origin`` and ``Host`` headers and CORS-simple content types, as aiohttp
sends them: each is refused with a problem naming the header, and changes
nothing. The same attacks from a real browser are in test_cross_site.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from hubapi import BATCH, STRUCTURED, expect, expect_problem, publish, put_topic, unique
from hubproc import HubFactory, HubProcess, free_port, hub_env, serve_command

from tidings.server.guard import host_allowed
from tidings.server.serve import ServeConfig, served_hosts

EVIL = "http://evil.example"
SIMPLE_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]


@pytest.fixture(scope="module")
def open_hub(module_hub_factory: HubFactory) -> HubProcess:
    """An open hub on loopback that may deliver webhooks to loopback."""
    return module_hub_factory.start("--webhook-allow-net", "127.0.0.0/8")


async def _state(http: aiohttp.ClientSession, base: str, topic: str) -> Any:
    """Everything the attacks below could change, to compare before and after."""
    async with http.get(f"{base}/v1/webhooks") as resp:
        webhooks = await expect(resp, 200)
    async with http.get(f"{base}/v1/topics") as resp:
        topics = await expect(resp, 200)
    async with http.get(f"{base}/v1/topics/{topic}/groups/g") as resp:
        group = await expect(resp, 200)
    return webhooks, topics, group["partitions"], group.get("pending")


async def _group_with_history(http: aiohttp.ClientSession, base: str) -> str:
    topic = unique()
    await put_topic(http, base, topic)
    events = [{"type": "order.placed", "data": {"n": i}} for i in range(3)]
    await publish(http, base, topic, *events)
    async with http.put(f"{base}/v1/topics/{topic}/groups/g", json={"start": "latest"}) as resp:
        await expect(resp, 201)
    return topic


def _attacks(base: str, topic: str) -> list[tuple[str, str, bytes]]:
    """What a page would do with an open hub: register a webhook (whose replay would
    send all history away), rewind a group, lease its events, publish, delete."""
    group = f"{base}/v1/topics/{topic}/groups/g"
    hook = orjson.dumps({"url": "http://127.0.0.1:9/steal", "topics": [topic]})
    return [
        ("POST", f"{base}/v1/webhooks", hook),
        ("POST", f"{group}/seek", b'{"to": "earliest"}'),
        ("POST", f"{group}/fetch", b'{"max": 10}'),
        ("POST", f"{group}/redrive", b""),
        ("POST", f"{base}/v1/topics/{topic}/events", b'{"type": "forged"}'),
        ("PUT", f"{base}/v1/topics/{unique()}", b"{}"),
    ]


async def test_a_foreign_origin_changes_nothing(
    open_hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base = open_hub.base_url
    topic = await _group_with_history(http, base)
    before = await _state(http, base, topic)
    for content_type in ["application/json", STRUCTURED, BATCH, *SIMPLE_TYPES]:
        for method, url, body in _attacks(base, topic):
            headers = {"origin": EVIL, "content-type": content_type}
            async with http.request(method, url, data=body, headers=headers) as resp:
                problem = await expect_problem(resp, 403)
            assert problem["header"] == "Origin", problem
            assert EVIL in problem["detail"]
    for url in [f"{base}/v1/topics/{topic}/groups/g", f"{base}/v1/topics/{topic}"]:
        async with http.delete(url, headers={"origin": EVIL}) as resp:
            assert (await expect_problem(resp, 403))["header"] == "Origin"
    # "null" is the origin of sandboxed frames and of pages from files.
    async with http.post(
        f"{base}/v1/topics/{topic}/groups/g/seek",
        json={"to": "earliest"},
        headers={"origin": "null"},
    ) as resp:
        assert (await expect_problem(resp, 403))["header"] == "Origin"
    assert await _state(http, base, topic) == before


async def test_simple_content_types_change_nothing(
    open_hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    """No Origin at all (an old browser, a plugin): the content type alone refuses."""
    base = open_hub.base_url
    topic = await _group_with_history(http, base)
    before = await _state(http, base, topic)
    for content_type in [*SIMPLE_TYPES, None]:
        for method, url, body in _attacks(base, topic):
            headers = {"content-type": content_type} if content_type else {}
            skip = () if content_type else ("Content-Type",)
            async with http.request(
                method, url, data=body, headers=headers, skip_auto_headers=skip
            ) as resp:
                problem = await expect_problem(resp, 415)
            assert problem["header"] == "Content-Type", problem
    assert await _state(http, base, topic) == before


async def test_the_hubs_own_pages_and_programs_still_change_it(
    open_hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base = open_hub.base_url
    topic = await _group_with_history(http, base)
    origins = [base, "http://localhost:5173", None]  # its own, a local dev server, no browser
    for origin in origins:
        headers = {"origin": origin} if origin else {}
        async with http.post(
            f"{base}/v1/topics/{topic}/groups/g/seek", json={"to": "earliest"}, headers=headers
        ) as resp:
            await expect(resp, 200)
    # CloudEvents binary mode keeps any content type: its ce-* headers need a preflight.
    binary = {"ce-specversion": "1.0", "ce-type": "note.added", "ce-source": "/t", "ce-id": "b1"}
    async with http.post(
        f"{base}/v1/topics/{topic}/events",
        data=b"plain words",
        headers={**binary, "content-type": "text/plain", "origin": base},
    ) as resp:
        answer = await expect(resp, 202)
    assert answer["events"][0]["offset"] == 3
    # A bodyless PUT is never sent cross-site without a preflight: it needs no type.
    bare = ("Content-Type",)
    async with http.put(f"{base}/v1/topics/{unique()}", skip_auto_headers=bare) as resp:
        await expect(resp, 201)


async def test_a_foreign_host_is_refused_on_reads_and_writes(
    open_hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    """DNS rebinding: the page's own name now points at the hub; Origin matches Host."""
    base = open_hub.base_url
    topic = await _group_with_history(http, base)
    before = await _state(http, base, topic)
    rebound = f"rebind.evil.example:{open_hub.port}"
    headers = {"host": rebound, "origin": f"http://{rebound}"}
    reads = [
        f"{base}/v1/topics",
        f"{base}/v1/topics/{topic}/events?from=earliest",
        f"{base}/v1/topics/{topic}/sse?from=earliest",
        f"{base}/v1/groups",
        f"{base}/metrics",
    ]
    for url in reads:
        async with http.get(url, headers=headers) as resp:
            problem = await expect_problem(resp, 403)
        assert problem["header"] == "Host" and rebound in problem["detail"], problem
    for method, url, body in _attacks(base, topic):
        async with http.request(
            method, url, data=body, headers={**headers, "content-type": "application/json"}
        ) as resp:
            assert (await expect_problem(resp, 403))["header"] == "Host"
    assert await _state(http, base, topic) == before


async def test_the_websocket_refuses_a_foreign_host(
    open_hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    rebound = f"rebind.evil.example:{open_hub.port}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(
            f"{open_hub.base_url}/v1/ws",
            protocols=("tidings.v1",),
            headers={"host": rebound, "origin": f"http://{rebound}"},
        )
    assert refused.value.status == 403
    # The names the hub serves still open it.
    for host in [f"localhost:{open_hub.port}", f"127.0.0.1:{open_hub.port}"]:
        ws = await http.ws_connect(
            f"{open_hub.base_url}/v1/ws", protocols=("tidings.v1",), headers={"host": host}
        )
        await ws.close()


async def test_allowed_host_and_origin_flags(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    """Behind a proxy: the public name and the app's origin are listed; nothing else is."""
    hub = hub_factory.start(
        "--allowed-host", "hub.example.com",
        "--allowed-host", ".internal.example",
        "--allowed-origin", "https://app.example.com",
    )  # fmt: skip
    base, topic = hub.base_url, unique()
    for host in ["hub.example.com", "HUB.example.com.", "a.internal.example:443", "localhost"]:
        async with http.put(
            f"{base}/v1/topics/{topic}",
            json={},
            headers={"host": host, "origin": "https://app.example.com"},
        ) as resp:
            assert resp.status in (200, 201), (host, await resp.text())
    for host in ["hub.example.org", "internal.example.evil.example", "evil-hub.example.com"]:
        async with http.get(f"{base}/v1/topics", headers={"host": host}) as resp:
            assert (await expect_problem(resp, 403))["header"] == "Host", host
    # With a list, a loopback origin is no longer allowed by default.
    async with http.put(
        f"{base}/v1/topics/{topic}", json={}, headers={"origin": "http://localhost:3000"}
    ) as resp:
        assert (await expect_problem(resp, 403))["header"] == "Origin"


async def test_a_cors_preflight_is_granted_only_to_an_allowed_origin(
    open_hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base = open_hub.base_url
    asks = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type",
    }
    async with http.options(f"{base}/v1/ws/ticket", headers={**asks, "origin": EVIL}) as resp:
        assert (await expect_problem(resp, 403))["header"] == "Origin"
        assert "access-control-allow-origin" not in resp.headers
    local = "http://localhost:5173"  # a loopback origin: allowed by default
    async with http.options(f"{base}/v1/ws/ticket", headers={**asks, "origin": local}) as resp:
        assert resp.status == 204
        assert resp.headers["access-control-allow-origin"] == local
        assert resp.headers["access-control-allow-headers"] == "authorization,content-type"
        assert "POST" in resp.headers["access-control-allow-methods"]
    async with http.post(f"{base}/v1/ws/ticket", json={}, headers={"origin": local}) as resp:
        await expect(resp, 200)
        assert resp.headers["access-control-allow-origin"] == local
    # A read from a foreign origin is answered, but without the header that lets it read.
    async with http.get(f"{base}/v1/topics", headers={"origin": EVIL}) as resp:
        await expect(resp, 200)
        assert "access-control-allow-origin" not in resp.headers
    # Except the browser client, which any page may import.
    async with http.get(f"{base}/static/tidings.js", headers={"origin": EVIL}) as resp:
        assert resp.status == 200
        assert resp.headers["access-control-allow-origin"] == "*"


def test_the_hub_serves_loopback_its_bound_address_and_the_listed_names() -> None:
    config = ServeConfig(host="10.1.2.3", allowed_hosts=("Hub.Example.", " ", "hub.example"))
    assert served_hosts(config) == ("localhost", "127.0.0.1", "[::1]", "10.1.2.3", "hub.example")
    assert served_hosts(ServeConfig(host="::")) == ("localhost", "127.0.0.1", "[::1]", "[::]")
    assert host_allowed("[::]:8700", served_hosts(ServeConfig(host="::")))


async def test_allowed_hosts_from_the_environment(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    env = {**hub_env(), "TIDINGS_ALLOWED_HOSTS": "a.example,b.example"}
    command = serve_command(port, tmp_path / "data", "never", ())
    with (tmp_path / "hub.log").open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        break
            await asyncio.sleep(0.05)
        for host, status in [("a.example", 200), ("b.example:80", 200), ("c.example", 403)]:
            async with http.get(f"{base}/v1/topics", headers={"host": host}) as resp:
                assert resp.status == status, (host, await resp.text())
    finally:
        proc.terminate()
        proc.wait(15)
