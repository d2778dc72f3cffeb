"""Clients given several URLs of one hub: which node they use, when they move, what
they send again (client/nodes.py).

Every hub here is a real ``tidings serve`` process. Nodes that share a backend do
not exist yet, so the URLs of one hub are its own address and a
:class:`~nodeproxy.ForwardingNode` in front of it (a real TCP server that passes
the bytes on, or fails as told), a port where nothing listens, or the same hub
restarted on its data directory. Separate hubs in one list are refused.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from failoverhelp import FAST, every_record, forwarding
from hubproc import HubFactory, HubProcess
from nodeproxy import ForwardingNode, FullBacklog, SilentPort
from viewhelp import commit_events

from tidings import (
    InvalidEvent,
    NotFound,
    NotOneHub,
    OutcomeUnknown,
    TidingsError,
    ViewBehind,
)
from tidings.client import AsyncClient, Client, HubNodes, LiveSubscription
from tidings.client.nodes import parse_hub_urls

pytestmark = pytest.mark.timeout(120)

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
    a, at = nodes.pick()
    assert a == "http://a:1"
    assert nodes.pick(["http://a:1"])[0] == "http://b:1"
    nodes.failed(a, at)
    nodes.failed(a, at)  # a second request that failed on a: already moved
    assert nodes.current == "http://b:1" and nodes.switches == 1
    # A request that tried b and c (current is b): a is the one left.
    assert nodes.pick(["http://b:1", "http://c:1"])[0] == "http://a:1"
    nodes.failed(*nodes.pick())
    nodes.failed(*nodes.pick())
    assert nodes.current == "http://a:1" and nodes.switches == 3  # wrapped around
    with pytest.raises(ValueError, match="every node was tried"):
        nodes.pick(nodes.urls)
    single = HubNodes("http://a:1")
    single.failed(*single.pick())
    assert single.current == "http://a:1" and single.switches == 0 and not single.several


def test_a_late_failure_from_before_the_client_came_back_moves_nothing() -> None:
    """A request sent to a, the client leaves a for b and comes back to a; then the
    first request's failure arrives: a is healthy now, and stays current."""
    nodes = HubNodes("http://a:1,http://b:1")
    slow = nodes.pick()  # sent to a, answer still coming
    nodes.failed(*nodes.pick())  # another request failed on a: to b
    nodes.failed(*nodes.pick())  # and on b: back to a
    assert nodes.current == "http://a:1" and nodes.switches == 2
    nodes.failed(*slow)
    assert nodes.current == "http://a:1" and nodes.switches == 2


def test_the_hub_id_first_answered_is_kept_and_another_refused() -> None:
    nodes = HubNodes("http://a:1,http://b:1")
    assert nodes.trusts("http://b:1")  # nothing known yet: the first answer says
    nodes.answered("http://a:1", None)  # an answer naming no hub: nothing learned
    assert nodes.hub_id is None
    nodes.answered("http://a:1", "h1")
    assert nodes.hub_id == "h1" and nodes.trusts("http://a:1")
    assert not nodes.trusts("http://b:1")  # to be asked before it is used
    with pytest.raises(NotOneHub, match="http://b:1 answers as hub h2, but http://a:1 as hub h1"):
        nodes.answered("http://b:1", "h2")
    assert not nodes.trusts("http://b:1") and nodes.hub_id == "h1"


# -- HTTP requests: which node ---------------------------------------------------------------


async def test_a_node_down_from_the_start_is_skipped(hub: HubProcess, down: SilentPort) -> None:
    topic = "orders"
    async with AsyncClient([down.url, hub.base_url], reconnect=FAST) as client:
        assert client.url == down.url
        assert (await client.healthz())["status"] == "ok"
        assert client.url == hub.base_url and client.nodes.switches == 1
        await client.create_topic(topic, partitions=3)
        acked = [
            await client.publish(topic, "n.made", {"i": i}, key=f"k{i % 5}") for i in range(40)
        ]
        batch = [{"type": "n.made", "data": i} for i in range(40, 60)]
        acked += await client.publish_many(topic, batch)
        acked.append(await client.publish_binary(topic, {"type": "n.made", "data": 60}))
        assert client.nodes.switches == 1  # it stays on the node that answers
    stored = await every_record(hub.base_url, topic)
    assert len(acked) == len(stored) == 61
    assert {(a["id"], a["partition"], a["offset"]) for a in acked} == {
        (r.event.id, r.partition, r.offset) for r in stored
    }


