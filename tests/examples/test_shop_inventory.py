"""Inventory's decisions when an order comes again after a crash, in memory (TestHub).

A crash can leave any prefix of an order's ledger events written and the
decision unpublished; the order is then delivered again. Each test writes such a
prefix to the ledger first (as the killed process would have), then delivers the
order, and checks that the decision is the one the ledger already holds, with
nothing reserved twice and nothing left held by a rejected order.
"""

from __future__ import annotations

from typing import Any

import pytest

from examples.shop import inventory
from examples.shop.catalog import PRODUCTS, subtotal
from examples.shop.folds import STOCK_TOPIC
from tidings import Event
from tidings.testing import TestHub


def placed(order_id: str, *items: tuple[str, int]) -> dict[str, Any]:
    lines = [{"sku": sku, "qty": qty} for sku, qty in items]
    return {"order_id": order_id, "customer": "c", "items": lines, "subtotal": subtotal(lines)}


async def left_by_a_crash(hub: TestHub, kind: str, order_id: str, sku: str, qty: int) -> None:
    data: dict[str, Any] = {"order_id": order_id, "sku": sku, "qty": qty}
    if kind == "reserved":
        data["total"] = PRODUCTS[sku].price * qty
    if kind == "refused":
        data["available"] = 0
    await hub.publish(STOCK_TOPIC, f"stock.{kind}", data, key=sku, id=f"{order_id}.{sku}.{kind}")


async def decide(hub: TestHub, order: dict[str, Any]) -> tuple[list[Event], list[Event]]:
    """Deliver ``order``; the inventory decisions about it, and its ledger events."""
    await hub.publish("orders", "order.placed", order, key=order["order_id"])
    await hub.drain()
    oid = order["order_id"]
    decisions = [e for e in await hub.events("inventory") if e.data["order_id"] == oid]
    moves = [e for e in await hub.events(STOCK_TOPIC) if e.data["order_id"] == oid]
    return decisions, moves


async def level(sku: str) -> int:
    got = await inventory.app.view_get("stock", sku, min_position="latest")
    return PRODUCTS[sku].stock if got is None else int(got["value"])


async def test_a_partial_reservation_is_completed_not_repeated() -> None:
    async with TestHub(inventory.app) as hub:
        await left_by_a_crash(hub, "reserved", "o-1", "tea", 2)
        decisions, moves = await decide(hub, placed("o-1", ("tea", 2), ("mug", 1)))
        assert [e.type for e in decisions] == ["inventory.reserved"]
        assert sorted((e.type, e.data["sku"]) for e in moves) == [
            ("stock.reserved", "mug"), ("stock.reserved", "tea"),
        ]  # fmt: skip
        assert await level("tea") == PRODUCTS["tea"].stock - 2
        assert await level("mug") == PRODUCTS["mug"].stock - 1


async def test_a_whole_reservation_is_answered_again_and_not_repeated() -> None:
    async with TestHub(inventory.app) as hub:
        await left_by_a_crash(hub, "reserved", "o-2", "kettle", 3)  # the last three
        decisions, moves = await decide(hub, placed("o-2", ("kettle", 3)))
        assert [e.type for e in decisions] == ["inventory.reserved"]
        assert [e.type for e in moves] == ["stock.reserved"]
        assert await level("kettle") == 0


async def test_a_refusal_stays_a_refusal_and_gives_back_what_was_held() -> None:
    async with TestHub(inventory.app) as hub:
        # the crashed attempt reserved tea, found the kettles short, wrote the refusal
        # and died before giving the tea back
        await left_by_a_crash(hub, "reserved", "o-3", "tea", 1)
        await left_by_a_crash(hub, "refused", "o-3", "kettle", 5)
        decisions, moves = await decide(hub, placed("o-3", ("tea", 1), ("kettle", 5)))
        assert [e.type for e in decisions] == ["inventory.rejected"]
        assert "kettle" in decisions[0].data["reason"]
        assert [(e.type, e.data["sku"]) for e in moves][-1] == ("stock.released", "tea")
        assert await level("tea") == PRODUCTS["tea"].stock


