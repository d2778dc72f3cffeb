"""Realistic order traffic for the dashboard tests: the shop's services, as events.

Each order is a chain of events across services and topics, all with the order id
as ``correlationid`` and ``partitionkey``, each one's ``causationid`` the event
that led to it. Every fourth order's payment fails and the order is cancelled.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from hubapi import publish, put_topic

TOPICS = {"orders": 3, "inventory": 1, "payments": 2, "shipping": 1}
DECLINED = "card declined: insufficient funds"


def order_id(i: int) -> str:
    return f"o-{1001 + i}"


def is_cancelled(i: int) -> bool:
    return i % 4 == 3


def order_chain(i: int, start: datetime) -> Iterator[tuple[str, dict[str, Any]]]:
    """(topic, event) of order ``i``, in the order the services would publish them."""
    oid = order_id(i)
    at = start + timedelta(seconds=2 * i)
    previous: dict[str, Any] | None = None

    def event(step: int, type: str, source: str, data: dict[str, Any]) -> dict[str, Any]:
        nonlocal previous
        ev: dict[str, Any] = {
            "id": f"{oid}-{step}",
            "type": type,
            "source": source,
            "subject": oid,
            "time": (at + timedelta(milliseconds=140 * step)).isoformat().replace("+00:00", "Z"),
            "partitionkey": oid,
            "correlationid": oid,
            "datacontenttype": "application/json",
            "data": {"order_id": oid, **data},
        }
        if previous is not None:
            ev["causationid"] = previous["id"]
        previous = ev
        return ev

    total = round(19.9 + 7.5 * (i % 7), 2)
    items = [{"sku": f"sku-{100 + i % 5}", "qty": 1 + i % 3}]
    yield "orders", event(0, "order.placed", "/services/checkout",
                          {"customer": f"c-{i % 6}", "items": items, "total": total})
    yield "inventory", event(1, "inventory.reserved", "/services/inventory", {"items": items})
    if is_cancelled(i):
        yield "payments", event(2, "payment.failed", "/services/payments",
                                {"amount": total, "reason": DECLINED})
        yield "inventory", event(3, "inventory.released", "/services/inventory", {"items": items})
        yield "orders", event(4, "order.cancelled", "/services/orders",
                              {"reason": f"payment failed: {DECLINED}"})
    else:
        yield "payments", event(2, "payment.succeeded", "/services/payments",
                                {"amount": total, "charge": f"ch-{i}"})
        yield "orders", event(3, "order.confirmed", "/services/orders", {})
        yield "shipping", event(4, "shipment.created", "/services/shipping",
                                {"carrier": "dhl", "tracking": f"TRK{9000 + i}"})


async def load_orders(
    http: aiohttp.ClientSession, base: str, orders: int = 12, first: int = 0
) -> list[tuple[str, dict[str, Any]]]:
    """Create the shop's topics and publish ``orders`` orders; the (topic, event) sent."""
    for topic, partitions in TOPICS.items():
        await put_topic(http, base, topic, partitions=partitions)
    start = datetime.now(UTC) - timedelta(minutes=5)
    sent = [pair for i in range(first, first + orders) for pair in order_chain(i, start)]
    for topic in TOPICS:
        events = [ev for t, ev in sent if t == topic]
        if events:
            await publish(http, base, topic, *events)
    return sent
