"""The dashboard's Catalog view in headless Chromium: types, a diff between two versions,
producers, consumers, failures at publish, and the schema inferred for a type with none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from chromium import CHROMIUM, LAUNCH_ARGS, NEEDS_CHROMIUM
from hubapi import STRUCTURED, expect, publish, put_group, put_topic
from hubproc import HubFactory

pytestmark = [pytest.mark.timeout(120), NEEDS_CHROMIUM]
WAIT_MS = 15_000


def order(**props: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"order_id": {"type": "string"}, **props},
        "required": ["order_id"],
    }


async def test_catalog_shows_versions_a_diff_producers_consumers_and_failures(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    hub = hub_factory.start()
    base = hub.base_url
    async with aiohttp.ClientSession() as http:
        for schema, producer in ((order(), "orders"), (order(note={}), None)):
            body: dict[str, Any] = {"schema": schema}
            if producer:
                body["producer"] = producer
            async with http.put(f"{base}/v1/schemas/order.placed", json=body) as resp:
                await expect(resp, 201)
        async with http.put(f"{base}/v1/schemas/order.placed/consumers/billing",
                            json={"schema": order()}) as resp:
            await expect(resp, 200)
        await put_topic(http, base, "orders", schemas="validate")
        await put_group(http, base, "orders", "packers")
        await publish(http, base, "orders",
                      {"type": "order.placed", "source": "/shop", "data": {"order_id": "o-1"}})
        async with http.post(f"{base}/v1/topics/orders/events",
                             data=orjson.dumps({"type": "order.placed", "data": {"n": 1}}),
                             headers={"content-type": STRUCTURED}) as resp:
            assert resp.status == 422
        await publish(http, base, "likes", {"type": "like.added", "data": {"sku": "tea"}})

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{base}/#/catalog")
            await page.locator("#catalog-table tr[data-type='order.placed']").click()
            await page.locator("#catalog-diff").wait_for()
            added = await page.locator("#catalog-diff .diff-add").all_inner_texts()
            assert any('"note": {}' in line for line in added), added
            producers = await page.locator("#catalog-producers").inner_text()
            assert "orders (app)" in producers and "/shop (traffic)" in producers
            consumers = await page.locator("#catalog-consumers").inner_text()
            assert "billing (app)" in consumers and "packers (group)" in consumers
            failures = await page.locator("#catalog-failures").inner_text()
            assert "Refused at publish since the hub started: 1" in failures
            assert "$" in failures
            # The same version on both sides: nothing added or removed.
            await page.select_option("#catalog-a", "2")
            await page.wait_for_function(
                "() => document.querySelectorAll('#catalog-diff .diff-add').length === 0"
            )
            await page.screenshot(path=str(tmp_path / "catalog.png"))
            await page.locator("#catalog-table tr[data-type='like.added']").click()
            inferred = await page.locator("#catalog-inferred").inner_text()
            assert '"sku"' in inferred
            assert errors == []
        finally:
            await browser.close()
