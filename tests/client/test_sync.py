"""The blocking Client mirrors AsyncClient; its calls run on a loop thread of its own."""

from __future__ import annotations

import threading

import pytest

from tidings import GroupNotFound, InvalidEvent, StaleLease, TopicNotFound
from tidings.client import AsyncClient, Client


def test_methods_mirror_the_async_client() -> None:
    public = {n for n in dir(AsyncClient) if not n.startswith("_")}
    assert public <= {n for n in dir(Client) if not n.startswith("_")}


def test_publish_read_and_topics(hub_url: str, topic: str) -> None:
    with Client(hub_url) as hub:
        assert hub.healthz()["status"] == "ok"
        assert hub.create_topic(topic, partitions=2)["name"] == topic
        answer = hub.publish(topic, "order.placed", {"order_id": "o-1"}, key="o-1")
        many = hub.publish_many(
            topic, ({"type": "order.paid", "partitionkey": "o-1"} for _ in "ab")
        )
        assert hub.publish_binary(topic, {"type": "order.note", "data": "x"})["id"]
        records, token = hub.read(topic, types=["order.placed", "order.paid"])
        assert [r.event.type for r in records] == ["order.placed", "order.paid", "order.paid"]
        assert [a["partition"] for a in many] == [answer["partition"]] * 2
        assert token
        assert topic in [t["name"] for t in hub.topics()]
        assert hub.topic(topic)["events"] == 4
        assert f'topic="{topic}"' in hub.metrics()
        with pytest.raises(InvalidEvent):
            hub.publish(topic, event={"type": ""})
        hub.delete_topic(topic)
        with pytest.raises(TopicNotFound):
            hub.topic(topic)


def test_subscribe_is_a_plain_iterator(hub_url: str, topic: str) -> None:
    with Client(hub_url) as hub:
        hub.publish_many(topic, [{"type": "e", "data": i} for i in range(3)])
        sub = hub.subscribe(topic, start="earliest", wait=1)
        got = [next(sub).event.data for _ in range(3)]
        assert got == [0, 1, 2] and sub.position == "0:3"
        sub.close()
        assert list(sub) == []


def test_groups_fetch_ack_nack_seek(hub_url: str, topic: str) -> None:
    with Client(hub_url) as hub:
        hub.publish_many(topic, [{"type": "e", "data": i} for i in range(2)])
        hub.create_group(topic, "g", types=["e"])
        assert hub.group(topic, "g")["lag"] == 2
        assert ("g", topic) in [(g["name"], g["topic"]) for g in hub.groups()]
        first, second = hub.fetch(topic, "g", max=2)
        assert hub.ack(topic, "g", [first]) == 1
        with pytest.raises(StaleLease):
            hub.ack(topic, "g", first.lease)
        assert hub.nack(topic, "g", (d for d in [second])) == 1
        assert [d.deliveries for d in hub.fetch(topic, "g")] == [2]
        assert hub.seek(topic, "g", "earliest") == "0:0"
        hub.delete_group(topic, "g")
        with pytest.raises(GroupNotFound):
            hub.group(topic, "g")


def test_consume_with_blocks(hub_url: str, topic: str) -> None:
    with Client(hub_url) as hub:
        hub.publish_many(topic, [{"type": "e", "data": i} for i in range(2)])
        hub.create_group(topic, "g")
        with pytest.raises(RuntimeError, match="boom"), hub.consume(topic, "g", wait=1) as messages:
            for msg in messages:
                with msg:
                    raise RuntimeError("boom")
        seen = []
        with hub.consume(topic, "g", wait=1) as messages:
            for msg in messages:
                with msg:
                    seen.append((msg.event.data, msg.deliveries))
                assert msg.settled
                if len(seen) == 2:
                    break
        # Event 1 was fetched with event 0 and handed back when the first consumer
        # closed: a lease, even an unused one, counts as a delivery.
        assert sorted(seen) == [(0, 2), (1, 2)]
        assert hub.group(topic, "g")["lag"] == 0


def test_many_threads_share_one_client(hub_url: str, topic: str) -> None:
    with Client(hub_url, batch_linger_ms=5) as hub:
        answers: list[dict[str, object]] = []

        def produce(n: int) -> None:
            for i in range(20):
                answers.append(hub.publish(topic, "e", {"thread": n, "i": i}))

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(a["offset"] for a in answers) == list(range(160))  # type: ignore[type-var]
        assert hub.batcher is not None and hub.batcher.requests_sent < 160


def test_closed_client_refuses_calls(hub_url: str) -> None:
    hub = Client(hub_url)
    hub.close()
    hub.close()
    with pytest.raises(RuntimeError, match="closed"):
        hub.healthz()


def test_find_an_event_by_id_and_trace_its_order(hub_url: str, topic: str) -> None:
    from tidings import NotFound

    with Client(hub_url) as hub:
        order = f"o-{topic}"
        placed = hub.publish(topic, event={"type": "order.placed", "correlationid": order})
        paid = hub.publish(topic + ".pay", event={"type": "paid", "correlationid": order})
        record = hub.get_event(paid["id"])
        assert (record.topic, record.offset, record.event.type) == (topic + ".pay", 0, "paid")
        assert record.event.extensions["correlationid"] == order
        with pytest.raises(NotFound):
            hub.get_event("no-such-event")
        assert {r.event.id for r in hub.trace(order)} == {placed["id"], paid["id"]}
        first, after = hub.events_by_correlation(order, limit=1)
        assert len(first) == 1 and after is not None
        second, end = hub.events_by_correlation(order, limit=1, after=after)
        assert {first[0].event.id, second[0].event.id} == {placed["id"], paid["id"]}
        _, last = hub.events_by_correlation(order, limit=1, after=end) if end else ([], None)
        assert last is None
