"""The dedupe window across a kill -9 at a high publish rate, and the hub while it refills.

A log of 1.1 million recent records (written straight into the hub's data
directory beforehand, as a hub publishing ~300,000 events/s would have left it)
stands in for the history: more than the hub once refilled, oldest first and
partition by partition, so the newest ids of the last partitions were forgotten.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from hubapi import get_topic, publish
from hubproc import HubFactory, HubProcess

from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.log.config import FsyncPolicy, Retention

PARTITIONS = 8
HISTORY = 1_100_000
TOPIC = "fast"


async def write_history(data_dir: Path, records: int = HISTORY) -> None:
    """``records`` events appended just now over the topic's partitions, 1,000 at a time."""
    storage = EmbeddedStorage(data_dir, FsyncPolicy.parse("never"))
    await storage.save_topic(
        TOPIC,
        {"partitions": PARTITIONS, "retention": {"max_age_ms": None, "max_bytes": None}},
    )
    parts = [await storage.open_partition(TOPIC, p, Retention()) for p in range(PARTITIONS)]
    per = records // PARTITIONS
    for start in range(0, per, 1000):
        for p, part in enumerate(parts):
            await part.append(
                [
                    orjson.dumps(
                        {"specversion": "1.0", "id": f"h{p}-{i}", "source": "/h", "type": "h"}
                    )
                    for i in range(start, min(start + 1000, per))
                ]
            )
    await storage.close()


async def wait_ready(http: aiohttp.ClientSession, base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(f"{base}/readyz") as resp:
            if resp.status == 200:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not ready after {timeout}s")


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))


async def publisher(
    base: str, n: int, acked: dict[str, tuple[int, int]], stop: asyncio.Event
) -> None:
    """Batches of 50 events keyed over every partition, until the hub dies."""
    rng = random.Random(n)
    async with session() as http:
        for i in range(10_000):
            if stop.is_set():
                return
            events = [
                {"type": "t", "id": f"live-{n}-{i}-{j}", "partitionkey": f"k{rng.randrange(64)}"}
                for j in range(50)
            ]
            try:
                positions = await publish(http, base, TOPIC, *events)
            except (AssertionError, TimeoutError, aiohttp.ClientError):
                return
            for pos in positions:
                acked[pos["id"]] = (pos["partition"], pos["offset"])


async def test_retries_after_kill_9_at_a_high_rate_are_not_stored_twice(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    await write_history(data_dir)
    hub = hub_factory.start(data_dir=data_dir)
    async with session() as http:
        await wait_ready(http, hub.base_url)
    acked: dict[str, tuple[int, int]] = {}
    stop = asyncio.Event()
    tasks = [asyncio.create_task(publisher(hub.base_url, n, acked, stop)) for n in range(8)]
    await asyncio.sleep(random.uniform(1.0, 2.0))
    hub.kill()
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert len(acked) >= 1000, "the load had not started when the hub was killed"

    hub.start()
    async with session() as http:
        await wait_ready(http, hub.base_url)
        before = await offsets(http, hub)
        ids = sorted(acked)
        for k in range(0, len(ids), 500):
            # Retried as a producer would: the same ids, here under other keys.
            events = [{"type": "t", "id": eid, "partitionkey": eid} for eid in ids[k : k + 500]]
            again = await publish(http, hub.base_url, TOPIC, *events)
            twice = [p["id"] for p in again if not p.get("duplicate")]
            assert twice == [], f"{len(twice)} acknowledged ids stored twice, e.g. {twice[:3]}"
            assert all((p["partition"], p["offset"]) == acked[p["id"]] for p in again)
        assert await offsets(http, hub) == before
    print(f"{len(acked)} acknowledged ids retried after kill -9: none stored twice")


async def offsets(http: aiohttp.ClientSession, hub: HubProcess) -> list[int]:
    info: dict[str, Any] = await get_topic(http, hub.base_url, TOPIC)
    return [p["next_offset"] for p in info["partitions"]]


async def test_healthz_answers_while_the_dedupe_window_refills(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    await write_history(data_dir)
    hub = hub_factory.start(data_dir=data_dir)  # returns once /healthz answers
    async with session() as http:
        async with http.get(f"{hub.base_url}/readyz") as resp:
            assert resp.status == 503, "ready before the dedupe window was refilled"
            problem = await resp.json()
        assert "dedupe" in problem["detail"]
        async with http.get(f"{hub.base_url}/healthz") as resp:
            assert resp.status == 200
        # A publish meanwhile waits for the refill, then knows the newest id of the
        # last partition.
        newest = f"h{PARTITIONS - 1}-{HISTORY // PARTITIONS - 1}"
        [again] = await publish(http, hub.base_url, TOPIC, {"type": "h", "id": newest})
        assert again == {
            "id": newest,
            "partition": PARTITIONS - 1,
            "offset": HISTORY // PARTITIONS - 1,
            "duplicate": True,
        }
        async with http.get(f"{hub.base_url}/readyz") as resp:
            assert resp.status == 200
