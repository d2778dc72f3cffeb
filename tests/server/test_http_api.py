"""The HTTP API of a real ``tidings serve`` process, endpoint by endpoint (PRODUCT.md "HTTP API").

Tests share one hub per module and keep to topics of their own.
"""

from __future__ import annotations

import asyncio
import base64
import random
import re
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from hubapi import (
    BATCH,
    STRUCTURED,
    ack,
    expect,
    expect_problem,
    fetch,
    fetch_all,
    get_group,
    get_topic,
    group_post,
    ids,
    next_offsets,
    parse_prometheus,
    poll_until,
    publish,
    put_group,
    put_topic,
    read,
    read_all,
    unique,
)
from hubproc import HubFactory, HubProcess

Session = aiohttp.ClientSession


@pytest.fixture(scope="module")
def hub(backend_hub: HubProcess) -> HubProcess:
    """This module's hub, on the embedded log and on NATS in turn (``backend_hub``)."""
    return backend_hub


def ev(etype: str = "order.placed", **attrs: Any) -> dict[str, Any]:
    return {"type": etype, **attrs}


# -- topics ------------------------------------------------------------------------------


async def test_put_topic_creates_then_answers_200_and_partitions_grow(
    hub: HubProcess, http: Session
) -> None:
    t = unique()
    url = f"{hub.base_url}/v1/topics/{t}"
    async with http.put(url, json={"partitions": 2}) as resp:
        info = await expect(resp, 201)
    assert info["name"] == t
    assert [p["partition"] for p in info["partitions"]] == [0, 1]
    assert all(p["first_offset"] == p["next_offset"] == 0 for p in info["partitions"])
    assert info["events"] == 0

    async with http.put(url, json={"partitions": 2}) as resp:
        again = await expect(resp, 200)
    assert len(again["partitions"]) == 2

    async with http.put(url, json={"partitions": 4}) as resp:
        grown = await expect(resp, 200)
    assert [p["partition"] for p in grown["partitions"]] == [0, 1, 2, 3]
    assert len((await get_topic(http, hub.base_url, t))["partitions"]) == 4

    async with http.put(url, json={"partitions": 3}) as resp:
        problem = await expect_problem(resp, 409)
    assert problem.get("field") == "partitions"
    assert len((await get_topic(http, hub.base_url, t))["partitions"]) == 4


async def test_put_topic_with_an_empty_body_creates_one_partition(
    hub: HubProcess, http: Session
) -> None:
    t = unique()
    async with http.put(f"{hub.base_url}/v1/topics/{t}") as resp:
        info = await expect(resp, 201)
    assert len(info["partitions"]) == 1
    assert info["retention"] == {"max_age": None, "max_bytes": None}


@pytest.mark.parametrize(
    "name", ["-starts-with-dash", "has%20space", "bang!", "x" * 201, ".dot", "caf%C3%A9"]
)
async def test_put_topic_with_a_bad_name_is_400(hub: HubProcess, http: Session, name: str) -> None:
    async with http.put(f"{hub.base_url}/v1/topics/{name}", json={}) as resp:
        problem = await expect_problem(resp, 400)
    assert problem.get("field") == "topic"
    assert "[A-Za-z0-9]" in problem["detail"]


async def test_topic_names_at_the_limits_are_accepted(hub: HubProcess, http: Session) -> None:
    for name in ["A", "a" * 200, f"{unique()}.v1_x-y"]:
        await put_topic(http, hub.base_url, name, partitions=1)


async def test_whole_numbers_with_a_fraction_are_integers(hub: HubProcess, http: Session) -> None:
    # JSON has one number type; JSON Schema, and so the OpenAPI document, counts 2.0 as 2.
    t = unique()
    info = await put_topic(http, hub.base_url, t, 201, partitions=2.0, retention={"max_bytes": 1e6})
    assert len(info["partitions"]) == 2 and info["retention"]["max_bytes"] == 1_000_000
    group = await put_group(http, hub.base_url, t, "g", 201, max_deliver=3.0)
    assert group["config"]["max_deliver"] == 3
    await put_topic(http, hub.base_url, t, 400, partitions=2.5)


async def test_put_topic_sets_retention(hub: HubProcess, http: Session) -> None:
    t = unique()
    info = await put_topic(
        http, hub.base_url, t, 201, partitions=1, retention={"max_age": "7d", "max_bytes": 1 << 20}
    )
    assert info["retention"] == {"max_age": 7 * 86400, "max_bytes": 1 << 20}
    assert (await get_topic(http, hub.base_url, t))["retention"] == info["retention"]

    # A PUT changes what it names and keeps the rest; null clears a limit.
    info = await put_topic(http, hub.base_url, t, 200, partitions=1, retention={"max_age": 90})
    assert info["retention"] == {"max_age": 90, "max_bytes": 1 << 20}
    info = await put_topic(http, hub.base_url, t, 200, retention={"max_age": "1500ms"})
    assert info["retention"]["max_age"] == 1.5
    info = await put_topic(http, hub.base_url, t, 200, retention={"max_bytes": None})
    assert info["retention"] == {"max_age": 1.5, "max_bytes": None}
    info = await put_topic(http, hub.base_url, t, 200, partitions=3)
    assert info["retention"] == {"max_age": 1.5, "max_bytes": None}
    info = await put_topic(http, hub.base_url, t, 200)
    assert len(info["partitions"]) == 3  # left out: kept, not reset to one


