"""The shop's order flow as three services written with App, for the handler tests.

payments: order.placed (orders) -> payment.succeeded (orders)
shipping: payment.succeeded (orders) -> shipment.created (shipments)
notify:   shipment.created (shipments) -> customer.notified (notifications)

Topic and app names carry a suffix, so that tests sharing one hub never meet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from tidings import App, Context, Event


class OrderPlaced(BaseModel):
    event_type: ClassVar[str] = "order.placed"
    order_id: str
    total: float


class PaymentSucceeded(BaseModel):
    event_type: ClassVar[str] = "payment.succeeded"
    order_id: str
    amount: float


@dataclass
class Shop:
    suffix: str
    hub: str = "http://127.0.0.1:8700"
    seen: list[tuple[str, str, int]] = field(default_factory=list)  # (service, order, delivery)

    @property
    def orders(self) -> str:
        return f"orders-{self.suffix}"

    @property
    def shipments(self) -> str:
        return f"shipments-{self.suffix}"

    @property
    def notifications(self) -> str:
        return f"notifications-{self.suffix}"

    def apps(self) -> list[App]:
        payments = App(f"payments-{self.suffix}", hub=self.hub, poll_wait=0.5)
        shipping = App(f"shipping-{self.suffix}", hub=self.hub, poll_wait=0.5)
        notify = App(f"notify-{self.suffix}", hub=self.hub, poll_wait=0.5)

        @payments.on(self.orders, retries=2, backoff=0.05)
        async def charge(order: OrderPlaced, ctx: Context) -> PaymentSucceeded:
            self.seen.append(("payments", order.order_id, ctx.deliveries))
            return PaymentSucceeded(order_id=order.order_id, amount=order.total)

        @shipping.on(self.orders, types=["payment.succeeded"])
        async def ship(payment: PaymentSucceeded) -> dict[str, Any]:
            self.seen.append(("shipping", payment.order_id, 1))
            return {
                "type": "shipment.created",
                "topic": self.shipments,
                "data": {"order_id": payment.order_id, "carrier": "post"},
            }

        @notify.on(self.shipments, types="shipment.created")
        async def tell(data: dict[str, Any], ctx: Context) -> Event:
            self.seen.append(("notify", data["order_id"], ctx.deliveries))
            return Event(
                type="customer.notified",
                data={"order_id": data["order_id"]},
                topic=self.notifications,
            )

        return [payments, shipping, notify]
