"""The orders API: places orders and tells their state, built from events alone.

``POST /orders`` publishes ``order.placed`` and answers 202 at once; the
services do the rest. ``GET /orders/{id}`` answers the order as the events of
its journey have made it so far. Run it with
``uvicorn examples.shop.orders:app --port 8710``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from examples.shop.catalog import PRODUCTS, PROMO_CODES, subtotal
from examples.shop.events import OrderPlaced
from examples.shop.settings import HUB
from tidings import AsyncClient, Record, TidingsError

logger = logging.getLogger("shop.orders")
STATIC = Path(__file__).parent / "static"

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

# The events of an order's journey, the topics they come on, and the state each
# leads to; a state only moves forward (rank), so events may arrive in any order.
TOPICS = ("orders", "inventory", "payments", "shipments", "notifications")
STOREFRONT = ("catalog", "cart", "likes", "promos")  # published by the page itself
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


class ItemRequest(BaseModel):
    sku: str
    qty: int = Field(ge=1, le=99)

    @field_validator("sku")
    @classmethod
    def known(cls, sku: str) -> str:
        if sku not in PRODUCTS:
            raise ValueError(f"unknown product {sku!r}")
        return sku


class OrderRequest(BaseModel):
    customer: str = Field(min_length=1, max_length=100)
    items: list[ItemRequest] = Field(min_length=1, max_length=20)
    promo_code: str | None = None

    @field_validator("promo_code")
    @classmethod
    def valid_code(cls, code: str | None) -> str | None:
        if code is not None and code not in PROMO_CODES:
            raise ValueError(f"unknown promo code {code!r}")
        return code


@dataclass
class Order:
    order_id: str
    status: str = "placed"
    rank: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, record: Record) -> None:
        event = record.event
        self.history.append({"type": event.type, "time": event.time, "id": event.id})
        data = event.data if isinstance(event.data, dict) else {}
        for key in ("customer", "items", "promo_code", "subtotal", "amount", "discount",
                    "reason", "tracking", "carrier", "message"):  # fmt: skip
            if key in data:
                self.details[key] = data[key]
        state = STATES.get(event.type)
        if state is not None and state[1] >= self.rank and self.status not in FINAL:
            self.status, self.rank = state

    def view(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "status": self.status,
            "final": self.status in FINAL,
            **self.details,
            "history": sorted(self.history, key=lambda h: h["time"] or ""),
        }


class Orders:
    """The projection: every order, from the events of the shop's topics."""

    def __init__(self, hub_url: str = HUB) -> None:
        self.hub_url = hub_url
        self.orders: dict[str, Order] = {}
        self.hub: AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.hub = AsyncClient(self.hub_url)
        for topic in TOPICS + STOREFRONT:
            await self.hub.create_topic(topic)
        # The orders API emits order.placed: say so to the schema registry, so a change
        # to OrderPlaced that the services reading it cannot take is refused here.
        await self.hub.put_schema(
            OrderPlaced.event_type,
            {"$schema": DRAFT_2020_12, **OrderPlaced.model_json_schema(mode="serialization")},
            producer="orders",
        )
        for topic in TOPICS:
            self._tasks.append(asyncio.create_task(self._follow(topic)))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.hub is not None:
            await self.hub.close()

    async def _follow(self, topic: str) -> None:
        assert self.hub is not None
        start: str = "earliest"
        while True:
            sub = self.hub.subscribe(topic, start=start)
            try:
                async for record in sub:
                    self.apply(record)
            except TidingsError as exc:
                logger.warning("following %s: %s; again in 1 s", topic, exc.detail)
                await asyncio.sleep(1)
            start = sub.position or start  # on from where it was: no event twice

    def apply(self, record: Record) -> None:
        data = record.event.data
        order_id = data.get("order_id") if isinstance(data, dict) else None
        if isinstance(order_id, str):
            self.orders.setdefault(order_id, Order(order_id)).apply(record)

    async def place(self, request: OrderRequest) -> str:
        assert self.hub is not None
        order_id = "o-" + uuid.uuid4().hex[:16]
        items = [i.model_dump() for i in request.items]
        await self.hub.publish(
            "orders",
            "order.placed",
            {
                "order_id": order_id,
                "customer": request.customer,
                "items": items,
                "promo_code": request.promo_code,
                "subtotal": subtotal(items),
            },
            key=order_id,  # one order's events stay in order, on one partition
            extensions={"correlationid": order_id},  # the trace of this order
        )
        # Known at once, before the event comes back on the subscription.
        self.orders.setdefault(order_id, Order(order_id, details={"customer": request.customer}))
        return order_id


def create_app(hub_url: str = HUB) -> Starlette:
    orders = Orders(hub_url)

    async def place(request: Request) -> Response:
        try:
            body = await request.json()
            order = OrderRequest.model_validate(body)
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors()
            ]
            return JSONResponse({"detail": "invalid order", "errors": errors}, 422)
        except ValueError:
            return JSONResponse({"detail": "the body must be a JSON object"}, 400)
        try:
            order_id = await orders.place(order)
        except TidingsError as exc:
            return JSONResponse({"detail": f"the hub did not take the order: {exc.detail}"}, 503)
        return JSONResponse(
            {"order_id": order_id, "status": "accepted"},
            202,
            headers={"location": f"/orders/{order_id}"},
        )

    async def get(request: Request) -> Response:
        order = orders.orders.get(request.path_params["order_id"])
        if order is None:
            return JSONResponse({"detail": "no such order (yet)"}, 404)
        return JSONResponse(order.view())

    async def products(request: Request) -> Response:
        return JSONResponse(
            [{"sku": p.sku, "name": p.name, "price": p.price} for p in PRODUCTS.values()]
        )

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def config(request: Request) -> Response:
        # The page talks to the hub itself: its WebSocket and /static/tidings.js.
        return JSONResponse({"hub": hub_url})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "orders": len(orders.orders)})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await orders.start()
        try:
            yield
        finally:
            await orders.close()

    app = Starlette(
        routes=[
            Route("/orders", place, methods=["POST"]),
            Route("/orders/{order_id}", get, methods=["GET"]),
            Route("/products", products, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/", index, methods=["GET"]),
            Route("/config", config, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC)),
        ],
        lifespan=lifespan,
    )
    app.state.orders = orders
    return app


app = create_app()
