"""Clients given several hub nodes: which node they use, and when they move (client/nodes.py).

Every node here is a real ``tidings serve`` process on its own data directory.
Two such hubs share no events, so where a test needs what a shared backend
gives (the same records at the same offsets on every node), it writes the same
events, in the same order, to both; where it cannot, it checks every
acknowledged event on the hub that answered it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hubproc import HubFactory, HubProcess, free_port
from viewhelp import commit_events

from tidings import InvalidEvent, NotFound, Record, TidingsError, ViewBehind
from tidings.client import AsyncClient, Client, LiveSubscription, Reconnect
from tidings.client.nodes import HubNodes, parse_hub_urls

pytestmark = pytest.mark.timeout(120)

FAST = Reconnect(initial_delay=0.05, max_delay=0.5)


@pytest.fixture
def hubs(tmp_path: Path) -> Iterator[HubFactory]:
    factory = HubFactory(tmp_path)
    yield factory
    factory.close()


def closed_port_url() -> str:
    """A loopback address where nothing listens: a node that is down from the start."""
    return f"http://127.0.0.1:{free_port()}"


async def every_record(url: str, topic: str) -> list[Record]:
    """Every record of ``topic`` on the one hub at ``url``."""
    out: list[Record] = []
    async with AsyncClient(url) as hub:
        position = "earliest"
        while True:
            records, position = await hub.read(topic, start=position, limit=1000)
            if not records:
                return out
            out += records


# -- the list of nodes: good and bad input -------------------------------------------------


def test_one_url_a_list_or_a_comma_separated_string() -> None:
    assert parse_hub_urls("http://a:8700/") == ("http://a:8700",)
    assert parse_hub_urls(["http://a:8700", "https://b"]) == ("http://a:8700", "https://b")
    assert parse_hub_urls(" http://a:8700 , http://b:8700/hub/") == (
        "http://a:8700",
        "http://b:8700/hub",
    )


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        ([], "no hub URL given"),
        ("", "hub URL '' is empty"),
        ("http://a:1,,http://b:1", r"hub URL #2 \(''\) is empty \(a stray comma\?\)"),
        ("http://a:1,", "#2 .* is empty"),
        ("127.0.0.1:8700", "must start with http:// or https://, e.g. http://127.0.0.1:8700"),
        (["http://a:1", "ftp://b"], r"#2 \('ftp://b'\) must start with http:// or https://"),
        ("http://", "names no host"),
        ("http://:8700", "names no host"),
        ("http://a:b:c", "is not a URL"),
        ("http://a:99999", "is not a URL"),
        ("http://a:1/?x=1", "scheme, host, port and path only"),
        (["http://a:1", "http://A:1/"], r"#2 .* names the same node as 'http://a:1'"),
        ("http://a:1,http://b:1,http://a:1", "#3 .* names the same node"),
        ([None], "is not a string"),
        (8700, "must be a string or a list of strings"),
        (b"http://a:1", "must be a string or a list of strings"),
    ],
)
def test_bad_node_lists_are_refused_naming_what_is_wrong(urls: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hub_urls(urls)
    with pytest.raises(ValueError, match=message):
        AsyncClient(urls)
    with pytest.raises(ValueError, match=message):
        Client(urls)


def test_the_current_node_moves_round_robin_and_only_once_per_failure() -> None:
    nodes = HubNodes("http://a:1,http://b:1,http://c:1")
    assert nodes.current == "http://a:1" and nodes.several
    assert nodes.pick() == "http://a:1"
    assert nodes.pick(["http://a:1"]) == "http://b:1"
    nodes.failed("http://a:1")
    nodes.failed("http://a:1")  # a second request that failed on a: already moved
    assert nodes.current == "http://b:1" and nodes.switches == 1
    # A request that tried b and c (current is b): a is the one left.
    assert nodes.pick(["http://b:1", "http://c:1"]) == "http://a:1"
    nodes.failed("http://b:1")
    nodes.failed("http://c:1")
    assert nodes.current == "http://a:1" and nodes.switches == 3  # wrapped around
    with pytest.raises(ValueError, match="every node was tried"):
        nodes.pick(nodes.urls)
    single = HubNodes("http://a:1")
    single.failed("http://a:1")
    assert single.current == "http://a:1" and single.switches == 0 and not single.several


# -- HTTP requests ---------------------------------------------------------------------------


async def test_a_node_down_from_the_start_is_skipped(hubs: HubFactory) -> None:
    live = hubs.start()
    down = closed_port_url()
    topic = "orders"
    async with AsyncClient([down, live.base_url], reconnect=FAST) as hub:
        assert hub.url == down
        assert (await hub.healthz())["status"] == "ok"
        assert hub.url == live.base_url and hub.nodes.switches == 1
        await hub.create_topic(topic, partitions=3)
        acked = [await hub.publish(topic, "n.made", {"i": i}, key=f"k{i % 5}") for i in range(40)]
        batch = [{"type": "n.made", "data": i} for i in range(40, 60)]
        acked += await hub.publish_many(topic, batch)
        acked.append(await hub.publish_binary(topic, {"type": "n.made", "data": 60}))
        assert hub.nodes.switches == 1  # it stays on the node that answers
    stored = await every_record(live.base_url, topic)
    assert len(acked) == len(stored) == 61
    assert {(a["id"], a["partition"], a["offset"]) for a in acked} == {
        (r.event.id, r.partition, r.offset) for r in stored
    }


async def test_every_node_down_raises_naming_each(hubs: HubFactory) -> None:
    first, second = closed_port_url(), closed_port_url()
    async with AsyncClient(f"{first},{second}", reconnect=FAST) as hub:
        with pytest.raises(TidingsError) as err:
            await hub.healthz()
    detail = err.value.detail
    assert detail.startswith("no node of the hub answered: ")
    assert f"cannot reach the hub at {first}" in detail
    assert f"cannot reach the hub at {second}" in detail
    async with AsyncClient(first) as hub:  # one node: one try, the message as ever
        with pytest.raises(TidingsError, match=f"^cannot reach the hub at {first}"):
            await hub.healthz()


async def test_a_4xx_never_fails_over(hubs: HubFactory) -> None:
    a, b = hubs.start(), hubs.start()
    topic = "orders"
    async with AsyncClient([a.base_url, b.base_url], reconnect=FAST) as hub:
        await hub.publish(topic, "n.made", {"i": 0})
        with pytest.raises(NotFound):
            await hub.get_event("no-such-event")
        with pytest.raises(InvalidEvent):
            await hub.publish(topic, event={"type": "n.made", "specversion": "0.3"})
        with pytest.raises(NotFound):
            await hub.group(topic, "no-such-group")
        assert hub.url == a.base_url and hub.nodes.switches == 0
    assert len(await every_record(a.base_url, topic)) == 1
    async with AsyncClient(b.base_url) as other:
        assert await other.topics() == []  # the second node was never asked


async def test_a_503_moves_to_the_next_node(hubs: HubFactory) -> None:
    """A view behind on one node (503) is read on the next, which has caught up."""
    behind, ahead = hubs.start(), hubs.start()
    topic, name = "stock", "stock-view"
    for node in (behind, ahead):
        async with AsyncClient(node.base_url) as one:
            await one.create_topic(topic)
            await one.publish(topic, "stock.set", {"sku": "a", "n": 3}, key="a", id="s-0")
            await one.put_view(name, {"kind": "view", "inputs": [topic], "app": "tests"})
    async with AsyncClient(ahead.base_url) as one:
        await one.commit_view(name, 0, 0, commit_events(name, 0, 0, {"a": 3}, {topic: {"0": 1}}))
    async with AsyncClient(behind.base_url) as one:  # alone, a 503 is raised as ever
        with pytest.raises(ViewBehind):
            await one.view_get(name, "a", min_position={0: 0}, wait=0.1)
    async with AsyncClient([behind.base_url, ahead.base_url], reconnect=FAST) as hub:
        got = await hub.view_get(name, "a", min_position={0: 0}, wait=0.1)
        assert got["value"] == 3
        assert hub.url == ahead.base_url and hub.nodes.switches == 1
    # Every node answers 503: the request raises the last answer, as its own class.
    by_name = behind.base_url.replace("127.0.0.1", "localhost")
    async with AsyncClient([behind.base_url, by_name], reconnect=FAST) as hub:
        with pytest.raises(ViewBehind):
            await hub.view_get(name, "a", min_position={0: 0}, wait=0.1)
        assert hub.nodes.switches == 2


async def test_a_node_that_does_not_answer_in_time_is_left(hubs: HubFactory) -> None:
    """A node stopped with SIGSTOP takes connections and answers nothing: the publish
    times out there and is sent to the next node under the same event id."""
    a, b = hubs.start(fsync="always"), hubs.start(fsync="always")
    assert a.proc is not None
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        async with AsyncClient([a.base_url, b.base_url], timeout=1, reconnect=FAST) as hub:
            answer = await hub.publish("orders", "n.made", {"i": 1})
            assert hub.url == b.base_url and hub.nodes.switches == 1
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    assert [r.event.id for r in await every_record(b.base_url, "orders")] == [answer["id"]]
    # Woken, a may or may not handle the request it was sent before the client gave
    # up on it; if it does, it stores the same id (which one backend would dedupe).
    async with AsyncClient(a.base_url) as one:
        topics = [t["name"] for t in await one.topics()]
    if "orders" in topics:
        assert {r.event.id for r in await every_record(a.base_url, "orders")} <= {answer["id"]}


async def test_publishes_move_to_the_next_node_when_one_is_killed(hubs: HubFactory) -> None:
    """SIGKILL of the current node under publish load: the publishes go on on the
    next node, each one acknowledged once, and every acknowledged event is stored
    where the answer said, on the hub that gave the answer."""
    a, b = hubs.start(fsync="always"), hubs.start(fsync="always")
    topic, tasks, each = "orders", 4, 60
    for node in (a, b):
        async with AsyncClient(node.base_url) as one:
            await one.create_topic(topic, partitions=3)
    acked: list[dict[str, Any]] = []
    enough = asyncio.Event()

    async def publisher(hub: AsyncClient, t: int) -> None:
        for i in range(each):
            if t == 0 and i % 10 == 0:  # one task sends batches too
                batch = [{"type": "n.made", "data": [t, i, j]} for j in range(3)]
                acked.extend(await hub.publish_many(topic, batch))
            acked.append(await hub.publish(topic, "n.made", {"t": t, "i": i}, key=f"k{i % 7}"))
            if len(acked) >= 80:
                enough.set()

    async def killer() -> None:
        await enough.wait()
        await asyncio.to_thread(a.kill)

    async with AsyncClient([a.base_url, b.base_url], reconnect=FAST) as hub:
        await asyncio.gather(killer(), *(publisher(hub, t) for t in range(tasks)))
        assert hub.url == b.base_url and hub.nodes.switches == 1
    assert len(acked) == tasks * each + 6 * 3
    assert len({ack["id"] for ack in acked}) == len(acked)  # the client filled distinct ids

    a.start()  # the killed node, back on its data directory
    on_a = {(r.event.id, r.partition, r.offset) for r in await every_record(a.base_url, topic)}
    on_b = {(r.event.id, r.partition, r.offset) for r in await every_record(b.base_url, topic)}
    for stored in (on_a, on_b):  # within one hub, no event twice
        assert len({eid for eid, _, _ in stored}) == len(stored)
    answers = {(ack["id"], ack["partition"], ack["offset"]) for ack in acked}
    # Each answer is a record of the hub that gave it; nothing stored was not answered
    # (a publish cut off by the kill was sent again to b and answered there).
    assert answers <= on_a | on_b
    assert {eid for eid, _, _ in on_a | on_b} == {ack["id"] for ack in acked}
    assert len(on_a) >= 80 and len(on_b) > 0


async def test_the_client_comes_back_to_a_restarted_node(hubs: HubFactory) -> None:
    a, b = hubs.start(fsync="always"), hubs.start(fsync="always")
    topic = "orders"
    async with AsyncClient([a.base_url, b.base_url], reconnect=FAST) as hub:
        first = [await hub.publish(topic, "n.made", {"i": i}) for i in range(10)]
        a.kill()
        second = [await hub.publish(topic, "n.made", {"i": i}) for i in range(10, 20)]
        assert hub.url == b.base_url
        a.start()
        b.kill()
        third = [await hub.publish(topic, "n.made", {"i": i}) for i in range(20, 30)]
        assert hub.url == a.base_url and hub.nodes.switches == 2
    b.start()
    on_a = [r.event.id for r in await every_record(a.base_url, topic)]
    on_b = [r.event.id for r in await every_record(b.base_url, topic)]
    assert on_a == [x["id"] for x in first + third]
    assert on_b == [x["id"] for x in second]


def test_the_blocking_client_fails_over_too(hubs: HubFactory) -> None:
    live = hubs.start()
    with Client(f"{closed_port_url()},{live.base_url}", reconnect=FAST) as hub:
        answer = hub.publish("orders", "n.made", {"i": 1})
        assert hub.url == live.base_url and hub.nodes.switches == 1
        records, _ = hub.read("orders")
    assert [r.event.id for r in records] == [answer["id"]]


# -- live subscriptions ---------------------------------------------------------------------


async def test_a_live_subscription_moves_to_the_other_node_and_resumes(
    hubs: HubFactory,
) -> None:
    """The subscribed node is killed: the subscription goes on on the other node from
    its resume token, with no gap and no duplicate. Both hubs hold the same records
    at the same offsets, as nodes on one backend do."""
    a, b = hubs.start(fsync="always"), hubs.start(fsync="always")
    topic, before, after = "orders", 60, 40

    async def mirror(ids: range, nodes: tuple[HubProcess, ...]) -> None:
        clients = [AsyncClient(n.base_url) for n in nodes]
        try:
            for i in ids:
                answers = [
                    await c.publish(topic, "n.made", {"i": i}, key=f"k{i % 5}", id=f"e-{i:03d}")
                    for c in clients
                ]
                assert len({(x["partition"], x["offset"]) for x in answers}) == 1
        finally:
            for c in clients:
                await c.close()

    for node in (a, b):
        async with AsyncClient(node.base_url) as one:
            await one.create_topic(topic, partitions=3)
    await mirror(range(before), (a, b))

    async with AsyncClient([a.base_url, b.base_url], reconnect=FAST) as hub:
        sub = hub.subscribe(topic, start="earliest")
        polled = hub.subscribe(topic, start="earliest", live=False, wait=1)
        assert isinstance(sub, LiveSubscription) and sub.nodes is hub.nodes
        got = [await asyncio.wait_for(anext(sub), 10) for _ in range(30)]
        got_polled = [await asyncio.wait_for(anext(polled), 10) for _ in range(30)]
        a.kill()
        await mirror(range(before, before + after), (b,))
        got += [await asyncio.wait_for(anext(sub), 10) for _ in range(before + after - 30)]
        got_polled += [
            await asyncio.wait_for(anext(polled), 10) for _ in range(before + after - 30)
        ]
        assert sub.reconnects >= 1
        assert hub.url == b.base_url and hub.nodes.switches == 1
        await sub.aclose()
        await polled.aclose()
    expected = {f"e-{i:03d}" for i in range(before + after)}
    for records in (got, got_polled):
        ids = [r.event.id for r in records]
        assert len(ids) == len(set(ids)) == before + after and set(ids) == expected
        for p in range(3):  # in offset order, partition by partition, from 0, no gap
            offsets = [r.offset for r in records if r.partition == p]
            assert offsets == list(range(len(offsets)))


async def test_a_live_subscription_skips_a_node_down_from_the_start(hubs: HubFactory) -> None:
    up = hubs.start()
    async with AsyncClient(up.base_url) as one:
        sent = await one.publish("orders", "n.made", {"i": 1})
    sub = LiveSubscription([closed_port_url(), up.base_url], "orders", start="earliest")
    async with sub:
        record = await asyncio.wait_for(anext(sub), 10)
    assert record.event.id == sent["id"]
    assert sub.nodes.current == up.base_url and sub.nodes.switches == 1


async def test_a_live_subscription_gives_up_naming_every_node() -> None:
    a, b = closed_port_url(), closed_port_url()
    policy = Reconnect(initial_delay=0.01, max_delay=0.02, max_reconnects=3)
    sub = LiveSubscription(f"{a},{b}", "orders", reconnect=policy)
    where = f"ws://{a.removeprefix('http://')}/v1/ws, ws://{b.removeprefix('http://')}/v1/ws"
    with pytest.raises(TidingsError, match=f"^gave up on {where} after 3 reconnects"):
        await anext(sub)
    assert sub.nodes.switches == 4  # every failed attempt moved on: a, b, a, b
