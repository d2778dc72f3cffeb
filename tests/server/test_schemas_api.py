"""The schema registry over HTTP, against real ``tidings serve`` processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest
from hubapi import BATCH, STRUCTURED, expect, expect_problem, publish, put_topic, read_all, unique
from hubproc import HubFactory, HubProcess

Session = aiohttp.ClientSession

@pytest.fixture(scope="module")
def hub(backend_hub: HubProcess) -> HubProcess:
    """This module's hub, on the embedded log and on NATS in turn (``backend_hub``)."""
    return backend_hub



def order(**props: Any) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"order_id": {"type": "string"}, "total": {"type": "number"}, **props},
        "required": ["order_id"],
    }


async def put_schema(
    http: Session, base: str, etype: str, schema: Any, status: int, **more: Any
) -> dict[str, Any]:
    async with http.put(f"{base}/v1/schemas/{etype}", json={"schema": schema, **more}) as resp:
        if status >= 400:
            return await expect_problem(resp, status)
        return await expect(resp, status)  # type: ignore[no-any-return]


async def test_versions_are_added_idempotently_and_read_back(
    hub: HubProcess, http: Session
) -> None:
    etype, base = unique("order.placed"), hub.base_url
    first = await put_schema(http, base, etype, order(), 201)
    assert first == {
        "type": etype,
        "version": 1,
        "uri": f"/v1/schemas/{etype}/versions/1",
        "created": True,
    }
    # The same schema again (keys in another order) is the same version.
    again = json.loads(json.dumps(order(), sort_keys=True))
    assert (await put_schema(http, base, etype, again, 200))["version"] == 1
    # A compatible change (a property with any value) is version 2.
    v2 = await put_schema(http, base, etype, order(note={}), 201, producer="orders")
    assert v2["version"] == 2
    async with http.get(f"{base}/v1/schemas/{etype}") as resp:
        info = await expect(resp, 200)
    assert info["compatibility"] == "backward" and info["latest"] == 2
    assert [v["version"] for v in info["versions"]] == [1, 2]
    assert {"name": "orders", "via": "app", "version": 2} in info["producers"]
    async with http.get(f"{base}/v1/schemas/{etype}/versions/1") as resp:
        assert (await expect(resp, 200))["schema"] == order()
    async with http.get(f"{base}/v1/schemas/{etype}/versions/latest") as resp:
        assert (await expect(resp, 200))["version"] == 2
    async with http.get(f"{base}/v1/schemas") as resp:
        listed = await expect(resp, 200)
    assert any(s["type"] == etype and s["latest"] == 2 for s in listed["schemas"])


async def test_an_incompatible_version_is_refused_naming_each_path(
    hub: HubProcess, http: Session
) -> None:
    etype, base = unique("order.paid"), hub.base_url
    await put_schema(http, base, etype, order(currency={"enum": ["EUR", "USD"]}), 201)
    bad = order(currency={"enum": ["EUR"]})
    bad["required"] = ["order_id", "total"]
    problem = await put_schema(http, base, etype, bad, 409)
    paths = {c["path"]: c["change"] for c in problem["changes"]}
    assert paths == {"$.total": "required-added", "$.currency": "enum-value-removed"}
    assert "$.total" in problem["detail"]
    async with http.get(f"{base}/v1/schemas/{etype}") as resp:
        assert (await expect(resp, 200))["latest"] == 1  # nothing was added
    # With compatibility none it goes in.
    async with http.put(f"{base}/v1/schemas/{etype}/config", json={"compatibility": "none"}) as r:
        assert await expect(r, 200) == {"type": etype, "compatibility": "none"}
    assert (await put_schema(http, base, etype, bad, 201))["version"] == 2


async def test_bad_schemas_and_names_change_nothing(hub: HubProcess, http: Session) -> None:
    etype, base = unique("x"), hub.base_url
    for body, field in [
        ({"schema": {"type": "nope"}}, "schema"),
        ({"schema": {"$ref": "http://example.com/s.json"}}, "schema"),
        ({"schema": {"$schema": "http://json-schema.org/draft-07/schema#"}}, "schema"),
        ({"schema": 3}, "schema"),
        ({}, "schema"),
        ({"schema": {}, "extra": 1}, "extra"),
        ({"schema": {}, "producer": "no/slash"}, "producer"),
    ]:
        async with http.put(f"{base}/v1/schemas/{etype}", json=body) as resp:
            problem = await expect_problem(resp, 400)
        assert problem["field"] == field, problem
    async with http.put(
        f"{base}/v1/schemas/{etype}/config", json={"compatibility": "sideways"}
    ) as r:
        assert (await expect_problem(r, 400))["field"] == "compatibility"
    async with http.get(f"{base}/v1/schemas/{etype}") as resp:
        await expect_problem(resp, 404)
    async with http.get(f"{base}/v1/schemas/{etype}/versions/1") as resp:
        await expect_problem(resp, 404)


