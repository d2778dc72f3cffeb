"""The dashboard at ``/`` in headless Chromium (Debian's package) via Playwright.

Each test starts a real hub, loads it with the shop's order traffic
(``shoporders``), opens one view and checks what it shows and that its actions
take effect, through the HTTP API. Every wait is bounded. A screenshot of each
view is kept under pytest's temporary directory (``dashboard-screenshots*``), not
in the repository.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from chromium import CHROMIUM, LAUNCH_ARGS, NEEDS_CHROMIUM
from hubapi import (
    expect,
    fetch,
    get_group,
    group_post,
    poll_until,
    publish,
    put_group,
    put_topic,
    read,
    read_all,
)
from hubproc import HubFactory, HubProcess
from receivers import Answer, Received, Receiver
from shoporders import DECLINED, TOPICS, load_orders

WAIT_MS = 15_000
WEBHOOK_ARGS = ("--webhook-allow-net", "127.0.0.0/8", "--webhook-retry-schedule", "0,0.1")

pytestmark = [
    pytest.mark.timeout(120),
    NEEDS_CHROMIUM,
]


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard-screenshots")


@contextlib.asynccontextmanager
async def dashboard(hub: HubProcess, route: str) -> AsyncIterator[Any]:
    """A page on the hub's dashboard at ``#/route``, sampling every 400 ms; the page
    must raise no uncaught error. Confirmation dialogs are accepted."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            async def accept(dialog: Any) -> None:
                await dialog.accept()

            page.on("dialog", accept)
            await page.goto(f"{hub.base_url}/?poll=400#/{route}")
            yield page
            assert errors == []
        finally:
            await browser.close()


async def text(page: Any, selector: str) -> str:
    got: str = await page.locator(selector).first.inner_text()
    return got


async def get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        return await expect(resp, 200)


async def test_overview_shows_topics_rates_and_health(
    hub_factory: HubFactory, http: aiohttp.ClientSession, screenshots: Path
) -> None:
    hub = hub_factory.start()
    await load_orders(http, hub.base_url)
    stop = asyncio.Event()

    async def browse() -> None:  # the shop's catalog views: a steady trickle
        n = 0
        while not stop.is_set():
            n += 1
            event = {"type": "catalog.viewed", "source": "/services/web", "data": {"sku": n}}
            await publish(http, hub.base_url, "catalog", event)
            await asyncio.sleep(0.05)

    browsing = asyncio.create_task(browse())
    try:
        async with dashboard(hub, "overview") as page:
            orders = page.locator('#topics tr[data-topic="orders"]')
            await orders.wait_for()
            cells = await orders.locator("td").all_inner_texts()
            assert cells[:3] == ["orders", "3", "24"]  # name, partitions, events
            for topic in TOPICS:
                await page.locator(f'#topics tr[data-topic="{topic}"]').wait_for()
            await page.locator(".chart canvas").first.wait_for()
            await page.wait_for_function(
                """() => {
                    const row = document.querySelector('#topics tr[data-topic="catalog"]');
                    return row && Number(row.cells[4].textContent.replace(/,/g, "")) > 0;
                }"""
            )
            for card in ("events/s", "fsync latency", "connections", "memory"):
                await page.locator(f'#health [data-metric="{card}"]').wait_for()
            assert "MiB" in await text(page, '#health [data-metric="memory"] .value')
            await page.wait_for_function(
                """() => /ms$/.test(document.querySelector(
                    '#health [data-metric="fsync latency"] .value').textContent)"""
            )
            await page.screenshot(path=screenshots / "overview.png", full_page=True)
    finally:
        stop.set()
        await browsing