async def test_list_and_get_topics(hub: HubProcess, http: Session) -> None:
    t = unique()
    await put_topic(http, hub.base_url, t, partitions=2)
    await publish(http, hub.base_url, t, ev(partitionkey="a"), ev(partitionkey="a"), ev())

    async with http.get(f"{hub.base_url}/v1/topics") as resp:
        listed = await expect(resp, 200)
    names = [x["name"] for x in listed["topics"]]
    assert t in names
    assert names == sorted(names)

    info = await get_topic(http, hub.base_url, t)
    assert info == next(x for x in listed["topics"] if x["name"] == t)
    assert info["events"] == 3
    assert sum(p["events"] for p in info["partitions"]) == 3
    assert info["bytes"] == sum(p["bytes"] for p in info["partitions"]) > 0
    for p in info["partitions"]:
        assert p["first_offset"] == 0
        assert p["next_offset"] == p["events"]


async def test_get_unknown_topic_is_404(hub: HubProcess, http: Session) -> None:
    t = unique()
    async with http.get(f"{hub.base_url}/v1/topics/{t}") as resp:
        problem = await expect_problem(resp, 404)
    assert problem.get("topic") == t


async def test_delete_topic_then_404_and_a_publish_starts_it_over(
    hub: HubProcess, http: Session
) -> None:
    t = unique()
    await publish(http, hub.base_url, t, ev(id="first"), ev(id="second"))
    await put_group(http, hub.base_url, t, "g")

    async with http.delete(f"{hub.base_url}/v1/topics/{t}") as resp:
        await expect(resp, 204)
    async with http.get(f"{hub.base_url}/v1/topics/{t}") as resp:
        await expect_problem(resp, 404)
    async with http.get(f"{hub.base_url}/v1/topics/{t}/events") as resp:
        await expect_problem(resp, 404)
    async with http.get(f"{hub.base_url}/v1/topics/{t}/groups/g") as resp:
        await expect_problem(resp, 404)
    async with http.delete(f"{hub.base_url}/v1/topics/{t}") as resp:
        await expect_problem(resp, 404)

    # Auto-create makes a new, empty topic; the old ids are not remembered as duplicates.
    [pos] = await publish(http, hub.base_url, t, ev(id="first"))
    assert pos == {"id": "first", "partition": 0, "offset": 0}
    assert ids(await read_all(http, hub.base_url, t)) == ["first"]


# -- publish -----------------------------------------------------------------------------


async def test_publish_structured_fills_the_envelope(hub: HubProcess, http: Session) -> None:
    t = unique()
    before = datetime.now(UTC)
    [pos] = await publish(http, hub.base_url, t, ev(data={"order_id": "o-1"}))
    assert set(pos) == {"id", "partition", "offset"}
    assert (pos["partition"], pos["offset"]) == (0, 0)

    [record] = (await read(http, hub.base_url, t))["records"]
    assert record["topic"] == t
    assert (record["partition"], record["offset"]) == (0, 0)
    event = record["event"]
    assert event["id"] == pos["id"]
    assert event["specversion"] == "1.0"
    assert event["source"] == f"/topics/{t}"
    assert event["type"] == "order.placed"
    assert event["data"] == {"order_id": "o-1"}
    stamped = datetime.fromisoformat(event["time"])
    assert stamped.tzinfo is not None
    assert abs((stamped - before).total_seconds()) < 60


async def test_generated_ids_are_unique_and_sort_by_time(hub: HubProcess, http: Session) -> None:
    t = unique()
    got = []
    for _ in range(5):
        got += [p["id"] for p in await publish(http, hub.base_url, t, ev(), ev())]
    assert len(set(got)) == 10
    assert got == sorted(got)


async def test_publish_keeps_given_attributes(hub: HubProcess, http: Session) -> None:
    t = unique()
    given = ev(
        id="o-1-placed",
        source="/shop/orders",
        subject="o-1",
        time="2026-01-02T03:04:05.678Z",
        datacontenttype="application/json",
        data={"total": 12},
        partitionkey="o-1",
        correlationid="o-1",
        causationid="c-0",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    await publish(http, hub.base_url, t, given)
    [record] = (await read(http, hub.base_url, t))["records"]
    assert record["event"] == {"specversion": "1.0", **given}


async def test_publish_batch_answers_every_position_in_order(
    hub: HubProcess, http: Session
) -> None:
    t = unique()
    events = [ev(id=f"b-{i}", data=i) for i in range(5)]
    positions = await publish(http, hub.base_url, t, *events)
    assert positions == [{"id": f"b-{i}", "partition": 0, "offset": i} for i in range(5)]
    records = await read_all(http, hub.base_url, t)
    assert [r["event"]["data"] for r in records] == list(range(5))


async def test_publish_batch_answers_ids_it_made_and_ids_that_need_escaping(
    hub: HubProcess, http: Session
) -> None:
    t = unique()
    made = await publish(http, hub.base_url, t, *[ev(data=i) for i in range(4)])
    assert [(p["partition"], p["offset"]) for p in made] == [(0, i) for i in range(4)]
    assert len({p["id"] for p in made}) == 4
    assert all(set(p) == {"id", "partition", "offset"} for p in made)
    # An id the hub made is in the dedupe window like any other.
    [again] = await publish(http, hub.base_url, t, ev(id=made[2]["id"]))
    assert again == {**made[2], "duplicate": True}

    odd = ['q"uote', "back\\slash", "caf\u00e9 \u20ac", '","partition":9', "{}"]
    out = await publish(http, hub.base_url, t, *[ev(id=i) for i in odd])
    assert out == [{"id": i, "partition": 0, "offset": 4 + k} for k, i in enumerate(odd)]
    plain = ["caf\u00e9", "\U0001f600", "a,b"]
    out = await publish(http, hub.base_url, t, *[ev(id=i) for i in plain])
    assert out == [{"id": i, "partition": 0, "offset": 9 + k} for k, i in enumerate(plain)]
    records = await read_all(http, hub.base_url, t)
    assert [r["event"]["id"] for r in records] == [p["id"] for p in made] + odd + plain


async def test_publish_binary_mode(hub: HubProcess, http: Session) -> None:
    t = unique()
    url = f"{hub.base_url}/v1/topics/{t}/events"
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "order.placed",
        "ce-id": "bin-1",
        "ce-source": "/shop",
        "ce-subject": "o-9",
        "ce-partitionkey": "o-9",
        "ce-note": "caf%C3%A9%20au%20lait",
        "content-type": "application/json",
    }
    async with http.post(url, data=b'{"order_id": "o-9"}', headers=headers) as resp:
        out = await expect(resp, 202)
    assert out == {"events": [{"id": "bin-1", "partition": 0, "offset": 0}]}

    text_headers = {"ce-type": "note.added", "ce-id": "bin-2", "content-type": "text/plain"}
    async with http.post(url, data="héllo".encode(), headers=text_headers) as resp:
        await expect(resp, 202)
    raw_headers = {
        "ce-specversion": "1.0",
        "ce-type": "blob.added",
        "ce-id": "bin-3",
        "content-type": "application/octet-stream",
    }
    async with http.post(url, data=b"\x00\x01\xff", headers=raw_headers) as resp:
        await expect(resp, 202)
    async with http.post(url, headers={"ce-type": "ping", "ce-id": "bin-4"}) as resp:
        await expect(resp, 202)

    events = [r["event"] for r in await read_all(http, hub.base_url, t)]
    assert [e["id"] for e in events] == ["bin-1", "bin-2", "bin-3", "bin-4"]
    first = events[0]
    assert first["data"] == {"order_id": "o-9"}
    assert first["datacontenttype"] == "application/json"
    assert (first["source"], first["subject"], first["partitionkey"]) == ("/shop", "o-9", "o-9")
    assert first["note"] == "café au lait"
    assert events[1]["data"] == "héllo"
    assert base64.b64decode(events[2]["data_base64"]) == b"\x00\x01\xff"
    assert "data" not in events[3] and "data_base64" not in events[3]
    assert events[3]["source"] == f"/topics/{t}"


