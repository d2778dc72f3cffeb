"""An App given several URLs of one hub: it consumes and publishes through one, and
moves on when that one dies, in front of a real ``tidings serve`` process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hubproc import HubFactory
from nodeproxy import ForwardingNode, SilentPort

from tidings import App, Context
from tidings.client import AsyncClient

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def hubs(tmp_path: Path) -> Iterator[HubFactory]:
    factory = HubFactory(tmp_path)
    yield factory
    factory.close()


@pytest.mark.parametrize(
    ("hub", "message"),
    [
        ([], "no hub URL given"),
        ("http://a:1,,http://b:1", r"#2 \(''\) is empty"),
        (["http://a:1", "a:2"], r"#2 \('a:2'\) must start with http:// or https://"),
        (["http://a:1", "http://a:1/"], "names the same node"),
        (["http://a:1", "embedded:./data"], "must start with http://"),
        (8700, "must be a URL string or a list of them"),
    ],
)
def test_a_bad_node_list_is_refused(hub: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        App("svc", hub=hub)


def test_several_nodes_as_a_list_or_comma_separated() -> None:
    assert App("svc", hub=["http://a:1/", "http://b:1"]).hub == "http://a:1,http://b:1"
    assert App("svc", hub="http://a:1, http://b:1").hub == "http://a:1,http://b:1"
    assert App("svc", hub="embedded:./data").hub == "embedded:./data"
    # A comma in a data directory's path is part of the path, not a node list.
    assert App("svc", hub="embedded:./a,b").hub == "embedded:./a,b"


async def wait_for(check: Any, what: str, limit: float = 30) -> None:
    """Poll ``check()`` until true; fail naming ``what`` after ``limit`` seconds (a
    bound against hanging, not a timed assertion)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not await check():
        if loop.time() > end:
            raise AssertionError(f"not reached: {what}")
        await asyncio.sleep(0.05)


async def test_an_app_moves_to_the_next_node_when_its_node_dies(hubs: HubFactory) -> None:
    """The App's URLs are a port down from the start, a node in front of the hub, and
    the hub itself: it skips the first, works through the second, and when that one
    dies (every connection cut) goes on on the third; each job is handled once."""
    hub = hubs.start(fsync="always")
    down = SilentPort()
    node = await ForwardingNode(hub.port).start()
    topic, group, per_round = "jobs", "workers", 25
    async with AsyncClient(hub.base_url) as one:
        await one.create_topic(topic, partitions=2)
        # A fetch cut off by the kill leaves its leases out until ack_wait.
        await one.create_group(topic, group, types=["job.made"], ack_wait=2)
    app = App("workers", hub=[down.url, node.url, hub.base_url], poll_wait=0.5)
    handled: list[str] = []

    @app.on(topic, types="job.made", group=group)
    async def work(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        handled.append(ctx.id)
        return {"type": "job.done", "data": {"job": data["job"]}}

    async def settled(count: int) -> bool:
        async with AsyncClient(hub.base_url) as one:
            info = await one.group(topic, group)
        return len(set(handled)) == count and info["lag"] == 0 and info["pending"] == 0

    async def publish(jobs: range) -> list[str]:
        async with AsyncClient(hub.base_url) as one:
            return [
                (await one.publish(topic, "job.made", {"job": i}, key=f"k{i % 4}"))["id"]
                for i in jobs
            ]

    await app.start()
    try:
        first = await publish(range(per_round))
        await wait_for(lambda: settled(per_round), "the first jobs handled through the node")
        assert node.count("POST", f"/v1/topics/{topic}/groups/{group}/fetch") > 0
        await node.kill()
        second = await publish(range(per_round, 2 * per_round))
        await wait_for(lambda: settled(2 * per_round), "the next jobs handled on the hub")
    finally:
        await app.stop()
        down.close()
    # Each job handled: a fetch or ack cut off by the kill may hand a job out again
    # after its ack_wait, but the App's handled-id window keeps it to one handling.
    assert sorted(set(handled)) == sorted(first + second)
    async with AsyncClient(hub.base_url) as one:
        records, _ = await one.read(topic, limit=1000)
    done = [r.event for r in records if r.event.type == "job.done"]
    assert sorted(e.get("causationid") for e in done) == sorted(first + second)
