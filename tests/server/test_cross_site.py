"""What a web page can make a real browser do to a hub: headless Chromium via Playwright.

- A page of a foreign site (``http://evil.example:PORT``, mapped to a second
  loopback HTTP server by Chromium's host resolver) attacks an open hub on
  loopback with what needs no CORS preflight: ``text/plain`` fetches and an HTML
  form. Each is refused and nothing on the hub changes; a page of the hub's own
  origin still changes it.
- A page that uses ``/static/tidings.js`` with a token, and guesses that the hub
  refuses: the hub's log (its stderr, at level info) holds no token.
- A page of an origin the hub allows (``--allowed-origin``) gets a ticket with
  its token (a CORS request the hub grants) and follows a topic with
  ``EventSource``; a foreign page gets no ticket.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from chromium import CHROMIUM, NEEDS_CHROMIUM
from chromium import LAUNCH_ARGS as CHROME_ARGS
from hubapi import expect, publish, put_topic, unique
from hubproc import HubFactory
from receivers import Receiver

LAUNCH_ARGS = [
    *CHROME_ARGS,
    # A foreign site's name, served from loopback: the attack needs no network.
    "--host-resolver-rules=MAP evil.example 127.0.0.1, MAP app.example 127.0.0.1",
]

pytestmark = [
    pytest.mark.timeout(180),
    NEEDS_CHROMIUM,
]

ATTACK = """<!doctype html>
<meta charset="utf-8"><title>a page of another site</title>
<iframe name="sink"></iframe>
<form id="form" method="POST" target="sink" action="%(hook)s/test"></form>
<script type="module">
  const hub = %(hub)s, group = %(group)s, topic = %(topic)s;
  window.results = {};
  // What a page may send without a preflight: text/plain, and its answer is opaque.
  async function simple(name, url, body) {
    try {
      const r = await fetch(url, {
        method: "POST", mode: "no-cors", headers: { "content-type": "text/plain" }, body,
      });
      window.results[name] = "sent:" + r.type;
    } catch (err) {
      window.results[name] = "failed:" + err;
    }
  }
  const steal = JSON.stringify({ url: %(thief)s, topics: [topic] });
  await simple("webhook", hub + "/v1/webhooks", steal);
  await simple("seek", group + "/seek", JSON.stringify({ to: "earliest" }));
  await simple("fetch", group + "/fetch", JSON.stringify({ max: 10 }));
  await simple("publish", hub + "/v1/topics/" + topic + "/events", '{"type": "forged"}');
  // JSON needs a preflight, which the hub does not grant to a foreign origin.
  try {
    await fetch(hub + "/v1/webhooks", {
      method: "POST", headers: { "content-type": "application/json" }, body: steal,
    });
    window.results.json = "answered";
  } catch (err) {
    window.results.json = "blocked";
  }
  // An HTML form: an empty urlencoded body, which the test route took as {}.
  const sent = new Promise((resolve) => {
    document.querySelector("iframe").addEventListener("load", resolve, { once: true });
  });
  document.getElementById("form").submit();
  await sent;
  window.done = true;
</script>
"""

CLIENT = """<!doctype html>
<meta charset="utf-8"><title>tidings.js with a token</title>
<script type="module">
  import { Tidings } from "%(hub)s/static/tidings.js";
  window.received = [];
  window.errors = [];
  const hub = new Tidings("%(hub)s", { token: %(token)s, maxReconnects: 0 });
  window.sub = hub.subscribe(%(topic)s, {
    from: "earliest",
    onEvent(r) { window.received.push(r.event.id); },
    onError(err) { window.errors.push(String(err)); },
  });
  // Guesses the hub refuses: a wrong token, and one in the URL as old clients sent it.
  window.refused = [];
  const wrong = new Tidings("%(hub)s", { token: %(guess)s, maxReconnects: 0 });
  wrong.subscribe(%(topic)s, { onEvent() {}, onError(err) { window.refused.push(err.status); } });
  const old = new WebSocket("%(ws)s/v1/ws?token=" + %(guess2)s, "tidings.v1");
  old.onclose = () => window.refused.push("closed");
</script>
"""


TICKETED = """<!doctype html>
<meta charset="utf-8"><title>EventSource with a ticket</title>
<script type="module">
  window.received = [];
  try {
    const resp = await fetch("%(hub)s/v1/ws/ticket", {
      method: "POST",
      headers: { authorization: "Bearer " + %(token)s, "content-type": "application/json" },
      body: "{}",
    });
    const { ticket } = await resp.json();
    const source = new EventSource(
      "%(hub)s/v1/topics/" + %(topic)s + "/sse?from=earliest&ticket=" + ticket);
    source.onmessage = (m) => window.received.push(JSON.parse(m.data).event.id);
    window.outcome = "ticket";
  } catch (err) {
    window.outcome = "blocked";
  }