async def test_partitionkey_keeps_a_key_in_one_partition_in_order(
    hub: HubProcess, http: Session
) -> None:
    t = unique()
    await put_topic(http, hub.base_url, t, partitions=4)
    keys = [f"k{i}" for i in range(8)]
    rng = random.Random(7)
    sent: dict[str, list[str]] = defaultdict(list)
    where: dict[str, set[int]] = defaultdict(set)
    for n in range(12):
        batch = [
            ev(id=f"e{n}-{i}", partitionkey=rng.choice(keys)) for i in range(rng.randint(1, 6))
        ]
        for pos, e in zip(await publish(http, hub.base_url, t, *batch), batch, strict=True):
            sent[e["partitionkey"]].append(e["id"])
            where[e["partitionkey"]].add(pos["partition"])
    assert all(len(parts) == 1 for parts in where.values()), where
    assert len({p for parts in where.values() for p in parts}) > 1  # keys do spread

    seen: dict[str, list[str]] = defaultdict(list)
    for p in range(4):
        for r in await read_all(http, hub.base_url, t, partition=p):
            assert r["partition"] == p
            seen[r["event"]["partitionkey"]].append(r["event"]["id"])
    assert seen == sent


async def test_events_without_a_key_use_every_partition(hub: HubProcess, http: Session) -> None:
    t = unique()
    await put_topic(http, hub.base_url, t, partitions=3)
    used = set()
    for _ in range(6):
        used |= {p["partition"] for p in await publish(http, hub.base_url, t, ev())}
    assert used == {0, 1, 2}


async def test_dedupe_same_id_answers_the_first_position(hub: HubProcess, http: Session) -> None:
    t = unique()
    await put_topic(http, hub.base_url, t, partitions=2)
    await publish(http, hub.base_url, t, ev(id="x0"))
    [first] = await publish(http, hub.base_url, t, ev(id="dup-1", partitionkey="k"))
    offsets = await next_offsets(http, hub.base_url, t)

    [again] = await publish(http, hub.base_url, t, ev(id="dup-1", partitionkey="k", data=2))
    assert again == {**first, "duplicate": True}
    assert await next_offsets(http, hub.base_url, t) == offsets

    # In a batch: known ids and ids repeated inside the batch append nothing.
    out = await publish(
        http, hub.base_url, t, ev(id="dup-1"), ev(id="new-1"), ev(id="new-1"), ev(id="new-2")
    )
    assert out[0] == {**first, "duplicate": True}
    assert "duplicate" not in out[1] and "duplicate" not in out[3]
    assert out[2] == {**out[1], "duplicate": True}
    assert sum(await next_offsets(http, hub.base_url, t)) == sum(offsets) + 2
    assert sorted(ids(await read_all(http, hub.base_url, t))) == ["dup-1", "new-1", "new-2", "x0"]

    # Another topic has its own window.
    [elsewhere] = await publish(http, hub.base_url, unique(), ev(id="dup-1"))
    assert "duplicate" not in elsewhere


async def test_dedupe_holds_for_concurrent_publishes_of_one_id(
    hub_factory: HubFactory, http: Session
) -> None:
    # fsync always: each append waits on the disk, so the requests surely overlap.
    hub = hub_factory.start(fsync="always")
    t = unique()
    await publish(http, hub.base_url, t, ev(id="warm-up"))
    results = await asyncio.gather(
        *(publish(http, hub.base_url, t, ev(id="same", data=i)) for i in range(16))
    )
    positions = {(r[0]["partition"], r[0]["offset"]) for r in results}
    assert len(positions) == 1, results
    assert sum(1 for r in results if not r[0].get("duplicate")) == 1
    assert await next_offsets(http, hub.base_url, t) == [2]


