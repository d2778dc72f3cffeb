"""An App given several hub nodes: it consumes and publishes on one, and moves on
when that one dies (SIGKILL), on real ``tidings serve`` processes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hubproc import HubFactory, free_port

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


async def test_an_app_moves_to_the_next_node_when_its_node_is_killed(
    hubs: HubFactory,
) -> None:
    a, b = hubs.start(fsync="always"), hubs.start(fsync="always")
    down = f"http://127.0.0.1:{free_port()}"  # down from the start: skipped
    topic, group, per_node = "jobs", "workers", 25
    for node in (a, b):  # the group exists on both, as on one shared backend
        async with AsyncClient(node.base_url) as one:
            await one.create_topic(topic, partitions=2)
            await one.create_group(topic, group, types=["job.made"])
    app = App("workers", hub=[down, a.base_url, b.base_url], poll_wait=0.5)
    handled: list[str] = []

    @app.on(topic, types="job.made", group=group)
    async def work(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        handled.append(ctx.id)
        return {"type": "job.done", "data": {"job": data["job"]}}

    async def settled(url: str, count: int) -> bool:
        async with AsyncClient(url) as one:
            info = await one.group(topic, group)
        return len(handled) == count and info["lag"] == 0 and info["pending"] == 0

    await app.start()
    try:
        async with AsyncClient(a.base_url) as one:
            first = [
                (await one.publish(topic, "job.made", {"job": i}, key=f"k{i % 4}"))["id"]
                for i in range(per_node)
            ]
        await wait_for(lambda: settled(a.base_url, per_node), "the first jobs handled on a")
        a.kill()
        async with AsyncClient(b.base_url) as one:
            second = [
                (await one.publish(topic, "job.made", {"job": i}, key=f"k{i % 4}"))["id"]
                for i in range(per_node, 2 * per_node)
            ]
        await wait_for(lambda: settled(b.base_url, 2 * per_node), "the next jobs handled on b")
    finally:
        await app.stop()
    assert sorted(handled) == sorted(first + second)  # each once
    a.start()
    for node, ids in ((a, first), (b, second)):
        async with AsyncClient(node.base_url) as one:
            records, _ = await one.read(topic, limit=1000)
        done = [r.event for r in records if r.event.type == "job.done"]
        # Each result was published on the node whose job it handles.
        assert sorted(e.get("causationid") for e in done) == sorted(ids)