async def test_every_node_down_raises_naming_each_and_keeps_each_reason() -> None:
    first, second = SilentPort(), SilentPort()
    try:
        async with AsyncClient(f"{first.url},{second.url}", reconnect=FAST) as client:
            with pytest.raises(TidingsError) as err:
                await client.healthz()
        detail = err.value.detail
        assert detail.startswith("no node of the hub answered: ")
        assert f"cannot reach the hub at {first.url}" in detail
        assert f"cannot reach the hub at {second.url}" in detail
        # The cause chains down to the connection error of the last node.
        cause = err.value.__cause__
        assert isinstance(cause, TidingsError) and second.url in cause.detail
        assert isinstance(cause.__cause__, OSError)
        async with AsyncClient(first.url) as client:  # one node: one try, the message as ever
            with pytest.raises(TidingsError, match=f"^cannot reach the hub at {first.url}"):
                await client.healthz()
    finally:
        first.close()
        second.close()


async def test_the_last_answer_keeps_the_earlier_nodes_reasons(
    hub: HubProcess, down: SilentPort
) -> None:
    busy = await forwarding(hub, {"GET /healthz": "unavailable"}).start()
    async with busy, AsyncClient([down.url, busy.url], reconnect=FAST) as client:
        with pytest.raises(TidingsError) as err:
            await client.healthz()
    assert err.value.status == 503 and err.value.detail == "the hub is shutting down"
    (note,) = err.value.__notes__
    assert note.startswith(f"before it: cannot reach the hub at {down.url}: ")
    cause = err.value.__cause__
    assert isinstance(cause, TidingsError) and cause.detail == note.removeprefix("before it: ")


async def test_a_4xx_never_fails_over(hub: HubProcess, proxy: ForwardingNode) -> None:
    topic = "orders"
    async with AsyncClient([hub.base_url, proxy.url], reconnect=FAST) as client:
        await client.publish(topic, "n.made", {"i": 0})
        with pytest.raises(NotFound):
            await client.get_event("no-such-event")
        with pytest.raises(InvalidEvent):
            await client.publish(topic, event={"type": "n.made", "specversion": "0.3"})
        with pytest.raises(NotFound):
            await client.group(topic, "no-such-group")
        assert client.url == hub.base_url and client.nodes.switches == 0
    assert len(await every_record(hub.base_url, topic)) == 1
    assert proxy.seen == []  # the second node was never asked


async def test_a_view_behind_is_the_hubs_answer_not_a_failed_node(
    hub: HubProcess, proxy: ForwardingNode
) -> None:
    """A 503 about the request (the view has not caught up) is raised where it was
    answered: the next node is not asked, and the client stays."""
    topic, name = "stock", "stock-view"
    async with AsyncClient(hub.base_url) as one:
        await one.create_topic(topic)
        await one.publish(topic, "stock.set", {"sku": "a", "n": 3}, key="a", id="s-0")
        await one.put_view(name, {"kind": "view", "inputs": [topic], "app": "tests"})
    async with AsyncClient([hub.base_url, proxy.url], reconnect=FAST) as client:
        with pytest.raises(ViewBehind):
            await client.view_get(name, "a", min_position={0: 0}, wait=0.1)
        assert client.url == hub.base_url and client.nodes.switches == 0
        await client.commit_view(
            name, 0, 0, commit_events(name, 0, 0, {"a": 3}, {topic: {"0": 1}})
        )
        got = await client.view_get(name, "a", min_position={0: 0}, wait=0.1)
        assert got["value"] == 3
    assert proxy.seen == []


async def test_an_unavailable_node_is_left_even_for_an_ack(hub: HubProcess) -> None:
    """A 503 saying the node is unavailable (shutting down) applied nothing: any
    request, an ack too, goes on to the next node."""
    topic, group = "jobs", "workers"
    async with AsyncClient(hub.base_url) as one:
        await one.create_group(topic, group)
        await one.publish(topic, "job.made", {"i": 1})
        (delivery,) = await one.fetch(topic, group)
    async with forwarding(hub, {"POST /ack": "unavailable"}) as closing:
        async with AsyncClient([closing.url, hub.base_url], reconnect=FAST) as client:
            assert await client.ack(topic, group, delivery) == 1
            assert client.url == hub.base_url and client.nodes.switches == 1
        assert closing.count("POST", f"/v1/topics/{topic}/groups/{group}/ack") == 1
    async with AsyncClient(hub.base_url) as one:
        info = await one.group(topic, group)
    assert info["pending"] == 0 and info["lag"] == 0