# -- read and replay -----------------------------------------------------------------------


async def test_read_from_earliest_latest_offset_and_token(hub: HubProcess, http: Session) -> None:
    t = unique()
    await publish(http, hub.base_url, t, *[ev(id=f"r{i}") for i in range(10)])
    base = hub.base_url

    page = await read(http, base, t, limit=4)
    assert [r["offset"] for r in page["records"]] == [0, 1, 2, 3]
    assert page["next"] == "0:4"
    page = await read(http, base, t, limit=4, **{"from": page["next"]})
    assert ids(page["records"]) == ["r4", "r5", "r6", "r7"]
    page = await read(http, base, t, limit=4, **{"from": page["next"]})
    assert ids(page["records"]) == ["r8", "r9"]
    assert page["next"] == "0:10"
    page = await read(http, base, t, **{"from": page["next"]})
    assert page == {"records": [], "next": "0:10"}

    assert ids((await read(http, base, t, **{"from": "earliest"}))["records"])[0] == "r0"
    assert await read(http, base, t, **{"from": "latest"}) == {"records": [], "next": "0:10"}
    assert ids((await read(http, base, t, **{"from": 7}))["records"]) == ["r7", "r8", "r9"]
    assert ids((await read(http, base, t, **{"from": "0:5"}, limit=2))["records"]) == ["r5", "r6"]
    assert ids((await read(http, base, t, **{"from": 10}))["records"]) == []


async def test_read_several_partitions_and_one(hub: HubProcess, http: Session) -> None:
    t = unique()
    base = hub.base_url
    await put_topic(http, base, t, partitions=3)
    sent = await publish(
        http, base, t, *[ev(id=f"m{i}", partitionkey=f"k{i % 5}") for i in range(30)]
    )
    by_part: dict[int, list[str]] = defaultdict(list)
    for p in sent:
        by_part[p["partition"]].append(p["id"])

    records = await read_all(http, base, t, limit=7)
    assert sorted(ids(records)) == sorted(p["id"] for p in sent)
    for p in range(3):
        assert [r["event"]["id"] for r in records if r["partition"] == p] == by_part[p]

    one = await read(http, base, t, partition=1, limit=1000)
    assert ids(one["records"]) == by_part[1]
    assert one["next"] == f"1:{len(by_part[1])}"

    # A token with every partition resumes each where it was.
    page = await read(http, base, t, limit=5)
    rest = await read_all(http, base, t, **{"from": page["next"]})
    assert sorted(ids(page["records"]) + ids(rest)) == sorted(p["id"] for p in sent)

    two = await read(http, base, t, partition=2, **{"from": 1})
    assert ids(two["records"]) == by_part[2][1:]


async def test_read_from_time(hub: HubProcess, http: Session) -> None:
    t = unique()
    base = hub.base_url
    await publish(http, base, t, ev(id="old-1"), ev(id="old-2"))
    await asyncio.sleep(0.05)
    cut = time.time_ns() // 1_000_000
    await asyncio.sleep(0.05)
    await publish(http, base, t, ev(id="new-1"))
    await publish(http, base, t, ev(id="new-2"))

    page = await read(http, base, t, from_time=cut)
    assert ids(page["records"]) == ["new-1", "new-2"]
    rfc3339 = datetime.fromtimestamp(cut / 1000, UTC).isoformat(timespec="milliseconds")
    assert ids((await read(http, base, t, from_time=rfc3339))["records"]) == ["new-1", "new-2"]
    assert ids((await read(http, base, t, from_time=0))["records"])[0] == "old-1"
    future = await read(http, base, t, from_time=cut + 3_600_000)
    assert future == {"records": [], "next": "0:4"}


async def test_read_limit(hub: HubProcess, http: Session) -> None:
    t = unique()
    await publish(http, hub.base_url, t, *[ev() for _ in range(5)])
    assert len((await read(http, hub.base_url, t, limit=1))["records"]) == 1
    assert len((await read(http, hub.base_url, t, limit=10_000))["records"]) == 5
    assert len((await read(http, hub.base_url, t))["records"]) == 5


async def test_read_types_patterns(hub: HubProcess, http: Session) -> None:
    t = unique()
    base = hub.base_url
    types = ["order.placed", "order.item.added", "cart.item.added", "order.paid", "orders.x"]
    await publish(http, base, t, *[ev(tp, id=tp) for tp in types])

    async def typed(pattern: str, **params: Any) -> list[str]:
        return ids((await read(http, base, t, types=pattern, **params))["records"])

    assert await typed("order.*") == ["order.placed", "order.paid"]
    assert await typed("order.>") == ["order.placed", "order.item.added", "order.paid"]
    assert await typed("*.item.added") == ["order.item.added", "cart.item.added"]
    assert await typed("order.placed,cart.>") == ["order.placed", "cart.item.added"]
    assert await typed(">") == types
    assert await typed("order") == []

    # next moves past what the filter skipped, so paging sees each match once.
    page = await read(http, base, t, types="order.*", limit=1)
    assert ids(page["records"]) == ["order.placed"]
    page = await read(http, base, t, types="order.*", limit=1, **{"from": page["next"]})
    assert ids(page["records"]) == ["order.paid"]
    page = await read(http, base, t, types="order.*", **{"from": page["next"]})
    assert page["records"] == [] and page["next"] == "0:5"