async def test_tail_with_a_token_follows_pauses_resumes_and_shows_an_event_whole(
    hub_factory: HubFactory, tmp_path: Path, screenshots: Path
) -> None:
    auth = tmp_path / "auth.json"
    auth.write_bytes(orjson.dumps({"tokens": [{"name": "ops", "token": "t0ken", "admin": True}]}))
    hub = hub_factory.start("--auth-file", str(auth))
    headers = {"authorization": "Bearer t0ken"}
    async with aiohttp.ClientSession(headers=headers) as http:
        await load_orders(http, hub.base_url)

        def order(n: int, type: str = "order.placed", **more: Any) -> dict[str, Any]:
            return {"id": f"o-2001-{n}", "type": type, "source": "/services/checkout",
                    "partitionkey": "o-2001", "correlationid": "o-2001",
                    "data": {"order_id": "o-2001", "total": 99.5}, **more}  # fmt: skip

        async with dashboard(hub, "tail?topic=orders&types=order.*") as page:
            # Without a token the hub says so; with one the page works.
            await page.locator("#notice").get_by_text("needs a token").wait_for()
            await page.fill("#token", "t0ken")
            await page.click("#token-form button")
            await page.locator('#tail-state[data-state="live"]').wait_for()
            await page.wait_for_function("() => window.tail && window.tail.position != null")
            assert await page.locator("#notice").is_hidden()

            # A just-published event shows; one of another type does not.
            await publish(http, hub.base_url, "orders", order(0, "payment.noted"), order(1))
            await page.locator('tr.event-row[data-id="o-2001-1"]').wait_for()
            assert await page.locator('tr.event-row[data-id="o-2001-0"]').count() == 0

            # Paused, nothing shows; resumed, what came meanwhile shows once, in order.
            await page.click("#tail-pause")
            await page.locator('#tail-state[data-state="paused"]').wait_for()
            for n in (2, 3, 4):
                await publish(http, hub.base_url, "orders", order(n, "order.updated"))
            await asyncio.sleep(0.5)
            assert await page.locator('tr.event-row[data-id^="o-2001-"]').count() == 1
            await page.click("#tail-pause")
            await page.locator('tr.event-row[data-id="o-2001-4"]').wait_for()
            shown = await page.eval_on_selector_all(
                'tr.event-row[data-id^="o-2001-"]', "rows => rows.map(r => r.dataset.id)"
            )
            assert shown == ["o-2001-4", "o-2001-3", "o-2001-2", "o-2001-1"]  # newest first

            # Event contents are text, never markup.
            hostile = "<img src=x onerror=window.pwned=1>"
            await publish(http, hub.base_url, "orders",
                          order(5, "order.noted", subject=hostile, data={"note": hostile}))
            row = page.locator('tr.event-row[data-id="o-2001-5"]')
            await row.wait_for()
            await row.click()
            detail = page.locator("#tail-detail")
            await detail.get_by_text("order.noted").first.wait_for()
            assert hostile in await detail.locator("pre.data").inner_text()
            assert await page.locator("#view img").count() == 0
            assert await page.evaluate("window.pwned") is None

            await page.locator('tr.event-row[data-id="o-2001-1"]').click()
            await detail.locator("text=correlationid").wait_for()
            body = await detail.inner_text()
            assert "o-2001" in body and "99.5" in body and "partition" in body
            await page.screenshot(path=screenshots / "tail.png", full_page=True)


