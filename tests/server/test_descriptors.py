"""File descriptors, topics and partitions against real hubs under a low ``ulimit -n``.

Each partition used to hold its three files open for ever, so under ``ulimit -n
1024`` topic #335 failed with 500, new connections were reset, the failed topic
was recorded anyway and the hub could not start again until the limit was
raised. The log now opens its files on demand and closes the least recently
used (``--max-open-files``), topics and partitions have limits of their own, and
a creation that fails leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import websockets
from hubapi import expect, expect_problem, publish, put_topic, read_all
from hubproc import HubFactory, HubProcess
from livehelp import PROTOCOL, ws_url

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """No kept-alive connections: the hubs here restart under the session."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session

NOFILE = 128  # the hub's ulimit -n, soft and hard
TOPICS = 150  # three files each: 450 files, far past NOFILE
PAYLOAD = "x" * 1000


async def fresh_connection_works(hub: HubProcess) -> None:
    """A new TCP connection (HTTP and WebSocket) is accepted and answered."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as fresh,
        fresh.get(hub.base_url + "/healthz") as resp,
    ):
        await expect(resp, 200)
    async with websockets.connect(ws_url(hub.base_url), subprotocols=[PROTOCOL]) as ws:
        assert ws.subprotocol == PROTOCOL


async def test_more_partitions_than_descriptors(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    hub = hub_factory.start("--segment-bytes", "4096", nofile=NOFILE)
    names = [f"fd-{i}" for i in range(TOPICS)]
    for i, name in enumerate(names):
        await put_topic(http, hub.base_url, name, status=201, partitions=1 + (i % 3 == 0))
        # A few records each, rolling the 4 KiB segments now and then.
        await publish(
            http, hub.base_url, name, *({"type": "fd.filled", "data": {"n": n, "pad": PAYLOAD}}
                                        for n in range(3))
        )
    assert hub.open_descriptors < NOFILE
    await fresh_connection_works(hub)
    async with http.get(hub.base_url + "/metrics") as resp:
        metrics = dict(
            line.rsplit(" ", 1) for line in (await resp.text()).splitlines()
            if line and not line.startswith("#") and "{" not in line
        )
    assert float(metrics["process_max_fds"]) == NOFILE
    assert 0 < float(metrics["tidings_log_open_files"]) <= NOFILE // 2
    assert float(metrics["tidings_log_files_closed_total"]) > 0
    assert float(metrics["process_open_fds"]) < NOFILE

    async def check_all() -> None:
        for name in names:
            records = await read_all(http, hub.base_url, name)
            assert sorted(r["event"]["data"]["n"] for r in records) == [0, 1, 2], name

    await check_all()
    # Restarted under the same limit: it opens every partition again, and starts.
    hub.restart()
    await check_all()
    await publish(http, hub.base_url, names[0], {"type": "fd.after"})
    await fresh_connection_works(hub)
    assert hub.open_descriptors < NOFILE


def test_the_hub_raises_its_soft_limit_to_the_hard_one(hub_factory: HubFactory) -> None:
    hub = hub_factory.start(nofile=(64, 4096))
    assert hub.proc is not None
    limits = Path(f"/proc/{hub.proc.pid}/limits").read_text()
    [line] = [line for line in limits.splitlines() if line.startswith("Max open files")]
    assert line.split()[3:5] == ["4096", "4096"], line


async def test_the_topic_and_partition_limits_answer_naming_themselves(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    """Topics up to the limit, more files than ulimit -n allows: the limit answers
    naming itself, new connections are served, and the hub restarts under it."""
    most = 60  # three files each: 180, past NOFILE
    hub = hub_factory.start("--max-topics", str(most), "--max-partitions", "8", nofile=NOFILE)
    names = [f"lim-{i:02d}" for i in range(most)]
    for name in names:
        await put_topic(http, hub.base_url, name, status=201)
        await publish(http, hub.base_url, name, {"type": "lim.one"})

    async def refused() -> None:
        async with http.put(f"{hub.base_url}/v1/topics/lim-new", json={}) as resp:
            problem = await expect_problem(resp, 409)
        assert problem["limit"] == "max_topics" and problem["max_topics"] == most, problem
        assert "--max-topics" in problem["detail"], problem
        # Nor does a publish or a group create one more.
        async with http.post(
            f"{hub.base_url}/v1/topics/lim-pub/events", json={"type": "t.x"},
            headers={"content-type": "application/cloudevents+json"},
        ) as resp:
            assert (await expect_problem(resp, 409))["limit"] == "max_topics"
        async with http.put(f"{hub.base_url}/v1/topics/lim-grp/groups/g", json={}) as resp:
            await expect_problem(resp, 409)
        async with http.get(f"{hub.base_url}/v1/topics") as resp:
            listed = await expect(resp, 200)
        assert sorted(t["name"] for t in listed["topics"]) == names
        assert sorted(p.name for p in (hub.data_dir / "topics").iterdir()) == names
        await fresh_connection_works(hub)

    await refused()
    async with http.put(f"{hub.base_url}/v1/topics/lim-00", json={"partitions": 9}) as resp:
        problem = await expect_problem(resp, 400)
    assert problem["field"] == "partitions" and problem["max_partitions"] == 8, problem
    hub.restart()
    await refused()
    for name in names:
        assert len(await read_all(http, hub.base_url, name)) == 1
    # Deleting one makes room again.
    async with http.delete(f"{hub.base_url}/v1/topics/lim-00") as resp:
        await expect(resp, 204)
    await put_topic(http, hub.base_url, "lim-new", status=201, partitions=8)


async def test_a_topic_that_fails_to_be_created_leaves_nothing(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    hub = hub_factory.start(nofile=NOFILE)
    # A file where partition 1's directory must go: partition 0 opens, 1 cannot.
    topic_dir = hub.data_dir / "topics" / "broken"
    topic_dir.mkdir(parents=True)
    (topic_dir / "1").write_bytes(b"in the way")
    async with http.put(f"{hub.base_url}/v1/topics/broken", json={"partitions": 2}) as resp:
        problem = await expect_problem(resp, 503)
    assert "partition 1" in problem["detail"], problem
    async with http.get(f"{hub.base_url}/v1/topics/broken") as resp:
        await expect_problem(resp, 404)
    await wait_until_gone(topic_dir)
    # Nothing was recorded: the hub starts again, without the topic.
    hub.restart()
    async with http.get(f"{hub.base_url}/v1/topics/broken") as resp:
        await expect_problem(resp, 404)
    # And the name is free: the topic can be made now that nothing is in the way.
    await put_topic(http, hub.base_url, "broken", status=201, partitions=2)
    await publish(http, hub.base_url, "broken", {"type": "t.ok"})


async def test_a_topic_that_fails_to_grow_keeps_its_partitions(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    hub = hub_factory.start(nofile=NOFILE)
    await put_topic(http, hub.base_url, "grown", status=201, partitions=1)
    obstacle = hub.data_dir / "topics" / "grown" / "1"
    obstacle.write_bytes(b"in the way")
    async with http.put(f"{hub.base_url}/v1/topics/grown", json={"partitions": 2}) as resp:
        await expect_problem(resp, 503)
    async with http.get(f"{hub.base_url}/v1/topics/grown") as resp:
        assert len((await expect(resp, 200))["partitions"]) == 1
    # The metadata still says one partition: the hub starts, with the obstacle there.
    hub.restart()
    async with http.get(f"{hub.base_url}/v1/topics/grown") as resp:
        assert len((await expect(resp, 200))["partitions"]) == 1
    obstacle.unlink()
    await put_topic(http, hub.base_url, "grown", status=200, partitions=2)


async def wait_until_gone(path: Path) -> None:
    for _ in range(100):
        if not path.exists():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} is still there: {sorted(p.name for p in path.iterdir())}")


async def test_the_hub_starts_whatever_state_a_topic_is_in(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    """A topic whose partition cannot be opened at start answers 503; the rest serve."""
    hub = hub_factory.start(nofile=NOFILE)
    await put_topic(http, hub.base_url, "damaged", status=201, partitions=2)
    await put_topic(http, hub.base_url, "healthy", status=201)
    await publish(http, hub.base_url, "damaged", {"type": "t.kept"})
    hub.stop()
    partition = hub.data_dir / "topics" / "damaged" / "1"
    partition.rename(partition.with_name("moved"))
    partition.write_bytes(b"a file where a directory must be")
    hub.start()
    await publish(http, hub.base_url, "healthy", {"type": "t.ok"})
    await fresh_connection_works(hub)
    for method, path, body in [
        ("GET", "/v1/topics/damaged", None),
        ("POST", "/v1/topics/damaged/events", {"type": "t.lost"}),
        ("PUT", "/v1/topics/damaged", {}),
        ("PUT", "/v1/topics/damaged/groups/g", {}),
    ]:
        headers = {"content-type": "application/cloudevents+json"} if method == "POST" else {}
        async with http.request(
            method, hub.base_url + path, json=body, headers=headers
        ) as resp:
            problem = await expect_problem(resp, 503)
        assert problem["topic"] == "damaged" and "delete" in problem["detail"], problem
    # Deleting it frees the name.
    async with http.delete(f"{hub.base_url}/v1/topics/damaged") as resp:
        await expect(resp, 204)
    assert not (hub.data_dir / "topics" / "damaged").exists()
    await put_topic(http, hub.base_url, "damaged", status=201)