async def test_a_node_whose_connections_time_out_is_left_for_any_request(
    hub: HubProcess,
) -> None:
    """No connection within the connect timeout: nothing was sent, so even a fetch
    goes on to the next node."""
    topic, group = "jobs", "workers"
    async with AsyncClient(hub.base_url) as one:
        await one.create_group(topic, group)
        await one.publish(topic, "job.made", {"i": 1})
    full = FullBacklog()
    try:
        async with AsyncClient([full.url, hub.base_url], timeout=2, reconnect=FAST) as client:
            (delivery,) = await client.fetch(topic, group)
            assert client.url == hub.base_url and client.nodes.switches == 1
            assert await client.ack(topic, group, delivery) == 1
    finally:
        full.close()


# -- HTTP requests: what is sent again -------------------------------------------------------


async def test_a_lost_answer_is_sent_again_only_where_that_is_harmless(
    hub: HubProcess,
) -> None:
    """A node passes the request to the hub, which applies it, and drops the
    connection before answering. A publish (event ids: the hub dedupes) and a PUT
    go again to the next node; an ack, a fetch or a webhook's creation raise
    OutcomeUnknown naming the node, sent once; a DELETE goes again and its 404
    counts as done."""
    topic, group = "jobs", "workers"
    g = f"/v1/topics/{topic}/groups/{group}"
    async with AsyncClient(hub.base_url) as one:
        await one.create_group(topic, group)
        for i in range(3):
            await one.publish(topic, "job.made", {"i": i}, id=f"job-{i}")
        first = await one.fetch(topic, group, max=1)

    async def dropping(key: str) -> tuple[ForwardingNode, AsyncClient]:
        node = await forwarding(hub, {key: "drop"}).start()
        return node, AsyncClient([node.url, hub.base_url], reconnect=FAST)

    # publish: sent again under the same id, stored once
    node, client = await dropping(f"POST /v1/topics/{topic}/events")
    async with node, client:
        answer = await client.publish(topic, "job.made", {"i": 3})
        batch = await client.publish_many(topic, [{"type": "job.made", "data": {"i": 4}}])
        assert client.url == hub.base_url and client.nodes.switches == 1
    assert node.count("POST", f"/v1/topics/{topic}/events") == 1  # then it was left
    ids = [r.event.id for r in await every_record(hub.base_url, topic)]
    assert ids.count(answer["id"]) == 1 and ids.count(batch[0]["id"]) == 1
    assert len(ids) == 5

    # ack: applied, answer lost: raised, not sent again (where it would be StaleLease)
    node, client = await dropping("POST /ack")
    async with node, client:
        with pytest.raises(OutcomeUnknown, match=f"^outcome unknown on node {node.url}: ") as err:
            await client.ack(topic, group, first)
        assert err.value.node == node.url and isinstance(err.value.__cause__, TidingsError)
        assert client.url == hub.base_url  # the node is left all the same
    assert node.count("POST", g + "/ack") == 1
    async with AsyncClient(hub.base_url) as one:
        info = await one.group(topic, group)
    assert info["pending"] == 0  # the ack was applied

    # fetch: the leases went to the dropped answer; a second fetch on the next node
    # would lease other events and leave those stuck until ack_wait.
    node, client = await dropping("POST /fetch")
    async with node, client:
        with pytest.raises(OutcomeUnknown, match=f"on node {node.url}"):
            await client.fetch(topic, group, max=1)
    assert node.count("POST", g + "/fetch") == 1
    async with AsyncClient(hub.base_url) as one:
        info = await one.group(topic, group)
    assert info["pending"] == 1  # the one lease the lost answer held; nothing more

    # a webhook's creation: one endpoint, not two
    node, client = await dropping("POST /v1/webhooks")
    async with node, client:
        with pytest.raises(OutcomeUnknown, match=f"on node {node.url}"):
            await client.create_webhook("http://127.0.0.1:9/hook", [topic])
        assert len(await client.webhooks()) == 1

    # a PUT is sent again: the same state either way
    node, client = await dropping(f"PUT /v1/topics/{topic}")
    async with node, client:
        assert len((await client.create_topic(topic, partitions=2))["partitions"]) == 2
    assert node.count("PUT", f"/v1/topics/{topic}") == 1

    # a DELETE is sent again; the 404 it gets says the lost attempt did it
    node, client = await dropping(f"DELETE /v1/topics/{topic}")
    async with node, client:
        await client.delete_topic(topic)
        assert topic not in [t["name"] for t in await client.topics()]
        with pytest.raises(NotFound):  # a 404 with no lost attempt before it is raised
            await client.delete_topic(topic)
    assert node.count("DELETE", f"/v1/topics/{topic}") == 1


