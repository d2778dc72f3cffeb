"""The orders API: places orders and tells their state, built from events alone.

``POST /orders`` publishes ``order.placed`` and answers 202 at once, with the
event's position; the services do the rest. ``GET /orders/{id}`` answers the
order as the events of its journey have made it so far: the ``orders`` view,
which this process folds from the five topics and the hub serves
(``?min_position=`` the position ``POST`` answered waits until the view has the
order). The same process computes ``sales_per_minute``, the window the shop page
charts. Run it with ``uvicorn examples.shop.orders:app --port 8710``.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from examples.shop.catalog import PRODUCTS, PROMO_CODES, subtotal
from examples.shop.events import OrderPlaced, StockReserved
from examples.shop.folds import STOCK_TOPIC, TOPICS, order_of, order_view, sale_total, sku_of
from examples.shop.settings import HUB
from tidings import App, AsyncClient, TidingsError
from tidings.streams import Sum, Tumbling

logger = logging.getLogger("shop.orders")
STATIC = Path(__file__).parent / "static"

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

STOREFRONT = ("catalog", "cart", "likes", "promos")  # published by the page itself


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


def make_views(hub_url: str = HUB) -> App:
    """The orders API's views, processed in its process and served by the hub:
    ``orders`` (each order, folded from the topics of its journey) and
    ``sales_per_minute`` (the value of stock reserved per product and minute)."""
    views = App("orders-api", hub=hub_url, register_schemas=False)
    views.view("orders", topics=list(TOPICS), key=order_of)(order_view)
    views.window(
        "sales_per_minute", topic=STOCK_TOPIC, types=[StockReserved.event_type],
        window=Tumbling("1m", grace="10s"), key=sku_of, agg=Sum(sale_total),
        emit="updates", repartition=True,  # keyed by SKU, not by the order's partitionkey
    )  # fmt: skip
    return views


class Orders:
    """Places orders, and reads them from the ``orders`` view."""

    def __init__(self, hub_url: str = HUB) -> None:
        self.hub_url = hub_url
        self.hub: AsyncClient | None = None
        self.views = make_views(hub_url)

    async def start(self) -> None:
        self.hub = AsyncClient(self.hub_url)
        for topic in (*TOPICS, STOCK_TOPIC, *STOREFRONT):
            await self.hub.create_topic(topic)
        # The orders API emits order.placed: say so to the schema registry, so a change
        # to OrderPlaced that the services reading it cannot take is refused here.
        await self.hub.put_schema(
            OrderPlaced.event_type,
            {"$schema": DRAFT_2020_12, **OrderPlaced.model_json_schema(mode="serialization")},
            producer="orders",
        )
        await self.views.start()

    async def close(self) -> None:
        await self.views.stop()
        if self.hub is not None:
            await self.hub.close()

    async def get(self, order_id: str, min_position: str | None = None) -> dict[str, Any] | None:
        """The order from the ``orders`` view; with ``min_position`` (a position on
        ``orders``, as ``place`` answers it) once the view reflects that event."""
        got = await self.views.view_get(
            "orders", order_id, min_position=min_position,
            topic="orders" if min_position is not None else None,
        )  # fmt: skip
        if got is None:
            return None
        value: dict[str, Any] = got["value"]
        return value

    async def place(self, request: OrderRequest) -> tuple[str, str]:
        """Publish the order; its id, and the position of its ``order.placed``."""
        assert self.hub is not None
        order_id = "o-" + uuid.uuid4().hex[:16]
        items = [i.model_dump() for i in request.items]
        published = await self.hub.publish(
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
        return order_id, f"{published['partition']}:{published['offset']}"


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
            order_id, position = await orders.place(order)
        except TidingsError as exc:
            return JSONResponse({"detail": f"the hub did not take the order: {exc.detail}"}, 503)
        return JSONResponse(
            {"order_id": order_id, "status": "accepted", "position": position},
            202,
            headers={"location": f"/orders/{order_id}?min_position={position}"},
        )

    async def get(request: Request) -> Response:
        try:
            order = await orders.get(
                request.path_params["order_id"], request.query_params.get("min_position")
            )
        except TidingsError as exc:
            return JSONResponse({"detail": exc.detail}, exc.status)
        if order is None:
            return JSONResponse({"detail": "no such order (yet)"}, 404)
        return JSONResponse(order)

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
        return JSONResponse({"status": "ok"})

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
