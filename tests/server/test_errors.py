"""Every error as RFC 9457 problem+json, one by one, and auth (PRODUCT.md "Errors", "Auth").

Bad input gets a clear error and changes nothing: where a request could have
written, the test checks the topic's next offsets before and after.
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from hubapi import (
    BATCH,
    STRUCTURED,
    expect,
    expect_problem,
    fetch,
    get_group,
    next_offsets,
    publish,
    put_group,
    put_topic,
    unique,
)
from hubproc import HubFactory, HubProcess, free_port, hub_env, serve_command
from natsproc import on_nats

Session = aiohttp.ClientSession
MiB = 1 << 20

@pytest.fixture(scope="module")
def hub(backend_hub: HubProcess) -> HubProcess:
    """This module's hub, on the embedded log and on NATS in turn (``backend_hub``)."""
    return backend_hub



async def post_raw(
    http: Session, url: str, body: bytes, content_type: str | None, status: int
) -> dict[str, Any]:
    headers = {"content-type": content_type} if content_type else {}
    async with http.post(url, data=io.BytesIO(body), headers=headers) as resp:
        return await expect_problem(resp, status)


def events_url(hub: HubProcess, topic: str) -> str:
    return f"{hub.base_url}/v1/topics/{topic}/events"


@pytest.fixture
async def topic(hub: HubProcess, http: Session) -> AsyncIterator[str]:
    """A topic of 3 partitions holding a few events, unchanged by the test (checked after)."""
    t = unique()
    await put_topic(http, hub.base_url, t, partitions=3)
    await publish(
        http, hub.base_url, t, *[{"type": "seed", "partitionkey": f"k{i}"} for i in range(6)]
    )
    before = await next_offsets(http, hub.base_url, t)
    yield t
    assert await next_offsets(http, hub.base_url, t) == before, "a failed request wrote events"


# -- 400 malformed -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (STRUCTURED, b'{"type": "order.placed",'),
        (STRUCTURED, b"\xff\xfe"),
        (BATCH, b'[{"type": "a"}, {"type": '),
        (BATCH, b'{"type": "a"}'),  # a batch must be an array
        ("application/json", b"{not json"),  # binary mode below, with ce- headers
    ],
)
async def test_malformed_publish_body_is_400(
    hub: HubProcess, http: Session, topic: str, content_type: str, body: bytes
) -> None:
    headers = {"content-type": content_type}
    if content_type == "application/json":
        headers |= {"ce-type": "order.placed", "ce-specversion": "1.0"}
    async with http.post(events_url(hub, topic), data=body, headers=headers) as resp:
        problem = await expect_problem(resp, 400)
    assert problem["type"].startswith("https://")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/topics/{t}", b'{"partitions": '),
        ("PUT", "/v1/topics/{t}", b"[1, 2]"),
        ("PUT", "/v1/topics/{t}/groups/g", b"{oops}"),
        ("POST", "/v1/topics/{t}/groups/g/fetch", b"nul"),
        ("POST", "/v1/topics/{t}/groups/g/ack", b'"leases"'),
        ("POST", "/v1/topics/{t}/groups/g/ack", b""),
        ("POST", "/v1/topics/{t}/groups/g/seek", b""),
    ],
)
async def test_malformed_json_bodies_are_400(
    hub: HubProcess, http: Session, topic: str, method: str, path: str, body: bytes
) -> None:
    await put_group(http, hub.base_url, topic, "g")
    url = hub.base_url + path.format(t=topic)
    headers = {"content-type": "application/json"}
    async with http.request(method, url, data=body, headers=headers) as resp:
        await expect_problem(resp, 400)


# -- 415 content type --------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", None, "application/cloudevents+xml"]
)
async def test_unsupported_content_type_is_415(
    hub: HubProcess, http: Session, topic: str, content_type: str | None
) -> None:
    body = orjson.dumps({"type": "order.placed"})
    problem = await post_raw(http, events_url(hub, topic), body, content_type, 415)
    assert STRUCTURED in problem["detail"]
    assert problem.get("accepted")


