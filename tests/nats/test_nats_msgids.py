"""Appends given event ids (``NatsPartition.append(..., ids=)``, ``append_linked``):
each record's ``Nats-Msg-Id`` comes from its topic and event id, so any node that
appends the same ids within the duplicate window gets the first offsets back
(a ``Deduplicated``), stored once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from natsproc import NatsServer

from tidings.backends.nats.partition import msg_id
from tidings.backends.nats.storage import NatsStorage
from tidings.core.storage import Deduplicated
from tidings.log.config import Retention

pytestmark = pytest.mark.timeout(60)


def fresh_topic() -> str:
    return f"t.{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def nodes(nats_server: NatsServer) -> AsyncIterator[tuple[NatsStorage, NatsStorage]]:
    """Two nodes on one server; links are decided after 60 s only (no reader aborts)."""
    a = await NatsStorage.connect([nats_server.url], link_timeout_s=60)
    b = await NatsStorage.connect([nats_server.url], link_timeout_s=60)
    yield a, b
    await a.close()
    await b.close()


async def make_topic(s: NatsStorage, topic: str, partitions: int):  # type: ignore[no-untyped-def]
    parts = [await s.open_partition(topic, p, Retention()) for p in range(partitions)]
    await s.save_topic(topic, {"partitions": partitions, "retention": {}})
    return parts


def test_message_ids_depend_on_topic_and_event_id_only() -> None:
    assert msg_id("orders", "e-1") == msg_id("orders", "e-1")
    assert len({msg_id("orders", "e-1"), msg_id("orders", "e-2"), msg_id("order", "e-1")}) == 3
    assert msg_id("t", "an id with spaces and ünïcode").isascii()


async def test_ids_stored_by_another_node_answer_their_first_offsets(
    nodes: tuple[NatsStorage, NatsStorage],
) -> None:
    a, b = nodes
    topic = fresh_topic()
    [pa] = await make_topic(a, topic, 1)
    [pb] = await make_topic(b, topic, 1)
    assert await pa.append([b"a", b"b"], ids=["x1", "x2"]) == 0
    # three appends queued together on b: one atomic batch, which JetStream refuses
    # for the repeated ids; then sent one append at a time (each new one whole)
    new1 = pb.append([b"n1", b"n2"], ids=["y1", "y2"])
    again = pb.append([b"a", b"b"], ids=["x1", "x2"])
    new2 = pb.append([b"n3"], ids=["y3"])
    first, repeat, last = await asyncio.gather(new1, again, new2)
    assert (first, last) == (2, 4)
    assert type(first) is int and type(last) is int
    assert isinstance(repeat, Deduplicated)
    assert (repeat.offsets, repeat.repeated) == ((0, 1), (True, True))
    # a batch of a stored id and new ones: each at its offset, the new ones stored
    mixed = await pb.append([b"b", b"n4"], ids=["x2", "y4"])
    assert isinstance(mixed, Deduplicated)
    assert (mixed.offsets, mixed.repeated) == ((1, 5), (True, False))
    assert [p for _, _, p in await pa.read(0)] == [b"a", b"b", b"n1", b"n2", b"n3", b"n4"]


async def test_a_linked_append_left_undecided_is_committed_by_its_retry(
    nodes: tuple[NatsStorage, NatsStorage],
) -> None:
    """The first writer stored both parts and never decided (it died): the retry on
    another node stores nothing, commits the first writer's link, and its records
    become readable at once instead of being aborted after the links' timeout."""
    a, b = nodes
    topic = fresh_topic()
    await make_topic(a, topic, 2)
    parts_b = await make_topic(b, topic, 2)
    never = asyncio.Event()

    async def dies_before_commit(link: str) -> None:
        await never.wait()

    a.links.commit = dies_before_commit  # type: ignore[method-assign]
    payloads = [(0, [b"a0", b"a1"]), (1, [b"b0"])]
    ids = [["e0", "e1"], ["e2"]]
    first = a.append_linked(topic, payloads, ids=ids)

    async def stored() -> bool:
        return all([await a.log.read(topic, p, 0) for p in (0, 1)])

    for _ in range(200):
        if await stored():
            break
        await asyncio.sleep(0.05)
    assert await stored()
    assert await parts_b[0].read(0) == []  # held back: undecided
    bases = await b.append_linked(topic, payloads, ids=ids)
    assert [(d.offsets, d.repeated) for d in bases] == [  # type: ignore[attr-defined]
        ((0, 1), (True, True)),
        ((0,), (True,)),
    ]
    assert [p for _, _, p in await parts_b[0].read(0)] == [b"a0", b"a1"]
    assert [p for _, _, p in await parts_b[1].read(0)] == [b"b0"]
    first.cancel()
    never.set()