async def test_a_node_that_does_not_answer_in_time(hub: HubProcess) -> None:
    """A node takes the request, passes it on, and never answers: after the timeout
    a publish goes to the next node under the same id (stored once); an ack raises
    OutcomeUnknown."""
    topic, group = "orders", "audit"
    async with AsyncClient(hub.base_url) as one:
        await one.create_group(topic, group)
        await one.publish(topic, "n.made", {"i": 0})
        (delivery,) = await one.fetch(topic, group)
    async with forwarding(hub, {"POST /events": "hang", "POST /ack": "hang"}) as silent:
        async with AsyncClient([silent.url, hub.base_url], timeout=2, reconnect=FAST) as client:
            answer = await client.publish(topic, "n.made", {"i": 1})
            assert client.url == hub.base_url and client.nodes.switches == 1
        async with AsyncClient([silent.url, hub.base_url], timeout=2, reconnect=FAST) as client:
            with pytest.raises(OutcomeUnknown, match=r"no answer from the hub at .* within 2 s"):
                await client.ack(topic, group, delivery)
    ids = [r.event.id for r in await every_record(hub.base_url, topic)]
    assert ids.count(answer["id"]) == 1 and len(ids) == 2


async def test_publishes_go_on_when_a_node_dies_under_load(hub: HubProcess) -> None:
    """The current node dies (every connection cut) while four tasks publish: the
    publishes go on on the next node; every acknowledged event is stored once, and
    nothing is stored that was not acknowledged."""
    topic, tasks, after = "orders", 4, 20
    async with AsyncClient(hub.base_url) as one:
        await one.create_topic(topic, partitions=3)
    acked: list[dict[str, Any]] = []
    enough, killed = asyncio.Event(), asyncio.Event()
    node = await forwarding(hub).start()

    async def publisher(client: AsyncClient, t: int) -> None:
        i, more = 0, after
        while more > 0:  # until the kill is done, then a fixed number more
            if t == 0 and i % 10 == 0:  # one task sends batches too
                batch = [{"type": "n.made", "data": [t, i, j]} for j in range(3)]
                acked.extend(await client.publish_many(topic, batch))
            acked.append(await client.publish(topic, "n.made", {"t": t, "i": i}, key=f"k{i}"))
            i += 1
            if len(acked) >= 80:
                enough.set()
            if killed.is_set():
                more -= 1

    async def killer() -> None:
        await enough.wait()
        await node.kill()
        killed.set()

    async with AsyncClient([node.url, hub.base_url], reconnect=FAST) as client:
        await asyncio.gather(killer(), *(publisher(client, t) for t in range(tasks)))
        assert client.url == hub.base_url and client.nodes.switches == 1
    assert len({ack["id"] for ack in acked}) == len(acked)  # the client filled distinct ids
    stored = {(r.event.id, r.partition, r.offset) for r in await every_record(hub.base_url, topic)}
    assert len({eid for eid, _, _ in stored}) == len(stored)  # no event twice
    # Each answer is a record as answered; nothing stored was not answered (a
    # publish cut off by the kill was sent again and deduplicated).
    assert {(a["id"], a["partition"], a["offset"]) for a in acked} == stored
    assert len(acked) >= 80 + tasks * after


# -- one hub, not several --------------------------------------------------------------------


async def test_urls_of_separate_hubs_are_refused(hubs: HubFactory) -> None:
    """Two hubs on their own data directories have different ids: the client does not
    move from one to the other, and says why."""
    a, b = hubs.start(fsync="always"), hubs.start(fsync="always")
    async with AsyncClient([a.base_url, b.base_url], reconnect=FAST) as client:
        await client.publish("orders", "n.made", {"i": 0})
        a.kill()
        with pytest.raises(NotOneHub, match=f"{b.base_url} answers as hub .* not nodes of one hub"):
            await client.publish("orders", "n.made", {"i": 1})
        with pytest.raises(NotOneHub):  # and again: it never takes b for a
            await client.topics()
    async with AsyncClient(b.base_url) as one:
        assert await one.topics() == []  # b was asked who it is, and nothing else


