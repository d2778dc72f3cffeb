"""``/static/tidings.js`` in a real browser: headless Chromium (Debian's package) via Playwright.

A page served from a loopback origin of its own imports the module from the hub,
subscribes and records each event id; events are published over HTTP while the
hub is killed with SIGKILL and restarted on the same port and data directory.
The page must end with every event exactly once, in order per partition, with
no help from the test.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import pytest
from chromium import CHROMIUM, LAUNCH_ARGS, NEEDS_CHROMIUM
from hubapi import put_topic, unique
from hubproc import HubFactory
from livehelp import GatedPublisher, check_exactly_once

pytestmark = [
    pytest.mark.timeout(180),
    NEEDS_CHROMIUM,
]

PAGE = """<!doctype html>
<meta charset="utf-8"><title>tidings.js test</title>
<script type="module">
  import { Tidings } from "%(hub)s/static/tidings.js";
  window.received = [];
  window.errors = [];
  const hub = new Tidings("%(hub)s", { initialDelay: 50, maxDelay: 500 });
  window.hub = hub;
  window.sub = hub.subscribe(%(topic)s, {
    from: "earliest",
    onEvent(r) {
      window.received.push({ id: r.event.id, partition: r.partition, offset: r.offset });
    },
    onError(err) { window.errors.push(String(err)); },
  });
</script>
"""


@pytest.fixture
def page_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A tiny HTTP server on loopback: its base URL, and the pages it serves by path.

    A page on a loopback origin may open WebSockets to the hub on loopback (the
    hub's Origin check and Chromium's local network access checks both allow it).
    """
    pages: dict[str, bytes] = {}

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

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pages
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


async def page_received(page: Any) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = await page.evaluate("window.received")
    return got


async def wait_received(page: Any, n: int, timeout: float = 60) -> None:
    async def poll() -> None:
        while await page.evaluate("window.received.length") < n:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


async def test_page_survives_hub_kill_without_losing_an_event(
    hub_factory: HubFactory,
    http: aiohttp.ClientSession,
    page_server: tuple[str, dict[str, bytes]],
) -> None:
    from playwright.async_api import async_playwright

    hub = hub_factory.start(fsync="always")
    topic = unique()
    await put_topic(http, hub.base_url, topic, partitions=2)
    base, pages = page_server
    pages["/live.html"] = (PAGE % {"topic": f'"{topic}"', "hub": hub.base_url}).encode()

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            page = await browser.new_page()
            page.on("pageerror", lambda exc: print("page error:", exc))
            page.on("console", lambda msg: print("console:", msg.text))
            await page.goto(base + "/live.html")
            await page.wait_for_function(
                "() => window.sub && window.sub.position !== null", timeout=15000
            )

            # publish over the page's socket, answered by "published"
            answer = await page.evaluate(
                "(t) => window.hub.publish(t, {type: 'b.made', id: 'browser-0'})", topic
            )
            assert answer["id"] == "browser-0" and answer["partition"] in (0, 1)
            await wait_received(page, 1)

            pub = GatedPublisher(hub.base_url, topic, 300, holds=(120,))
            publishing = asyncio.create_task(pub.run(http))
            try:
                await asyncio.wait_for(pub.held[120].wait(), 30)
                await wait_received(page, 121)  # the page is live when the hub dies
                hub.kill()
                pub.go[120].set()  # publishing goes on, retrying, while the hub is down
                await asyncio.to_thread(hub.start)
                await asyncio.wait_for(publishing, 60)
                await wait_received(page, 1 + len(pub.ids))
            finally:
                publishing.cancel()
            await asyncio.sleep(0.3)  # room for a duplicate to show up, if there were one
            received = await page_received(page)
            assert await page.evaluate("window.errors") == []
            assert await page.evaluate("window.hub.reconnects") >= 1
        finally:
            await browser.close()

    assert hub.starts == 2
    records = [
        {"event": {"id": r["id"]}, "partition": r["partition"], "offset": r["offset"]}
        for r in received
    ]
    check_exactly_once(records, ["browser-0", *pub.ids])
