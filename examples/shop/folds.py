"""What the shop's views compute: plain functions of ``(current value, event)``.

Each is a fold (``@app.view``): given a key's value so far (None at first) and
its next event, it answers the new value. They see no clock and no hub, so a
replay of the same events gives the same values.

- :func:`stock`: a product's stock, from inventory's ledger (topic ``stock``).
- :func:`reservation`: what an order holds, from the same ledger.
- :func:`order_view`: an order as the events of its journey have made it so far.
"""

from __future__ import annotations

from typing import Any

from examples.shop.catalog import PRODUCTS
from examples.shop.events import StockRefused, StockReleased, StockReserved
from tidings.streams import EventView

STOCK_TOPIC = StockReserved.event_topic  # inventory's ledger

# The events of an order's journey, the topics they come on, and the state each
# leads to; a state only moves forward (rank), so events may arrive in any order.
TOPICS = ("orders", "inventory", "payments", "shipments", "notifications")
STATES: dict[str, tuple[str, int]] = {
    "order.placed": ("placed", 0),
    "inventory.reserved": ("reserved", 1),
    "payment.succeeded": ("paid", 2),
    "payment.failed": ("payment failed", 2),
    "shipment.created": ("confirmed", 3),
    "inventory.rejected": ("cancelled", 3),
    "inventory.released": ("cancelled", 3),
}
FINAL = frozenset({"confirmed", "cancelled"})
RANKS = {"placed": 0} | {status: rank for status, rank in STATES.values()}
DETAILS = ("customer", "items", "promo_code", "subtotal", "amount", "discount",
           "reason", "tracking", "carrier", "message")  # fmt: skip


def initial_stock(sku: str) -> int:
    """What the shop starts with: the catalog's stock (0 for a product it does not list)."""
    product = PRODUCTS.get(sku)
    return 0 if product is None else product.stock


def sku_of(event: EventView) -> str:
    return str(event.data["sku"])


def order_of(event: EventView) -> str:
    return str(event.data["order_id"])


def stock(current: int | None, event: EventView) -> int:
    """A product's stock: the catalog's, less what is reserved, plus what is released."""
    level = initial_stock(sku_of(event)) if current is None else current
    if event.type == StockReserved.event_type:
        return level - int(event.data["qty"])
    if event.type == StockReleased.event_type:
        return level + int(event.data["qty"])
    return level


def no_hold() -> dict[str, Any]:
    return {"held": {}, "released": {}, "refused": []}


def reservation(current: dict[str, Any] | None, event: EventView) -> dict[str, Any]:
    """An order's hold: ``held`` (sku -> qty reserved now), ``released`` (given back),
    ``refused`` (the products it was short of: the order was rejected)."""
    hold = current or no_hold()
    hold = {"held": dict(hold["held"]), "released": dict(hold["released"]),
            "refused": list(hold["refused"])}  # fmt: skip
    sku, qty = sku_of(event), int(event.data["qty"])
    if event.type == StockReserved.event_type:
        hold["held"][sku] = qty
    elif event.type == StockReleased.event_type:
        hold["held"].pop(sku, None)
        hold["released"][sku] = qty
    elif event.type == StockRefused.event_type and sku not in hold["refused"]:
        hold["refused"].append(sku)
    return hold


def order_view(current: dict[str, Any] | None, event: EventView) -> dict[str, Any]:
    """An order as its events have made it so far: the answer of ``GET /orders/{id}``.

    ``status`` (a state only moves forward, so events may come in any order),
    ``final``, the details the events carry, and the ``history`` of the events, by time.
    """
    data = event.data if isinstance(event.data, dict) else {}
    order: dict[str, Any] = dict(current) if current else {
        "order_id": data["order_id"], "status": "placed", "final": False, "history": [],
    }  # fmt: skip
    for key in DETAILS:
        if key in data:
            order[key] = data[key]
    step = {"type": event.type, "time": event.time, "id": event.id}
    order["history"] = sorted([*order["history"], step], key=lambda h: (h["time"] or "", h["id"]))
    state = STATES.get(event.type)
    if state is not None and state[1] >= RANKS[order["status"]] and not order["final"]:
        order["status"] = state[0]
        order["final"] = state[0] in FINAL
    return order


def sale_total(event: EventView) -> float:
    """What a reservation sold: its ``total`` (price x qty)."""
    return float(event.data["total"])
