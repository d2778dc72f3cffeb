"""The shop's services in memory, under TestHub: every order reaches a final state, and
the stock view is what inventory's ledger says."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

from examples.shop import inventory, notifications, payments, shipping
from examples.shop.catalog import PRODUCTS, subtotal
from examples.shop.folds import STATES, STOCK_TOPIC
from tidings import TopicNotFound
from tidings.testing import TestHub


def order(i: int, sku: str = "tea", qty: int = 1) -> dict[str, Any]:
    items = [{"sku": sku, "qty": qty}]
    return {
        "order_id": f"o-{i}",
        "customer": f"c-{i % 7}",
        "items": items,
        "promo_code": "WELCOME10" if i % 3 == 0 else None,
        "subtotal": subtotal(items),
    }


async def test_every_order_reaches_a_final_state_in_memory() -> None:
    apps = (inventory.app, payments.app, shipping.app, notifications.app)
    async with TestHub(*apps) as hub:
        for i in range(60):
            data = order(i, sku="kettle" if i % 10 == 9 else "tea")
            await hub.publish(
                "orders", "order.placed", data, key=data["order_id"],
                extensions={"correlationid": data["order_id"]},
            )  # fmt: skip
        await hub.drain()
        notified = await hub.events("notifications")
        by_order = {e.data["order_id"]: e for e in notified}
        assert sorted(by_order) == sorted(f"o-{i}" for i in range(60))
        assert len(notified) == 60  # one notification each, no more
        statuses = Counter(e.data["status"] for e in notified)
        assert statuses["confirmed"] > 30 and statuses["cancelled"] > 0
        # the trace: every event of an order carries its correlation id, and each
        # was caused by the one before it
        services = {"inventory": "inventory", "payments": "payments",
                    "shipments": "shipping", "notifications": "notifications"}  # fmt: skip
        for topic, service in services.items():
            for e in await hub.events(topic):
                assert e.extensions["correlationid"] == e.data["order_id"]
                assert e.extensions.get("causationid")
                assert e.source == f"/apps/{service}"  # the service that emitted it
        # the kettle (3 in stock) rejects some orders; declined payments release stock
        rejected = [e for e in await hub.events("inventory") if e.type == "inventory.rejected"]
        assert rejected and all("out of stock" in e.data["reason"] for e in rejected)
        released = [e for e in await hub.events("inventory") if e.type == "inventory.released"]
        failed = [e for e in await hub.events("payments") if e.type == "payment.failed"]
        assert len(released) == len(failed) > 0
        # provider timeouts were retried, and nothing was dead-lettered
        for dlq in ("orders.dlq", "inventory.dlq", "payments.dlq", "shipments.dlq"):
            with contextlib.suppress(TopicNotFound):
                assert await hub.events(dlq) == []
        assert set(STATES) >= {e.type for e in await hub.events("inventory")}
        # the stock view is the fold of inventory's ledger, and nothing was oversold
        levels = {sku: p.stock for sku, p in PRODUCTS.items()}
        for e in await hub.events(STOCK_TOPIC):
            sign = {"stock.reserved": -1, "stock.released": 1}.get(e.type, 0)
            levels[e.data["sku"]] += sign * e.data["qty"]
        for sku, level in levels.items():
            got = await inventory.app.view_get("stock", sku, min_position="latest")
            assert (PRODUCTS[sku].stock if got is None else got["value"]) == level, sku
            assert level >= 0
        assert levels["kettle"] < PRODUCTS["kettle"].stock