# -- 422 invalid events ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "attribute"),
    [
        ({"data": 1}, "type"),
        ({"type": ""}, "type"),
        ({"type": 5}, "type"),
        ({"type": "a", "specversion": "0.3"}, "specversion"),
        ({"type": "a", "id": ""}, "id"),
        ({"type": "a", "time": "yesterday"}, "time"),
        ({"type": "a", "source": "has space"}, "source"),
        ({"type": "a", "Bad-Ext": "x"}, "Bad-Ext"),
        ({"type": "a", "UPPER": "x"}, "UPPER"),
        ({"type": "a", "Way_Too_Bad": "x"}, "Way_Too_Bad"),
        ({"type": "a", "nested": {"x": 1}}, "nested"),
        ({"type": "a", "ratio": 0.5}, "ratio"),
        ({"type": "a", "partitionkey": 7}, "partitionkey"),
        ({"type": "a", "data": 1, "data_base64": "AA=="}, "data_base64"),
        ({"type": "a", "data_base64": "not base64!"}, "data_base64"),
    ],
)
async def test_invalid_event_is_422_naming_the_attribute(
    hub: HubProcess, http: Session, topic: str, event: dict[str, Any], attribute: str
) -> None:
    problem = await post_raw(http, events_url(hub, topic), orjson.dumps(event), STRUCTURED, 422)
    assert problem["attribute"] == attribute
    assert "index" not in problem


async def test_binary_mode_missing_type_is_422(hub: HubProcess, http: Session, topic: str) -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "x", "content-type": "application/json"}
    async with http.post(events_url(hub, topic), data=b"{}", headers=headers) as resp:
        problem = await expect_problem(resp, 422)
    assert problem["attribute"] == "type"


async def test_batch_with_a_bad_event_at_index_2_writes_nothing(
    hub: HubProcess, http: Session, topic: str
) -> None:
    batch = [
        {"type": "order.placed", "partitionkey": "a"},
        {"type": "order.placed", "partitionkey": "b"},
        {"type": "order.placed", "Bad_Name": 1},
        {"type": "order.placed", "partitionkey": "c"},
    ]
    problem = await post_raw(http, events_url(hub, topic), orjson.dumps(batch), BATCH, 422)
    assert problem["index"] == 2
    assert problem["attribute"] == "Bad_Name"
    assert "2" in problem["detail"]

    batch[2] = {"partitionkey": "c"}
    problem = await post_raw(http, events_url(hub, topic), orjson.dumps(batch), BATCH, 422)
    assert (problem["index"], problem["attribute"]) == (2, "type")


# -- 413 too large -----------------------------------------------------------------------


async def test_event_over_1_mib_is_413(hub: HubProcess, http: Session, topic: str) -> None:
    big = {"type": "blob", "data": "x" * MiB}
    await post_raw(http, events_url(hub, topic), orjson.dumps(big), STRUCTURED, 413)

    headers = {
        "ce-type": "blob",
        "ce-specversion": "1.0",
        "content-type": "application/octet-stream",
    }
    data = io.BytesIO(b"\0" * (MiB + 1))
    async with http.post(events_url(hub, topic), data=data, headers=headers) as resp:
        await expect_problem(resp, 413)

    batch = [{"type": "small"}, {"type": "small"}, big]
    problem = await post_raw(http, events_url(hub, topic), orjson.dumps(batch), BATCH, 413)
    assert problem["index"] == 2

    # Just under the limit is fine (on a topic of its own, so the fixture's check holds).
    # On NATS a record must also fit the server's max_payload (1 MiB) less room for its
    # headers, and the stored record is the event with the hub's fields: such an event
    # is 413 there, naming NATS's limit, and one a little smaller fits.
    fits = {"type": "blob", "data": "x" * (MiB - 400)}
    if on_nats(hub):
        problem = await post_raw(http, events_url(hub, topic), orjson.dumps(fits), STRUCTURED, 413)
        assert "NATS takes at most" in problem["detail"]
        fits = {"type": "blob", "data": "x" * (MiB - 1000)}
    other = unique()
    async with http.post(
        events_url(hub, other),
        data=io.BytesIO(orjson.dumps(fits)),
        headers={"content-type": STRUCTURED},
    ) as resp:
        await expect(resp, 202)


