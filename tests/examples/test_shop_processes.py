"""The whole shop as real processes: hub, services, orders API and partner.

Orders are placed over HTTP; every one reaches a final state even though the
payments service is killed (SIGKILL) and restarted mid-run, and the partner
receives a verified webhook for each.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.shop.demo import Stack, place_orders
from tidings import AsyncClient


def free_base_port() -> int:
    """A port p with p, p+10 and p+20 free on loopback."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + 20 > 65535:
            continue
        try:
            for port in (base + 10, base + 20):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path / "shop", free_base_port(), retry_schedule="0,0.2,0.5,1,2")
    try:
        s.start()
        yield s
    finally:
        s.stop()


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


async def test_orders_reach_a_final_state_with_a_service_killed_mid_run(stack: Stack) -> None:
    async def kill_payments() -> None:
        await asyncio.to_thread(stack.restart, "payments", hard=True)

    result = await place_orders(stack, 150, concurrency=10, timeout_s=120, midway=kill_payments)
    assert result.missing == [], f"{len(result.missing)} orders never finished"
    assert result.placed == 150
    statuses = set(result.finals.values())
    assert statuses == {"confirmed", "cancelled"}
    # the orders API tells the same final state, built from the events
    some = sorted(result.finals)[:20]
    for oid in some:
        view = get_json(f"{stack.orders_url}/orders/{oid}")
        assert isinstance(view, dict)
        for _ in range(50):
            if view["final"]:
                break
            await asyncio.sleep(0.1)
            view = get_json(f"{stack.orders_url}/orders/{oid}")  # type: ignore[assignment]
        assert view["status"] == result.finals[oid], view
    # the partner got a verified webhook for every order, none refused
    for _ in range(100):
        got = get_json(f"{stack.partner_url}/received")
        assert isinstance(got, dict)
        ids = {d["order_id"] for d in got["received"]}
        if set(result.finals) <= ids:
            break
        await asyncio.sleep(0.2)
    assert set(result.finals) <= ids
    assert got["refused"] == 0


async def test_a_bad_order_is_refused_and_nothing_is_published(stack: Stack) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for body in (
            {"customer": "c", "items": []},
            {"customer": "c", "items": [{"sku": "nope", "qty": 1}]},
            {"customer": "c", "items": [{"sku": "tea", "qty": 0}]},
            {"customer": "c", "items": [{"sku": "tea", "qty": 1}], "promo_code": "FREE"},
            {"items": [{"sku": "tea", "qty": 1}]},
        ):
            async with http.post(stack.orders_url + "/orders", json=body) as resp:
                assert resp.status == 422, await resp.text()
                problem = await resp.json()
                assert problem["errors"] and problem["errors"][0]["field"]
        async with http.post(stack.orders_url + "/orders", data=b"not json") as resp:
            assert resp.status == 400
        async with http.get(stack.hub_url + "/v1/topics/orders") as resp:
            assert (await resp.json())["events"] == 0


CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (make test installs it)")
async def test_the_page_places_an_order_and_sees_it_confirmed_live(
    stack: Stack, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(stack.orders_url + "/")
            await page.wait_for_selector("#connection:has-text('live')", timeout=20_000)
            # hovering a product is a product.viewed event; the live counts show it
            tea = page.locator("li[data-sku='tea']")
            await tea.hover()
            await page.wait_for_function(
                "document.querySelector(\"li[data-sku='tea'] .stats\").textContent"
                ".startsWith('1 views')",
                timeout=20_000,
            )
            await tea.locator("button[data-action='add']").click()
            await tea.locator("button[data-action='add']").click()
            await page.fill("#promo", "TEATIME")
            await page.click("#place")
            order = page.locator("#orders li").first
            await order.wait_for(timeout=10_000)
            # payments decline some orders at random (by order id): either end is an end
            await page.wait_for_selector(
                "#orders li[data-status='confirmed'], #orders li[data-status='cancelled']",
                timeout=60_000,
            )
            status = await order.get_attribute("data-status")
            steps = await order.locator(".steps").text_content()
            await page.screenshot(path=str(tmp_path / "shop.png"), full_page=True)
            assert status in ("confirmed", "cancelled")
            assert steps is not None and "notified" in steps
            if status == "confirmed":
                assert "paid" in steps and "shipped" in steps
            assert errors == []
        finally:
            await browser.close()
    async with AsyncClient(stack.hub_url) as hub:
        records, _ = await hub.read("cart", start="earliest")
    assert [r.event.type for r in records] == ["cart.item_added", "cart.item_added"]
