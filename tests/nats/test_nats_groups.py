"""Consumer groups served by every node: two ``tidings serve`` nodes on one NATS
server, each group served by the node that holds its lease (``td_owners``) and
reached through either node. A lease fetched on one node is acked on the other, a
nack or an expired lease is redelivered through the other, ``max_deliver`` writes the
dead letter once, ``ordering: key`` holds across nodes, seek and re-drive work through
a node that does not serve the group; concurrent consumers on both nodes handle each
event; and the owner killed with SIGKILL is taken over within the lease time.

The lease time is short here (``--lease-time 2``). Each group is made on node ``a``,
which then serves it (nobody did): the dead-letter topic is read there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson
import pytest
import websockets
from hubapi import unique
from hubproc import HubFactory, HubProcess
from livehelp import PROTOCOL, recv, ws_url
from natsproc import NatsCluster, NatsServer

from tidings import AsyncClient
from tidings.backends.nats import NatsSettings
from tidings.backends.nats.grouprouter import NatsGroupRouter, _lease_key
from tidings.backends.nats.storage import GroupMoved, NatsStorage
from tidings.core.groups import GroupConfig
from tidings.core.hub import Hub
from tidings.errors import GroupNotFound, StaleLease, TidingsError
from tidings.events import normalize_event

pytestmark = pytest.mark.timeout(180)

LEASE_S = 2.0





def _start(nodes: HubFactory, nats: NatsServer) -> HubProcess:
    return nodes.start("--backend", nats.url, "--lease-time", str(LEASE_S))


async def _events(hub: AsyncClient, topic: str, n: int, keys: int = 5) -> list[str]:
    sent = await hub.publish_many(
        topic, [{"type": "order.placed", "partitionkey": f"k{i % keys}", "data": {"n": i}}
                for i in range(n)]
    )  # fmt: skip
    return [e["id"] for e in sent]


async def test_one_group_through_two_nodes(nodes: HubFactory, nats: NatsServer) -> None:
    a, b = _start(nodes, nats), _start(nodes, nats)
    topic = unique()
    async with AsyncClient(a.base_url) as ca, AsyncClient(b.base_url) as cb:
        await ca.create_topic(topic, partitions=2)
        ids = await _events(ca, topic, 6)
        await ca.create_group(topic, "g", ack_wait=1, max_deliver=3)
        # a lease fetched on a is acked on b
        got = await ca.fetch(topic, "g", max=3)
        assert len(got) == 3
        assert await cb.ack(topic, "g", [d.lease for d in got]) == 3
        with pytest.raises(StaleLease):  # the same error as the owner's, through b
            await cb.ack(topic, "g", [got[0].lease])
        # a nack on b is redelivered through a
        more = await cb.fetch(topic, "g", max=3)
        assert len(more) == 3
        assert await cb.nack(topic, "g", [more[0].lease]) == 1
        again = await ca.fetch(topic, "g", max=3)
        assert [(d.event.id, d.deliveries) for d in again] == [(more[0].event.id, 2)]
        await ca.ack(topic, "g", [d.lease for d in more[1:]])
        # an expired lease (ack_wait 1 s) comes back through b, then goes to the
        # dead-letter topic after max_deliver (3) deliveries, once
        t0 = time.monotonic()
        third = await cb.fetch(topic, "g", max=3, wait=5)
        assert [(d.event.id, d.deliveries) for d in third] == [(more[0].event.id, 3)]
        assert time.monotonic() - t0 >= 0.5
        assert await cb.fetch(topic, "g", max=3, wait=2.5) == []  # dead-lettered meanwhile
        info = await cb.group(topic, "g")
        assert info["dead_lettered"] == 1 and info["acked"] == 5 and info["lag"] == 0
        dlq, _ = await ca.read(f"{topic}.dlq", start="earliest")
        assert [r.event.id for r in dlq] == [more[0].event.id]
        assert sorted(ids) == sorted([d.event.id for d in got + more])
        # re-drive through b: back on the topic, and delivered again through a
        assert await cb.redrive(topic, "g") == 1
        assert await cb.redrive(topic, "g") == 0  # each dead letter once
        back = await ca.fetch(topic, "g", max=10, wait=5)
        assert [d.event.id for d in back] == [more[0].event.id]
        await cb.ack(topic, "g", [d.lease for d in back])
        # seek through b: the group starts over, as fetched through a
        await cb.seek(topic, "g", "earliest")
        replay = await ca.fetch(topic, "g", max=100, wait=1)
        assert sorted(d.event.id for d in replay) == sorted([*ids, more[0].event.id])
        # unknown groups: the same 404 through either node
        for c in (ca, cb):
            with pytest.raises(GroupNotFound):
                await c.fetch(topic, "nope")
        # a change made through b reaches the owner; a deletion through b too
        changed = await cb.create_group(topic, "g", ack_wait=7, max_deliver=3)
        assert changed["config"]["ack_wait"] == 7
        assert (await ca.group(topic, "g"))["config"]["ack_wait"] == 7
        listed = {(g["topic"], g["name"]) for g in await cb.groups()}
        assert (topic, "g") in listed
        await cb.delete_group(topic, "g")
        with pytest.raises(GroupNotFound):
            await ca.group(topic, "g")


async def test_ordering_by_key_holds_across_nodes(nodes: HubFactory, nats: NatsServer) -> None:
    a, b = _start(nodes, nats), _start(nodes, nats)
    topic = unique()
    async with AsyncClient(a.base_url) as ca, AsyncClient(b.base_url) as cb:
        await ca.create_topic(topic, partitions=1)
        await ca.publish_many(
            topic,
            [
                {"type": "t", "partitionkey": "k1", "data": {"n": 1}},
                {"type": "t", "partitionkey": "k2", "data": {"n": 2}},
                {"type": "t", "partitionkey": "k1", "data": {"n": 3}},
            ],
        )
        await ca.create_group(topic, "g", ordering="key")
        first = await ca.fetch(topic, "g", max=10)
        assert [d.event.data["n"] for d in first] == [1, 2]  # type: ignore[index]
        assert await cb.fetch(topic, "g", max=10) == []  # k1's next waits for its ack
        await cb.ack(topic, "g", [first[0].lease])
        nxt = await cb.fetch(topic, "g", max=10)
        assert [d.event.data["n"] for d in nxt] == [3]  # type: ignore[index]


async def test_concurrent_consumers_on_two_nodes(nodes: HubFactory, nats: NatsServer) -> None:
    a, b = _start(nodes, nats), _start(nodes, nats)
    topic, n = unique(), 400
    async with AsyncClient(a.base_url) as ca, AsyncClient(b.base_url) as cb:
        await ca.create_topic(topic, partitions=3)
        await ca.create_group(topic, "g", ack_wait=30, max_deliver=10)
        ids = await _events(ca, topic, n, keys=12)
        acked: list[str] = []
        nacked: set[str] = set()
        redelivered: list[str] = []

        async def consume(c: AsyncClient) -> None:
            deadline = time.monotonic() + 90
            while len(acked) < n and time.monotonic() < deadline:
                got = await c.fetch(topic, "g", max=10, wait=0.5)
                done, back = [], []
                for d in got:
                    eid = d.event.id
                    if d.deliveries > 1:
                        redelivered.append(eid)
                    # every 9th event fails once: redelivered, maybe through the other node
                    if hash(eid) % 9 == 0 and eid not in nacked:
                        nacked.add(eid)
                        back.append(d.lease)
                    else:
                        done.append(d)
                if back:
                    await c.nack(topic, "g", back)
                if done:
                    assert await c.ack(topic, "g", [d.lease for d in done]) == len(done)
                    acked.extend(d.event.id for d in done)

        await asyncio.gather(consume(ca), consume(cb), consume(ca), consume(cb))
        assert len(acked) == n and sorted(acked) == sorted(ids)  # each once, none lost
        assert sorted(redelivered) == sorted(nacked) and nacked
        info = await cb.group(topic, "g")
        assert info["lag"] == 0 and info["pending"] == 0 and info["acked"] == n


async def test_owner_killed_under_consumption(nodes: HubFactory, nats: NatsServer) -> None:
    await owner_killed_under_consumption(lambda: _start(nodes, nats))


async def test_owner_killed_under_consumption_on_a_3_server_cluster(
    nodes: HubFactory, cluster: NatsCluster
) -> None:
    """As above, the hubs on three routed nats-servers with R3 streams and buckets."""
    servers = ",".join(cluster.urls)
    await owner_killed_under_consumption(
        lambda: nodes.start("--backend", servers, "--replicas", "3", "--lease-time", str(LEASE_S))
    )


async def owner_killed_under_consumption(start: Callable[[], HubProcess]) -> None:
    a, b = start(), start()
    topic, n = unique(), 600
    async with AsyncClient(a.base_url) as ca:
        await ca.create_topic(topic, partitions=2)
        await ca.create_group(topic, "g", ack_wait=3, max_deliver=50)  # a serves it
        ids = await _events(ca, topic, n, keys=8)
    handled: set[str] = set()
    killed_at: list[float] = []
    after_kill: list[float] = []  # when a fetch through b first answered records after it
    errors: list[str] = []

    async def consume(urls: str) -> None:
        async with AsyncClient(urls) as c:
            deadline = time.monotonic() + 120
            while len(handled) < n and time.monotonic() < deadline:
                try:
                    got = await c.fetch(topic, "g", max=5, wait=0.5)
                    if got and killed_at and not after_kill:
                        after_kill.append(time.monotonic())
                    await asyncio.sleep(0.01)  # some work, done: handled, whatever the ack
                    handled.update(d.event.id for d in got)  # does (it may land unanswered)
                    if got:
                        await c.ack(topic, "g", [d.lease for d in got])
                except TidingsError as exc:  # outcome unknown at the kill, or a stale lease
                    errors.append(type(exc).__name__)
                    await asyncio.sleep(0.1)

    async def kill_a() -> None:
        while len(handled) < n // 4:
            await asyncio.sleep(0.05)
        a.kill()
        killed_at.append(time.monotonic())

    # consumers of a fail over to b (the SDK's node list); b's go on through b
    urls_a, urls_b = f"{a.base_url},{b.base_url}", f"{b.base_url},{a.base_url}"
    await asyncio.gather(
        consume(urls_a), consume(urls_a), consume(urls_b), consume(urls_b), kill_a()
    )
    assert killed_at and after_kill
    takeover = after_kill[0] - killed_at[0]
    print(f"takeover after SIGKILL: {takeover:.2f} s (lease {LEASE_S} s); errors {errors}")
    assert takeover < 2 * LEASE_S + 3.0
    assert handled == set(ids)  # every event handled at least once, none lost
    async with AsyncClient(b.base_url) as cb:
        info = await cb.group(topic, "g")
    assert info["lag"] == 0


async def test_a_stale_owners_saves_are_refused(nats: NatsServer) -> None:
    """Fencing in td_groups: once another node took a group (and wrote it again), a
    save from the node that served it before is refused, and stays refused."""
    s1 = await NatsStorage.connect([nats.url])
    s2 = await NatsStorage.connect([nats.url])
    try:
        topic, config = unique(), {"start": "earliest", "ack_wait": 30}
        moved: list[tuple[str, str]] = []
        s1.on_group_moved = lambda t, g: moved.append((t, g))
        await s1.save_group(topic, "g", config)
        assert await s1.take_group(topic, "g") is not None
        await s1.save_positions(topic, "g", {0: (5, [], [])})
        row = await s2.take_group(topic, "g")  # another node takes it over
        assert row is not None and row[3][0][0] == 5
        with pytest.raises(GroupMoved):
            await s1.save_positions(topic, "g", {0: (9, [], [])})
        assert moved == [(topic, "g")]
        with pytest.raises(GroupMoved):  # every later save too, until taken again
            await s1.save_group(topic, "g", config)
        await s2.save_positions(topic, "g", {0: (7, [], [])})
        got = await s1.read_group(topic, "g")
        assert got is not None and got[3][0][0] == 7
        # s2's take wrote the group again: a save s1 had on its way is refused too
        assert await s1.take_group(topic, "g") is not None
        with pytest.raises(GroupMoved):
            await s2.save_positions(topic, "g", {0: (8, [], [])})
    finally:
        await s1.close()
        await s2.close()


async def test_websocket_group_subscription_through_the_other_node(
    nodes: HubFactory, nats: NatsServer
) -> None:
    a = _start(nodes, nats)
    topic = unique()
    async with AsyncClient(a.base_url) as ca:
        await ca.create_topic(topic)  # before b starts: b knows the topic, not the group
        b = _start(nodes, nats)
        await ca.create_group(topic, "g", ack_wait=1)  # a serves it
        ids = await _events(ca, topic, 3)
        async with websockets.connect(ws_url(b.base_url), subprotocols=[PROTOCOL]) as ws:
            await ws.send(orjson.dumps({"type": "subscribe", "id": "s", "topic": topic,
                                        "group": "g"}).decode())  # fmt: skip
            subscribed = await recv(ws)
            assert subscribed["type"] == "subscribed", subscribed
            first = [await recv(ws) for _ in range(3)]
            assert [e["event"]["id"] for e in first] == ids
            leases = [e["lease"] for e in first[:2]]
            await ws.send(orjson.dumps({"type": "ack", "sub": "s", "ref": "r",
                                        "leases": leases}).decode())  # fmt: skip
            got = await recv(ws)
            while got["type"] != "acked":  # the third, not acked, comes back after 1 s
                got = await recv(ws)
            assert got["count"] == 2
            again = await recv(ws)
            assert again["event"]["id"] == ids[2] and again["deliveries"] == 2
        info = await ca.group(topic, "g")
        assert info["acked"] == 2 and info["redelivered"] >= 1


async def test_a_forwarded_fetch_past_one_message_reads_its_payloads(
    nodes: HubFactory, nats: NatsServer
) -> None:
    """Three events of 400 KB leased at once do not fit one NATS message (1 MiB): the
    owner answers without payloads, and the forwarding node reads them from the log."""
    a, b = _start(nodes, nats), _start(nodes, nats)
    topic = unique()
    async with AsyncClient(a.base_url) as ca, AsyncClient(b.base_url) as cb:
        await ca.create_topic(topic)
        await ca.create_group(topic, "g")  # a serves it
        sent = [await ca.publish(topic, "big", {"blob": str(i) * 400_000}) for i in range(3)]
        got = await cb.fetch(topic, "g", max=3)
        assert [d.event.id for d in got] == [e["id"] for e in sent]
        assert [d.event.data for d in got] == [{"blob": str(i) * 400_000} for i in range(3)]
        assert await cb.ack(topic, "g", [d.lease for d in got]) == 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _node(nats: NatsServer, clock: Clock) -> Hub:
    storage = NatsStorage(NatsSettings(servers=(nats.url,)))
    hub = Hub(storage, group_router=NatsGroupRouter(storage, lease_s=30, clock=clock))
    await hub.start()
    return hub


async def test_a_stale_owner_drops_the_group_and_forwards(nats: NatsServer) -> None:
    """Two hubs in this process, their lease clocks a seam. Node 1 serves the group;
    node 2 takes it over (as after node 1 stopped answering for the lease time) while
    node 1's clock says it still holds it: node 1's next save is refused, and it drops
    the group, gives its lease up and forwards to node 2 from then on."""
    c1, c2 = Clock(), Clock()
    h1 = await _node(nats, c1)
    h2: Hub | None = None
    try:
        topic = unique()
        await h1.create_topic(topic, 1)
        await h1.publish(topic, [normalize_event({"type": "t"}, topic=topic) for _ in range(4)])
        await h1.configure_group(topic, "g", GroupConfig())
        h2 = await _node(nats, c2)
        got = await h1.fetch(topic, "g", 2)
        assert [d.offset for d in got] == [0, 1] and h1.serves(topic, "g")
        assert await h2.ack(topic, "g", [got[0].lease]) == 1  # forwarded to node 1
        router2 = h2.group_router
        assert isinstance(router2, NatsGroupRouter)
        key = _lease_key(topic, "g")
        assert await router2.leases.claim(key) != router2.leases.me  # node 2 starts watching
        c2.now += 31  # the lease time on node 2's clock, node 1's standing still
        assert await router2.leases.claim(key) == router2.leases.me
        more = await h2.fetch(topic, "g", 10)  # node 2 loads the group and serves it:
        # offset 1, leased by node 1 and not acked, is delivered again (at least once)
        assert [d.offset for d in more] == [1, 2, 3] and h2.serves(topic, "g")
        # node 1 still believes it holds the lease: its ack is refused by td_groups,
        # so it drops the group and forwards the ack to node 2
        with pytest.raises(StaleLease):  # node 2 leased offset 1 again: node 1's is stale
            await h1.ack(topic, "g", [got[1].lease])
        assert not h1.serves(topic, "g") and h2.serves(topic, "g")
        router1 = h1.group_router
        assert isinstance(router1, NatsGroupRouter) and not router1.leases.holds(key)
        assert await h1.ack(topic, "g", [d.lease for d in more]) == 3  # through node 2
        assert not h1.serves(topic, "g")
        info = await h1.describe_group(topic, "g")
        assert info["acked"] == 4 and info["lag"] == 0 and info["pending"] == 0
    finally:
        await h1.close()
        if h2 is not None:
            await h2.close()
