"""Shipping: a paid order gets a shipment.

``tidings run examples.shop.shipping:app``
"""

from __future__ import annotations

import zlib

from examples.shop.events import PaymentSucceeded, ShipmentCreated
from examples.shop.settings import HUB
from tidings import App

app = App("shipping", hub=HUB)


@app.on("payments", ordering="key", concurrency=8)
async def ship(paid: PaymentSucceeded) -> ShipmentCreated:
    tracking = f"TT{zlib.crc32(paid.order_id.encode()):010d}"
    return ShipmentCreated(
        order_id=paid.order_id, customer=paid.customer, carrier="post", tracking=tracking
    )
