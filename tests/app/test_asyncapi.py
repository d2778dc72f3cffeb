"""The AsyncAPI 3.0 documents: the apps' (``tidings asyncapi``) and the hub's
(``/asyncapi.json``), both valid against the official AsyncAPI 3.0.0 JSON Schema."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import pytest
from handlerhubs import suffix
from pydantic import BaseModel
from shop import Shop

from tidings import App, AsyncClient
from tidings.app.asyncapi import asyncapi_document

SCHEMA = Path(__file__).parent.parent / "data" / "asyncapi-3.0.0.schema.json"


@cache
def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def assert_valid(doc: dict[str, Any]) -> None:
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def test_the_validator_refuses_a_broken_document() -> None:
    with pytest.raises(AssertionError):
        assert_valid({"asyncapi": "3.0.0", "info": {"title": "x"}, "channels": {"c": 5}})


class Address(BaseModel):
    street: str
    city: str


class Shipped(BaseModel):
    event_type: ClassVar[str] = "shipment.created"
    event_topic: ClassVar[str] = "shipments"
    order_id: str
    to: Address


def test_the_apps_document_has_channels_operations_and_model_schemas() -> None:
    apps = Shop("doc").apps()
    extra = App("dispatch")

    @extra.on("orders-doc", types=["payment.succeeded"], group="dispatch")
    async def dispatch(data: dict[str, Any]) -> Shipped | None:
        """Send the parcel."""
        return None

    doc = asyncapi_document([*apps, extra], title="shop")
    assert_valid(doc)
    assert doc["asyncapi"] == "3.0.0" and doc["info"]["title"] == "shop"
    assert set(doc["channels"]) == {"orders-doc", "shipments-doc", "shipments"}
    orders = doc["channels"]["orders-doc"]
    assert orders["address"] == "orders-doc"
    assert set(orders["messages"]) == {"order.placed", "payment.succeeded"}
    ops = doc["operations"]
    assert ops["payments-doc.charge"]["action"] == "receive"
    assert ops["payments-doc.charge"]["messages"] == [
        {"$ref": "#/channels/orders-doc/messages/order.placed"}
    ]
    # What charge returns (PaymentSucceeded, an event_type model) is a send operation.
    assert ops["payments-doc.charge.emits.orders-doc"]["action"] == "send"
    assert ops["dispatch.dispatch.emits.shipments"]["channel"] == {"$ref": "#/channels/shipments"}
    assert ops["dispatch.dispatch"]["summary"] == "Send the parcel."
    messages = doc["components"]["messages"]
    assert messages["order.placed"]["payload"] == {"$ref": "#/components/schemas/OrderPlaced"}
    schemas = doc["components"]["schemas"]
    assert schemas["OrderPlaced"]["required"] == ["order_id", "total"]
    assert schemas["Shipped"]["properties"]["to"] == {"$ref": "#/components/schemas/Address"}
    assert schemas["Address"]["required"] == ["street", "city"]


def test_tidings_asyncapi_prints_the_document(tmp_path: Path) -> None:
    (tmp_path / "docapp.py").write_text(
        textwrap.dedent(
            """
            from typing import Any
            from tidings import App
            app = App("docs")

            @app.on("orders", types=["order.*"])
            async def handle(data: dict[str, Any]) -> None: ...
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "tidings", "asyncapi", "docapp:app", "--title", "Docs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert_valid(doc)
    assert doc["info"]["title"] == "Docs"
    assert doc["channels"]["orders"]["messages"] == {
        "order._": {"$ref": "#/components/messages/order._"}
    }
    assert doc["components"]["messages"]["order._"]["name"] == "order.*"
    assert doc["components"]["messages"]["order._"]["payload"]["type"] == "object"


async def test_the_hub_serves_the_catalogue_of_what_it_has_seen(hub_url: str) -> None:
    topic = f"cat-{suffix()}"
    async with AsyncClient(hub_url) as hub:
        await hub.publish(topic, "order.placed", {"n": 1})
        await hub.publish_many(
            topic, [{"type": "order.paid"}, {"type": "order.placed"}, {"type": "order.shipped"}]
        )
    with urllib.request.urlopen(hub_url + "/asyncapi.json", timeout=10) as answer:
        doc = json.loads(answer.read())
    assert_valid(doc)
    channel = doc["channels"][topic]
    assert channel["address"] == topic
    assert sorted(channel["messages"]) == ["order.paid", "order.placed", "order.shipped"]
    assert doc["components"]["messages"]["order.paid"]["name"] == "order.paid"
