"""LiveSubscription: ``AsyncClient.subscribe`` over ``/v1/ws`` against real hub processes.

The restart tests reuse the restartable hub processes and the exactly-once check
of the server tests (``tests/server/hubproc.py``, ``livehelp.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from hubproc import HubFactory, HubProcess
from livehelp import GatedPublisher, Publisher, check_exactly_once

from tidings import Record, TidingsError, TopicNotFound, Unauthorized
from tidings.client import AsyncClient, Client, LiveSubscription, Reconnect
from tidings.client.receiving import AsyncSubscription

pytestmark = pytest.mark.timeout(120)

FAST = Reconnect(initial_delay=0.05, max_delay=0.5)


async def take(sub: LiveSubscription, n: int, timeout: float = 10) -> list[Record]:
    return [await asyncio.wait_for(anext(sub), timeout) for _ in range(n)]


@pytest.fixture
def hubs(tmp_path: Path) -> Iterator[HubFactory]:
    factory = HubFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def live(sub: LiveSubscription | AsyncSubscription) -> LiveSubscription:
    assert isinstance(sub, LiveSubscription)
    return sub


# -- against the shared hub -------------------------------------------------------------------


async def test_subscribe_then_publish(hub: AsyncClient, topic: str) -> None:
    await hub.create_topic(topic, partitions=3)
    await hub.publish(topic, "before")
    async with live(hub.subscribe(topic, types="order.*")) as sub:
        assert sub.position is None
        start = await sub.start()  # "latest": after the one event already there
        assert start == sub.position and sum(int(p[2:]) for p in start.split(",")) == 1
        sent = [await hub.publish(topic, "order.placed", {"i": i}, key=f"o-{i}") for i in range(6)]
        await hub.publish(topic, "cart.viewed")  # filtered out
        got = await take(sub, 6)
        by_id = {r.event.id: r for r in got}
        for answer in sent:
            r = by_id[answer["id"]]
            where = (r.topic, r.partition, r.offset)
            assert where == (topic, answer["partition"], answer["offset"])
        assert sub.position is not None and sub.reconnects == 0
        # The position resumes after the last record handed out: nothing more yet.
        rest = live(hub.subscribe(topic, types="order.*", start=sub.position))
        await rest.start()
        await hub.publish(topic, "order.paid", {"i": 6})
        assert (await take(rest, 1))[0].event.data == {"i": 6}
        await rest.aclose()
    assert sub.closed
    with pytest.raises(StopAsyncIteration):
        await anext(sub)


async def test_leaving_early_with_a_backlog_closes_at_once(hub_url: str, topic: str) -> None:
    # Unread frames used to hold the hub's close frame back: aclose() and the
    # client's close() then waited out the WebSocket's 10 s close timeout.
    async with AsyncClient(hub_url) as client:
        await client.publish_many(
            topic, [{"type": "n.made", "data": {"i": i, "pad": "x" * 300}} for i in range(3000)]
        )
        sub = client.subscribe(topic, start="earliest")
        async for _ in sub:
            break
        await asyncio.sleep(0.3)  # the hub fills the socket meanwhile
        started = asyncio.get_running_loop().time()
    took = asyncio.get_running_loop().time() - started
    assert took < 5, f"closing took {took:.1f} s"


async def test_start_earliest_token_and_time(hub: AsyncClient, topic: str) -> None:
    await hub.publish_many(topic, [{"type": "a", "data": i} for i in range(3)])
    await asyncio.sleep(0.02)  # the log keeps append times in ms: keep clear of the cut's
    cut = datetime.now(UTC)
    await asyncio.sleep(0.02)
    await hub.publish(topic, "a", 3)
    async with live(hub.subscribe(topic, start="earliest")) as sub:
        assert [r.event.data for r in await take(sub, 4)] == [0, 1, 2, 3]
        assert sub.position == "0:4"
    async with live(hub.subscribe(topic, start="0:2")) as sub:
        assert [r.event.data for r in await take(sub, 2)] == [2, 3]
    async with live(hub.subscribe(topic, start=cut)) as sub:
        assert [r.event.data for r in await take(sub, 1)] == [3]
    async with live(hub.subscribe(topic, start={"time": cut.isoformat()})) as sub:
        assert [r.event.data for r in await take(sub, 1)] == [3]


async def test_live_or_long_poll(hub: AsyncClient, topic: str) -> None:
    assert isinstance(hub.subscribe(topic), LiveSubscription)
    assert isinstance(hub.subscribe(topic, live=False), AsyncSubscription)
    assert isinstance(hub.subscribe(topic, partition=0), AsyncSubscription)
    assert isinstance(hub.subscribe(topic, start=3), AsyncSubscription)  # an offset
    await hub.publish_many(topic, [{"type": "a", "data": i} for i in range(3)])
    poll = hub.subscribe(topic, live=False, start={"time": "2000-01-01T00:00:00Z"}, wait=1)
    assert (await anext(poll)).event.data == 0


async def test_errors_for_good_are_raised(hub: AsyncClient, topic: str) -> None:
    with pytest.raises(TopicNotFound):
        await live(hub.subscribe(topic)).start()


async def test_a_refused_token_is_raised(secured_hub_url: str, topic: str) -> None:
    async with AsyncClient(secured_hub_url, token="wrong") as client:
        with pytest.raises(Unauthorized):
            await live(client.subscribe(topic)).start()


async def test_max_reconnects_bounds_the_attempts() -> None:
    from hubproc import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    policy = Reconnect(initial_delay=0.01, max_delay=0.02, max_reconnects=3)
    async with AsyncClient(url) as client:
        with pytest.raises(TidingsError, match="after 3 reconnects"):
            await asyncio.wait_for(client.subscribe("t", reconnect=policy).start(), 10)


async def test_client_close_ends_its_subscriptions(hub_url: str, topic: str) -> None:
    client = AsyncClient(hub_url)
    await client.create_topic(topic)
    sub = live(client.subscribe(topic))
    await sub.start()
    waiting = asyncio.create_task(anext(sub))
    await client.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 10)


def test_sync_subscribe_is_live(hub_url: str, topic: str) -> None:
    with Client(hub_url) as hub:
        hub.create_topic(topic)
        with hub.subscribe(topic) as sub:
            assert sub.start() == "0:0"
            hub.publish_many(topic, [{"type": "e", "data": i} for i in range(3)])
            assert [next(sub).event.data for _ in range(3)] == [0, 1, 2]
            assert sub.position == "0:3"
        assert list(sub) == []


# -- drops and restarts, while a publisher keeps publishing ------------------------------------


async def collect(sub: LiveSubscription, records: list[Record], n: int) -> None:
    while len(records) < n:
        records.append(await anext(sub))


async def caught_up(records: list[Record], n: int) -> None:
    while len(records) < n:
        await asyncio.sleep(0.01)


def as_dicts(records: list[Record]) -> list[dict[str, object]]:
    return [r.to_dict() for r in records]


async def test_resume_across_client_drops(hubs: HubFactory, http: aiohttp.ClientSession) -> None:
    hub = hubs.start()
    topic = "drops"
    async with AsyncClient(hub.base_url) as client:
        await client.create_topic(topic, partitions=3)
        pub = Publisher(hub.base_url, topic, 300)
        publishing = asyncio.create_task(pub.run(http))
        records: list[Record] = []
        sub = live(client.subscribe(topic, start="earliest", reconnect=FAST))
        try:
            for drop_at in (40, 120, 200):
                await asyncio.wait_for(collect(sub, records, drop_at), 30)
                # Cut the connection under the subscription, as a network failure would:
                # no close frame, the next read finds the socket gone.
                assert sub._ws is not None
                sub._ws.transport.abort()
            await asyncio.wait_for(collect(sub, records, len(pub.ids)), 60)
            await publishing
        finally:
            publishing.cancel()
            await sub.aclose()
    assert sub.reconnects == 3
    check_exactly_once(as_dicts(records), pub.ids)


async def test_resume_across_hub_kill_and_restart(
    hubs: HubFactory, http: aiohttp.ClientSession
) -> None:
    hub: HubProcess = hubs.start(fsync="always")
    topic = "restarts"
    async with AsyncClient(hub.base_url) as client:
        await client.create_topic(topic, partitions=3)
        pub = GatedPublisher(hub.base_url, topic, 400, holds=(100, 250))
        records: list[Record] = []
        sub = live(client.subscribe(topic, start="earliest", reconnect=FAST))
        await sub.start()
        # The subscription runs by itself from here; the test only kills and restarts.
        consuming = asyncio.create_task(collect(sub, records, len(pub.ids)))
        publishing = asyncio.create_task(pub.run(http))
        try:
            for at in (100, 250):
                await asyncio.wait_for(pub.held[at].wait(), 30)
                # Kill once the subscription has caught up, so that it sees each kill
                # rather than still waiting out its backoff from the last one.
                await asyncio.wait_for(caught_up(records, at), 30)
                hub.kill()
                pub.go[at].set()
                await asyncio.to_thread(hub.start)
            await asyncio.wait_for(asyncio.shield(consuming), 60)
            await publishing
        finally:
            publishing.cancel()
            consuming.cancel()
            await sub.aclose()
    assert hub.starts == 3 and sub.reconnects >= 2
    check_exactly_once(as_dicts(records), pub.ids)