async def test_read_wait_returns_when_a_concurrent_publish_lands(
    hub: HubProcess, http: Session
) -> None:
    t = unique()
    base = hub.base_url
    await put_topic(http, base, t, partitions=2)
    await publish(http, base, t, ev(id="before"))
    token = (await read(http, base, t, **{"from": "latest"}))["next"]

    async def later() -> list[dict[str, Any]]:
        await asyncio.sleep(0.3)
        return await publish(http, base, t, ev(id="during"))

    start = time.monotonic()
    page, _ = await asyncio.gather(read(http, base, t, wait=20, **{"from": token}), later())
    assert time.monotonic() - start < 10
    assert ids(page["records"]) == ["during"]


async def test_read_wait_answers_empty_after_the_wait(hub: HubProcess, http: Session) -> None:
    t = unique()
    base = hub.base_url
    await publish(http, base, t, ev())
    for wait in ("0.5", "500ms"):
        start = time.monotonic()
        page = await read(http, base, t, wait=wait, **{"from": "latest"})
        assert time.monotonic() - start >= 0.45
        assert page == {"records": [], "next": "0:1"}


# -- consumer groups -------------------------------------------------------------------------


async def test_group_put_fetch_ack_get_list_delete(hub: HubProcess, http: Session) -> None:
    t, g = unique(), "billing"
    base = hub.base_url
    await publish(http, base, t, *[ev(id=f"g{i}", data=i) for i in range(5)])

    url = f"{base}/v1/topics/{t}/groups/{g}"
    async with http.put(url, json={"ack_wait": 30, "max_deliver": 3}) as resp:
        info = await expect(resp, 201)
    assert info["config"] == {
        "start": "earliest",
        "ack_wait": 30,
        "max_deliver": 3,
        "dead_letter_topic": None,
        "ordering": "none",
        "types": [],
    }
    assert (info["topic"], info["name"], info["lag"], info["pending"]) == (t, g, 5, 0)
    async with http.put(url, json={"ack_wait": "45s", "max_deliver": 3}) as resp:
        info = await expect(resp, 200)
    assert info["config"]["ack_wait"] == 45

    got = await fetch(http, base, t, g, max=3)
    assert ids(got) == ["g0", "g1", "g2"]
    for r in got:
        assert r["topic"] == t and r["partition"] == 0
        assert r["deliveries"] == 1
        assert isinstance(r["lease"], str) and r["lease"]
        assert r["event"]["data"] == r["offset"]
    info = await get_group(http, base, t, g)
    assert (info["lag"], info["pending"], info["delivered"]) == (5, 3, 3)
    assert info["partitions"] == [
        {"partition": 0, "committed": 0, "next_offset": 5, "lag": 5, "pending": 3}
    ]

    assert await ack(http, base, t, g, [r["lease"] for r in got]) == 3
    info = await get_group(http, base, t, g)
    assert (info["lag"], info["pending"]) == (2, 0)
    assert info["partitions"][0]["committed"] == 3

    async with http.get(f"{base}/v1/groups") as resp:
        groups = (await expect(resp, 200))["groups"]
    mine = [x for x in groups if x["topic"] == t]
    assert [x["name"] for x in mine] == [g]
    assert mine[0]["lag"] == 2

    async with http.delete(url) as resp:
        await expect(resp, 204)
    async with http.get(url) as resp:
        problem = await expect_problem(resp, 404)
    assert problem.get("group") == g
    async with http.get(f"{base}/v1/groups") as resp:
        assert not [x for x in (await expect(resp, 200))["groups"] if x["topic"] == t]


async def test_group_start_latest_skips_what_is_there(hub: HubProcess, http: Session) -> None:
    t = unique()
    base = hub.base_url
    await publish(http, base, t, ev(id="old"))
    await put_group(http, base, t, "g", 201, start="latest")
    assert await fetch(http, base, t, "g") == []
    await publish(http, base, t, ev(id="new"))
    assert ids(await fetch(http, base, t, "g")) == ["new"]


async def test_group_on_an_unknown_topic_creates_the_topic(hub: HubProcess, http: Session) -> None:
    t = unique()
    await put_group(http, hub.base_url, t, "g", 201)
    assert (await get_topic(http, hub.base_url, t))["events"] == 0


async def test_fetch_wait_returns_when_an_event_is_published(
    hub: HubProcess, http: Session
) -> None:
    t = unique()
    base = hub.base_url
    await put_group(http, base, t, "g", 201)

    async def later() -> None:
        await asyncio.sleep(0.3)
        await publish(http, base, t, ev(id="late"))

    start = time.monotonic()
    got, _ = await asyncio.gather(fetch(http, base, t, "g", wait=20), later())
    assert time.monotonic() - start < 10
    assert ids(got) == ["late"]


async def test_fetch_types_leaves_the_rest_for_later(hub: HubProcess, http: Session) -> None:
    t = unique()
    base = hub.base_url
    await publish(
        http,
        base,
        t,
        ev("order.placed", id="a"),
        ev("cart.added", id="b"),
        ev("order.paid", id="c"),
    )
    await put_group(http, base, t, "g", 201)
    first = await fetch(http, base, t, "g", types=["cart.*"])
    assert ids(first) == ["b"]
    rest = await fetch(http, base, t, "g")
    assert ids(rest) == ["a", "c"]
    await ack(http, base, t, "g", [r["lease"] for r in first + rest])
    assert (await get_group(http, base, t, "g"))["lag"] == 0


async def test_group_types_config_skips_other_events(hub: HubProcess, http: Session) -> None:
    t = unique()
    base = hub.base_url
    await publish(
        http,
        base,
        t,
        ev("order.placed", id="a"),
        ev("cart.added", id="b"),
        ev("order.item.added", id="c"),
        ev("order.paid", id="d"),
    )
    await put_group(http, base, t, "g", 201, types=["order.*"])
    got = await fetch(http, base, t, "g")
    assert ids(got) == ["a", "d"]
    await ack(http, base, t, "g", [r["lease"] for r in got])
    info = await get_group(http, base, t, "g")
    assert (info["lag"], info["partitions"][0]["committed"]) == (0, 4)