async def test_the_client_goes_on_with_a_hub_restarted_on_its_data(
    hub: HubProcess, proxy: ForwardingNode
) -> None:
    """SIGKILL of the hub, restarted on its data directory: the same hub (its id is
    kept there). The client goes on through whichever URL answers, and a live
    subscription resumes with no gap and no repeat."""
    topic = "orders"
    async with AsyncClient([hub.base_url, proxy.url], reconnect=FAST) as client:
        sub = client.subscribe(topic, start="earliest")
        assert isinstance(sub, LiveSubscription)
        first = [await client.publish(topic, "n.made", {"i": i}) for i in range(10)]
        got = [await asyncio.wait_for(anext(sub), 10) for _ in range(5)]
        hub.kill()
        with pytest.raises(TidingsError):  # every URL of the hub is down meanwhile
            await client.publish(topic, "n.made", {"i": -1}, id="while-down")
        hub.start()
        second = [await client.publish(topic, "n.made", {"i": i}) for i in range(10, 20)]
        got += [await asyncio.wait_for(anext(sub), 10) for _ in range(15)]
        await sub.aclose()
    ids = [r.event.id for r in await every_record(hub.base_url, topic)]
    # A publish while the hub was down may have been stored (fsync=always) before
    # the kill cut its answer; everything answered is there, once, in order.
    answered = [x["id"] for x in first + second]
    assert [i for i in ids if i != "while-down"] == answered
    assert [r.event.id for r in got] == ids


async def test_a_different_hub_on_the_same_address_is_refused(
    hubs: HubFactory, tmp_path: Path
) -> None:
    a = hubs.start(fsync="always")
    async with AsyncClient([a.base_url], reconnect=FAST) as client:
        sub = client.subscribe("orders", start="earliest")
        await client.publish("orders", "n.made", {"i": 0})
        await asyncio.wait_for(anext(sub), 10)
        a.kill()
        other = HubProcess(tmp_path / "another", a.port, "always", ())
        hubs.hubs.append(other)
        other.start()  # another data directory behind the same URL: another hub
        # The first request may go out on a connection kept from the killed process
        # (its answer lost); after that failure the node is asked who it is before
        # the next. Either way the other hub's answer is refused.
        with pytest.raises(NotOneHub, match="not nodes of one hub"):
            try:
                await client.publish("orders", "n.made", {"i": 1})
            except OutcomeUnknown:
                await client.publish("orders", "n.made", {"i": 1})
        with pytest.raises(NotOneHub):  # the subscription does not resume there either
            await asyncio.wait_for(anext(sub), 10)
        await sub.aclose()


def test_the_blocking_client_fails_over_too(hub: HubProcess, down: SilentPort) -> None:
    with Client(f"{down.url},{hub.base_url}", reconnect=FAST) as client:
        answer = client.publish("orders", "n.made", {"i": 1})
        assert client.url == hub.base_url and client.nodes.switches == 1
        records, _ = client.read("orders")
    assert [r.event.id for r in records] == [answer["id"]]


async def test_a_node_that_names_no_hub_id_is_not_sent_the_request(hub: HubProcess) -> None:
    """Once the client knows its hub, a node that answers without an id (an older
    hub, another server, a proxy that drops the header) cannot show it is that hub:
    it is asked who it is and nothing else, and the client moves on."""
    from aiohttp import web

    asked: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        asked.append(f"{request.method} {request.path}")
        return web.json_response({"status": "ok"}, status=200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    idless = f"http://127.0.0.1:{port}"
    try:
        async with AsyncClient([hub.base_url, idless], reconnect=FAST) as client:
            await client.publish("orders", "n.made", {"i": 0})  # the hub's id is known
            url, epoch = client.nodes.pick()
            client.nodes.failed(url, epoch)  # as if the hub had failed a request
            assert client.nodes.current == idless
            await client.publish("orders", "n.made", {"i": 1})
            assert client.nodes.current == hub.base_url
    finally:
        await runner.cleanup()
    assert asked == ["GET /healthz"]
    assert len(await every_record(hub.base_url, "orders")) == 2