async def test_groups_show_lag_and_dead_letters_and_redrive_and_seek_take_effect(
    hub_factory: HubFactory, http: aiohttp.ClientSession, screenshots: Path
) -> None:
    hub = hub_factory.start()
    base = hub.base_url
    await load_orders(http, base)
    await put_group(http, base, "orders", "payments", max_deliver=2)
    await put_group(http, base, "orders", "fulfilment")
    # The payments service fails on order o-1004 twice: its events are dead-lettered.
    for _ in range(2):
        got = await fetch(http, base, "orders", "payments", max=100, wait=0.5)
        bad = [r["lease"] for r in got if r["event"]["correlationid"] == "o-1004"]
        good = [r["lease"] for r in got if r["event"]["correlationid"] != "o-1004"]
        await group_post(http, base, "orders", "payments", "nack", {"leases": bad})
        if good:
            await group_post(http, base, "orders", "payments", "ack", {"leases": good})
    assert (await get_group(http, base, "orders", "payments"))["dead_lettered"] == 2

    async with dashboard(hub, "groups?topic=orders&group=payments") as page:
        await page.locator('#group-list tr[data-group="fulfilment"]').wait_for()
        dead = page.locator("#dead-letters tr.dead-letter")
        await dead.nth(1).wait_for()
        assert await dead.count() == 2
        assert "max_deliver 2" in await dead.first.locator(".reason").inner_text()
        # "dead-lettered" is when it was dead-lettered (dlqtime), not when it was published.
        [record, *_] = (await read(http, base, "orders.dlq"))["records"]
        fmt = "async (t) => (await import('/static/dashboard/dom.js')).fmtTime(t)"
        cell = page.locator('#dead-letters tr.dead-letter[data-offset="0"] td').first
        shown = await cell.inner_text()
        assert shown == await page.evaluate(fmt, record["event"]["dlqtime"])
        assert shown != await page.evaluate(fmt, record["event"]["time"])
        assert await text(page, '[data-metric="dead-lettered"] .value') == "2"
        await page.locator("#group-detail .chart canvas").wait_for()
        await dead.first.click()
        await page.locator("#dead-letter-detail").get_by_text("dlqreason").wait_for()
        await page.screenshot(path=screenshots / "groups.png", full_page=True)

        await page.click("#redrive")
        await page.locator("#group-result .ok").wait_for()
        await page.locator("#dead-letters").get_by_text("re-driven").first.wait_for()
        records = await read_all(http, base, "orders")
        assert [r["event"]["id"] for r in records].count("o-1004-0") == 2
        again = await fetch(http, base, "orders", "payments", max=10, wait=1)
        assert sorted(r["event"]["id"] for r in again) == ["o-1004-0", "o-1004-4"]

        # The re-drive cursor is the hub's own group: listed, shown read-only.
        cursor = page.locator(
            '#group-list tr[data-topic="orders.dlq"][data-group="redrive.payments"]'
        )
        await cursor.get_by_text("re-drive cursor").wait_for()
        await page.evaluate("location.hash = '#/groups?topic=orders.dlq&group=redrive.payments'")
        await page.locator("#group-internal").wait_for()
        assert not await page.locator("#seek").is_visible()
        assert not await page.locator("#redrive").is_visible()

        # Seek the fulfilment group past its backlog.
        assert (await get_group(http, base, "orders", "fulfilment"))["lag"] > 0
        await page.evaluate("location.hash = '#/groups?topic=orders&group=fulfilment'")
        await page.locator("#group-detail h2").get_by_text("fulfilment").wait_for()
        await page.select_option("#seek-kind", "latest")
        await page.click("#seek")
        await page.locator("#group-result .ok").wait_for()
        assert (await get_group(http, base, "orders", "fulfilment"))["lag"] == 0
        await page.wait_for_function(
            """() => document.querySelector('[data-metric="lag"] .value').textContent === "0\""""
        )