async def test_nack_with_delay_redelivers_after_the_delay(hub: HubProcess, http: Session) -> None:
    t = unique()
    base = hub.base_url
    await publish(http, base, t, ev(id="n1"), ev(id="n2"))
    await put_group(http, base, t, "g", 201, ack_wait=30)
    got = await fetch(http, base, t, "g", max=2)

    # delay 0: due at once, delivered a second time.
    out = await group_post(http, base, t, "g", "nack", {"leases": [got[0]["lease"]]})
    assert out == {"nacked": 1}
    [again] = await fetch(http, base, t, "g")
    assert (again["event"]["id"], again["deliveries"]) == ("n1", 2)
    assert again["lease"] != got[0]["lease"]

    nacked_at = time.monotonic()
    body = {"leases": [again["lease"], got[1]["lease"]], "delay": "1500ms"}
    assert await group_post(http, base, t, "g", "nack", body) == {"nacked": 2}
    assert await fetch(http, base, t, "g") == []  # well inside the delay
    late = await fetch(http, base, t, "g", max=5, wait=15)
    if len(late) < 2:
        late += await fetch(http, base, t, "g", max=5, wait=5)
    assert time.monotonic() - nacked_at >= 1.4
    assert sorted((r["event"]["id"], r["deliveries"]) for r in late) == [("n1", 3), ("n2", 2)]
    info = await get_group(http, base, t, "g")
    assert info["redelivered"] == 3


async def test_unacked_lease_is_redelivered_after_ack_wait(hub: HubProcess, http: Session) -> None:
    t = unique()
    base = hub.base_url
    await publish(http, base, t, ev(id="slow"))
    await put_group(http, base, t, "g", 201, ack_wait=0.5)
    asked_at = time.monotonic()  # the lease starts after this
    [first] = await fetch(http, base, t, "g")
    [second] = await fetch(http, base, t, "g", wait=15)
    assert time.monotonic() - asked_at >= 0.45
    assert (second["event"]["id"], second["offset"], second["deliveries"]) == ("slow", 0, 2)
    assert second["lease"] != first["lease"]

    async with http.post(
        f"{base}/v1/topics/{t}/groups/g/ack", json={"leases": [first["lease"]]}
    ) as resp:
        await expect_problem(resp, 409)
    assert await ack(http, base, t, "g", [second["lease"]]) == 1
    info = await get_group(http, base, t, "g")
    assert (info["redelivered"], info["lag"], info["pending"]) == (1, 0, 0)


async def test_max_deliver_moves_the_event_to_the_default_dead_letter_topic(
    hub: HubProcess, http: Session
) -> None:
    t = unique()
    base = hub.base_url
    await publish(http, base, t, ev(id="ok"))
    sent = ev(id="poison", data={"n": 1}, partitionkey="o-1", subject="s")
    [pos] = await publish(http, base, t, sent)
    await put_group(http, base, t, "g", 201, ack_wait=0.3, max_deliver=2)

    [ok, _poison] = await fetch(http, base, t, "g", max=2)
    await ack(http, base, t, "g", [ok["lease"]])
    [again] = await fetch(http, base, t, "g", wait=15)
    assert (again["event"]["id"], again["deliveries"]) == ("poison", 2)

    async def dead() -> list[dict[str, Any]] | None:
        async with http.get(f"{base}/v1/topics/{t}.dlq/events") as resp:
            if resp.status == 404:
                return None
            records = (await expect(resp, 200))["records"]
        return records or None

    [record] = await poll_until(dead, timeout=20, what="the dead letter")
    event = record["event"]
    for name, value in sent.items():
        assert event[name] == value
    assert event["dlqtopic"] == t
    assert event["dlqpartition"] == pos["partition"] == 0
    assert event["dlqoffset"] == pos["offset"] == 1
    assert event["dlqgroup"] == "g"
    assert event["dlqdeliveries"] == 2
    assert "ack_wait" in event["dlqreason"] and "2" in event["dlqreason"]
    # When it was dead-lettered, not when it was published: after the second ack_wait.
    dead_at = datetime.fromisoformat(event["dlqtime"])
    assert dead_at - datetime.fromisoformat(event["time"]) >= timedelta(seconds=0.6)
    assert abs(datetime.now(UTC) - dead_at) < timedelta(seconds=20)

    assert await fetch(http, base, t, "g", wait=0.5) == []
    info = await get_group(http, base, t, "g")
    assert (info["dead_lettered"], info["lag"], info["pending"]) == (1, 0, 0)


async def test_nack_past_max_deliver_goes_to_the_named_dead_letter_topic(
    hub: HubProcess, http: Session
) -> None:
    t, dlq = unique(), unique("dead")
    base = hub.base_url
    await publish(http, base, t, ev(id="bad"))
    await put_group(http, base, t, "g", 201, max_deliver=1, dead_letter_topic=dlq)
    [got] = await fetch(http, base, t, "g")
    await group_post(http, base, t, "g", "nack", {"leases": [got["lease"]]})

    [record] = (await read(http, base, dlq))["records"]
    event = record["event"]
    assert event["id"] == "bad"
    assert (event["dlqtopic"], event["dlqgroup"], event["dlqoffset"]) == (t, "g", 0)
    assert event["dlqdeliveries"] == 1
    assert "nack" in event["dlqreason"]
    async with http.get(f"{base}/v1/topics/{t}.dlq") as resp:
        await expect_problem(resp, 404)
    assert await fetch(http, base, t, "g") == []


