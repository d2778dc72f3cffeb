"""An App on a hub with tokens: the token that runs it needs ``manage`` on its topics.

An App makes its consumer groups when it starts (``PUT`` of each group), which is
managing them; consuming needs ``subscribe``, its results and its dead letters
``publish`` (see ``TOKENS`` in ``sdkhub``).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from tidings import App, AsyncClient, Forbidden

pytestmark = pytest.mark.timeout(60)


class Placed(BaseModel):
    event_type: ClassVar[str] = "order.placed"
    order_id: str


async def test_an_app_runs_on_a_secured_hub_with_a_token_that_may_manage_its_groups(
    secured_hub_url: str, topic: str
) -> None:
    orders = f"orders-{topic}"
    app = App(f"payments-{topic}", hub=secured_hub_url, token="payments-secret", poll_wait=0.5)
    charged: list[str] = []

    @app.on(orders, types="order.placed")
    async def charge(data: dict[str, Any]) -> dict[str, Any]:
        charged.append(data["order_id"])
        return {"type": "payment.succeeded", "data": {"order_id": data["order_id"]}}

    await app.start()
    try:
        async with AsyncClient(secured_hub_url, token="shop-secret") as shop:
            await shop.publish(orders, "order.placed", data={"order_id": "o-1"}, key="o-1")
            for _ in range(200):
                records, _ = await shop.read(orders, start="earliest")
                if len(records) == 2:
                    break
                await asyncio.sleep(0.05)
        assert [r.event.type for r in records] == ["order.placed", "payment.succeeded"]
        assert charged == ["o-1"]
    finally:
        await app.stop()


async def test_an_app_whose_token_may_not_manage_groups_is_refused_at_start(
    secured_hub_url: str, topic: str
) -> None:
    app = App(f"payments-{topic}", hub=secured_hub_url, token="shop-secret", poll_wait=0.5)

    @app.on(f"orders-{topic}", types="order.placed")
    async def charge(data: dict[str, Any]) -> None:
        pass

    with pytest.raises(Forbidden, match="may not manage groups on topic"):
        await app.start()
    assert not app.running


async def test_an_app_whose_token_may_not_register_schemas_starts_and_says_so(
    secured_hub_url: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(f"payments-{topic}", hub=secured_hub_url, token="payments-secret", poll_wait=0.5)

    @app.on(f"orders-{topic}")
    async def charge(order: Placed) -> None:
        pass

    with caplog.at_level("WARNING", logger="tidings.app"):
        await app.start()
    try:
        assert app.running
        assert any(
            "did not register its consumer schema of order.placed" in r.getMessage()
            and "schemas scope" in r.getMessage()
            for r in caplog.records
        ), caplog.records
    finally:
        await app.stop()
