"""Reads with append times over HTTP, against a hub under concurrent publishes.

The horizon's promise (streams design, section 1): no record ever becomes readable
with an append time below a horizon the hub has already answered. Publishers send
single events and batches spread over several partitions (linked appends, held
until whole) to a hub that fsyncs every append (group commit: appends wait their
turn), while readers follow every partition with pages of several sizes, and each
checks every record it gets against the highest horizon it was answered before: a
record it had not got then had not become readable to it, so it must not be older.
"""

from __future__ import annotations

import asyncio
import random

import aiohttp
from hubapi import expect_problem, publish, put_topic, read, unique
from hubproc import HubFactory

PUBLISHERS = 3
PUBLISHES = 120
PARTITIONS = 3


async def test_records_come_with_append_times_and_the_read_a_horizon(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    hub = hub_factory.start()
    topic = unique()
    await put_topic(http, hub.base_url, topic, partitions=2)
    await publish(http, hub.base_url, topic, {"type": "t.a", "partitionkey": "k"})
    got = await read(http, hub.base_url, topic, appended="true")
    [record] = got["records"]
    assert isinstance(record["appended"], int) and isinstance(got["horizon"], int)
    assert record["appended"] <= got["horizon"]
    plain = await read(http, hub.base_url, topic)
    assert "horizon" not in plain and "appended" not in plain["records"][0]
    async with http.get(
        f"{hub.base_url}/v1/topics/{topic}/events", params={"appended": "yes"}
    ) as resp:
        problem = await expect_problem(resp, 400)
    assert problem["field"] == "appended"


async def test_no_record_becomes_readable_below_a_horizon_already_answered(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    hub = hub_factory.start(fsync="always")
    topic = unique()
    await put_topic(http, hub.base_url, topic, partitions=PARTITIONS)
    done = asyncio.Event()
    violations: list[str] = []
    received = reads = 0

    async def publisher(n: int) -> None:
        rng = random.Random(n)
        for i in range(PUBLISHES):
            if rng.random() < 0.5:
                await publish(http, hub.base_url, topic, {"type": "t.one", "id": f"{n}-{i}"})
            else:  # a batch over several partitions: one linked append
                events = [
                    {"type": "t.many", "id": f"{n}-{i}-{k}", "partitionkey": f"k{rng.random()}"}
                    for k in range(rng.randint(2, 6))
                ]
                await publish(http, hub.base_url, topic, *events)

    async def reader(limit: int) -> None:
        nonlocal received, reads
        position = "earliest"
        floor = -1  # the highest horizon this reader was answered
        while True:
            got = await read(
                http,
                hub.base_url,
                topic,
                appended="true",
                limit=limit,
                wait="0.2s",
                **{"from": position},
            )
            for r in got["records"]:
                if r["appended"] < floor:
                    violations.append(
                        f"{r['partition']}:{r['offset']} appended {r['appended']} < {floor}"
                    )
            received += len(got["records"])
            floor = max(floor, got["horizon"])
            reads += 1
            position = got["next"]
            if done.is_set() and not got["records"]:
                return

    readers = [asyncio.create_task(reader(limit)) for limit in (1, 3, 50)]
    await asyncio.gather(*(publisher(n) for n in range(PUBLISHERS)))
    done.set()
    await asyncio.gather(*readers)
    assert violations == []
    events = 0
    for p in range(PARTITIONS):
        events += len((await read(http, hub.base_url, topic, partition=p, limit=10_000))["records"])
    assert received == 3 * events  # each reader got every record
    assert reads > 20
