"""Every view of the dashboard, measured in headless Chromium at 1440x900 and 1280x720.

The hub holds the shop's order traffic (``shoporders``), its services as consumer
groups (one of them with dead letters), and webhooks, one of them failing with a
long description. Each view is opened and checked by element geometry, not by
presence alone:

- nothing is wider than the viewport: the document does not scroll sideways and
  no visible element's right edge is past the window's;
- every visible text is at least 11 px (its computed font size), and on the flow
  map every label as drawn at the zoom the map opens with, each inside its box;
- each table's header cells line up with their columns: the same left edge, the
  same text alignment, and the header text on the same side as the column's;
- the console shows no error, and no request fails or answers 4xx/5xx.

A screenshot of every view at both sizes is saved under ``build/screenshots/``
(not in the repository) for a person to look at.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
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
)
from hubproc import HubFactory
from receivers import Answer, Received, Receiver
from shoporders import TOPICS, load_orders
from viewhelp import commit_events

pytestmark = [pytest.mark.timeout(240), NEEDS_CHROMIUM]

SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
SIZES = [(1440, 900), (1280, 720)]
MIN_FONT_PX = 11.0
LONG_DESCRIPTION = "partner-fulfilment-warehouse-eu-central-1-callback-endpoint"

# route, and a selector that shows the view has what it needs to be measured
VIEWS = [
    ("overview", '#topics tr[data-topic="orders"]'),
    ("tail?topic=orders&from=earliest", 'tr.event-row[data-id="o-1012-4"]'),
    ("groups", '#group-list tr[data-group="payments"]'),
    ("groups?topic=inventory&group=payments", "#dead-letters tr.dead-letter"),
    ("webhooks", "#webhook-list tr .badge-bad"),
    ("webhooks?id={billing}", '#attempts tr.attempt[data-outcome="failed"]'),
    ("trace", "tr.recent-row"),
    ("trace?id=o-1004", "#trace-summary"),
    ("flow", '#flow-table tr[data-type="order.placed"]'),
    ("catalog", '#catalog-table tr[data-type="order.placed"]'),
    ("catalog?type=order.placed", "#catalog-diff"),
    ("views", '#view-list tr[data-view="stock"]'),
    ("views?view=stock", '#view-keys tr.view-key[data-key="sku-long-name-0"]'),
    ("publish", "#publish-form"),
]

MEASURE = (Path(__file__).parents[1] / "support" / "dashboard_measure.js").read_text()


def billing_answer(r: Received) -> Answer:
    if r.path == "/billing":
        return Answer(500, b"ledger database is down")
    return Answer(200)


async def stage(http: aiohttp.ClientSession, base: str, receiver: Receiver) -> dict[str, str]:
    """The shop's traffic, its services' groups, dead letters, and two webhooks."""
    for topic, partitions in TOPICS.items():
        await put_topic(http, base, topic, partitions=partitions)
    receiver.answer = billing_answer
    root = receiver.url.rsplit("/", 1)[0]
    hooks = {}
    for name, topics, description in [
        ("billing", ["payments"], "billing"),
        ("partner", ["shipping"], LONG_DESCRIPTION),
    ]:
        body = {"url": f"{root}/{name}", "topics": topics, "description": description}
        async with http.post(f"{base}/v1/webhooks", json=body) as resp:
            hooks[name] = (await expect(resp, 201))["id"]
    # Two versions of order.placed's schema, for the catalog's diff.
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"order_id": {"type": "string"}, "total": {"type": "number"}},
        "additionalProperties": False,  # closed: a new optional field is backward compatible
    }
    for extra in ({}, {"coupon": {"type": "string"}}):
        body = {"schema": {**schema, "properties": {**schema["properties"], **extra}},
                "producer": "orders-api"}  # fmt: skip
        async with http.put(f"{base}/v1/schemas/order.placed", json=body) as resp:
            await expect(resp, 201)
    await load_orders(http, base)
    # The cancelled order o-1004 goes through three more services: seven lanes to trace.
    for n, service in enumerate(["notifications", "fraud-screening", "customer-ledger"]):
        event = {
            "id": f"o-1004-x{n}", "type": f"{service}.noted", "source": f"/services/{service}",
            "correlationid": "o-1004", "partitionkey": "o-1004",
            "data": {"order_id": "o-1004", "note": f"{service} saw the cancellation " * 3},
        }  # fmt: skip
        await publish(http, base, "orders", event)
    # An App's group is named after it: inventory takes orders, payments takes
    # inventory, shipping takes payments, notifications takes shipping.
    for topic, group in [("orders", "inventory"), ("inventory", "payments"),
                         ("payments", "shipping"), ("shipping", "notifications")]:  # fmt: skip
        await put_group(http, base, topic, group, max_deliver=1)
    got = await fetch(http, base, "inventory", "payments", max=100, wait=0.5)
    bad = [r["lease"] for r in got if r["event"]["correlationid"] == "o-1002"]
    good = [r["lease"] for r in got if r["event"]["correlationid"] != "o-1002"]
    await group_post(http, base, "inventory", "payments", "nack", {"leases": bad})
    await group_post(http, base, "inventory", "payments", "ack", {"leases": good})
    assert (await get_group(http, base, "inventory", "payments"))["dead_lettered"] == 1

    async def failing() -> bool:
        async with http.get(f"{base}/v1/webhooks/{hooks['billing']}") as resp:
            return bool((await expect(resp, 200))["state"] == "failing")

    await poll_until(failing, timeout=30, what="the billing webhook failing")
    await stage_view(http, base)
    return hooks


async def stage_view(http: aiohttp.ClientSession, base: str) -> None:
    """A view of stock per SKU over inventory, as an App's processor commits it."""
    spec = {"kind": "view", "inputs": ["inventory", "orders"], "app": "inventory"}
    async with http.put(f"{base}/v1/views/stock", json=spec) as resp:
        await expect(resp, 201)
    values = {
        f"sku-long-name-{i}": {"on_hand": 40 - i, "reserved": i, "warehouse": "eu-central-1"}
        for i in range(12)
    }
    body = {"generation": 0, "expect": 0, "events": commit_events("stock", 0, 0, values, {
        "inventory": {"0": 1}, "orders": {"0": 2},
    })}  # fmt: skip
    async with http.post(f"{base}/v1/views/stock/commit", json=body) as resp:
        await expect(resp, 200)