async def test_validate_checks_data_sets_dataschema_and_refuses_a_batch_whole(
    hub: HubProcess, http: Session
) -> None:
    base, topic, etype = hub.base_url, unique(), unique("cart.changed")
    schema = order(
        items={
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"qty": {"type": "integer", "minimum": 1}},
                "required": ["qty"],
            },
        }
    )
    await put_schema(http, base, etype, schema, 201)
    info = await put_topic(http, base, topic, schemas="validate")
    assert info["schemas"] == "validate"
    good = {"type": etype, "data": {"order_id": "o-1", "items": [{"qty": 2}]}}
    await publish(http, base, topic, good)
    bad = {"type": etype, "data": {"order_id": "o-2", "items": [{"qty": 2}, {"qty": 0}]}}
    async with http.post(
        f"{base}/v1/topics/{topic}/events",
        data=orjson.dumps(bad),
        headers={"content-type": STRUCTURED},
    ) as resp:
        problem = await expect_problem(resp, 422)
    assert problem["path"] == "$.items[1].qty" and problem["attribute"] == "data"
    assert "$.items[1].qty" in problem["detail"]
    async with http.post(
        f"{base}/v1/topics/{topic}/events",
        data=orjson.dumps([good, good, bad]),
        headers={"content-type": BATCH},
    ) as resp:
        problem = await expect_problem(resp, 422)
    assert problem["index"] == 2 and problem["path"] == "$.items[1].qty"
    # A type with no schema passes under validate; under required it is refused.
    other = {"type": unique("free"), "data": [1]}
    await publish(http, base, topic, other)
    await put_topic(http, base, topic, schemas="required")
    async with http.post(
        f"{base}/v1/topics/{topic}/events",
        data=orjson.dumps(other),
        headers={"content-type": STRUCTURED},
    ) as resp:
        assert (await expect_problem(resp, 422))["attribute"] == "type"
    await publish(http, base, topic, good, good)
    records = await read_all(http, base, topic)
    uri = f"{base}/v1/schemas/{etype}/versions/1"  # absolute, as CloudEvents wants
    assert [r["event"].get("dataschema") for r in records] == [uri, None, uri, uri]
    # An event naming a version in its dataschema is checked against that version.
    named = {**good, "dataschema": uri}
    await publish(http, base, topic, named)
    gone = {**good, "dataschema": f"{base}/v1/schemas/{etype}/versions/9"}
    async with http.post(
        f"{base}/v1/topics/{topic}/events",
        data=orjson.dumps(gone),
        headers={"content-type": STRUCTURED},
    ) as resp:
        assert (await expect_problem(resp, 422))["attribute"] == "dataschema"
    async with http.get(f"{base}/v1/schemas/{etype}") as resp:
        described = await expect(resp, 200)
    assert described["failures"]["count"] == 3 and topic in described["topics"]


async def test_consumers_that_would_break_are_named(hub: HubProcess, http: Session) -> None:
    base, etype = hub.base_url, unique("payment.succeeded")
    await put_schema(http, base, etype, order(), 201)
    reads = order()
    reads["required"] = ["order_id", "total"]
    # A consumer that needs total while the producer's schema makes it optional: refused.
    async with http.put(
        f"{base}/v1/schemas/{etype}/consumers/shipping", json={"schema": reads}
    ) as resp:
        problem = await expect_problem(resp, 409)
    assert problem["changes"][0]["path"] == "$.total"
    v2 = order()
    v2["required"] = ["order_id", "total"]
    v2["properties"]["total"] = {"type": "number"}
    async with http.put(f"{base}/v1/schemas/{etype}/config", json={"compatibility": "none"}) as r:
        await expect(r, 200)
    await put_schema(http, base, etype, v2, 201)
    async with http.put(
        f"{base}/v1/schemas/{etype}/config", json={"compatibility": "backward"}
    ) as r:
        await expect(r, 200)
    async with http.put(
        f"{base}/v1/schemas/{etype}/consumers/shipping", json={"schema": reads}
    ) as resp:
        assert await expect(resp, 200) == {"type": etype, "consumer": "shipping"}
    # A producer dropping total from the data: backward compatible (open model), but
    # the consumer reading with total required would break.
    v3 = order()
    del v3["properties"]["total"]
    async with http.post(f"{base}/v1/schemas/{etype}/check", json={"schema": v3}) as resp:
        checked = await expect(resp, 200)
    assert checked["changes"] == [] and not checked["compatible"]
    assert [c["name"] for c in checked["consumers"]] == ["shipping"]
    assert checked["consumers"][0]["changes"][0]["path"] == "$.total"
    problem = await put_schema(http, base, etype, v3, 409)
    assert "shipping" in problem["detail"]