async def test_request_over_16_mib_is_413(hub: HubProcess, http: Session, topic: str) -> None:
    batch = [{"type": "blob", "data": "x" * 900_000} for _ in range(19)]  # each fits, not all
    body = orjson.dumps(batch)
    assert len(body) > 16 * MiB
    problem = await post_raw(http, events_url(hub, topic), body, BATCH, 413)
    assert "16777216" in problem["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for i in range(0, len(body), MiB):
            yield body[i : i + MiB]

    async with http.post(
        events_url(hub, topic), data=chunks(), headers={"content-type": BATCH}
    ) as resp:
        await expect_problem(resp, 413)


# -- 404 unknown ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def closed_hub(module_hub_factory: HubFactory) -> HubProcess:
    return module_hub_factory.start("--no-auto-create")


async def test_unknown_topic_with_auto_create_off_is_404(
    closed_hub: HubProcess, http: Session
) -> None:
    t = unique()
    base = closed_hub.base_url
    async with http.post(
        f"{base}/v1/topics/{t}/events",
        json={"type": "a"},
        headers={"content-type": STRUCTURED},
    ) as resp:
        problem = await expect_problem(resp, 404)
    assert problem["topic"] == t
    assert "auto-create" in problem["detail"]
    async with http.put(f"{base}/v1/topics/{t}/groups/g", json={}) as resp:
        await expect_problem(resp, 404)
    async with http.get(f"{base}/v1/topics/{t}") as resp:
        await expect_problem(resp, 404)
    async with http.get(f"{base}/v1/topics") as resp:
        assert t not in [x["name"] for x in (await expect(resp, 200))["topics"]]

    await put_topic(http, base, t, 201)  # creating it on purpose still works
    await publish(http, base, t, {"type": "a"})


async def test_unknown_topic_on_reads_is_404(hub: HubProcess, http: Session) -> None:
    t = unique()
    async with http.get(f"{hub.base_url}/v1/topics/{t}/events") as resp:
        await expect_problem(resp, 404)
    async with http.delete(f"{hub.base_url}/v1/topics/{t}") as resp:
        await expect_problem(resp, 404)
    async with http.get(f"{hub.base_url}/v1/topics/{t}/groups/g") as resp:
        await expect_problem(resp, 404)


@pytest.mark.parametrize(
    ("method", "op", "body"),
    [
        ("GET", "", None),
        ("DELETE", "", None),
        ("POST", "/fetch", {}),
        ("POST", "/ack", {"leases": ["0.0.1.abcd"]}),
        ("POST", "/nack", {"leases": ["0.0.1.abcd"]}),
        ("POST", "/seek", {"to": "earliest"}),
    ],
)
async def test_unknown_group_is_404(
    hub: HubProcess, http: Session, topic: str, method: str, op: str, body: Any
) -> None:
    url = f"{hub.base_url}/v1/topics/{topic}/groups/nobody{op}"
    async with http.request(method, url, json=body) as resp:
        problem = await expect_problem(resp, 404)
    assert (problem["topic"], problem["group"]) == (topic, "nobody")


async def test_unknown_route_is_a_404_problem(hub: HubProcess, http: Session) -> None:
    for path in ("/nope", "/v1", "/v1/topics/a/b/c", "/v2/topics"):
        async with http.get(hub.base_url + path) as resp:
            problem = await expect_problem(resp, 404)
        assert problem["instance"] == path


async def test_wrong_method_is_a_405_problem(hub: HubProcess, http: Session) -> None:
    async with http.patch(f"{hub.base_url}/v1/topics/x") as resp:
        await expect_problem(resp, 405)
        assert "PUT" in resp.headers.get("allow", "")


# -- 400 bad positions and parameters ------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "abc"}, "from"),
        ({"from": "0:999", "partition": "0"}, "from"),
        ({"from": "0:1,7:0"}, "from"),
        ({"from": "1"}, "from"),  # an offset needs partition= on 3 partitions
        ({"from": "999", "partition": "1"}, "from"),
        ({"partition": "3"}, "partition"),
        ({"partition": "x"}, "partition"),
        ({"partition": ""}, "partition"),  # empty is not absent
        ({"limit": ""}, "limit"),
        ({"wait": ""}, "wait"),
        ({"from_time": "last week"}, "from_time"),
        ({"from_time": "0", "from": "earliest"}, "from_time"),
        ({"limit": "0"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"wait": "soon"}, "wait"),
        ({"types": "order.>.x"}, None),
        ({"fro": "earliest"}, "fro"),
    ],
)
async def test_bad_read_parameters_are_400(
    hub: HubProcess, http: Session, topic: str, params: dict[str, str], field: str | None
) -> None:
    async with http.get(events_url(hub, topic), params=params) as resp:
        problem = await expect_problem(resp, 400)
    if field is not None:
        assert problem["field"] == field


