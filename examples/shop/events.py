"""The events of the shop, as pydantic models: each names its CloudEvents type and
the topic it goes to."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field


class Item(BaseModel):
    sku: str
    qty: int = Field(ge=1, le=99)


class OrderPlaced(BaseModel):
    event_type: ClassVar[str] = "order.placed"
    event_topic: ClassVar[str] = "orders"
    order_id: str
    customer: str
    items: list[Item]
    promo_code: str | None = None
    subtotal: float


class InventoryReserved(BaseModel):
    event_type: ClassVar[str] = "inventory.reserved"
    event_topic: ClassVar[str] = "inventory"
    order_id: str
    customer: str
    items: list[Item]
    promo_code: str | None = None
    subtotal: float


class InventoryRejected(BaseModel):
    event_type: ClassVar[str] = "inventory.rejected"
    event_topic: ClassVar[str] = "inventory"
    order_id: str
    customer: str
    reason: str


class InventoryReleased(BaseModel):
    event_type: ClassVar[str] = "inventory.released"
    event_topic: ClassVar[str] = "inventory"
    order_id: str
    customer: str
    reason: str


class PaymentSucceeded(BaseModel):
    event_type: ClassVar[str] = "payment.succeeded"
    event_topic: ClassVar[str] = "payments"
    order_id: str
    customer: str
    amount: float
    discount: float = 0.0


class PaymentFailed(BaseModel):
    event_type: ClassVar[str] = "payment.failed"
    event_topic: ClassVar[str] = "payments"
    order_id: str
    customer: str
    items: list[Item]
    reason: str


class ShipmentCreated(BaseModel):
    event_type: ClassVar[str] = "shipment.created"
    event_topic: ClassVar[str] = "shipments"
    order_id: str
    customer: str
    carrier: str
    tracking: str


class CustomerNotified(BaseModel):
    event_type: ClassVar[str] = "customer.notified"
    event_topic: ClassVar[str] = "notifications"
    order_id: str
    customer: str
    status: str  # confirmed | cancelled
    message: str


# -- the stock ledger: one event per product of an order, on the topic "stock" ---------
# Inventory's stock is the fold of these (examples/shop/inventory.py); each is
# keyed by its product, so a product's movements stay in order.


class StockReserved(BaseModel):
    event_type: ClassVar[str] = "stock.reserved"
    event_topic: ClassVar[str] = "stock"
    order_id: str
    sku: str
    qty: int = Field(ge=1)
    total: float  # price x qty: what the sales_per_minute window sums


class StockReleased(BaseModel):
    event_type: ClassVar[str] = "stock.released"
    event_topic: ClassVar[str] = "stock"
    order_id: str
    sku: str
    qty: int = Field(ge=1)


class StockRefused(BaseModel):
    """The order wanted more of ``sku`` than was left: nothing moves, the decision is kept."""

    event_type: ClassVar[str] = "stock.refused"
    event_topic: ClassVar[str] = "stock"
    order_id: str
    sku: str
    qty: int = Field(ge=1)
    available: int
