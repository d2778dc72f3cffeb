"""What a node holds for the groups it serves, in one process on a real NATS server:
no lease, fence or served entry outlives the group it was taken for. A group PUT
the owner refuses gives its lease up; a save of a group whose lease lapsed while it
was on its way is refused (the node that took it over keeps its write); a topic
dropped by another node lets its groups' leases go.
"""

from __future__ import annotations

import asyncio

import pytest
from hubapi import unique
from natsproc import NatsServer

from tidings.backends.nats import NatsSettings
from tidings.backends.nats.grouprouter import NatsGroupRouter, _lease_key
from tidings.backends.nats.storage import GroupMoved, NatsStorage, _group_key
from tidings.core.groups import GroupConfig
from tidings.core.hub import Hub, HubOptions
from tidings.errors import TopicNotFound
from tidings.events import normalize_event

pytestmark = pytest.mark.timeout(60)



async def test_refused_put_gives_its_lease_up(nats: NatsServer) -> None:
    """A PUT of a group on a topic that does not exist (auto-create off) is refused
    with TopicNotFound and leaves no lease, no served entry and no fence behind."""
    storage = NatsStorage(NatsSettings(servers=(nats.url,)))
    router = NatsGroupRouter(storage, lease_s=1.0)
    hub = Hub(storage, HubOptions(auto_create=False), group_router=router)
    await hub.start()
    try:
        topic = unique()
        keys = {_lease_key(topic, f"g{i}") for i in range(5)}
        for i in range(5):
            with pytest.raises(TopicNotFound):
                await hub.configure_group(topic, f"g{i}", GroupConfig())
        await asyncio.sleep(2.0)  # two lease times: a lease kept would be renewed
        held = [k for k in router.leases.held() if k in keys]
        assert held == [], f"leases still held for groups that do not exist: {held}"
        assert not keys & set(router._served)
        assert not keys & set(router._taking)
        fenced = {_group_key(topic, f"g{i}") for i in range(5)} & set(storage._fenced)
        assert all(storage._fenced[k][0] < 0 for k in fenced)  # refused, if kept at all
    finally:
        await hub.close()


async def test_save_after_let_go_is_refused(nats: NatsServer) -> None:
    """A node whose lease lapsed while a save was on its way (let go, then taken by
    another node): that save raises GroupMoved and the new owner's row stands."""
    a = NatsStorage(NatsSettings(servers=(nats.url,)))
    b = NatsStorage(NatsSettings(servers=(nats.url,)))
    topic, group = unique(), "g"
    try:
        await a.start()
        await b.start()
        await a.save_group(topic, group, {"ordering": "none"})
        await a.save_positions(topic, group, {0: (5, [], [])})
        assert await a.take_group(topic, group) is not None
        a.let_go_group(topic, group)  # its lease lapsed
        row = await b.take_group(topic, group)
        assert row is not None
        await b.save_positions(topic, group, {0: (9, [], [])})
        with pytest.raises(GroupMoved):
            await a.save_positions(topic, group, {0: (6, [], [])})  # the stale owner's save
        with pytest.raises(GroupMoved):
            await a.delete_group(topic, group)
        saved = await b.read_group(topic, group)
        assert saved is not None and saved[3] == {0: (9, [], [])}
        await b.save_positions(topic, group, {0: (10, [], [])})  # b's fence holds still
        again = await a.take_group(topic, group)  # taken again: a serves it from there
        assert again is not None and again[3] == {0: (10, [], [])}
        await a.save_positions(topic, group, {0: (11, [], [])})
    finally:
        await a.close()
        await b.close()


async def _node(nats: NatsServer) -> tuple[Hub, NatsGroupRouter]:
    storage = NatsStorage(NatsSettings(servers=(nats.url,)))
    router = NatsGroupRouter(storage, lease_s=1.0)
    hub = Hub(storage, group_router=router)
    await hub.start()
    return hub, router


def _holds_nothing_of(router: NatsGroupRouter, topic: str, group: str) -> None:
    key = _lease_key(topic, group)
    assert key not in router.leases.held()
    assert key not in router._served
    assert _group_key(topic, group) not in router.storage._fenced


async def test_a_dropped_topic_lets_its_groups_go(nats: NatsServer) -> None:
    """A topic dropped by another node (followed here) or by this one: the leases of
    its groups served here are released, their served entries and fences dropped."""
    h1, r1 = await _node(nats)
    h2, _ = await _node(nats)
    try:
        for dropper in (h2, h1):
            topic = unique()
            await h1.create_topic(topic, 1)
            await h1.configure_group(topic, "g", GroupConfig())
            assert _lease_key(topic, "g") in r1.leases.held()
            await h2.learn_topic(topic)
            await dropper.delete_topic(topic)
            for _ in range(100):  # the other node's deletion, followed here
                if topic not in h1.topics:
                    break
                await asyncio.sleep(0.05)
            assert topic not in h1.topics
            await asyncio.sleep(0.1)
            _holds_nothing_of(r1, topic, "g")
            assert await r1.leases.holder(_lease_key(topic, "g")) is None  # released
    finally:
        await h1.close()
        await h2.close()


async def test_listing_groups_takes_no_lease(nats: NatsServer) -> None:
    """The group list describes a group nobody serves from its saved state (its
    config, positions and counters), without taking its lease; a group another node
    serves is described by that node."""
    h1, _ = await _node(nats)
    h2: Hub | None = None
    try:
        topic = unique()
        await h1.create_topic(topic, 1)
        await h1.publish(topic, [normalize_event({"type": "t"}, topic=topic) for _ in range(3)])
        await h1.configure_group(topic, "idle", GroupConfig(max_deliver=7))
        await h1.configure_group(topic, "busy", GroupConfig())
        got = await h1.fetch(topic, "idle", 2)
        assert await h1.ack(topic, "idle", [d.lease for d in got]) == 2
        await h1.close()  # its leases released: nobody serves the groups
        h1, _ = await _node(nats)
        await h1.fetch(topic, "busy", 1)  # node 1 serves "busy"
        h2, r2 = await _node(nats)
        listed = {g["name"]: g for g in await h2.describe_groups() if g["topic"] == topic}
        assert set(listed) == {"idle", "busy"}
        idle = listed["idle"]
        assert idle["config"]["max_deliver"] == 7
        assert idle["partitions"][0]["committed"] == 2 and idle["lag"] == 1
        assert idle["acked"] == 2 and idle["pending"] == 0
        assert listed["busy"]["pending"] == 1  # from node 1, which serves it
        assert r2.leases.held() == [] and r2._served == {}
        assert await r2.leases.holder(_lease_key(topic, "idle")) is None
    finally:
        await h1.close()
        if h2 is not None:
            await h2.close()
