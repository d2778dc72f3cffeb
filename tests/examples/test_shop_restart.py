"""Inventory's stock survives a SIGKILL: it is the ``stock`` view, kept by the hub.

The whole shop runs as real processes (see ``examples/shop/demo.py``). The
inventory service is killed (SIGKILL) and started again; the stock it then
decides from must be what the ledger says: the catalog's stock, less what was
reserved, plus what was released, computed here from the events of ``stock``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from test_shop_processes import free_base_port

from examples.shop.catalog import PRODUCTS
from examples.shop.demo import Stack, place_orders
from tidings import AsyncClient, Record

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("SHOP_PAYMENT_DECLINE_RATE", "0.2")  # more releases to count
    s = Stack(tmp_path / "shop", free_base_port(), retry_schedule="0,0.2,0.5,1,2")
    try:
        s.start()
        yield s
    finally:
        s.stop()


async def read_all(hub: AsyncClient, topic: str) -> list[Record]:
    records: list[Record] = []
    start = "earliest"
    while True:
        got, start = await hub.read(topic, start=start, limit=1000)
        if not got:
            return records
        records += got


async def end_token(hub: AsyncClient, topic: str) -> str:
    """The position of the last event of a one-partition topic."""
    (part,) = (await hub.topic(topic))["partitions"]
    return f"0:{part['next_offset'] - 1}"


async def view_value(hub_url: str, view: str, key: str, min_position: str) -> Any:
    """``GET /v1/views/{view}/keys/{key}?min_position=``: the value, None if the key has none."""
    url = f"{hub_url}/v1/views/{view}/keys/{quote(key, safe='')}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, params={"min_position": min_position}) as resp,
    ):
        answer = await resp.json()
        if resp.status == 404 and "key" in answer:  # the key has no value (not: no view)
            return None
        assert resp.status == 200, answer
        return answer["value"]


async def stock_view(hub: AsyncClient) -> dict[str, int]:
    """Every product's level in the ``stock`` view, once it reflects the whole ledger
    (a product the ledger never named has the catalog's stock)."""
    token = await end_token(hub, "stock")
    levels: dict[str, int] = {}
    for sku, product in PRODUCTS.items():
        value = await view_value(hub.url, "stock", sku, token)
        levels[sku] = product.stock if value is None else value
    return levels


def ledger(records: list[Record]) -> dict[str, int]:
    """The stock the ledger's events make: catalog stock - reserved + released. The
    ledger is one partition, in the order of the decisions: no prefix of it oversells."""
    levels = {sku: p.stock for sku, p in PRODUCTS.items()}
    for r in records:
        sku, qty = r.event.data["sku"], r.event.data["qty"]
        if r.event.type == "stock.reserved":
            levels[sku] -= qty
            assert levels[sku] >= 0, f"{sku} oversold at offset {r.offset}: {levels[sku]}"
        elif r.event.type == "stock.released":
            levels[sku] += qty
    return levels


async def order_once(http: aiohttp.ClientSession, stack: Stack, sku: str) -> str:
    body = {"customer": "kim", "items": [{"sku": sku, "qty": 1}]}
    async with http.post(stack.orders_url + "/orders", json=body) as resp:
        assert resp.status == 202, await resp.text()
        return str((await resp.json())["order_id"])


async def notified(hub: AsyncClient, order_ids: set[str], timeout: float = 60) -> dict[str, Any]:
    """The notification of each order, once every one has come."""
    found: dict[str, Any] = {}
    for _ in range(int(timeout / 0.2)):
        for r in await read_all(hub, "notifications"):
            if r.event.data["order_id"] in order_ids:
                found[r.event.data["order_id"]] = r.event.data
        if set(found) == order_ids:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"no notification for {sorted(order_ids - set(found))}")


async def test_a_restarted_inventory_remembers_what_it_reserved(stack: Stack) -> None:
    # Three kettles in stock: sell them all (some payments are declined and give
    # theirs back), kill inventory, and order one more.
    assert PRODUCTS["kettle"].stock == 3
    async with AsyncClient(stack.hub_url) as hub, aiohttp.ClientSession() as http:
        sold = 0
        for _ in range(30):
            oid = await order_once(http, stack, "kettle")
            (note,) = (await notified(hub, {oid})).values()
            sold += note["status"] == "confirmed"
            if sold == 3:
                break
        assert sold == 3
        assert (await stock_view(hub))["kettle"] == 0
        await asyncio.to_thread(stack.restart, "inventory", hard=True)
        late = await order_once(http, stack, "kettle")
        (note,) = (await notified(hub, {late})).values()
        # in process memory the restarted service would have had 3 kettles again
        assert note["status"] == "cancelled", note
        assert "out of stock: kettle" in note["message"]
        levels = await stock_view(hub)
        assert levels["kettle"] == 0
        assert levels == ledger(await read_all(hub, "stock"))


async def test_orders_at_once_for_the_last_kettles_never_oversell(stack: Stack) -> None:
    # Each decision reads the stock view after the one before it is in the view.
    async with AsyncClient(stack.hub_url) as hub, aiohttp.ClientSession() as http:
        placed = set(await asyncio.gather(*(order_once(http, stack, "kettle") for _ in range(12))))
        notes = await notified(hub, placed)
        moves = await read_all(hub, "stock")
        levels = ledger(moves)
        assert levels == await stock_view(hub)
    confirmed = sum(n["status"] == "confirmed" for n in notes.values())
    assert 1 <= confirmed <= 3
    assert confirmed == PRODUCTS["kettle"].stock - levels["kettle"]


async def test_the_stock_is_right_after_inventory_is_killed_mid_flow(stack: Stack) -> None:
    async def kill_inventory() -> None:
        # twice: the second kill comes while the first restart may still be catching up
        await asyncio.to_thread(stack.restart, "inventory", hard=True)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(stack.restart, "inventory", hard=True)

    result = await place_orders(stack, 150, concurrency=10, timeout_s=150, midway=kill_inventory)
    assert result.missing == [], f"{len(result.missing)} orders never finished"
    assert Counter(result.finals.values()).keys() == {"confirmed", "cancelled"}
    async with AsyncClient(stack.hub_url) as hub:
        moves = await read_all(hub, "stock")
        levels = await stock_view(hub)
        # the view is the ledger's fold, and nothing was oversold
        assert levels == ledger(moves)
        assert all(level >= 0 for level in levels.values()), levels
        assert levels["kettle"] < PRODUCTS["kettle"].stock  # the kettle was in demand
        # each order's product is reserved at most once, released only if reserved
        kinds: dict[tuple[str, str], list[str]] = {}
        for r in moves:
            kinds.setdefault((r.event.data["order_id"], r.event.data["sku"]), []).append(
                r.event.type
            )
        for (oid, sku), types in kinds.items():
            assert types in (
                ["stock.reserved"],
                ["stock.reserved", "stock.released"],
                ["stock.refused"],
            ), (oid, sku, types)
        # and the ledger agrees with how every order ended
        for oid, status in result.finals.items():
            mine = {t for (o, _), ts in kinds.items() if o == oid for t in ts}
            if status == "confirmed":
                assert mine == {"stock.reserved"}, (oid, mine)
            else:
                assert mine in ({"stock.refused"}, {"stock.reserved", "stock.released"}), (
                    oid, mine,
                )  # fmt: skip