async def test_inferred_schema_from_traffic(hub: HubProcess, http: Session) -> None:
    base, topic, etype = hub.base_url, unique(), unique("like.added")
    await publish(
        http,
        base,
        topic,
        *[
            {"type": etype, "source": "/storefront", "data": {"sku": f"s{i}", "n": i}}
            for i in range(5)
        ],
        {"type": etype, "source": "/app", "data": {"sku": "x", "n": 1, "extra": True}},
    )
    async with http.get(f"{base}/v1/schemas/{etype}/inferred") as resp:
        got = await expect(resp, 200)
    assert got["events"] == 6 and got["topics"] == [topic]
    assert got["sources"] == ["/app", "/storefront"]
    schema = got["schema"]
    assert schema["properties"]["sku"] == {"type": "string"}
    assert schema["properties"]["n"] == {"type": "integer"}
    assert sorted(schema["required"]) == ["n", "sku"]
    async with http.get(f"{base}/v1/schemas") as resp:
        assert etype in (await expect(resp, 200))["unregistered"]
    async with http.get(f"{base}/v1/schemas/{unique('none')}/inferred") as resp:
        await expect_problem(resp, 404)


@pytest.mark.timeout(120)
async def test_schemas_survive_a_sigkill(hub_factory: HubFactory, http: Session) -> None:
    hub = hub_factory.start()
    base, etype, topic = hub.base_url, "order.placed", "orders"
    await put_schema(http, base, etype, order(), 201, producer="orders")
    await put_schema(http, base, etype, order(note={}), 201)
    async with http.put(f"{base}/v1/schemas/{etype}/config", json={"compatibility": "full"}) as r:
        await expect(r, 200)
    await put_topic(http, base, topic, schemas="required")
    hub.kill()
    hub.start()
    async with http.get(f"{base}/v1/schemas/{etype}") as resp:
        info = await expect(resp, 200)
    assert (info["latest"], info["compatibility"]) == (2, "full")
    assert (await put_topic(http, base, topic))["schemas"] == "required"
    async with http.post(
        f"{base}/v1/topics/{topic}/events",
        data=orjson.dumps({"type": etype, "data": {"total": 1}}),
        headers={"content-type": STRUCTURED},
    ) as resp:
        assert (await expect_problem(resp, 422))["path"] == "$"


async def test_registering_needs_admin_or_the_schemas_scope(
    hub_factory: HubFactory, http: Session, tmp_path: Any
) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(
        json.dumps(
            {
                "tokens": [
                    {"name": "ops", "token": "adm", "admin": True},
                    {"name": "orders", "token": "ord", "schemas": ["order.*"], "publish": ["*"]},
                    {"name": "reader", "token": "rd", "subscribe": ["*"]},
                ]
            }
        )
    )
    hub = hub_factory.start("--auth-file", str(auth))
    base = hub.base_url

    def h(tok: str) -> dict[str, str]:
        return {"authorization": f"Bearer {tok}"}

    url = f"{base}/v1/schemas/order.placed"
    async with http.put(url, json={"schema": order()}) as resp:
        await expect_problem(resp, 401)
    async with http.put(url, json={"schema": order()}, headers=h("rd")) as resp:
        await expect_problem(resp, 403)
    async with http.put(f"{base}/v1/schemas/cart.x", json={"schema": {}}, headers=h("ord")) as r:
        await expect_problem(r, 403)
    async with http.put(url, json={"schema": order()}, headers=h("ord")) as resp:
        await expect(resp, 201)
    async with http.put(f"{url}/config", json={"compatibility": "full"}, headers=h("adm")) as r:
        await expect(r, 200)
    async with http.get(url, headers=h("rd")) as resp:
        assert (await expect(resp, 200))["compatibility"] == "full"
    async with http.get(url) as resp:
        await expect_problem(resp, 401)