async def test_seek_every_form(hub: HubProcess, http: Session) -> None:
    t = unique()
    base = hub.base_url
    await publish(http, base, t, *[ev(id=f"s{i}") for i in range(4)])
    await asyncio.sleep(0.05)
    cut = time.time_ns() // 1_000_000
    await asyncio.sleep(0.05)
    await publish(http, base, t, ev(id="s4"), ev(id="s5"))
    await put_group(http, base, t, "g", 201)

    async def seek(to: Any) -> str:
        out = await group_post(http, base, t, "g", "seek", {"to": to})
        return str(out["positions"])

    async def drain() -> list[str]:
        got = await fetch_all(http, base, t, "g", quiet_s=0)
        if got:
            await ack(http, base, t, "g", [r["lease"] for r in got])
        return ids(got)

    assert await drain() == [f"s{i}" for i in range(6)]
    assert await seek("earliest") == "0:0"
    assert await drain() == [f"s{i}" for i in range(6)]
    assert await seek("latest") == "0:6"
    assert await drain() == []
    assert await seek({"partition": 0, "offset": 4}) == "0:4"
    assert await drain() == ["s4", "s5"]
    assert await seek("0:2") == "0:2"
    assert await drain() == ["s2", "s3", "s4", "s5"]
    assert await seek({"time": cut}) == "0:4"
    assert await drain() == ["s4", "s5"]
    iso = datetime.fromtimestamp(cut / 1000, UTC).isoformat(timespec="milliseconds")
    assert await seek(iso) == "0:4"
    assert await drain() == ["s4", "s5"]
    assert await seek(cut) == "0:4"

    # A seek makes the leases it passes over stale.
    [leased] = await fetch(http, base, t, "g", max=1)
    await seek("earliest")
    async with http.post(
        f"{base}/v1/topics/{t}/groups/g/ack", json={"leases": [leased["lease"]]}
    ) as resp:
        await expect_problem(resp, 409)
    info = await get_group(http, base, t, "g")
    assert (info["lag"], info["pending"]) == (6, 0)


async def test_ordering_key_two_competing_consumers(hub: HubProcess, http: Session) -> None:
    """No two events of one key in flight at once; each key processed in publish order."""
    t = unique()
    base = hub.base_url
    await put_topic(http, base, t, partitions=2)
    rng = random.Random(11)
    keys = [f"o-{i}" for i in range(6)]
    sent: dict[str, list[str]] = defaultdict(list)
    events = []
    for i in range(60):
        key = rng.choice(keys)
        events.append(ev(id=f"e{i:02}", partitionkey=key))
        sent[key].append(f"e{i:02}")
    await publish(http, base, t, *events[:30])
    await put_group(http, base, t, "g", 201, ordering="key", ack_wait=60)
    await publish(http, base, t, *events[30:])

    in_flight: dict[str, str] = {}
    processed: dict[str, list[str]] = defaultdict(list)
    violations: list[str] = []
    deadline = time.monotonic() + 60

    async def consumer(name: str, seed: int) -> None:
        crng = random.Random(seed)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as own:
            while sum(map(len, processed.values())) < len(events) and time.monotonic() < deadline:
                got = await fetch(own, base, t, "g", max=crng.randint(1, 4), wait=0.5)
                for r in got:
                    key = r["event"]["partitionkey"]
                    if key in in_flight:
                        violations.append(
                            f"{name} got {r['event']['id']} while "
                            f"{in_flight[key]} of {key} was in flight"
                        )
                    in_flight[key] = r["event"]["id"]
                for r in got:
                    await asyncio.sleep(crng.random() * 0.01)
                    processed[r["event"]["partitionkey"]].append(r["event"]["id"])
                    # Released before the ack is sent: the hub cannot free the key earlier.
                    del in_flight[r["event"]["partitionkey"]]
                    await ack(own, base, t, "g", [r["lease"]])

    await asyncio.gather(consumer("a", 1), consumer("b", 2))
    assert violations == []
    assert processed == sent
    info = await get_group(http, base, t, "g")
    assert (info["lag"], info["pending"], info["redelivered"]) == (0, 0, 0)


async def test_ordering_key_ack_wakes_a_waiting_fetch(hub: HubProcess, http: Session) -> None:
    t = unique()
    base = hub.base_url
    await put_group(http, base, t, "g", 201, ordering="key", ack_wait=60)
    await publish(http, base, t, ev(id="k1", partitionkey="k"), ev(id="k2", partitionkey="k"))
    [first] = await fetch(http, base, t, "g", max=10)
    assert first["event"]["id"] == "k1"

    async def ack_later() -> float:
        await asyncio.sleep(0.3)
        await ack(http, base, t, "g", [first["lease"]])
        return time.monotonic()

    got, acked_at = await asyncio.gather(fetch(http, base, t, "g", wait=20), ack_later())
    assert ids(got) == ["k2"]
    assert time.monotonic() - acked_at < 5, "the ack did not wake the waiting fetch"


# -- operations ----------------------------------------------------------------------------


async def test_healthz_and_readyz(hub: HubProcess, http: Session) -> None:
    async with http.get(f"{hub.base_url}/healthz") as resp:
        health = await expect(resp, 200)
        assert health == {"status": "ok", "hub_id": resp.headers["Tidings-Hub-Id"]}
    assert len(health["hub_id"]) == 32
    async with http.get(f"{hub.base_url}/readyz") as resp:
        ready = await expect(resp, 200)
        assert resp.headers["Tidings-Hub-Id"] == health["hub_id"]
    assert ready["status"] == "ready"
    assert isinstance(ready["topics"], int)


