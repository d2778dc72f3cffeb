"""Inventory: reserves stock for a placed order, and releases it when payment fails.

``tidings run examples.shop.inventory:app``

The stock is not kept in this process: it is the ``stock`` view, a fold of the
ledger on the topic ``stock`` (one event per product of an order: reserved,
released, refused), starting from the catalog's stock. The hub keeps the view
(its changelog and checkpoints), so a restarted inventory knows the stock at once.
A second view, ``reservations``, folds the same ledger per order: what each order
holds, so that an order delivered twice (after a crash) gets the decision it got
the first time.

Never overselling comes from three rules:

- Every decision reads the views with ``min_position="latest"``: they reflect every
  ledger event appended before the read, this process's own and those of a process
  killed before it started (read your own writes).
- Decisions are made one at a time (``_deciding``), and a decision's ledger events are
  durable before the next decision reads: nothing is decided on a stale level.
- Each reservation is a ledger event of its own, checked against the level just read:
  a crash between two of an order's reservations leaves a partial hold, which the
  redelivered order completes (if the stock is still there) or gives back.

One inventory process decides at a time (run one; a second one would decide
beside it without seeing its in-flight decisions).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from examples.shop.catalog import PRODUCTS
from examples.shop.events import (
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    OrderPlaced,
    PaymentFailed,
    StockRefused,
    StockReleased,
    StockReserved,
)
from examples.shop.settings import HUB
from tidings import App, Context, Event

logger = logging.getLogger("shop.inventory")

STOCK_TOPIC = StockReserved.event_topic
app = App("inventory", hub=HUB)


def initial_stock(sku: str) -> int:
    """What the shop starts with: the catalog's stock (0 for a product it does not list)."""
    product = PRODUCTS.get(sku)
    return 0 if product is None else product.stock


@app.view("stock", topics=[STOCK_TOPIC], key=lambda e: e.data["sku"])
def stock(current: int | None, event: Event) -> int:
    """A product's stock: the catalog's, less what is reserved, plus what is released."""
    level = initial_stock(event.data["sku"]) if current is None else current
    if event.type == StockReserved.event_type:
        return level - int(event.data["qty"])
    if event.type == StockReleased.event_type:
        return level + int(event.data["qty"])
    return level


@app.view("reservations", topics=[STOCK_TOPIC], key=lambda e: e.data["order_id"])
def reservation(current: dict[str, Any] | None, event: Event) -> dict[str, Any]:
    """An order's hold: ``held`` (sku -> qty reserved now), ``released`` (given back),
    ``refused`` (the products it was short of: the order was rejected)."""
    hold: dict[str, Any] = current or {"held": {}, "released": {}, "refused": []}
    hold = {"held": dict(hold["held"]), "released": dict(hold["released"]),
            "refused": list(hold["refused"])}  # fmt: skip
    sku, qty = event.data["sku"], int(event.data["qty"])
    if event.type == StockReserved.event_type:
        hold["held"][sku] = qty
    elif event.type == StockReleased.event_type:
        hold["held"].pop(sku, None)
        hold["released"][sku] = qty
    elif event.type == StockRefused.event_type and sku not in hold["refused"]:
        hold["refused"].append(sku)
    return hold


# One decision at a time in this process: each reads the views after the last one's
# ledger events are in the log.
_deciding = asyncio.Lock()


async def _level(sku: str) -> int:
    got = await app.view_get("stock", sku, min_position="latest")
    return initial_stock(sku) if got is None else int(got["value"])


async def _hold(order_id: str) -> dict[str, Any]:
    got = await app.view_get("reservations", order_id, min_position="latest")
    if got is None:
        return {"held": {}, "released": {}, "refused": []}
    value: dict[str, Any] = got["value"]
    return value


def _wanted(order: OrderPlaced) -> dict[str, int]:
    wanted: dict[str, int] = {}
    for item in order.items:  # the same product twice in an order is one reservation
        wanted[item.sku] = wanted.get(item.sku, 0) + item.qty
    return wanted


@app.on("orders", ordering="key", concurrency=8)
async def reserve(order: OrderPlaced, ctx: Context) -> InventoryReserved | InventoryRejected:
    oid = order.order_id
    async with _deciding:
        hold = await _hold(oid)
        if hold["refused"]:  # decided before a crash: rejected
            return _rejected(order, hold["refused"])
        if hold["released"]:  # decided before a crash: reserved, and since released
            return InventoryReserved(**order.model_dump())
        wanted = _wanted(order)
        missing = {sku: qty for sku, qty in wanted.items() if sku not in hold["held"]}
        levels = {sku: await _level(sku) for sku in missing}
        short = sorted(sku for sku, qty in missing.items() if levels[sku] < qty)
        if not short:
            for sku, qty in missing.items():
                total = round(PRODUCTS[sku].price * qty, 2) if sku in PRODUCTS else 0.0
                await ctx.publish(
                    event=StockReserved(order_id=oid, sku=sku, qty=qty, total=total),
                    key=sku, id=f"{oid}.{sku}.reserved",
                )  # fmt: skip
            return InventoryReserved(**order.model_dump())
        # Short: give back what a crashed attempt may have held, and keep the refusal.
        for sku, qty in hold["held"].items():
            await ctx.publish(
                event=StockReleased(order_id=oid, sku=sku, qty=qty),
                key=sku, id=f"{oid}.{sku}.released",
            )  # fmt: skip
        for sku in short:
            await ctx.publish(
                event=StockRefused(order_id=oid, sku=sku, qty=missing[sku], available=levels[sku]),
                key=sku, id=f"{oid}.{sku}.refused",
            )  # fmt: skip
        return _rejected(order, short)


def _rejected(order: OrderPlaced, short: list[str]) -> InventoryRejected:
    return InventoryRejected(
        order_id=order.order_id,
        customer=order.customer,
        reason="out of stock: " + ", ".join(short),
    )


@app.on("payments", ordering="key", concurrency=8)
async def release(failed: PaymentFailed, ctx: Context) -> InventoryReleased:
    oid = failed.order_id
    async with _deciding:
        hold = await _hold(oid)
        if not hold["held"] and not hold["released"]:
            logger.warning("payment failed for %s, which holds no stock", oid)
        for sku, qty in hold["held"].items():
            await ctx.publish(
                event=StockReleased(order_id=oid, sku=sku, qty=qty),
                key=sku, id=f"{oid}.{sku}.released",
            )  # fmt: skip
    return InventoryReleased(
        order_id=oid,
        customer=failed.customer,
        reason=f"payment failed: {failed.reason}",
    )
