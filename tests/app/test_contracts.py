"""Apps register the schemas of what they emit and read, and do not start when they break."""


from typing import ClassVar

import pytest
from pydantic import BaseModel

from tidings import App, Conflict
from tidings.app.contracts import contracts
from tidings.testing import TestHub


class Placed(BaseModel):
    event_type: ClassVar[str] = "order.placed"
    order_id: str
    total: float


class PlacedAsText(BaseModel):
    event_type: ClassVar[str] = "order.placed"
    order_id: str
    total: str


class Billed(BaseModel):
    event_type: ClassVar[str] = "order.billed"
    order_id: str


def producer(name: str, model: type[BaseModel]) -> App:
    app = App(name)

    @app.on("carts", types=["cart.checked_out"])
    async def place(event: dict[str, object]) -> model:  # type: ignore[valid-type]
        raise NotImplementedError

    return app


def billing() -> App:
    app = App("billing")

    @app.on("orders")
    async def bill(order: Placed) -> Billed:
        return Billed(order_id=order.order_id)

    return app


def test_contracts_of_an_app() -> None:
    found = {(c.etype, c.role, c.model) for c in contracts(billing())}
    assert found == {("order.placed", "consumer", "Placed"), ("order.billed", "producer", "Billed")}
    [c] = [c for c in contracts(billing()) if c.role == "consumer"]
    assert c.schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert c.schema["required"] == ["order_id", "total"]


async def test_apps_register_and_a_breaking_one_does_not_start() -> None:
    async with TestHub(producer("orders", Placed), billing()) as hub:
        assert hub.core is not None
        registry = hub.core.schemas
        placed = registry.get("order.placed")
        assert placed.producers == {"orders": 1} and set(placed.consumers) == {"billing"}
        assert registry.get("order.billed").producers == {"billing": 1}
        changed = producer("orders", PlacedAsText)
        with pytest.raises(Conflict) as caught:
            await changed._start_on(hub._t())
        detail = caught.value.detail
        assert "app 'orders' cannot start" in detail and "PlacedAsText" in detail
        assert "$.total" in detail and "billing" in detail
        assert caught.value.fields["consumers"][0]["name"] == "billing"
        assert registry.get("order.placed").latest.number == 1  # type: ignore[union-attr]
        assert not changed.running


async def test_an_app_may_opt_out() -> None:
    app = App("quiet", register_schemas=False)

    @app.on("orders")
    async def read(order: Placed) -> None:
        return None

    async with TestHub(app) as hub:
        assert hub.core is not None and "order.placed" not in hub.core.schemas.types