async def test_webhooks_show_failures_and_enable_replay_and_test_take_effect(
    hub_factory: HubFactory,
    http: aiohttp.ClientSession,
    receiver: Receiver,
    screenshots: Path,
) -> None:
    hub = hub_factory.start(*WEBHOOK_ARGS)
    base = hub.base_url
    legacy_back = False

    def answer(r: Received) -> Answer:
        if r.path == "/billing":
            return Answer(500, b"ledger database is down")
        if r.path == "/legacy" and not legacy_back:
            return Answer(410, b"this endpoint moved to /v2")
        return Answer(200)

    receiver.answer = answer
    root = receiver.url.rsplit("/", 1)[0]
    for topic, partitions in TOPICS.items():
        await put_topic(http, base, topic, partitions=partitions)
    hooks = {}
    for name, topics, types in [
        ("crm", ["orders"], ["order.*"]),
        ("billing", ["payments"], []),
        ("legacy", ["shipping"], []),
    ]:
        body = {"url": f"{root}/{name}", "topics": topics, "types": types, "description": name}
        async with http.post(f"{base}/v1/webhooks", json=body) as resp:
            hooks[name] = (await expect(resp, 201))["id"]
    await load_orders(http, base)

    def at(path: str, type_prefix: str = "") -> list[Received]:
        return [
            r for r in receiver.requests
            if r.path == path and r.event["type"].startswith(type_prefix)
        ]  # fmt: skip

    await receiver.wait_for(lambda: len(at("/crm")) >= 24)

    async def settled() -> bool:
        billing = await get(http, f"{base}/v1/webhooks/{hooks['billing']}/dead-letters")
        legacy = await get(http, f"{base}/v1/webhooks/{hooks['legacy']}")
        return len(billing["dead_letters"]) == 12 and legacy["state"] == "disabled"

    await poll_until(settled, timeout=30, what="billing dead letters and legacy disabled")

    async with dashboard(hub, "webhooks") as page:
        billing_row = page.locator(f'#webhook-list tr[data-id="{hooks["billing"]}"]')
        await billing_row.locator(".reason").get_by_text("ledger database is down").wait_for()
        assert await billing_row.get_attribute("data-state") == "failing"
        legacy_row = page.locator(f'#webhook-list tr[data-id="{hooks["legacy"]}"]')
        assert await legacy_row.get_attribute("data-state") == "disabled"
        await page.wait_for_function(
            f"""() => document.querySelector('#webhook-list tr[data-id="{hooks["crm"]}"]')
                .cells[4].textContent === "100 %\""""
        )
        await page.screenshot(path=screenshots / "webhooks.png", full_page=True)

        # Why billing fails: its attempts log, and its dead letters.
        await billing_row.locator("a").first.click()
        failed = page.locator('#attempts tr.attempt[data-outcome="failed"]')
        await failed.first.get_by_text("ledger database is down").wait_for()
        await page.locator("#webhook-dead-letters tr.dead-letter").first.wait_for()
        await page.screenshot(path=screenshots / "webhook-failing.png", full_page=True)
        # A test the endpoint answers 500 is a failure: shown as one, not in green.
        await page.click("#webhook-test")
        result = page.locator('#webhook-result [data-outcome="failed"]')
        await result.get_by_text("failed 500").wait_for()
        assert "error" in (await result.get_attribute("class") or "").split()
        assert await page.locator("#webhook-result .ok").count() == 0
        color = await result.evaluate("el => getComputedStyle(el).color")
        assert color == "rgb(185, 28, 28)", color  # --bad, not --ok

        # Test: one signed test event, answered at once.
        await page.evaluate(f"location.hash = '#/webhooks?id={hooks['crm']}'")
        await page.locator("#webhook-detail h2").get_by_text(hooks["crm"]).wait_for()
        await page.click("#webhook-test")
        passed = page.locator('#webhook-result .ok[data-outcome="success"]')
        await passed.get_by_text("success 200").wait_for()
        assert len(at("/crm", "tidings.webhook.test")) == 1

        # Replay since an hour ago: every order event goes out again.
        await page.click("#webhook-replay")
        await page.locator("#webhook-result .ok").wait_for()
        await receiver.wait_for(lambda: len(at("/crm", "order.")) >= 48)

        # Enable the endpoint that was disabled by its 410, once it is back.
        legacy_back = True
        await page.evaluate(f"location.hash = '#/webhooks?id={hooks['legacy']}'")
        state = page.locator("#webhook-state")
        await page.locator('#webhook-state[data-state="disabled"]').wait_for()
        assert "410" in await state.inner_text()
        await page.click("#webhook-enable")
        await page.locator('#webhook-state[data-state="healthy"]').wait_for()
        view = await get(http, f"{base}/v1/webhooks/{hooks['legacy']}")
        assert view["enabled"] is True
        # What waited while it was disabled is delivered now.
        await receiver.wait_for(lambda: len(at("/legacy", "shipment.")) >= 9 + 1)


async def test_trace_shows_why_an_order_was_cancelled(
    hub_factory: HubFactory, http: aiohttp.ClientSession, screenshots: Path
) -> None:
    hub = hub_factory.start()
    await load_orders(http, hub.base_url)
    async with dashboard(hub, "overview") as page:
        await page.click('#nav a[data-view="trace"]')
        # With no id given, the page offers recent ones, those in trouble first.
        recent = page.locator('tr.recent-row[data-id="o-1004"]')
        assert "order.cancelled" in await recent.locator(".reason").inner_text()
        first = await page.locator("tr.recent-row").first.get_attribute("data-id")
        assert first in {"o-1004", "o-1008", "o-1012"}  # the cancelled orders
        await recent.locator("a").click()
        summary = page.locator("#trace-summary")
        await summary.wait_for()
        assert "the last is order.cancelled" in await summary.inner_text()
        types = await page.eval_on_selector_all(
            "tr.trace-row", "rows => rows.map(r => r.dataset.type)"
        )
        assert types == [
            "order.placed", "inventory.reserved", "payment.failed",
            "inventory.released", "order.cancelled",
        ]  # fmt: skip
        failed = page.locator('tr.trace-row[data-type="payment.failed"]')
        assert await failed.locator(".trouble").count() == 1
        assert DECLINED in await failed.inner_text()
        await failed.click()
        detail = page.locator("#trace-detail")
        await detail.get_by_text("/services/payments").first.wait_for()
        assert DECLINED in await detail.locator("pre.data").inner_text()
        # One column per service the order went through.
        heads = await page.locator("table.trace th").all_inner_texts()
        assert heads[3:] == [
            "/services/checkout", "/services/inventory", "/services/payments", "/services/orders",
        ]  # fmt: skip
        await page.screenshot(path=screenshots / "trace.png", full_page=True)
        await page.fill("#trace-id", "o-nope")
        await page.click("#trace-find")
        await page.locator("#trace-empty").wait_for()


