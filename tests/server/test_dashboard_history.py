"""The dashboard's charts open full: a hub with history, killed and started again, then
the Overview in headless Chromium shows the day's points at once, on an x axis of
the last 24 hours in 24-hour time; the group's counters read what they read before
the kill. Screenshots go under pytest's temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from chromium import CHROMIUM, LAUNCH_ARGS, NEEDS_CHROMIUM
from hubapi import expect, fetch, get_group, group_post, poll_until, publish, put_group
from hubproc import HubFactory, HubProcess

pytestmark = [pytest.mark.timeout(120), NEEDS_CHROMIUM]

WAIT_MS = 15_000
CHART = '.chart[data-chart="events/s per topic"]'
TIME_LABEL = re.compile(r"^([0-9]{2}-[0-9]{2} )?[0-2][0-9]:[0-5][0-9](:[0-5][0-9])?$")


@contextlib.asynccontextmanager
async def page_on(hub: HubProcess, route: str) -> AsyncIterator[Any]:
    """The dashboard at ``#/route`` at 1440x900; no uncaught error, no console error."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on(
                "console", lambda m: errors.append(m.text) if m.type == "error" else None
            )
            await page.goto(f"{hub.base_url}/#/{route}")
            yield page
            assert errors == []
        finally:
            await browser.close()


async def trickle(http: aiohttp.ClientSession, base: str, seconds: float) -> int:
    """Orders at about 20 a second for ``seconds``; how many."""
    n = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        event = {"type": "order.placed", "source": "/shop", "partitionkey": f"o-{n}"}
        await publish(http, base, "orders", event)
        n += 1
        await asyncio.sleep(0.05)
    return n


async def test_the_overview_chart_opens_with_the_day_of_a_restarted_hub(
    hub_factory: HubFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    hub = hub_factory.start("--history-interval", "0.5")
    base = hub.base_url
    await put_group(http, base, "orders", "payments", max_deliver=1)
    await trickle(http, base, 3.0)
    got = await fetch(http, base, "orders", "payments", max=10)
    await group_post(http, base, "orders", "payments", "ack",
                     {"leases": [r["lease"] for r in got[:5]]})  # fmt: skip
    await group_post(http, base, "orders", "payments", "nack",
                     {"leases": [r["lease"] for r in got[5:]]})  # fmt: skip
    before = await get_group(http, base, "orders", "payments")
    assert before["dead_lettered"] == 5

    hub.restart(hard=True)  # SIGKILL

    async def points() -> int | None:
        async with http.get(f"{base}/v1/metrics/history?series=events_in") as resp:
            answer = await expect(resp, 200)
        return len(answer["times"]) if len(answer["times"]) >= 8 else None

    await poll_until(points, timeout=15, what="points before and after the kill")
    opened = time.time()
    async with page_on(hub, "overview") as page:
        # The chart has the points of before the page opened, and the kill, at once.
        await page.wait_for_function(
            f"""() => {{
                const el = document.querySelector('{CHART}');
                const u = el && el.chart && el.chart.plot;
                return u && u.data[0].length >= 8 && u.series.some(s => s.label === "orders");
            }}"""
        )
        plot = await page.evaluate(
            f"""() => {{
                const u = document.querySelector('{CHART}').chart.plot;
                const orders = u.series.findIndex(s => s.label === "orders");
                return {{
                    xs: Array.from(u.data[0]), orders: Array.from(u.data[orders]),
                    min: u.scales.x.min, max: u.scales.x.max,
                    ticks: u.axes[0]._values, legend: u.series[0].value(u, u.data[0][0]),
                }};
            }}"""
        )
        now = time.time()
        assert now - 86_400 <= plot["min"] < plot["max"] <= now + 5
        assert all(now - 86_400 <= x <= now + 5 for x in plot["xs"])  # seconds, not ms
        assert plot["xs"] == sorted(plot["xs"])
        assert plot["min"] < opened - 3  # prefilled: it reaches back past the page's opening
        rates = [v for x, v in zip(plot["xs"], plot["orders"], strict=True) if x < opened - 3]
        assert any(v and v > 5 for v in rates), rates  # the trickle, before the kill
        assert plot["ticks"] and all(TIME_LABEL.match(t) for t in plot["ticks"]), plot["ticks"]
        assert re.fullmatch(r"[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}", plot["legend"])
        await page.screenshot(path=tmp_path / "overview-history.png", full_page=True)

    async with page_on(hub, "groups?topic=orders&group=payments") as page:
        for card, value in (("delivered", "10"), ("dead-lettered", "5")):
            await page.wait_for_function(
                """([card, value]) => {
                    const el = document.querySelector(`[data-metric="${card}"] .value`);
                    return el && el.textContent === value;
                }""",
                arg=[card, value],
            )
        # Its lag chart, too, opens with the hub's points of before the kill.
        lag = '.chart[data-chart="lag per partition"]'
        await page.wait_for_function(
            f"""() => {{
                const el = document.querySelector('{lag}');
                const u = el && el.chart && el.chart.plot;
                return u && u.data[0].length >= 8 && u.series[1].label === "all partitions";
            }}"""
        )
        low = await page.evaluate(f"document.querySelector('{lag}').chart.plot.scales.x.min")
        assert time.time() - 86_400 <= low < opened - 3
        await page.screenshot(path=tmp_path / "group-after-restart.png", full_page=True)


async def test_a_chart_with_one_point_shows_the_minute_up_to_it(
    hub_factory: HubFactory,
) -> None:
    # Its x axis once ran from February 2027 to August 2029: uPlot's padding of a
    # single x value, in seconds, by its magnitude.
    hub = hub_factory.start()
    async with page_on(hub, "overview") as page:
        await page.wait_for_function(
            f"""() => {{
                const el = document.querySelector('{CHART}');
                return el && el.chart && el.chart.plot && el.chart.plot.data[0].length >= 1;
            }}"""
        )
        span = await page.evaluate(
            f"""() => {{
                const u = document.querySelector('{CHART}').chart.plot;
                return [u.scales.x.min, u.scales.x.max, u.data[0].length];
            }}"""
        )
        now = time.time()
        low, high, _ = span
        assert now - 120 <= low < high <= now + 5, span
