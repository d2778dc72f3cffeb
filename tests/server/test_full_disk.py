"""A full disk, for real: the hub's data directory on a small tmpfs that the test fills.

Mounting needs root (CI runs the suite as root); elsewhere these tests skip
(see ``fulldisk``). Each drives a real hub process: fill the disk, see what it
answers, free the space, and see it carry on by itself, with no restart and
nothing lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from fulldisk import Disk, small_disk
from hubapi import (
    STRUCTURED,
    expect,
    expect_problem,
    fetch,
    get_group,
    next_offsets,
    parse_prometheus,
    poll_until,
    publish,
    put_group,
    put_topic,
    read_all,
)
from hubproc import HubFactory, HubProcess, free_port

from tidings.log import format as fmt


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    with small_disk(tmp_path / "disk") as d:
        yield d


@pytest.fixture
async def http_fresh() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield session


def start(hub_factory: HubFactory, disk: Disk, fsync: str = "interval:5") -> HubProcess:
    """A hub whose data directory is on the tmpfs and whose own log is not."""
    hub = HubProcess(disk.path / "data", free_port(), fsync, ())
    hub.log_path = hub_factory.root / "full-disk.hub.log"
    hub_factory.hubs.append(hub)
    return hub.start()


async def post_event(
    http: aiohttp.ClientSession, base: str, topic: str, event: dict[str, object]
) -> aiohttp.ClientResponse:
    async with http.post(
        f"{base}/v1/topics/{topic}/events",
        data=orjson.dumps(event),
        headers={"content-type": STRUCTURED},
    ) as resp:
        await resp.read()
        return resp


async def ready(http: aiohttp.ClientSession, base: str) -> int:
    async with http.get(f"{base}/readyz") as resp:
        await resp.read()
        return resp.status


async def failed_partitions(http: aiohttp.ClientSession, base: str) -> float:
    async with http.get(f"{base}/metrics") as resp:
        samples = parse_prometheus(await resp.text())
    return samples[("tidings_storage_failed_partitions", frozenset())]


@pytest.mark.parametrize("fsync", ["interval:5", "always"])
async def test_publishing_heals_once_space_is_freed(
    hub_factory: HubFactory, disk: Disk, http_fresh: aiohttp.ClientSession, fsync: str
) -> None:
    hub = start(hub_factory, disk, fsync)
    base, topic = hub.base_url, "orders"
    accepted = [a["id"] for a in await publish(http_fresh, base, topic, {"type": "o", "id": "a0"})]
    assert await ready(http_fresh, base) == 200
    disk.fill()
    body = "x" * 2000
    refused: list[str] = []
    for i in range(1, 200):  # the segment's last page may still take a few events
        resp = await post_event(http_fresh, base, topic, {"type": "o", "id": f"a{i}", "data": body})
        if resp.status == 202:
            accepted.append(f"a{i}")
            continue
        assert resp.status == 503, resp.status
        assert resp.headers["Retry-After"] == "1"
        refused.append(f"a{i}")
        break
    assert refused, "the full disk never refused a publish"
    # Failed: ready no more, the metric says so, and publishes go on being refused.
    assert await ready(http_fresh, base) == 503
    assert await failed_partitions(http_fresh, base) == 1
    resp = await post_event(http_fresh, base, topic, {"type": "o", "id": "refused-2"})
    assert resp.status == 503
    refused.append("refused-2")

    disk.free()
    await poll_until(is_ready(http_fresh, base), timeout=10, what="ready once space is freed")
    assert await failed_partitions(http_fresh, base) == 0
    for i in range(30):
        got = await publish(http_fresh, base, topic, {"type": "o", "id": f"b{i}", "data": body})
        accepted.append(got[0]["id"])
    records = await read_all(http_fresh, base, topic)
    assert [r["event"]["id"] for r in records] == accepted
    assert [r["offset"] for r in records] == list(range(len(accepted)))


async def test_a_group_ack_while_full_is_refused_whole_and_its_retry_succeeds(
    hub_factory: HubFactory, disk: Disk, http_fresh: aiohttp.ClientSession
) -> None:
    hub = start(hub_factory, disk)
    base, topic, group = hub.base_url, "orders", "billing"
    await publish(http_fresh, base, topic, *[{"type": "o", "id": f"e{i}"} for i in range(5)])
    await put_group(http_fresh, base, topic, group, 201, ack_wait=300)
    leased = await fetch(http_fresh, base, topic, group, max=4)
    leases = [r["lease"] for r in leased]
    disk.fill()
    url = f"{base}/v1/topics/{topic}/groups/{group}"
    for op, body in (
        ("ack", {"leases": leases[:2]}),
        ("nack", {"leases": [leases[2]], "delay": 60}),
        ("seek", {"to": "latest"}),
        ("fetch", {"max": 1}),  # its delivery count cannot be saved: no lease goes out
    ):
        async with http_fresh.post(f"{url}/{op}", json=body) as resp:
            await expect_problem(resp, 503)
            assert resp.headers["Retry-After"] == "1"
    # Nothing was applied: all four are still leased, none committed.
    info = await get_group(http_fresh, base, topic, group)
    assert (info["partitions"][0]["committed"], info["pending"]) == (0, 4)

    disk.free()
    async with http_fresh.post(f"{url}/ack", json={"leases": leases[:2]}) as resp:
        assert (await expect(resp, 200)) == {"acked": 2}
    async with http_fresh.post(f"{url}/nack", json={"leases": [leases[2]], "delay": 60}) as resp:
        assert (await expect(resp, 200)) == {"nacked": 1}
    (fifth,) = await fetch(http_fresh, base, topic, group, max=1)
    assert (fifth["event"]["id"], fifth["deliveries"]) == ("e4", 1)
    info = await get_group(http_fresh, base, topic, group)
    assert (info["partitions"][0]["committed"], info["pending"]) == (2, 2)  # e3 and e4


async def test_a_hub_starts_on_a_full_disk_and_serves_reads(
    hub_factory: HubFactory, disk: Disk, http_fresh: aiohttp.ClientSession
) -> None:
    hub = start(hub_factory, disk)
    base, topic = hub.base_url, "orders"
    events = [{"type": "o", "id": f"e{i}"} for i in range(20)]
    await publish(http_fresh, base, topic, *events)
    hub.stop()
    segment = disk.path / "data" / "topics" / topic / "0" / f"{0:020d}.log"
    assert segment.exists()
    with segment.open("ab") as f:  # a torn write: half a batch header
        f.write(b"\x00\x00\x01\x00torn")
    disk.fill()

    hub.start()
    records = await read_all(http_fresh, base, topic)
    assert [r["event"]["id"] for r in records] == [e["id"] for e in events]
    # No empty side file left behind; the torn tail waits, and appends with it.
    cuts = list(segment.parent.glob("*.cut-*"))
    assert cuts == []
    assert await ready(http_fresh, base) == 503
    resp = await post_event(http_fresh, base, topic, {"type": "o", "id": "late"})
    assert resp.status == 503

    disk.free()
    await poll_until(is_ready(http_fresh, base), timeout=10, what="ready once space is freed")
    cuts = list(segment.parent.glob("*.cut-*"))
    assert [c.read_bytes() for c in cuts] == [b"\x00\x00\x01\x00torn"]
    await publish(http_fresh, base, topic, {"type": "o", "id": "after"})
    records = await read_all(http_fresh, base, topic)
    assert [r["event"]["id"] for r in records] == [e["id"] for e in events] + ["after"]


def is_ready(http: aiohttp.ClientSession, base: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return await ready(http, base) == 200

    return probe


async def test_a_hub_starts_on_a_full_disk_with_a_torn_linked_batch(
    hub_factory: HubFactory, disk: Disk, http_fresh: aiohttp.ClientSession
) -> None:
    """A publish over two partitions cut short (only partition 0 got its part), found
    at start on a disk with no room for the cut's side copy: the hub starts, serves
    what was acknowledged, and makes the cut once space is freed."""
    hub = start(hub_factory, disk)
    base, topic = hub.base_url, "orders"
    await put_topic(http_fresh, base, topic, partitions=2)
    events = [{"type": "o", "id": f"e{i}"} for i in range(10)]
    for event in events:
        await publish(http_fresh, base, topic, event)
    ends = await next_offsets(http_fresh, base, topic)
    hub.stop()
    segment = disk.path / "data" / "topics" / topic / "0" / f"{0:020d}.log"
    link = fmt.encode_link(fmt.Link(5, ((0, ends[0], 1), (1, ends[1], 1))))
    torn = fmt.encode_batch(ends[0], [b"{}"], 1_000, link)
    with segment.open("ab") as f:  # partition 1 never got its part
        f.write(torn)
    disk.fill()

    hub.start()
    records = await read_all(http_fresh, base, topic)
    assert sorted(r["event"]["id"] for r in records) == sorted(e["id"] for e in events)
    assert await ready(http_fresh, base) == 503  # partition 0 waits for room

    disk.free()
    await poll_until(is_ready(http_fresh, base), timeout=10, what="ready once space is freed")
    assert [c.read_bytes() for c in segment.parent.glob("*.cut-*")] == [torn]
    assert await next_offsets(http_fresh, base, topic) == ends
    await publish(http_fresh, base, topic, {"type": "o", "id": "after"})
    records = await read_all(http_fresh, base, topic)
    assert sorted(r["event"]["id"] for r in records) == sorted(
        [e["id"] for e in events] + ["after"]
    )