async def test_offset_past_the_end_names_the_range(
    hub: HubProcess, http: Session, topic: str
) -> None:
    [end, *_] = await next_offsets(http, hub.base_url, topic)
    async with http.get(
        events_url(hub, topic), params={"partition": "0", "from": str(end + 1)}
    ) as resp:
        problem = await expect_problem(resp, 400)
    assert (problem["first_offset"], problem["next_offset"]) == (0, end)
    async with http.get(
        events_url(hub, topic), params={"partition": "0", "from": str(end)}
    ) as resp:
        assert (await expect(resp, 200))["records"] == []


@pytest.mark.parametrize(
    "to",
    [
        "abc",
        "0:999",
        "9:0",
        {"partition": 0, "offset": 999},
        {"partition": 9, "offset": 0},
        {"partition": -1, "offset": 0},
        {"partition": 0},
        True,
        None,
        [0],
    ],
)
async def test_bad_seek_is_400(hub: HubProcess, http: Session, topic: str, to: Any) -> None:
    await put_group(http, hub.base_url, topic, "g")
    url = f"{hub.base_url}/v1/topics/{topic}/groups/g/seek"
    async with http.post(url, json={"to": to}) as resp:
        await expect_problem(resp, 400)
    info = await get_group(http, hub.base_url, topic, "g")
    assert all(p["committed"] == 0 for p in info["partitions"])


# -- 409 conflicts and stale leases ----------------------------------------------------------


async def test_stale_lease_is_409_and_the_valid_ones_are_not_acked(
    hub: HubProcess, http: Session
) -> None:
    t = unique()
    base = hub.base_url
    await publish(http, base, t, *[{"type": "a", "id": f"s{i}"} for i in range(4)])
    await put_group(http, base, t, "g", ack_wait=60)
    got = await fetch(http, base, t, "g", max=4)
    leases = [r["lease"] for r in got]
    ack_url = f"{base}/v1/topics/{t}/groups/g/ack"
    async with http.post(ack_url, json={"leases": [leases[0]]}) as resp:
        assert await expect(resp, 200) == {"acked": 1}

    for stale in (
        leases[0],  # acked already
        "0.1.7." + leases[1].rsplit(".", 1)[1],  # wrong delivery count
        "0.1.1.deadbeef",  # another epoch
        "garbage",
        "9.0.1.x",
    ):
        async with http.post(ack_url, json={"leases": [leases[1], stale, leases[2]]}) as resp:
            problem = await expect_problem(resp, 409)
        assert problem["stale"] == [stale]
        info = await get_group(http, base, t, "g")
        assert (info["pending"], info["partitions"][0]["committed"]) == (3, 1)

    nack_url = f"{base}/v1/topics/{t}/groups/g/nack"
    async with http.post(nack_url, json={"leases": [leases[3], "garbage"]}) as resp:
        await expect_problem(resp, 409)
    assert await fetch(http, base, t, "g") == []  # leases[3] was not given back

    # The valid leases still work: nothing above touched them.
    async with http.post(ack_url, json={"leases": leases[1:]}) as resp:
        assert await expect(resp, 200) == {"acked": 3}
    info = await get_group(http, base, t, "g")
    assert (info["pending"], info["lag"]) == (0, 0)