async def test_flow_map_reads_left_to_right_as_the_chain_of_services(
    hub_factory: HubFactory,
    http: aiohttp.ClientSession,
    receiver: Receiver,
    screenshots: Path,
) -> None:
    hub = hub_factory.start(*WEBHOOK_ARGS)
    base = hub.base_url
    await load_orders(http, base)
    # The services' groups, named after them as an App names its groups: each one
    # belongs to the service that publishes as /services/{name}.
    await put_group(http, base, "orders", "inventory", types=["order.placed"])
    await put_group(http, base, "inventory", "payments", types=["inventory.reserved"])
    await put_group(http, base, "payments", "shipping", types=["payment.succeeded"])
    # Groups of no service the hub can tell: drawn as groups.
    # (ledger takes payments that led to events of two services: which runs it is unclear)
    await put_group(http, base, "orders", "fulfilment", types=["order.cancelled"])
    await put_group(http, base, "payments", "ledger")
    long_name = "CARRIER-WAREHOUSE-MUNICH-" * 3  # one unbroken word, wider than a box may be
    body = {"url": receiver.url, "topics": ["shipping"], "description": long_name}
    async with http.post(f"{base}/v1/webhooks", json=body) as resp:
        hook = (await expect(resp, 201))["id"]

    async with dashboard(hub, "flow") as page:
        await page.locator('#flow-table tr[data-type="order.placed"]').wait_for()
        await page.wait_for_function("() => window.flow && window.flow.ready")
        nodes = set(await page.evaluate("window.flow.nodes()"))
        edges = set(await page.evaluate("window.flow.edges()"))
        assert {
            "source:/services/checkout", "source:/services/payments", "type:orders:order.placed",
            "type:payments:payment.failed", "group:orders:fulfilment", "group:payments:ledger",
            f"webhook:{hook}",
        } <= nodes  # fmt: skip
        # A service's groups are the service: no box of their own.
        assert not {"group:orders:inventory", "group:inventory:payments"} & nodes
        chain = [
            "source:/services/checkout", "type:orders:order.placed",
            "source:/services/inventory", "type:inventory:inventory.reserved",
            "source:/services/payments", "type:payments:payment.succeeded",
            "source:/services/shipping", "type:shipping:shipment.created", f"webhook:{hook}",
        ]  # fmt: skip
        for a, b in itertools.pairwise(chain):
            assert f"{a}->{b}" in edges
        # Left to right: each link of the chain is drawn right of the one before.
        boxes = await page.evaluate("window.flow.boxes()")
        lefts = [boxes[n]["x1"] for n in chain]
        assert lefts == sorted(lefts) and len(set(lefts)) == len(lefts), lefts
        assert "type:orders:order.cancelled->group:orders:fulfilment" in edges
        # The group's type filter is honoured: it takes no other order events.
        assert "type:orders:order.placed->group:orders:fulfilment" not in edges
        assert "type:payments:payment.failed->group:payments:ledger" in edges
        # Labels drawn at 11 px or more, each inside its box, the long one too.
        measured = await page.evaluate("window.flow.measure()")
        assert measured["smallest"] >= 11 and measured["spill"] == []
        row = page.locator('#flow-table tr[data-type="inventory.released"]')
        assert "nobody" in await row.inner_text()
        await page.locator("#flow-graph canvas").first.wait_for()
        await page.screenshot(path=screenshots / "flow.png", full_page=True)


