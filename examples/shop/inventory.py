"""Inventory: reserves stock for a placed order, and releases it when payment fails.

``tidings run examples.shop.inventory:app``

The stock is not kept in this process: it is the ``stock`` view, the fold
:func:`examples.shop.folds.stock` of the ledger on the topic ``stock`` (one event
per product of an order: reserved, released, refused), starting from the
catalog's stock. The hub keeps the view (its changelog and checkpoints), so a
restarted inventory knows the stock at once.
A second view, ``reservations``, folds the same ledger per order: what each order
holds, so that an order delivered twice (after a crash) gets the decision it got
the first time.

Never overselling comes from three rules:

- Every decision reads the views with ``min_position="latest"``: they reflect every
  ledger event appended before the read, this process's own and those of a process
  killed before it started (read your own writes).
- Decisions are made one at a time (``_deciding()``), and a decision's ledger events are
  durable before the next decision reads: nothing is decided on a stale level.
- Each reservation is a ledger event of its own, checked against the level just read:
  a crash between two of an order's reservations leaves a partial hold, which the
  redelivered order completes (if the stock is still there) or gives back. A
  refusal is written before anything is given back, so a redelivered order that
  finds one is rejected again, never reserved.

One inventory process decides at a time (run one; a second one would decide
beside it without seeing its in-flight decisions).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
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
from examples.shop.folds import (
    STOCK_TOPIC,
    initial_stock,
    no_hold,
    order_of,
    reservation,
    sku_of,
    stock,
)
from examples.shop.settings import HUB
from tidings import App, Context

logger = logging.getLogger("shop.inventory")

app = App("inventory", hub=HUB)
# Committed every 10 ms (not 100): each decision waits for the last one to be in the
# views, so this bounds how many orders a second inventory decides (a quiet view
# commits nothing).
app.view("stock", topics=[STOCK_TOPIC], key=sku_of, commit_interval=0.01)(stock)
app.view("reservations", topics=[STOCK_TOPIC], key=order_of, commit_interval=0.01)(reservation)


# One decision at a time in this process: each reads the views after the last one's
# ledger events are in the log. (A lock per event loop: tests run several loops.)
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _deciding() -> asyncio.Lock:
    return _locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())


async def _level(sku: str) -> int:
    got = await app.view_get("stock", sku, min_position="latest")
    return initial_stock(sku) if got is None else int(got["value"])


async def _hold(order_id: str) -> dict[str, Any]:
    got = await app.view_get("reservations", order_id, min_position="latest")
    if got is None:
        return no_hold()
    value: dict[str, Any] = got["value"]
    return value


async def _move(ctx: Context, move: StockReserved | StockReleased | StockRefused) -> None:
    """Append one ledger event, durably, before the next decision reads the views. Its id
    says what it is (``o-1.tea.reserved``): published again after a crash, the hub's
    dedupe drops it."""
    await ctx.publish(
        move.event_topic, move.event_type, move.model_dump(mode="json"),
        key=move.sku, id=f"{move.order_id}.{move.sku}.{move.event_type.split('.')[1]}",
    )  # fmt: skip


def _wanted(order: OrderPlaced) -> dict[str, int]:
    wanted: dict[str, int] = {}
    for item in order.items:  # the same product twice in an order is one reservation
        wanted[item.sku] = wanted.get(item.sku, 0) + item.qty
    return wanted


@app.on("orders", ordering="key", concurrency=8)
async def reserve(order: OrderPlaced, ctx: Context) -> InventoryReserved | InventoryRejected:
    oid = order.order_id
    wanted = _wanted(order)
    async with _deciding():
        # both views at once: each waits for its own processor to have the last decision
        hold, *at = await asyncio.gather(_hold(oid), *(_level(sku) for sku in wanted))
        if hold["refused"]:  # decided before a crash: rejected
            await _give_back(ctx, oid, hold)
            return _rejected(order, hold["refused"])
        if hold["released"]:  # decided before a crash: reserved, and since released
            return InventoryReserved(**order.model_dump())
        levels = dict(zip(wanted, at, strict=True))
        missing = {sku: qty for sku, qty in wanted.items() if sku not in hold["held"]}
        short = sorted(sku for sku, qty in missing.items() if levels[sku] < qty)
        if not short:
            for sku, qty in missing.items():
                total = round(PRODUCTS[sku].price * qty, 2) if sku in PRODUCTS else 0.0
                await _move(ctx, StockReserved(order_id=oid, sku=sku, qty=qty, total=total))
            return InventoryReserved(**order.model_dump())
        # Short: the refusal first (the decision, should a crash follow), then give back
        # what a crashed attempt may have held.
        for sku in short:
            await _move(
                ctx, StockRefused(order_id=oid, sku=sku, qty=missing[sku], available=levels[sku])
            )
        await _give_back(ctx, oid, hold)
        return _rejected(order, short)


async def _give_back(ctx: Context, order_id: str, hold: dict[str, Any]) -> None:
    for sku, qty in hold["held"].items():
        await _move(ctx, StockReleased(order_id=order_id, sku=sku, qty=qty))


def _rejected(order: OrderPlaced, short: list[str]) -> InventoryRejected:
    return InventoryRejected(
        order_id=order.order_id,
        customer=order.customer,
        reason="out of stock: " + ", ".join(short),
    )


@app.on("payments", ordering="key", concurrency=8)
async def release(failed: PaymentFailed, ctx: Context) -> InventoryReleased:
    oid = failed.order_id
    async with _deciding():
        hold = await _hold(oid)
        if not hold["held"] and not hold["released"]:
            logger.warning("payment failed for %s, which holds no stock", oid)
        await _give_back(ctx, oid, hold)
    return InventoryReleased(
        order_id=oid,
        customer=failed.customer,
        reason=f"payment failed: {failed.reason}",
    )