async def test_lease_shapes_that_are_not_strings_are_400(
    hub: HubProcess, http: Session, topic: str
) -> None:
    await put_group(http, hub.base_url, topic, "g")
    url = f"{hub.base_url}/v1/topics/{topic}/groups/g/ack"
    for body in ({"leases": []}, {"leases": "0.0.1.x"}, {"leases": [1]}, {}, {"leases": None}):
        async with http.post(url, json=body) as resp:
            await expect_problem(resp, 400)


# -- 400 unknown fields and bad values ------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PUT", "", {"partitons": 2}, "partitons"),
        ("PUT", "", {"partitions": 3, "retention": {"max_agee": 5}}, "max_agee"),
        ("PUT", "/groups/g", {"ackwait": 5}, "ackwait"),
        ("POST", "/groups/g/fetch", {"maxx": 5}, "maxx"),
        ("POST", "/groups/g/ack", {"leases": ["x"], "lease": "x"}, "lease"),
        ("POST", "/groups/g/nack", {"leases": ["x"], "dealy": 5}, "dealy"),
        ("POST", "/groups/g/seek", {"to": "earliest", "from": 1}, "from"),
    ],
)
async def test_unknown_fields_are_400_naming_the_field(
    hub: HubProcess, http: Session, topic: str, method: str, path: str, body: Any, field: str
) -> None:
    await put_group(http, hub.base_url, topic, "g")
    url = f"{hub.base_url}/v1/topics/{topic}{path}"
    async with http.request(method, url, json=body) as resp:
        problem = await expect_problem(resp, 400)
    assert problem["field"] == field
    assert repr(field) in problem["detail"]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"start": "middle"}, "start"),
        ({"ordering": "fifo"}, "ordering"),
        ({"max_deliver": 0}, "max_deliver"),
        ({"max_deliver": "3"}, "max_deliver"),
        ({"max_deliver": True}, "max_deliver"),
        ({"ack_wait": 0}, "ack_wait"),
        ({"ack_wait": -1}, "ack_wait"),
        ({"ack_wait": "soon"}, "ack_wait"),
        ({"ack_wait": False}, "ack_wait"),
        ({"dead_letter_topic": 5}, "dead_letter_topic"),
        ({"dead_letter_topic": "bad name!"}, "dead_letter_topic"),
        ({"types": "order.*"}, "types"),
        ({"types": [1]}, "types"),
        ({"types": ["order.>.x"]}, None),
    ],
)
async def test_bad_group_config_is_400(
    hub: HubProcess, http: Session, topic: str, config: dict[str, Any], field: str | None
) -> None:
    url = f"{hub.base_url}/v1/topics/{topic}/groups/g"
    async with http.put(url, json=config) as resp:
        problem = await expect_problem(resp, 400)
    if field is not None:
        assert problem["field"] == field
    async with http.get(url) as resp:
        await expect_problem(resp, 404)  # nothing was created


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max": 0}, "max"),
        ({"max": 10_001}, "max"),
        ({"max": "5"}, "max"),
        ({"wait": "later"}, "wait"),
        ({"types": "a.*"}, "types"),
    ],
)
async def test_bad_fetch_is_400(
    hub: HubProcess, http: Session, topic: str, body: dict[str, Any], field: str
) -> None:
    await put_group(http, hub.base_url, topic, "g")
    url = f"{hub.base_url}/v1/topics/{topic}/groups/g/fetch"
    async with http.post(url, json=body) as resp:
        problem = await expect_problem(resp, 400)
    assert problem["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"partitions": 0}, "partitions"),
        ({"partitions": 1025}, "partitions"),
        ({"partitions": "2"}, "partitions"),
        ({"partitions": 2.5}, "partitions"),
        ({"retention": 5}, "retention"),
        ({"retention": {"max_bytes": 0}}, "retention.max_bytes"),
        ({"retention": {"max_age": "forever"}}, "retention.max_age"),
    ],
)
async def test_bad_topic_config_is_400(
    hub: HubProcess, http: Session, body: dict[str, Any], field: str
) -> None:
    t = unique()
    async with http.put(f"{hub.base_url}/v1/topics/{t}", json=body) as resp:
        problem = await expect_problem(resp, 400)
    assert problem["field"] == field
    async with http.get(f"{hub.base_url}/v1/topics/{t}") as resp:
        await expect_problem(resp, 404)