async def test_overview_and_group_show_damage_on_disk(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    hub = hub_factory.start(fsync="always")
    for b in range(4):
        events = [{"type": "t.d", "id": f"d{b}-{i}", "source": "/d"} for i in range(3)]
        await publish(http, hub.base_url, "damaged", *events)
    hub.stop()
    [segment] = (hub.data_dir / "topics" / "damaged" / "0").glob("*.log")
    raw = bytearray(segment.read_bytes())
    second = int.from_bytes(raw[0:4], "little") + 4  # the second batch starts here
    raw[second + 60] ^= 0x20  # a byte of its first payload
    segment.write_bytes(bytes(raw))
    hub.start()
    async with aiohttp.ClientSession() as fresh:
        await put_group(fresh, hub.base_url, "damaged", "g", start="earliest")
        got = await fetch(fresh, hub.base_url, "damaged", "g", max=100)
        assert len(got) == 9
    async with dashboard(hub, "overview") as page:
        note = page.locator('#topics [data-damage="damaged"]')
        await note.wait_for()
        assert (await note.inner_text()).startswith("damaged: 0: 3…5 (3 lost")
    async with dashboard(hub, "groups?topic=damaged&group=g") as page:
        card = page.locator('[data-metric="skipped (damage)"] .value')
        await card.wait_for()
        assert await card.inner_text() == "3"


async def test_trace_and_search_find_an_order_however_old(
    hub_factory: HubFactory, http: aiohttp.ClientSession, screenshots: Path
) -> None:
    """The order's events lie behind 30,000 others in their topics (past what a page
    could scan); the trace shows them all, and the search box finds the order by
    one of its event ids as well as by its correlationid."""
    hub = hub_factory.start()
    base = hub.base_url
    sent = await load_orders(http, base, orders=1, first=3)  # o-1004, cancelled
    for topic in ("orders", "inventory", "payments"):
        for n in range(10):
            batch = [
                {"type": "order.step", "source": "/services/load", "correlationid": f"x-{n}-{k}"}
                for k in range(1000)
            ]
            await publish(http, base, topic, *batch)
    payment = next(ev for _, ev in sent if ev["type"] == "payment.failed")
    async with dashboard(hub, "overview") as page:
        await page.fill("#search", "o-1004")
        await page.click("#search-form button")
        await page.locator("#trace-summary").wait_for()
        types = await page.eval_on_selector_all(
            "tr.trace-row", "rows => rows.map(r => r.dataset.type)"
        )
        assert types == [ev["type"] for _, ev in sent]
        # By an event id: the trace of its order, that event selected.
        await page.fill("#search", payment["id"])
        await page.click("#search-form button")
        selected = page.locator("tr.trace-row.selected")
        await selected.wait_for()
        assert await selected.get_attribute("data-id") == payment["id"]
        assert await page.input_value("#trace-id") == "o-1004"
        await page.locator("#trace-detail").get_by_text(DECLINED).first.wait_for()
        assert "id=o-1004" in page.url and f"event={payment['id']}" in page.url
        await page.screenshot(path=screenshots / "trace-search.png", full_page=True)
        await page.fill("#search", "nothing-by-that-name")
        await page.click("#search-form button")
        await page.locator("#trace-empty").wait_for()


async def test_publish_and_create_with_a_token_good_and_bad_input(
    hub_factory: HubFactory, tmp_path: Path, screenshots: Path
) -> None:
    """The forms go through the API as the page (same origin, JSON, the token):
    what they make is there; bad input shows what is wrong and changes nothing."""
    auth = tmp_path / "auth.json"
    auth.write_bytes(orjson.dumps({"tokens": [{"name": "ops", "token": "t0ken", "admin": True}]}))
    hub = hub_factory.start("--auth-file", str(auth))
    base = hub.base_url
    async with aiohttp.ClientSession(headers={"authorization": "Bearer t0ken"}) as http:
        await load_orders(http, base)
        before = len(await read_all(http, base, "orders"))

        async def topic_status(name: str) -> int:
            async with http.get(f"{base}/v1/topics/{name}") as resp:
                return resp.status

        async with dashboard(hub, "publish") as page:
            await page.fill("#token", "t0ken")
            await page.click("#token-form button")
            await page.locator("#publish-form").wait_for()

            async def submit(button: str, out: str, kind: str) -> str:
                await page.locator(out).evaluate("el => el.replaceChildren()")
                await page.click(button)
                box = page.locator(f"{out} .{kind}")
                try:
                    await box.wait_for()
                except Exception:
                    raise AssertionError(await page.locator(out).inner_text()) from None
                got: str = await box.inner_text()
                return got

            # Publish: a test event with data and a key; its position is shown.
            await page.fill("#publish-topic", "orders")
            await page.fill("#publish-type", "order.tested")
            await page.fill("#publish-key", "o-9001")
            await page.fill("#publish-data", '{"order_id": "o-9001", "total": 12.5}')
            await submit("#publish-send", "#publish-result", "ok-box")
            pos = page.locator("#publish-position")
            partition = int(await pos.get_attribute("data-partition") or "-1")
            offset = int(await pos.get_attribute("data-offset") or "-1")
            [record] = (await read(http, base, "orders", partition=partition, **{"from": offset},
                                   limit=1))["records"]  # fmt: skip
            event = record["event"]
            assert (event["type"], event["partitionkey"], event["source"]) == (
                "order.tested", "o-9001", "/dashboard")  # fmt: skip
            assert event["data"] == {"order_id": "o-9001", "total": 12.5}
            assert f"orders {partition}:{offset}" in await pos.inner_text()

            # Data that is not JSON: said so, nothing published.
            await page.fill("#publish-data", '{"order_id": o-9002}')
            said = await submit("#publish-send", "#publish-result", "error")
            assert "not JSON" in said
            # A topic name the hub refuses: its problem detail is shown.
            await page.fill("#publish-data", "{}")
            await page.fill("#publish-topic", "no such/topic")
            said = await submit("#publish-send", "#publish-result", "error")
            assert said.startswith(("400", "404")) and "topic" in said.lower(), said
            assert len(await read_all(http, base, "orders")) == before + 1

            # A topic: made with its partitions.
            await page.fill("#topic-name", "returns")
            await page.fill("#topic-partitions", "2")
            said = await submit("#topic-create", "#topic-result", "ok-box")
            assert "returns" in said
            async with http.get(f"{base}/v1/topics/returns") as resp:
                assert len((await expect(resp, 200))["partitions"]) == 2
            # Again, with more partitions: refused, the topic as it was.
            await page.fill("#topic-partitions", "4")
            said = await submit("#topic-create", "#topic-result", "error")
            assert "exists already" in said
            async with http.get(f"{base}/v1/topics/returns") as resp:
                assert len((await expect(resp, 200))["partitions"]) == 2
            # A bad name, and too many partitions: the hub's problem, nothing made.
            await page.fill("#topic-name", "bad name!")
            await page.fill("#topic-partitions", "1")
            said = await submit("#topic-create", "#topic-result", "error")
            assert said.startswith("400"), said
            assert await topic_status("bad%20name!") in (400, 404)
            await page.fill("#topic-name", "wide")
            await page.fill("#topic-partitions", "5000")
            said = await submit("#topic-create", "#topic-result", "error")
            assert said.startswith("400") and "partitions" in said, said
            assert await topic_status("wide") == 404

            # A group: made with what the form says.
            await page.fill("#group-topic", "returns")
            await page.fill("#group-name", "refunds")
            await page.select_option("#group-start", "latest")
            await page.select_option("#group-ordering", "key")
            await page.fill("#group-max-deliver", "3")
            await page.fill("#group-ack-wait", "10")
            await page.fill("#group-types", "return.*, refund.>")
            said = await submit("#group-create", "#group-create-result", "ok-box")
            assert "refunds" in said
            config = (await get_group(http, base, "returns", "refunds"))["config"]
            assert config == {
                "start": "latest", "ordering": "key", "max_deliver": 3, "ack_wait": 10,
                "types": ["return.*", "refund.>"], "dead_letter_topic": None,
            }  # fmt: skip
            await page.screenshot(path=screenshots / "publish.png", full_page=True)
            # Again: refused, its config unchanged.
            await page.fill("#group-max-deliver", "9")
            said = await submit("#group-create", "#group-create-result", "error")
            assert "exists already" in said
            assert (await get_group(http, base, "returns", "refunds"))["config"] == config
            # A type pattern the hub refuses: its problem, naming the field; nothing made.
            await page.fill("#group-name", "audit")
            await page.fill("#group-types", "return.>.x")
            said = await submit("#group-create", "#group-create-result", "error")
            assert said.startswith("400") and "types" in said, said
            async with http.get(f"{base}/v1/topics/returns/groups/audit") as resp:
                assert resp.status == 404
