"""The shop's views: ``orders`` behind ``GET /orders/{id}``, and ``sales_per_minute``
charted live on the shop's page.

The folds are checked on their own first; then the whole shop runs as real
processes and each view's answer is compared with what the events say, read
back from the hub.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from chromium import CHROMIUM, LAUNCH_ARGS, NEEDS_CHROMIUM
from test_shop_processes import free_base_port, get_json
from test_shop_restart import read_all

from examples.shop.demo import Stack, place_orders
from examples.shop.folds import TOPICS, order_view, reservation, stock
from tidings import AsyncClient, Event
from tidings.streams import EventView


def ev(type: str, time: str, **data: Any) -> EventView:
    """An event as a fold sees it."""
    return EventView({"specversion": "1.0", "type": type, "source": "/test",
                      "id": f"{type}-{time}", "time": time, "data": data})  # fmt: skip


# -- the folds -------------------------------------------------------------------------


def test_stock_starts_at_the_catalog_and_follows_the_ledger() -> None:
    level = None
    for e in (
        ev("stock.reserved", "t1", order_id="o-1", sku="kettle", qty=2, total=178.0),
        ev("stock.refused", "t2", order_id="o-2", sku="kettle", qty=2, available=1),
        ev("stock.released", "t3", order_id="o-1", sku="kettle", qty=2),
        ev("stock.reserved", "t4", order_id="o-3", sku="kettle", qty=3, total=267.0),
    ):
        level = stock(level, e)
    assert level == 0  # 3 - 2 + 2 - 3; the refusal moves nothing


def test_a_reservation_holds_until_it_is_released() -> None:
    hold = None
    hold = reservation(hold, ev("stock.reserved", "t1", order_id="o", sku="tea", qty=2, total=13))
    hold = reservation(hold, ev("stock.reserved", "t2", order_id="o", sku="mug", qty=1, total=12))
    assert hold == {"held": {"tea": 2, "mug": 1}, "released": {}, "refused": []}
    before = {**hold, "held": dict(hold["held"])}
    hold = reservation(hold, ev("stock.released", "t3", order_id="o", sku="tea", qty=2))
    assert hold == {"held": {"mug": 1}, "released": {"tea": 2}, "refused": []}
    assert before["held"] == {"tea": 2, "mug": 1}  # the fold made a new value
    refused = reservation(None, ev("stock.refused", "t4", order_id="p", sku="pot", qty=1,
                                   available=0))  # fmt: skip
    assert refused["refused"] == ["pot"]


def test_an_order_ends_the_same_whatever_order_its_events_come_in() -> None:
    events = [
        ev("order.placed", "2026-12-05T10:00:00.000Z", order_id="o", customer="c",
           items=[{"sku": "tea", "qty": 1}], subtotal=6.5),
        ev("inventory.reserved", "2026-12-05T10:00:00.100Z", order_id="o", customer="c"),
        ev("payment.succeeded", "2026-12-05T10:00:00.200Z", order_id="o", customer="c",
           amount=6.5, discount=0.0),
        ev("shipment.created", "2026-12-05T10:00:00.300Z", order_id="o", customer="c",
           carrier="post", tracking="TT1"),
        ev("customer.notified", "2026-12-05T10:00:00.400Z", order_id="o", customer="c",
           status="confirmed", message="on its way"),
    ]  # fmt: skip
    answers = []
    for perm in itertools.permutations(events):
        value = None
        for e in perm:
            value = order_view(value, e)
        answers.append(value)
    assert all(a == answers[0] for a in answers)
    assert answers[0] is not None
    assert answers[0]["status"] == "confirmed" and answers[0]["final"] is True
    assert answers[0]["tracking"] == "TT1"
    assert [h["type"] for h in answers[0]["history"]] == [e.type for e in events]


# -- the views in the running shop ------------------------------------------------------


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path / "shop", free_base_port(), retry_schedule="0,0.2,0.5,1,2")
    try:
        s.start()
        yield s
    finally:
        s.stop()


async def test_get_order_answers_what_the_events_say(stack: Stack) -> None:
    result = await place_orders(stack, 30, concurrency=6, timeout_s=120)
    assert result.missing == []
    async with AsyncClient(stack.hub_url) as hub:
        by_order: dict[str, list[Event]] = {}
        for topic in TOPICS:
            for r in await read_all(hub, topic):
                by_order.setdefault(r.event.data["order_id"], []).append(r.event)
    for oid, status in sorted(result.finals.items()):
        events = by_order[oid]
        for _ in range(100):  # the notification is in: the view may be a moment behind it
            answer = get_json(f"{stack.orders_url}/orders/{oid}")
            assert isinstance(answer, dict)
            if {h["id"] for h in answer["history"]} == {e.id for e in events}:
                break
            await asyncio.sleep(0.1)
        assert sorted(h["id"] for h in answer["history"]) == sorted(e.id for e in events)
        assert answer["status"] == status and answer["final"] is True
        placed = next(e for e in events if e.type == "order.placed")
        assert answer["items"] == placed.data["items"]
        assert answer["subtotal"] == placed.data["subtotal"]
        shipped = [e for e in events if e.type == "shipment.created"]
        if status == "confirmed":
            assert answer["tracking"] == shipped[0].data["tracking"]
        else:
            assert shipped == [] and answer["reason"]


async def test_post_answers_a_position_that_get_waits_for(stack: Stack) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        body = {"customer": "ana", "items": [{"sku": "pot", "qty": 1}]}
        async with http.post(stack.orders_url + "/orders", json=body) as resp:
            assert resp.status == 202
            location = resp.headers["location"]
            placed = await resp.json()
        # read your own write: no 404 right after the 202
        async with http.get(stack.orders_url + location) as resp:
            assert resp.status == 200, await resp.text()
            order = await resp.json()
        # a position that is not one is refused, by name
        async with http.get(f"{stack.orders_url}/orders/{placed['order_id']}",
                            params={"min_position": "soon"}) as resp:  # fmt: skip
            assert resp.status == 400
            assert "min_position" in (await resp.json())["detail"]
    assert location.endswith(f"?min_position={placed['position']}")
    assert order["order_id"] == placed["order_id"] and order["customer"] == "ana"


def minute_of(time: str) -> str:
    at = datetime.fromisoformat(time.replace("Z", "+00:00"))
    return at.replace(second=0, microsecond=0).isoformat(timespec="milliseconds")[:23] + "Z"


@NEEDS_CHROMIUM
@pytest.mark.timeout(240)
async def test_the_page_charts_sales_per_minute_live(stack: Stack, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1300, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(stack.orders_url + "/")
            await page.wait_for_selector("#sales[data-state='live']", timeout=30_000)
            # orders placed now show up on the open page, without a reload
            result = await place_orders(stack, 20, concurrency=5, timeout_s=120)
            assert result.missing == []
            async with AsyncClient(stack.hub_url) as hub:
                reserved = [r.event for r in await read_all(hub, "stock")
                            if r.event.type == "stock.reserved"]  # fmt: skip
            expected: dict[tuple[str, str], float] = {}
            for e in reserved:
                k = (e.data["sku"], minute_of(str(e.time)))
                expected[k] = round(expected.get(k, 0.0) + e.data["total"], 2)
            shown: dict[tuple[str, str], float] = {}
            for _ in range(150):
                windows = await page.evaluate("window.sales.windows()")
                shown = {(w["key"], w["start"]): round(w["value"], 2) for w in windows}
                if shown == expected:
                    break
                await asyncio.sleep(0.2)
            assert shown == expected
            bars = page.locator("#sales svg rect[data-sku]")
            assert await bars.count() >= 1
            await page.screenshot(path=str(tmp_path / "sales.png"), full_page=True)
            assert errors == []
        finally:
            await browser.close()