# -- auth ------------------------------------------------------------------------------------

ADMIN = {"Authorization": "Bearer admin-s3cret"}
SHOP = {"Authorization": "Bearer shop-s3cret"}


@pytest.fixture(scope="module")
def auth_hub(
    module_hub_factory: HubFactory, tmp_path_factory: pytest.TempPathFactory
) -> HubProcess:
    path = tmp_path_factory.mktemp("auth") / "tokens.json"
    path.write_text(
        json.dumps(
            {
                "tokens": [
                    {"name": "ops", "token": "admin-s3cret", "admin": True},
                    {
                        "name": "shop",
                        "token": "shop-s3cret",
                        "publish": ["orders"],
                        "subscribe": ["orders*"],
                        "manage": ["orders"],
                    },
                ]
            }
        )
    )
    return module_hub_factory.start("--auth-file", str(path))


async def test_no_token_is_401_with_www_authenticate(auth_hub: HubProcess, http: Session) -> None:
    base = auth_hub.base_url
    for method, path in [
        ("GET", "/v1/topics"),
        ("PUT", "/v1/topics/orders"),
        ("GET", "/v1/topics/orders/events"),
        ("POST", "/v1/topics/orders/events"),
        ("GET", "/v1/groups"),
        ("POST", "/v1/topics/orders/groups/g/fetch"),
    ]:
        async with http.request(method, base + path, json={"type": "a"}) as resp:
            await expect_problem(resp, 401)
            assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer")
    for header in ("Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer ", "Bearers admin-s3cret"):
        async with http.get(base + "/v1/topics", headers={"Authorization": header}) as resp:
            await expect_problem(resp, 401)


async def test_unknown_token_is_401(auth_hub: HubProcess, http: Session) -> None:
    headers = {"Authorization": "Bearer not-a-token"}
    async with http.get(f"{auth_hub.base_url}/v1/topics/orders/events", headers=headers) as resp:
        problem = await expect_problem(resp, 401)
        assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert "not-a-token" not in problem["detail"]


async def test_scoped_token_may_do_what_its_scopes_say(auth_hub: HubProcess, http: Session) -> None:
    base = auth_hub.base_url
    structured = {"content-type": STRUCTURED}
    event = orjson.dumps({"type": "order.placed"})
    async with http.put(f"{base}/v1/topics/orders.dlq", headers=ADMIN) as resp:
        assert resp.status in (200, 201)
    async with http.put(f"{base}/v1/topics/payments", headers=ADMIN) as resp:
        assert resp.status in (200, 201)
    async with http.post(
        f"{base}/v1/topics/orders/events", data=event, headers=SHOP | structured
    ) as resp:
        await expect(resp, 202)

    async def status(method: str, path: str, **kw: Any) -> int:
        async with http.request(
            method, base + path, headers=SHOP | kw.pop("headers", {}), **kw
        ) as resp:
            if resp.status >= 400:
                await expect_problem(resp, resp.status)
            return resp.status

    assert await status("GET", "/v1/topics/orders/events") == 200
    assert await status("GET", "/v1/topics/orders.dlq/events") == 200
    assert await status("GET", "/v1/topics/orders") == 200
    assert await status("PUT", "/v1/topics/orders/groups/shop", json={}) in (200, 201)
    assert await status("POST", "/v1/topics/orders/groups/shop/fetch", json={}) == 200

    forbidden = [
        ("POST", "/v1/topics/payments/events", {"data": event, "headers": structured}),
        ("POST", "/v1/topics/orders.dlq/events", {"data": event, "headers": structured}),
        ("GET", "/v1/topics/payments/events", {}),
        ("GET", "/v1/topics/payments", {}),
        ("PUT", "/v1/topics/payments/groups/shop", {"json": {}}),
        ("PUT", "/v1/topics/orders.dlq/groups/shop", {"json": {}}),  # subscribe, not manage
        ("GET", "/metrics", {}),
        ("PUT", "/v1/topics/orders", {"json": {}}),
        ("DELETE", "/v1/topics/orders", {}),
    ]
    for method, path, kw in forbidden:
        assert await status(method, path, **kw) == 403, (method, path)
    # Listings show only what the token may read.
    async with http.put(f"{base}/v1/topics/payments", json={}, headers=ADMIN) as resp:
        assert resp.status in (200, 201)
    async with http.get(f"{base}/v1/topics", headers=SHOP) as resp:
        names = {t["name"] for t in (await expect(resp, 200))["topics"]}
    assert "orders" in names and "payments" not in names
    async with http.get(f"{base}/v1/groups", headers=SHOP) as resp:
        groups = (await expect(resp, 200))["groups"]
    assert {g["topic"] for g in groups} <= {n for n in names if n.startswith("orders")}
    async with http.get(f"{base}/v1/topics/orders", headers=ADMIN) as resp:
        assert (await expect(resp, 200))["events"] == 1  # the refused requests wrote nothing