@pytest.mark.parametrize(("width", "height"), SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
async def test_every_view_fits_reads_and_aligns(
    hub_factory: HubFactory,
    http: aiohttp.ClientSession,
    receiver: Receiver,
    width: int,
    height: int,
) -> None:
    from playwright.async_api import TimeoutError as PlaywrightTimeout
    from playwright.async_api import async_playwright

    hub = hub_factory.start("--webhook-allow-net", "127.0.0.0/8", "--webhook-retry-schedule", "0")
    hooks = await stage(http, hub.base_url, receiver)
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    reported = 0
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(20_000)
            trouble: list[str] = []
            page.on("pageerror", lambda exc: trouble.append(f"page error: {exc}"))
            page.on("console", lambda m: m.type == "error" and trouble.append(f"console: {m.text}"))
            page.on("requestfailed", lambda r: trouble.append(f"failed: {r.method} {r.url}"))

            def answered(resp: Any) -> None:
                if resp.status >= 400:
                    trouble.append(f"{resp.status}: {resp.request.method} {resp.url}")

            page.on("response", answered)
            await page.goto(f"{hub.base_url}/?poll=500#/overview")
            for template, ready in VIEWS:
                route = template.format(**hooks)
                trouble.clear()
                await page.evaluate("(r) => { location.hash = '#/' + r; }", route)
                try:
                    await page.locator(ready).first.wait_for()
                except PlaywrightTimeout:
                    await page.screenshot(path=str(SHOTS / "not-ready.png"), full_page=True)
                    raise AssertionError(f"{route}: {ready} not shown; {trouble}") from None
                if route == "flow":
                    await page.locator("#flow-graph canvas").first.wait_for()
                    await page.wait_for_function("() => window.flow && window.flow.ready")
                await asyncio.sleep(1.2)  # two more samples: the view as it settles
                got = await page.evaluate(MEASURE)
                name = re.sub(r"[?&=]", "_", template).replace("{", "").replace("}", "")
                shot = SHOTS / f"{name}-{width}x{height}.png"
                await page.screenshot(path=str(shot), full_page=True)
                print("screenshot:", shot)
                where = f"{route} at {width}x{height}"
                if got["scrollWidth"] > got["innerWidth"]:
                    problems.append(f"{where}: page {got['scrollWidth']} px wide")
                problems += [f"{where}: past the right edge: {w}" for w in got["wide"][:8]]
                problems += [f"{where}: text under {MIN_FONT_PX} px: {s}" for s in got["small"][:8]]
                problems += [f"{where}: {m}" for m in got["misaligned"][:8]]
                problems += [f"{where}: {t}" for t in trouble]
                problems += [f"{where}: 12 h time: {t}" for t in got["clock12"]]
                problems += [f"{where}: cut: {c}" for c in got["clipped"]]
                if "flow" in got:
                    flow = got["flow"]
                    assert flow["labels"] > 0
                    if flow["smallest"] < MIN_FONT_PX:
                        problems.append(f"{where}: flow labels drawn at {flow['smallest']:.1f} px")
                    problems += [f"{where}: label out of its box: {n}" for n in flow["spill"]]
                for line in problems[reported:]:
                    print(line)
                reported = len(problems)
        finally:
            await browser.close()
    assert problems == []