async def test_metrics_prometheus_text(hub: HubProcess, http: Session) -> None:
    t = unique()
    base = hub.base_url
    await publish(http, base, t, *[ev() for _ in range(4)])
    await publish(http, base, t, ev())
    await put_group(http, base, t, "g", 201)
    await ack(http, base, t, "g", [r["lease"] for r in await fetch(http, base, t, "g", max=2)])

    async with http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    samples = parse_prometheus(text)
    topic = frozenset({("topic", t)})
    group = frozenset({("topic", t), ("group", "g")})
    assert samples[("tidings_events_in_total", topic)] == 5
    assert samples[("tidings_topic_events", topic)] == 5
    assert samples[("tidings_bytes_in_total", topic)] > 0
    assert samples[("tidings_group_lag", group)] == 3
    assert samples[("tidings_group_pending", group)] == 0
    assert ("tidings_fsync_seconds_count", frozenset()) in samples
    # Every sample belongs to a family announced with HELP and TYPE.
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    for name, _ in samples:
        assert name in families or name.rsplit("_", 1)[0] in families, name


async def test_metrics_count_live_connections_and_process_memory(
    hub: HubProcess, http: Session
) -> None:
    t = unique()
    await publish(http, hub.base_url, t, ev())

    async def gauges() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        async with http.get(f"{hub.base_url}/metrics") as resp:
            return parse_prometheus(await resp.text())

    ws_url = hub.base_url.replace("http", "ws") + "/v1/ws"
    async with http.get(f"{hub.base_url}/v1/topics/{t}/sse?from=earliest") as sse:
        await sse.content.readline()  # retry: the stream is open
        async with http.ws_connect(ws_url, protocols=("tidings.v1",)):
            samples = await gauges()
    assert samples[("tidings_connections", frozenset({("channel", "websocket")}))] >= 1
    assert samples[("tidings_connections", frozenset({("channel", "sse")}))] >= 1
    assert samples[("process_resident_memory_bytes", frozenset())] > 1 << 20
    assert samples[("process_cpu_seconds_total", frozenset())] > 0
    assert samples[("process_start_time_seconds", frozenset())] <= time.time()


async def test_redrive_publishes_a_groups_dead_letters_again(
    hub: HubProcess, http: Session
) -> None:
    t = unique()
    base = hub.base_url
    await put_group(http, base, t, "g", max_deliver=1)
    [first] = await publish(http, base, t, ev(id="d1", correlationid="o-1"))
    leases = [r["lease"] for r in await fetch(http, base, t, "g")]
    await group_post(http, base, t, "g", "nack", {"leases": leases})
    assert (await get_group(http, base, t, "g"))["dead_lettered"] == 1
    answer = await group_post(http, base, t, "g", "redrive", {})
    assert answer == {"dead_letter_topic": f"{t}.dlq", "redriven": 1, "skipped": 0}
    [again] = await fetch(http, base, t, "g")
    assert again["event"]["id"] == "d1" and again["offset"] == first["offset"] + 1
    assert "dlqreason" not in again["event"]
    assert (await group_post(http, base, t, "g", "redrive", {}))["redriven"] == 0
    await group_post(http, base, t, "g", "redrive", {"all": True}, status=400)


async def test_openapi_is_valid_and_describes_every_route(hub: HubProcess, http: Session) -> None:
    from openapi_spec_validator import validate

    from tidings.core.hub import Hub
    from tidings.log.memory import MemoryStorage
    from tidings.server.app import create_app

    async with http.get(f"{hub.base_url}/openapi.json") as resp:
        spec = await expect(resp, 200)
    validate(spec)

    from tidings.core.webhooks.store import MemoryWebhookStore
    from tidings.server.webhooks.service import WebhookService

    memory_hub = Hub(MemoryStorage())
    app = create_app(memory_hub, webhooks=WebhookService(memory_hub, MemoryWebhookStore()))
    missing = []
    for route in app.routes:
        for method in sorted(getattr(route, "methods", None) or ()):
            if method == "HEAD":
                continue
            # A path converter ({key:viewkey}) is the plain parameter in OpenAPI.
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # type: ignore[attr-defined]
            if method.lower() not in spec["paths"].get(path, {}):
                missing.append(f"{method} {path}")
    assert missing == []
    operation_ids = [
        op["operationId"]
        for item in spec["paths"].values()
        for name, op in item.items()
        if name != "parameters"
    ]
    assert len(operation_ids) == len(set(operation_ids))


async def test_docs_and_dashboard_are_html(hub: HubProcess, http: Session) -> None:
    async with http.get(f"{hub.base_url}/docs") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert "<html" in page and "/v1/topics/{topic}/events" in page
    async with http.get(f"{hub.base_url}/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        # The dashboard runs only the hub's own scripts and talks only to the hub.
        assert "script-src 'self'" in resp.headers["content-security-policy"]
        page = await resp.text()
    assert '<script type="module" src="/static/dashboard/app.js">' in page
    for asset in ("/static/dashboard/app.js", "/static/vendor/uplot/uPlot.esm.js",
                  "/static/vendor/cytoscape/cytoscape.esm.min.js"):
        async with http.get(f"{hub.base_url}{asset}") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/javascript", asset


async def test_publish_content_types_are_matched_case_insensitively(
    hub: HubProcess, http: Session
) -> None:
    t = unique()
    url = f"{hub.base_url}/v1/topics/{t}/events"
    for ctype, body in [
        ("Application/CloudEvents+JSON; charset=utf-8", orjson.dumps(ev(id="c1"))),
        (BATCH.upper(), orjson.dumps([ev(id="c2")])),
        (STRUCTURED, orjson.dumps(ev(id="c3"))),
    ]:
        async with http.post(url, data=body, headers={"content-type": ctype}) as resp:
            await expect(resp, 202)
    assert ids(await read_all(http, hub.base_url, t)) == ["c1", "c2", "c3"]