async def test_admin_token_may_do_everything(auth_hub: HubProcess, http: Session) -> None:
    base = auth_hub.base_url
    t = unique()
    async with http.put(f"{base}/v1/topics/{t}", json={"partitions": 2}, headers=ADMIN) as resp:
        await expect(resp, 201)
    async with http.post(
        f"{base}/v1/topics/{t}/events",
        data=orjson.dumps({"type": "a"}),
        headers=ADMIN | {"content-type": STRUCTURED},
    ) as resp:
        await expect(resp, 202)
    for method, path, body in [
        ("GET", f"/v1/topics/{t}/events", None),
        ("GET", "/v1/topics", None),
        ("PUT", f"/v1/topics/{t}/groups/g", {}),
        ("POST", f"/v1/topics/{t}/groups/g/fetch", {}),
        ("GET", f"/v1/topics/{t}/groups/g", None),
        ("GET", "/v1/groups", None),
        ("DELETE", f"/v1/topics/{t}/groups/g", None),
        ("DELETE", f"/v1/topics/{t}", None),
    ]:
        async with http.request(method, base + path, json=body, headers=ADMIN) as resp:
            assert resp.status < 300, (method, path, await resp.text())


async def test_health_stays_open_with_tokens(auth_hub: HubProcess, http: Session) -> None:
    async with http.get(f"{auth_hub.base_url}/healthz") as resp:
        await expect(resp, 200)


def run_serve(
    tmp_path: Path, *extra: str, host: str = "127.0.0.1"
) -> subprocess.CompletedProcess[str]:
    """Run ``tidings serve`` expecting it to refuse; a hub that starts anyway is killed."""
    cmd = serve_command(free_port(), tmp_path / "data", "interval:5", extra, host=host)
    try:
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=20, env=hub_env(), stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"tidings serve {extra} did not refuse to start") from exc


def test_binding_beyond_loopback_without_tokens_is_refused(tmp_path: Path) -> None:
    done = run_serve(tmp_path, host="0.0.0.0")
    assert done.returncode != 0
    assert "refusing to serve 0.0.0.0 without tokens" in done.stderr
    assert "--insecure" in done.stderr and "--auth-file" in done.stderr
    assert "Traceback" not in done.stderr


def test_binding_beyond_loopback_with_insecure() -> None:
    pytest.skip("would serve on a non-loopback address; only the refusal is tested")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--fsync", "sometimes"), "fsync policy"),
        (("--auth-file", "{missing}"), ""),
        (("--auth-file", "{bad}"), "not JSON"),
        # A string, not a list: read as one pattern per character it would allow far more.
        (("--auth-file", "{scope}"), "tokens[0].manage must be a list of topic patterns"),
    ],
)
def test_bad_configuration_is_refused_with_a_message(
    tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{tokens")
    scope = tmp_path / "scope.json"
    scope.write_text(json.dumps({"tokens": [{"token": "t", "manage": "orders"}]}))
    args = tuple(
        a.format(missing=tmp_path / "missing.json", bad=bad, scope=scope) for a in extra
    )
    done = run_serve(tmp_path, *args)
    assert done.returncode != 0
    assert "error" in done.stderr.lower()
    assert message in done.stderr
