"""The hub's dashboard against the shop demo running as real processes.

A newcomer's two questions, answered from the dashboard alone: why was this
order cancelled (its trace), and is the partner's webhook delivering (the
webhooks view); and the shop's views, with sales per minute charted. Each view
is opened in headless Chromium (Debian's package).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_shop_processes import free_base_port

from examples.shop.demo import SERVICES, Stack, place_orders
from tidings import AsyncClient

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (make test does)"),
]


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path / "shop", free_base_port(), retry_schedule="0,0.2,0.5")
    try:
        s.start()
        yield s
    finally:
        s.stop()


@contextlib.asynccontextmanager
async def dashboard(shop: Stack, route: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(20_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{shop.hub_url}/?poll=400#/{route}")
            yield page
            assert errors == []
        finally:
            await browser.close()


async def test_every_view_shows_the_shop(shop: Stack, tmp_path: Path) -> None:
    result = await place_orders(shop, 40, concurrency=8, timeout_s=90)
    assert not result.missing
    cancelled = sorted(oid for oid, status in result.finals.items() if status == "cancelled")
    assert cancelled, "the shop declines some payments"
    async with dashboard(shop, "overview") as page:
        for topic in ("orders", "inventory", "payments", "shipments", "notifications"):
            await page.locator(f'#topics tr[data-topic="{topic}"]').wait_for()
        await page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)

        # The live tail of notifications shows an order placed now, and its data.
        await page.evaluate("location.hash = '#/tail?topic=notifications'")
        await page.locator('#tail-state[data-state="live"]').wait_for()
        async with aiohttp.ClientSession() as http:
            body = {"customer": "dana", "items": [{"sku": "mug", "qty": 1}]}
            async with http.post(shop.orders_url + "/orders", json=body) as resp:
                assert resp.status == 202
                order_id = (await resp.json())["order_id"]
        row = page.locator("tr.event-row").filter(has_text="customer.notified").first
        await row.wait_for()
        for _ in range(50):  # the newest row first: the order just placed
            await page.locator("tr.event-row").first.click()
            if order_id in await page.locator("#tail-detail").inner_text():
                break
            await asyncio.sleep(0.2)
        assert order_id in await page.locator("#tail-detail pre.data").inner_text()
        await page.screenshot(path=str(tmp_path / "tail.png"), full_page=True)

        # Why was an order cancelled? Its trace says, with the reason.
        await page.click('#nav a[data-view="trace"]')
        await page.fill("#trace-id", cancelled[0])
        await page.click("#trace-find")
        summary = page.locator("#trace-summary")
        await summary.wait_for()
        types = await page.eval_on_selector_all(
            "tr.trace-row", "rows => rows.map(r => r.dataset.type)"
        )
        assert types[0] == "order.placed" and types[-1] == "customer.notified"
        assert "inventory.released" in types or "inventory.rejected" in types
        heads = await page.locator("table.trace th").all_inner_texts()
        assert {"/apps/inventory", "/apps/payments", "/apps/notifications"} <= set(heads)
        trouble = page.locator("tr.trace-row .trouble")
        assert await trouble.count() >= 1
        reasons = " ".join(await page.locator("tr.trace-row").all_inner_texts())
        assert "card declined" in reasons or "out of stock" in reasons
        await page.screenshot(path=str(tmp_path / "trace.png"), full_page=True)

        # The services as consumer groups, and the partner's webhook delivering.
        await page.click('#nav a[data-view="groups"]')
        for name in SERVICES:
            await page.get_by_text(name, exact=True).first.wait_for()
        await page.click('#nav a[data-view="webhooks"]')
        async with AsyncClient(shop.hub_url) as hub:
            (partner,) = await hub.webhooks()
        row = page.locator(f'#webhook-list tr[data-id="{partner["id"]}"]')
        await row.wait_for()
        assert await row.get_attribute("data-state") == "healthy"
        await page.screenshot(path=str(tmp_path / "webhooks.png"), full_page=True)

        # The flow map: the shop's chain, each service (its App's groups) taking the
        # types the one before emits, drawn left to right.
        await page.click('#nav a[data-view="flow"]')
        # (wait_for_function would poll with eval, which the page's CSP forbids)
        await page.locator('#flow-table tr[data-type="order.placed"]').wait_for()
        await page.locator("#flow-graph canvas").first.wait_for()
        nodes = set(await page.evaluate("window.flow.nodes()"))
        edges = set(await page.evaluate("window.flow.edges()"))
        assert f"webhook:{partner['id']}" in nodes
        assert not any(n.startswith("group:") for n in nodes), nodes  # all are the Apps'
        [placer] = [e.split("->")[0] for e in edges if e.endswith("->type:orders:order.placed")]
        chain = [
            placer, "type:orders:order.placed",
            "source:/apps/inventory", "type:inventory:inventory.reserved",
            "source:/apps/payments", "type:payments:payment.succeeded",
            "source:/apps/shipping", "type:shipments:shipment.created",
            "source:/apps/notifications", "type:notifications:customer.notified",
        ]  # fmt: skip
        for a, b in itertools.pairwise(chain):
            assert f"{a}->{b}" in edges
        boxes = await page.evaluate("window.flow.boxes()")
        lefts = [boxes[n]["x1"] for n in chain]
        assert lefts == sorted(lefts) and len(set(lefts)) == len(lefts), lefts
        measured = await page.evaluate("window.flow.measure()")
        assert measured["smallest"] >= 11 and measured["spill"] == []
        await page.screenshot(path=str(tmp_path / "flow.png"), full_page=True)


async def test_the_views_page_charts_sales_per_minute(shop: Stack, tmp_path: Path) -> None:
    result = await place_orders(shop, 15, concurrency=5, timeout_s=90)
    assert not result.missing
    async with AsyncClient(shop.hub_url) as hub:
        served: list[dict[str, Any]] = []
        for _ in range(100):  # the window view commits a moment after the orders end
            served = (await hub.view_keys("sales_per_minute", limit=1000))["keys"]
            total = sum(k["value"]["value"] for k in served)
            reserved = sum(
                r.event.data["total"] for r in (await hub.read("stock", limit=1000))[0]
                if r.event.type == "stock.reserved"
            )  # fmt: skip
            if served and round(total, 2) == round(reserved, 2):
                break
            await asyncio.sleep(0.2)
    assert served, "sales_per_minute serves no window"
    async with dashboard(shop, "views") as page:
        await page.locator('#view-list tr[data-view="sales_per_minute"]').wait_for()
        await page.locator('#view-list tr[data-view="stock"]').wait_for()
        await page.evaluate("location.hash = '#/views?view=sales_per_minute'")
        chart = page.locator('#view-windows [data-chart="window values"]')
        await chart.wait_for()
        await chart.locator("canvas").first.wait_for()
        expected = {
            (k["value"]["key"], datetime.fromisoformat(k["value"]["start"]).timestamp()):
            k["value"]["value"]
            for k in served
        }  # fmt: skip
        plotted: dict[tuple[str, float], float] = {}
        for _ in range(50):  # redrawn at each of the page's polls
            # what the chart plots: [window starts (s), then one series per product]
            data = await chart.evaluate("el => el.chart.plot.data")
            labels = await chart.evaluate("el => el.chart.plot.series.slice(1).map(s => s.label)")
            plotted = {
                (label, start): value
                for label, values in zip(labels, data[1:], strict=True)
                for start, value in zip(data[0], values, strict=True)
                if value is not None
            }
            if plotted == expected:
                break
            await asyncio.sleep(0.2)
        assert plotted == expected
        await page.screenshot(path=str(tmp_path / "views.png"), full_page=True)
