"""Notifications: tells the customer how the order ended.

Its ``customer.notified`` events reach the customer's browser over the
WebSocket, and the partner over a webhook the hub signs and retries.

``tidings run examples.shop.notifications:app``
"""

from __future__ import annotations

from examples.shop.events import (
    CustomerNotified,
    InventoryRejected,
    InventoryReleased,
    ShipmentCreated,
)
from examples.shop.settings import HUB
from tidings import App

app = App("notifications", hub=HUB)


@app.on("shipments", concurrency=8)
async def shipped(shipment: ShipmentCreated) -> CustomerNotified:
    return CustomerNotified(
        order_id=shipment.order_id,
        customer=shipment.customer,
        status="confirmed",
        message=f"Your order is on its way with {shipment.carrier}: {shipment.tracking}",
    )


@app.on("inventory", types=["inventory.rejected", "inventory.released"], concurrency=8)
async def cancelled(event: InventoryRejected | InventoryReleased) -> CustomerNotified:
    return CustomerNotified(
        order_id=event.order_id,
        customer=event.customer,
        status="cancelled",
        message=f"Your order was cancelled ({event.reason})",
    )