</script>
"""


class Pages:
    """A tiny HTTP server on loopback serving pages by path, reached by any name."""

    def __init__(self) -> None:
        self.pages: dict[str, bytes] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def pages() -> Iterator[Pages]:
    p = Pages()
    p.thread.start()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def _hub_state(http: aiohttp.ClientSession, base: str, topic: str, hook: str) -> Any:
    async with http.get(f"{base}/v1/webhooks") as resp:
        webhooks = await expect(resp, 200)
    async with http.get(f"{base}/v1/topics/{topic}") as resp:
        info = await expect(resp, 200)
    async with http.get(f"{base}/v1/topics/{topic}/groups/g") as resp:
        group = await expect(resp, 200)
    async with http.get(f"{hook}/attempts") as resp:
        attempts = await expect(resp, 200)
    return webhooks, info["partitions"], group, attempts


async def test_a_foreign_page_changes_nothing_on_an_open_hub(
    hub_factory: HubFactory,
    http: aiohttp.ClientSession,
    pages: Pages,
    browser: Any,
    receiver: Receiver,
) -> None:
    hub = hub_factory.start("--webhook-allow-net", "127.0.0.0/8")
    base, topic = hub.base_url, unique()
    await put_topic(http, base, topic)
    await publish(http, base, topic, *[{"type": "order.placed", "data": n} for n in range(3)])
    group = f"{base}/v1/topics/{topic}/groups/g"
    async with http.put(group, json={"start": "latest"}) as resp:
        await expect(resp, 201)
    legit = {"url": receiver.url, "topics": ["none"]}
    async with http.post(f"{base}/v1/webhooks", json=legit) as resp:
        hook = f"{base}/v1/webhooks/{(await expect(resp, 201))['id']}"
    thief = await Receiver().start()
    try:
        before = await _hub_state(http, base, topic, hook)
        pages.pages["/attack.html"] = (
            ATTACK
            % {
                "hub": json.dumps(base),
                "group": json.dumps(group),
                "topic": json.dumps(topic),
                "hook": hook,
                "thief": json.dumps(thief.url),
            }
        ).encode()
        page = await browser.new_page()
        await page.goto(f"http://evil.example:{pages.port}/attack.html")
        await page.wait_for_function("window.done === true", timeout=30000)
        results = await page.evaluate("window.results")
        # The browser sent every simple request (a refusal is an answer it hides).
        assert results == {
            "webhook": "sent:opaque",
            "seek": "sent:opaque",
            "fetch": "sent:opaque",
            "publish": "sent:opaque",
            "json": "blocked",
        }
        await asyncio.sleep(0.5)  # room for a webhook delivery, were there one
        assert await _hub_state(http, base, topic, hook) == before
        assert thief.requests == [] and receiver.requests == []

        # A page of the hub's own origin (the dashboard's) still changes it.
        own = await browser.new_page()
        await own.goto(base + "/")
        status = await own.evaluate(
            """(url) => fetch(url, {
                 method: "POST",
                 headers: {"content-type": "application/json"},
                 body: JSON.stringify({to: "earliest"}),
               }).then((r) => r.status)""",
            group + "/seek",
        )
        assert status == 200
        async with http.get(group) as resp:
            assert (await expect(resp, 200)) != before[2]
    finally:
        await thief.close()


async def test_no_token_reaches_the_hub_log(
    hub_factory: HubFactory,
    http: aiohttp.ClientSession,
    pages: Pages,
    browser: Any,
    tmp_path: Path,
) -> None:
    secret, guess, guess2 = "s3cret-0f-the-shop", "a-wr0ng-token", "a-guess-1n-a-url"
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"name": "shop", "token": secret, "admin": True}]}))
    hub = hub_factory.start("--auth-file", str(tokens), "--log-level", "info")
    base, topic = hub.base_url, unique()
    bearer = {"Authorization": f"Bearer {secret}"}
    async with http.put(f"{base}/v1/topics/{topic}", json={}, headers=bearer) as resp:
        await expect(resp, 201)
    await publish(http, base, topic, {"type": "order.placed", "id": "e-1"}, headers=bearer)
    pages.pages["/client.html"] = (
        CLIENT
        % {
            "hub": base,
            "ws": base.replace("http://", "ws://"),
            "topic": json.dumps(topic),
            "token": json.dumps(secret),
            "guess": json.dumps(guess),
            "guess2": json.dumps(guess2),
        }
    ).encode()
    page = await browser.new_page()
    await page.goto(f"http://127.0.0.1:{pages.port}/client.html")
    await page.wait_for_function("window.received.length === 1", timeout=30000)
    await page.wait_for_function("window.refused.length === 2", timeout=30000)
    assert await page.evaluate("window.errors") == []
    assert await page.evaluate("window.received") == ["e-1"]
    await page.close()

    log = hub.log_text()
    assert '"WebSocket /v1/ws' in log, log  # the handshakes are logged at this level
    for value in (secret, guess, guess2):
        assert value not in log, log


async def test_an_allowed_origin_follows_a_topic_with_a_ticket(
    hub_factory: HubFactory,
    http: aiohttp.ClientSession,
    pages: Pages,
    browser: Any,
    tmp_path: Path,
) -> None:
    secret = "s3cret-0f-the-app"
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"name": "app", "token": secret, "admin": True}]}))
    app = f"http://app.example:{pages.port}"
    hub = hub_factory.start(
        "--auth-file", str(tokens), "--allowed-origin", app, "--log-level", "info"
    )  # fmt: skip
    base, topic = hub.base_url, unique()
    bearer = {"Authorization": f"Bearer {secret}"}
    async with http.put(f"{base}/v1/topics/{topic}", json={}, headers=bearer) as resp:
        await expect(resp, 201)
    await publish(http, base, topic, {"type": "order.placed", "id": "e-1"}, headers=bearer)
    pages.pages["/app.html"] = (
        TICKETED % {"hub": base, "topic": json.dumps(topic), "token": json.dumps(secret)}
    ).encode()

    page = await browser.new_page()
    await page.goto(f"{app}/app.html")
    await page.wait_for_function("window.received.length === 1", timeout=30000)
    assert await page.evaluate("window.outcome") == "ticket"
    assert await page.evaluate("window.received") == ["e-1"]

    foreign = await browser.new_page()
    await foreign.goto(f"http://evil.example:{pages.port}/app.html")
    await foreign.wait_for_function("window.outcome !== undefined", timeout=30000)
    assert await foreign.evaluate("window.outcome") == "blocked"
    assert secret not in hub.log_text()