async def test_a_token_sees_nothing_of_topics_it_may_not_read(
    hub_factory: HubFactory, http: Session, tmp_path: Any
) -> None:
    """The registry learns from traffic (topics, sources, groups, types, a refused
    event's data): a token sees that only for topics it may subscribe to."""
    auth = tmp_path / "auth.json"
    auth.write_text(
        json.dumps(
            {
                "tokens": [
                    {"name": "ops", "token": "adm", "admin": True},
                    {"name": "shop", "token": "shp", "subscribe": ["shop"], "schemas": ["*"]},
                ]
            }
        )
    )
    hub = hub_factory.start("--auth-file", str(auth))
    base = hub.base_url
    adm, shp = {"authorization": "Bearer adm"}, {"authorization": "Bearer shp"}
    url = f"{base}/v1/schemas/card.charged"
    async with http.put(url, json={"schema": order()}, headers=adm) as resp:
        await expect(resp, 201)
    billing = {"schemas": "validate"}
    async with http.put(f"{base}/v1/topics/billing", json=billing, headers=adm) as r:
        await expect(r, 201)
    async with http.put(f"{base}/v1/topics/billing/groups/ledger", json={}, headers=adm) as r:
        await expect(r, 201)
    secret = {"type": "card.charged", "source": "/secret-billing", "data": {"order_id": "o-1"}}
    await publish(http, base, "billing", secret, headers=adm)
    await publish(http, base, "billing", {"type": "card.secret", "data": {}}, headers=adm)
    async with http.post(
        f"{base}/v1/topics/billing/events",
        data=orjson.dumps({"type": "card.charged", "data": {"order_id": 4111111111111111}}),
        headers={"content-type": STRUCTURED, **adm},
    ) as resp:
        await expect_problem(resp, 422)

    async with http.get(url, headers=adm) as resp:
        seen = await expect(resp, 200)
    assert seen["topics"] == ["billing"]
    assert "4111" in json.dumps(seen["failures"]["last"])
    assert {c["name"] for c in seen["consumers"]} == {"ledger"}
    async with http.get(url, headers=shp) as resp:
        shown = await expect(resp, 200)
    assert shown["topics"] == [] and shown["consumers"] == []
    assert [p for p in shown["producers"] if p["via"] == "traffic"] == []
    assert shown["failures"] == {"count": 1, "last": None}
    assert "4111" not in json.dumps(shown) and "secret" not in json.dumps(shown)
    async with http.get(f"{base}/v1/schemas", headers=shp) as resp:
        assert "card.secret" not in (await expect(resp, 200))["unregistered"]
    async with http.get(f"{base}/v1/schemas", headers=adm) as resp:
        assert "card.secret" in (await expect(resp, 200))["unregistered"]
    async with http.get(f"{base}/v1/schemas/card.secret/inferred", headers=shp) as resp:
        await expect_problem(resp, 404)


async def test_asyncapi_carries_the_registered_schemas(hub: HubProcess, http: Session) -> None:
    base, topic, etype = hub.base_url, unique(), unique("shipment.created")
    with_defs = {
        "$defs": {"Addr": {"type": "object", "properties": {"zip": {"type": "string"}}}},
        "type": "object",
        "properties": {"to": {"$ref": "#/$defs/Addr"}},
    }
    await put_schema(http, base, etype, with_defs, 201)
    await publish(http, base, topic, {"type": etype, "data": {"to": {"zip": "1000"}}})
    async with http.get(f"{base}/asyncapi.json") as resp:
        doc = await expect(resp, 200)
    message = doc["components"]["messages"][etype]
    ref = message["payload"]["properties"]["data"]["$ref"]
    assert ref == f"#/components/schemas/{etype}.v1"
    spec = json.loads(
        (Path(__file__).parents[1] / "data" / "asyncapi-3.0.0.schema.json").read_text()
    )
    errors = list(jsonschema.Draft7Validator(spec).iter_errors(doc))
    assert not errors, [e.message for e in errors[:3]]
    schema = doc["components"]["schemas"][f"{etype}.v1"]
    assert schema["properties"]["to"]["$ref"] == f"#/components/schemas/{etype}.v1/$defs/Addr"
    # The document's own references resolve: validate the data through them.
    resolver_doc = {**doc, "$ref": ref}
    jsonschema.validate({"to": {"zip": "1000"}}, resolver_doc)
    try:
        jsonschema.validate({"to": {"zip": 1000}}, resolver_doc)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("the relocated schema no longer checks the zip's type")
