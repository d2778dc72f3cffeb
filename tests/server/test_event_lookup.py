"""``GET /v1/events/{id}`` and ``GET /v1/events?correlationid=`` against a real hub.

The answers' shape, bad input, a token that may read one topic only, and kill -9
while the index trails a publish load: after the restart every acknowledged event
is found by its id and by its correlationid.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hubapi import expect, expect_problem, publish, unique
from hubproc import HubFactory, HubProcess

PUBLISHERS = 6
REQUESTS_PER_PUBLISHER = 400
BATCH = 25
ORDERS = 40  # correlationids per publisher
LOAD_DEADLINE_S = 20.0
TOPICS = ("orders", "payments", "shipping")


def session(token: str | None = None) -> aiohttp.ClientSession:
    headers = {"authorization": f"Bearer {token}"} if token else None
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), headers=headers)


BUSY_RETRIES = 60  # a 503 (the index still catching up) is tried again after Retry-After


async def get_json(http: aiohttp.ClientSession, url: str, status: int = 200, **kw: Any) -> Any:
    """GET ``url`` expecting ``status``; a 503 while the index catches up is tried again."""
    for _ in range(BUSY_RETRIES):
        async with http.get(url, **kw) as resp:
            if resp.status == 503 and status != 503:
                await resp.read()
                await asyncio.sleep(float(resp.headers.get("retry-after", "1")))
                continue
            return await (expect(resp, 200) if status == 200 else expect_problem(resp, status))
    raise AssertionError(f"{url}: still 503 after {BUSY_RETRIES} tries")


async def by_id(http: aiohttp.ClientSession, base: str, event_id: str, status: int = 200) -> Any:
    return await get_json(http, f"{base}/v1/events/{event_id}", status)


async def trace(http: aiohttp.ClientSession, base: str, corr: str, limit: int = 1000) -> list[Any]:
    """Every record of ``corr``, following ``next`` page by page."""
    records: list[Any] = []
    params: dict[str, str] = {"correlationid": corr, "limit": str(limit)}
    for _ in range(10_000):
        page = await get_json(http, f"{base}/v1/events", params=dict(params))
        assert set(page) == {"records", "next"}
        records += page["records"]
        if page["next"] is None:
            return records
        params["after"] = page["next"]
    raise AssertionError("the pages did not end")


async def test_an_order_is_found_by_id_and_traced_over_http(hub: HubProcess) -> None:
    corr = unique("o-")
    base = hub.base_url
    sent = []
    async with session() as http:
        for topic, type_ in [("orders", "order.placed"), ("payments", "payment.succeeded"),
                             ("orders", "order.paid")]:  # fmt: skip
            [pos] = await publish(http, base, topic, {"type": type_, "correlationid": corr})
            sent.append((topic, pos))
            await asyncio.sleep(0.002)  # publish order is append time (ms)
        topic, pos = sent[1]
        record = await by_id(http, base, pos["id"])
        assert set(record) == {"topic", "partition", "offset", "event"}
        assert (record["topic"], record["partition"], record["offset"]) == (
            topic, pos["partition"], pos["offset"],
        )  # fmt: skip
        assert record["event"]["id"] == pos["id"]
        assert record["event"]["correlationid"] == corr
        records = await trace(http, base, corr)
        assert [(r["topic"], r["event"]["id"]) for r in records] == [
            (t, p["id"]) for t, p in sent
        ]
        # One a page: each next leads to the following one, the last to null.
        assert [r["event"]["id"] for r in await trace(http, base, corr, limit=1)] == [
            p["id"] for _, p in sent
        ]
        problem = await by_id(http, base, "no-such-event", 404)
        assert "no-such-event" in problem["detail"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("", "correlationid"),
        ("correlationid=", "correlationid"),
        ("correlationid=o-1&limit=0", "limit"),
        ("correlationid=o-1&limit=1001", "limit"),
        ("correlationid=o-1&limit=ten", "limit"),
        ("correlationid=o-1&after=3", "after"),
        ("correlationid=o-1&after=%C2%B2-1", "after"),
        ("correlationid=o-1&after=99999999999999999999-1", "after"),
        ("correlationid=o-1&bogus=1", "bogus"),
        ("correlationid=" + "x" * 1001, "correlationid"),
    ],
)
async def test_bad_lookups_are_refused_naming_the_field(
    hub: HubProcess, query: str, field: str
) -> None:
    async with session() as http, http.get(f"{hub.base_url}/v1/events?{query}") as resp:
        problem = await expect_problem(resp, 400)
    assert problem["field"] == field


async def test_a_long_id_is_refused(hub: HubProcess) -> None:
    async with session() as http:
        problem = await by_id(http, hub.base_url, "x" * 1001, 400)
        assert problem["field"] == "event_id"
        async with http.get(f"{hub.base_url}/v1/events/e?x=1") as resp:
            assert (await expect_problem(resp, 400))["field"] == "x"


async def test_a_token_sees_only_records_of_topics_it_may_read(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"tokens": [
        {"name": "admin", "token": "adm", "admin": True},
        {"name": "shop", "token": "shp", "subscribe": ["public"]},
    ]}))  # fmt: skip
    hub = hub_factory.start("--auth-file", str(auth))
    base = hub.base_url
    async with session("adm") as admin:
        [pub] = await publish(admin, base, "public", {"type": "a", "correlationid": "o-1"})
        await asyncio.sleep(0.002)
        [sec] = await publish(admin, base, "secret", {"type": "b", "correlationid": "o-1"})
        assert [r["topic"] for r in await trace(admin, base, "o-1")] == ["public", "secret"]
        assert (await by_id(admin, base, sec["id"]))["topic"] == "secret"
    async with session("shp") as shop:
        assert (await by_id(shop, base, pub["id"]))["topic"] == "public"
        # The other topic's record is as absent as an unknown id: nothing tells of it.
        hidden = await by_id(shop, base, sec["id"], 404)
        unknown = await by_id(shop, base, "no-such-id", 404)
        assert hidden["title"] == unknown["title"]
        assert "secret" not in json.dumps(hidden)
        records = await trace(shop, base, "o-1")
        assert [r["topic"] for r in records] == ["public"]
    async with session() as anonymous:
        await by_id(anonymous, base, pub["id"], 401)
        async with anonymous.get(f"{base}/v1/events?correlationid=o-1") as resp:
            await expect_problem(resp, 401)


async def _publisher(
    base: str, n: int, acked: dict[str, tuple[str, int, int, str]], deadline: float
) -> None:
    """Batches of BATCH events over TOPICS until cut off; notes each acknowledged one."""
    rng = random.Random(n)
    async with session() as http:
        for i in range(REQUESTS_PER_PUBLISHER):
            if time.monotonic() > deadline:
                return
            topic = TOPICS[i % len(TOPICS)]
            corr = f"o-{n}-{rng.randrange(ORDERS)}"
            events = [
                {"type": "load.tick", "id": f"p{n}-{i}-{j}", "correlationid": corr, "data": j}
                for j in range(BATCH)
            ]
            try:
                positions = await publish(http, base, topic, *events)
            except (AssertionError, TimeoutError, aiohttp.ClientError):
                return  # cut off by the kill
            for p in positions:
                acked[p["id"]] = (topic, p["partition"], p["offset"], corr)


@pytest.mark.timeout(180)
async def test_kill_9_while_the_index_trails_loses_no_acknowledged_event(
    hub_factory: HubFactory,
) -> None:
    hub = hub_factory.start()
    seed = int.from_bytes(os.urandom(4), "big")
    kill_after = random.Random(seed).uniform(1.0, 2.5)
    print(f"seed {seed}: kill -9 after {kill_after:.2f}s")
    acked: dict[str, tuple[str, int, int, str]] = {}
    deadline = time.monotonic() + LOAD_DEADLINE_S
    tasks = [
        asyncio.create_task(_publisher(hub.base_url, n, acked, deadline))
        for n in range(PUBLISHERS)
    ]
    await asyncio.sleep(kill_after)
    hub.kill()
    await asyncio.gather(*tasks)
    assert len(acked) >= BATCH, "the load acknowledged nothing before the kill"
    with sqlite3.connect(hub.data_dir / "index.sqlite3") as db:
        [(indexed,)] = db.execute("SELECT COALESCE(SUM(next_offset), 0) FROM parts").fetchall()
    print(f"{len(acked)} acknowledged, {indexed} indexed at the kill")
    hub.start()
    base = hub.base_url
    async with session() as http:
        # Every acknowledged event of every order, by correlationid, in offset order
        # within each partition.
        wanted: dict[str, list[str]] = {}
        for eid, (_, _, _, corr) in acked.items():
            wanted.setdefault(corr, []).append(eid)
        for corr, ids in wanted.items():
            records = await trace(http, base, corr)
            got = {r["event"]["id"]: (r["topic"], r["partition"], r["offset"]) for r in records}
            missing = [e for e in ids if e not in got]
            assert not missing, f"{corr}: {len(missing)} acknowledged events not found"
            for e in ids:
                assert got[e] == acked[e][:3]
            for topic in TOPICS:
                for p in {r["partition"] for r in records if r["topic"] == topic}:
                    offsets = [
                        r["offset"] for r in records
                        if r["topic"] == topic and r["partition"] == p
                    ]  # fmt: skip
                    assert offsets == sorted(offsets), "a partition's records out of order"
        # By id: the last acknowledged of each publisher (the likeliest to be unindexed
        # at the kill) and a sample of the rest.
        last = {}
        for eid in acked:
            last[eid.split("-")[0]] = eid
        sample = random.Random(seed).sample(sorted(acked), min(300, len(acked)))
        for eid in [*last.values(), *sample]:
            record = await by_id(http, base, eid)
            assert (record["topic"], record["partition"], record["offset"]) == acked[eid][:3]