async def test_short_stock_is_refused_before_anything_is_given_back() -> None:
    async with TestHub(inventory.app) as hub:
        await left_by_a_crash(hub, "reserved", "o-4", "tea", 1)  # a partial hold
        decisions, moves = await decide(hub, placed("o-4", ("tea", 1), ("kettle", 4)))
        assert [e.type for e in decisions] == ["inventory.rejected"]
        assert [(e.type, e.data["sku"]) for e in moves] == [
            ("stock.reserved", "tea"), ("stock.refused", "kettle"), ("stock.released", "tea"),
        ]  # fmt: skip
        assert await level("tea") == PRODUCTS["tea"].stock
        assert await level("kettle") == PRODUCTS["kettle"].stock


async def test_a_payment_failed_twice_releases_once() -> None:
    async with TestHub(inventory.app) as hub:
        decisions, _ = await decide(hub, placed("o-5", ("pot", 2)))
        assert [e.type for e in decisions] == ["inventory.reserved"]
        failed = {"order_id": "o-5", "customer": "c", "items": [{"sku": "pot", "qty": 2}],
                  "reason": "card declined"}  # fmt: skip
        for n in range(2):  # delivered twice, as after a crash before its ack
            await hub.publish("payments", "payment.failed", failed, key="o-5", id=f"pf-{n}")
            await hub.drain()
        moves = [e.type for e in await hub.events(STOCK_TOPIC)]
        assert moves == ["stock.reserved", "stock.released"]
        assert await level("pot") == PRODUCTS["pot"].stock


async def test_a_ledger_event_it_did_not_write_is_decided_on() -> None:
    # Inventory decides from its copy of the views; an event another process wrote
    # to the ledger after the copy was filled must count all the same.
    async with TestHub(inventory.app) as hub:
        decisions, _ = await decide(hub, placed("o-6", ("kettle", 1)))  # fills the copy
        assert [e.type for e in decisions] == ["inventory.reserved"]
        await left_by_a_crash(hub, "reserved", "o-7", "kettle", 2)  # the last two
        await hub.drain()
        decisions, moves = await decide(hub, placed("o-8", ("kettle", 1)))
        assert [e.type for e in decisions] == ["inventory.rejected"]
        assert [e.type for e in moves] == ["stock.refused"]
        assert await level("kettle") == 0


def count_view_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The (view, key) of every ``view_get`` the inventory app makes from now on."""
    reads: list[tuple[str, str]] = []
    real = inventory.app.view_get

    async def counting(name: str, key: str, **kw: Any) -> dict[str, Any] | None:
        reads.append((name, key))
        return await real(name, key, **kw)

    monkeypatch.setattr(inventory.app, "view_get", counting)
    return reads


async def test_an_order_placed_after_the_copy_was_filled_is_not_read_from_the_view(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No other process can have written a hold for it: one read per order saved. An
    # order placed before (as one a killed process left) is read, as above.
    reads = count_view_reads(monkeypatch)
    async with TestHub(inventory.app) as hub:
        await left_by_a_crash(hub, "reserved", "o-9", "tea", 1)
        decisions, _ = await decide(hub, placed("o-9", ("tea", 1)))  # fills the copy
        assert [e.type for e in decisions] == ["inventory.reserved"]
        decisions, moves = await decide(hub, placed("o-10", ("tea", 2)))
        assert [e.type for e in decisions] == ["inventory.reserved"]
        assert [e.type for e in moves] == ["stock.reserved"]
        assert ("reservations", "o-9") in reads
        assert ("reservations", "o-10") not in reads
        assert await level("tea") == PRODUCTS["tea"].stock - 3


async def test_a_redelivered_order_is_read_from_the_view_even_when_placed_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two processes may overlap in a rolling restart: an order placed after this
    # one's copy began may hold stock from the other, which died before its ack. A
    # first delivery is decided from the copy; a redelivery reads the view.
    reads = count_view_reads(monkeypatch)
    async with TestHub(inventory.app) as hub:
        decisions, _ = await decide(hub, placed("o-12", ("tea", 1)))  # fills the copy
        assert [e.type for e in decisions] == ["inventory.reserved"]
        partition, fresh = next(iter(inventory._book().fresh_from.items()))
        await left_by_a_crash(hub, "reserved", "o-13", "tea", 1)  # the other process's
        await hub.drain()
        assert await inventory._book().prefetch("o-13", partition, fresh, 1) is not None
        assert ("reservations", "o-13") not in reads
        early = await inventory._book().prefetch("o-13", partition, fresh, 2)
        assert ("reservations", "o-13") in reads
        assert early is not None and early[1] is not None  # its hold, found
