"""Live subscriptions given several URLs of one hub: they move to the next node when
theirs dies and resume from their token, refuse a node of another hub, and back
off (client/live.py). The URLs are those of failoverhelp."""

from __future__ import annotations

import asyncio

import pytest
from failoverhelp import FAST
from hubproc import HubFactory, HubProcess
from nodeproxy import ForwardingNode, SilentPort

from tidings import NotOneHub, TidingsError
from tidings.client import AsyncClient, LiveSubscription, Reconnect

pytestmark = pytest.mark.timeout(120)

# -- live subscriptions ---------------------------------------------------------------------


async def test_a_live_subscription_moves_to_the_other_node_and_resumes(
    hub: HubProcess, proxy: ForwardingNode
) -> None:
    """The node the subscriptions use dies: they go on on the other URL of the hub
    from their resume token, with no gap and no duplicate."""
    topic, before, after = "orders", 60, 40
    async with AsyncClient(hub.base_url) as one:
        await one.create_topic(topic, partitions=3)
        for i in range(before):
            await one.publish(topic, "n.made", {"i": i}, key=f"k{i % 5}", id=f"e-{i:03d}")

    async with AsyncClient([proxy.url, hub.base_url], reconnect=FAST) as client:
        sub = client.subscribe(topic, start="earliest")
        polled = client.subscribe(topic, start="earliest", live=False, wait=1)
        assert isinstance(sub, LiveSubscription) and sub.nodes is client.nodes
        got = [await asyncio.wait_for(anext(sub), 10) for _ in range(30)]
        got_polled = [await asyncio.wait_for(anext(polled), 10) for _ in range(30)]
        assert proxy.count("GET", "/v1/ws") == 1
        await proxy.kill()
        async with AsyncClient(hub.base_url) as one:
            for i in range(before, before + after):
                await one.publish(topic, "n.made", {"i": i}, key=f"k{i % 5}", id=f"e-{i:03d}")
        got += [await asyncio.wait_for(anext(sub), 10) for _ in range(before + after - 30)]
        got_polled += [
            await asyncio.wait_for(anext(polled), 10) for _ in range(before + after - 30)
        ]
        assert sub.reconnects >= 1
        assert client.url == hub.base_url and client.nodes.switches == 1
        await sub.aclose()
        await polled.aclose()
    expected = {f"e-{i:03d}" for i in range(before + after)}
    for records in (got, got_polled):
        ids = [r.event.id for r in records]
        assert len(ids) == len(set(ids)) == before + after and set(ids) == expected
        for p in range(3):  # in offset order, partition by partition, from 0, no gap
            offsets = [r.offset for r in records if r.partition == p]
            assert offsets == list(range(len(offsets)))


async def test_a_live_subscription_skips_a_node_down_from_the_start(
    hub: HubProcess, down: SilentPort
) -> None:
    async with AsyncClient(hub.base_url) as one:
        sent = await one.publish("orders", "n.made", {"i": 1})
    sub = LiveSubscription([down.url, hub.base_url], "orders", start="earliest")
    async with sub:
        record = await asyncio.wait_for(anext(sub), 10)
    assert record.event.id == sent["id"]
    assert sub.nodes.current == hub.base_url and sub.nodes.switches == 1


async def test_a_live_subscription_refuses_a_node_of_another_hub(hubs: HubFactory) -> None:
    a, b = hubs.start(), hubs.start()
    async with AsyncClient([a.base_url, b.base_url], reconnect=FAST) as client:
        await client.publish("orders", "n.made", {"i": 0})
        sub = client.subscribe("orders", start="earliest")
        await asyncio.wait_for(anext(sub), 10)
        a.kill()
        with pytest.raises(NotOneHub, match=f"{b.base_url} answers as hub"):
            await asyncio.wait_for(anext(sub), 10)
        await sub.aclose()


async def test_a_live_subscription_gives_up_naming_every_node() -> None:
    a, b = SilentPort(), SilentPort()
    try:
        policy = Reconnect(initial_delay=0.01, max_delay=0.02, max_reconnects=3)
        sub = LiveSubscription(f"{a.url},{b.url}", "orders", reconnect=policy)
        where = ", ".join(u.replace("http://", "ws://") + "/v1/ws" for u in (a.url, b.url))
        with pytest.raises(TidingsError, match=f"^gave up on {where} after 3 reconnects"):
            await anext(sub)
        assert sub.nodes.switches == 4  # every failed attempt moved on: a, b, a, b
    finally:
        a.close()
        b.close()


async def test_a_subscription_that_never_connects_backs_off_longer_each_time() -> None:
    """Every failed attempt counts, connected before or not: the n-th wait is
    ``delay(n)``, between half and all of ``min(max, initial * 2**n)``."""
    port = SilentPort()
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    try:
        policy = Reconnect(initial_delay=0.1, max_delay=1.6, max_reconnects=7)
        sub = LiveSubscription(port.url, "orders", reconnect=policy, sleep=record)
        with pytest.raises(TidingsError, match="after 7 reconnects"):
            await anext(sub)
    finally:
        port.close()
    assert len(waits) == 7
    for n, wait in enumerate(waits):
        full = min(1.6, 0.1 * 2**n)
        assert full / 2 <= wait <= full, (n, wait)
