"""Payments: applies the promo code and charges; some cards are declined, and the
provider sometimes times out (the handler raises, and tidings retries it).

``tidings run examples.shop.payments:app``
"""

from __future__ import annotations

import zlib

from examples.shop.catalog import PROMO_CODES
from examples.shop.events import InventoryReserved, PaymentFailed, PaymentSucceeded
from examples.shop.settings import HUB, PAYMENT_DECLINE_RATE, PAYMENT_ERROR_RATE
from tidings import App, Context

app = App("payments", hub=HUB)


class ProviderTimeout(Exception):
    """The payment provider did not answer; the charge is tried again."""


def _roll(order_id: str, salt: str) -> float:
    """A number in [0, 1) fixed per order: the same order always rolls the same."""
    return zlib.crc32(f"{salt}:{order_id}".encode()) / 2**32


@app.on("inventory", ordering="key", concurrency=8, retries=5, backoff=0.2)
async def charge(order: InventoryReserved, ctx: Context) -> PaymentSucceeded | PaymentFailed:
    if ctx.deliveries == 1 and _roll(order.order_id, "timeout") < PAYMENT_ERROR_RATE:
        raise ProviderTimeout(f"no answer from the provider for {order.order_id}")
    if _roll(order.order_id, "decline") < PAYMENT_DECLINE_RATE:
        return PaymentFailed(
            order_id=order.order_id,
            customer=order.customer,
            items=order.items,
            reason="card declined",
        )
    discount = PROMO_CODES.get(order.promo_code or "", 0.0)
    amount = round(order.subtotal * (1 - discount), 2)
    return PaymentSucceeded(
        order_id=order.order_id,
        customer=order.customer,
        amount=amount,
        discount=round(order.subtotal - amount, 2),
    )
