"""Inventory: reserves stock for a placed order, and releases it when payment fails.

``tidings run examples.shop.inventory:app`` (stock lives in this process).
"""

from __future__ import annotations

from examples.shop.catalog import PRODUCTS
from examples.shop.events import (
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    OrderPlaced,
    PaymentFailed,
)
from examples.shop.settings import HUB
from tidings import App

app = App("inventory", hub=HUB)
stock: dict[str, int] = {sku: p.stock for sku, p in PRODUCTS.items()}


@app.on("orders", ordering="key", concurrency=8)
async def reserve(order: OrderPlaced) -> InventoryReserved | InventoryRejected:
    short = [i.sku for i in order.items if stock.get(i.sku, 0) < i.qty]
    if short:
        return InventoryRejected(
            order_id=order.order_id,
            customer=order.customer,
            reason="out of stock: " + ", ".join(short),
        )
    for i in order.items:
        stock[i.sku] -= i.qty
    return InventoryReserved(**order.model_dump())


@app.on("payments", ordering="key", concurrency=8)
async def release(failed: PaymentFailed) -> InventoryReleased:
    for i in failed.items:
        stock[i.sku] = stock.get(i.sku, 0) + i.qty
    return InventoryReleased(
        order_id=failed.order_id,
        customer=failed.customer,
        reason=f"payment failed: {failed.reason}",
    )
