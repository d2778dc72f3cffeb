"""AsyncClient against a real hub: every method, and errors mapped to tidings.errors."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta

import pytest

from tidings import (
    BadPosition,
    BadRequest,
    Conflict,
    Event,
    Forbidden,
    GroupNotFound,
    InvalidEvent,
    StaleLease,
    TidingsError,
    TopicNotFound,
    Unauthorized,
    UnsupportedMediaType,
)
from tidings.client import AsyncClient, Delivery, LiveSubscription

# -- operations ---------------------------------------------------------------------------


async def test_healthz(hub: AsyncClient) -> None:
    assert (await hub.healthz())["status"] == "ok"


async def test_metrics_count_published_events(hub: AsyncClient, topic: str) -> None:
    await hub.publish(topic, "shop.visited", {"page": "/"})
    text = await hub.metrics()
    assert f'tidings_events_in_total{{topic="{topic}"}} 1' in text


async def test_unreachable_hub_raises_tidings_error() -> None:
    async with AsyncClient("http://127.0.0.1:9", timeout=2) as hub:
        with pytest.raises(TidingsError, match=r"cannot reach the hub at http://127\.0\.0\.1:9"):
            await hub.healthz()


async def test_closed_client_refuses_calls(hub_url: str) -> None:
    client = AsyncClient(hub_url)
    await client.healthz()
    await client.close()
    await client.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        await client.healthz()


# -- publish ------------------------------------------------------------------------------


async def test_publish_type_data_and_key(hub: AsyncClient, topic: str) -> None:
    answer = await hub.publish(topic, "order.placed", {"order_id": "o-1"}, key="o-1")
    assert answer["partition"] == 0 and answer["offset"] == 0 and answer["id"]
    assert "duplicate" not in answer
    records, _ = await hub.read(topic)
    event = records[0].event
    assert (event.type, event.data, event.partitionkey) == (
        "order.placed",
        {"order_id": "o-1"},
        "o-1",
    )
    assert event.id == answer["id"]
    assert event.source == f"/topics/{topic}"


async def test_publish_event_object_dict_and_keywords(hub: AsyncClient, topic: str) -> None:
    await hub.publish(topic, event=Event("cart.item.added", {"sku": "s-1"}, subject="cart-9"))
    await hub.publish(
        topic,
        event={"type": "promo.applied", "data": "WINTER"},
        key="c-1",
        subject="cart-1",
        source="/shop/cart",
        extensions={"correlationid": "flow-1"},
    )
    records, _ = await hub.read(topic)
    first, second = (r.event for r in records)
    assert (first.type, first.data, first.subject) == ("cart.item.added", {"sku": "s-1"}, "cart-9")
    assert second.subject == "cart-1" and second.source == "/shop/cart"
    assert second.extensions == {"partitionkey": "c-1", "correlationid": "flow-1"}


async def test_publish_needs_type_or_event_not_both(hub: AsyncClient, topic: str) -> None:
    with pytest.raises(TypeError, match="needs a type"):
        await hub.publish(topic)
    with pytest.raises(TypeError, match="not both"):
        await hub.publish(topic, "a.b", event={"type": "a.b"})


async def test_publish_again_with_same_id_is_a_duplicate(hub: AsyncClient, topic: str) -> None:
    first = await hub.publish(topic, "order.placed", {"n": 1}, id="order-1-placed")
    again = await hub.publish(topic, "order.placed", {"n": 1}, id="order-1-placed")
    assert again == {**first, "duplicate": True}
    assert (await hub.topic(topic))["events"] == 1


async def test_invalid_event_names_the_attribute(hub: AsyncClient, topic: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        await hub.publish(topic, event={"type": "order.placed", "time": "yesterday"})
    assert caught.value.attribute == "time"
    assert caught.value.fields["attribute"] == "time"
    assert "RFC 3339" in caught.value.detail


async def test_publish_many_answers_in_order(hub: AsyncClient, topic: str) -> None:
    answers = await hub.publish_many(
        topic, [Event("order.placed", {"n": i}) for i in range(3)] + [{"type": "order.paid"}]
    )
    assert [a["offset"] for a in answers] == [0, 1, 2, 3]
    records, _ = await hub.read(topic)
    assert [r.event.type for r in records] == ["order.placed"] * 3 + ["order.paid"]
    assert await hub.publish_many(topic, []) == []


async def test_publish_many_is_all_or_nothing(hub: AsyncClient, topic: str) -> None:
    await hub.publish(topic, "order.placed")
    with pytest.raises(InvalidEvent) as caught:
        await hub.publish_many(topic, [{"type": "ok"}, {"type": "bad", "ext": 1.5}, {"type": "ok"}])
    assert caught.value.fields["index"] == 1
    assert caught.value.attribute == "ext"
    assert (await hub.topic(topic))["events"] == 1


async def test_publish_binary(hub: AsyncClient, topic: str) -> None:
    await hub.publish_binary(topic, {"type": "doc.json", "data": {"a": [1, 2]}, "subject": "x y"})
    await hub.publish_binary(topic, Event("doc.text", "héllo", datacontenttype="text/plain"))
    await hub.publish_binary(topic, {"type": "doc.empty"})
    raw = base64.b64encode(b"\x00\xffbytes").decode()
    await hub.publish_binary(
        topic, {"type": "doc.bin", "datacontenttype": "image/png", "data_base64": raw}
    )
    records, _ = await hub.read(topic)
    json_doc, text_doc, empty_doc, bin_doc = (r.event for r in records)
    assert json_doc.data == {"a": [1, 2]} and json_doc.subject == "x y"
    assert (text_doc.data, text_doc.datacontenttype) == ("héllo", "text/plain")
    assert (empty_doc.data, empty_doc.datacontenttype) == (None, None)
    assert (bin_doc.data_base64, bin_doc.datacontenttype) == (raw, "image/png")


async def test_unsupported_media_type_maps_to_its_class(hub: AsyncClient, topic: str) -> None:
    # Not something the SDK sends by itself: the mapping of a 415 answer is what is tested.
    with pytest.raises(UnsupportedMediaType):
        await hub._request("POST", f"/v1/topics/{topic}/events", body=b"{}")


# -- read and subscribe -------------------------------------------------------------------


async def test_read_from_earliest_latest_offset_and_token(hub: AsyncClient, topic: str) -> None:
    await hub.publish_many(topic, [{"type": "n", "data": i} for i in range(5)])
    records, token = await hub.read(topic, limit=2)
    assert [r.event.data for r in records] == [0, 1] and token == "0:2"
    records, token = await hub.read(topic, start=token)
    assert [r.event.data for r in records] == [2, 3, 4] and token == "0:5"
    records, token = await hub.read(topic, start=3)
    assert [r.event.data for r in records] == [3, 4]
    records, token = await hub.read(topic, start="latest")
    assert records == [] and token == "0:5"
    assert all(r.topic == topic and r.partition == 0 for r in records)


async def test_read_from_time(hub: AsyncClient, topic: str) -> None:
    await hub.publish(topic, event={"type": "old"})
    await asyncio.sleep(0.02)
    cut = datetime.now(UTC)
    await asyncio.sleep(0.02)
    await hub.publish(topic, event={"type": "new"})
    records, _ = await hub.read(topic, from_time=cut)
    assert [r.event.type for r in records] == ["new"]
    records, _ = await hub.read(topic, from_time=(cut - timedelta(hours=1)).isoformat())
    assert [r.event.type for r in records] == ["old", "new"]


async def test_read_partition_and_types(hub: AsyncClient, topic: str) -> None:
    await hub.create_topic(topic, partitions=2)
    await hub.publish_many(
        topic,
        [
            {"type": "order.placed", "partitionkey": "a", "data": 1},
            {"type": "cart.viewed", "partitionkey": "a", "data": 2},
            {"type": "order.paid", "partitionkey": "a", "data": 3},
        ],
    )
    records, _ = await hub.read(topic, types=["order.*"])
    assert [r.event.data for r in records] == [1, 3]
    records, _ = await hub.read(topic, types="cart.>")
    assert [r.event.data for r in records] == [2]
    part = records[0].partition
    records, token = await hub.read(topic, partition=part, start=1)
    assert [r.event.data for r in records] == [2, 3] and token == f"{part}:3"
    with pytest.raises(BadPosition, match="needs partition="):
        await hub.read(topic, start=1)


async def test_read_long_polls(hub: AsyncClient, topic: str) -> None:
    await hub.create_topic(topic)
    reader = asyncio.create_task(hub.read(topic, start="latest", wait=5))
    await asyncio.sleep(0.2)
    assert not reader.done()
    await hub.publish(topic, "late")
    records, _ = await asyncio.wait_for(reader, 3)
    assert [r.event.type for r in records] == ["late"]


async def test_read_errors(hub: AsyncClient, topic: str) -> None:
    with pytest.raises(TopicNotFound) as caught:
        await hub.read(topic)
    assert caught.value.fields["topic"] == topic
    await hub.publish(topic, "one")
    with pytest.raises(BadPosition) as position:
        await hub.read(topic, start=7)
    assert position.value.fields["field"] == "from"
    with pytest.raises(BadRequest) as bad:
        await hub.read(topic, limit=0)
    assert bad.value.fields["field"] == "limit"


@pytest.mark.parametrize("live", [True, False], ids=["live", "long-poll"])
async def test_subscribe_receives_events_published_after_it_starts(
    hub: AsyncClient, topic: str, live: bool
) -> None:
    await hub.publish(topic, "before")
    sub = hub.subscribe(topic, wait=5, live=live)
    if isinstance(sub, LiveSubscription):
        await sub.start()  # subscribed: "latest" is fixed where the topic ends now
        first = asyncio.create_task(anext(sub))
    else:
        first = asyncio.create_task(anext(sub))
        await asyncio.sleep(0.2)  # the first long poll is waiting at the end of the topic
    await hub.publish(topic, "after", 1)
    await hub.publish(topic, "after", 2)
    record = await asyncio.wait_for(first, 5)
    assert (record.event.type, record.event.data) == ("after", 1)
    assert (await asyncio.wait_for(anext(sub), 5)).event.data == 2
    assert sub.position == "0:3"
    await sub.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(sub)


@pytest.mark.parametrize("live", [True, False], ids=["live", "long-poll"])
async def test_subscribe_from_earliest_with_types_and_resume(
    hub: AsyncClient, topic: str, live: bool
) -> None:
    await hub.publish_many(
        topic, [{"type": t, "data": i} for i, t in enumerate(["a.x", "b.x", "a.y", "a.z"])]
    )
    sub = hub.subscribe(topic, start="earliest", types=["a.*"], wait=1, live=live)
    assert sub.position is None
    got = [await anext(sub), await anext(sub)]
    assert [r.event.data for r in got] == [0, 2]
    # After the last record handed out (read ahead or not).
    assert sub.position == "0:3"
    assert sub.position is not None
    rest = hub.subscribe(topic, start=sub.position, wait=1, live=live)
    assert (await anext(rest)).event.data == 3


# -- topics -------------------------------------------------------------------------------


async def test_topics_lifecycle(hub: AsyncClient, topic: str) -> None:
    created = await hub.create_topic(topic, partitions=2, max_age="7d", max_bytes=1 << 20)
    assert created["name"] == topic and len(created["partitions"]) == 2
    assert created["retention"] == {"max_age": 7 * 86400, "max_bytes": 1 << 20}
    await hub.publish(topic, "e", key="k")
    info = await hub.topic(topic)
    assert info["events"] == 1 and info["bytes"] > 0
    assert sum(p["next_offset"] for p in info["partitions"]) == 1
    assert topic in [t["name"] for t in await hub.topics()]
    grown = await hub.create_topic(topic, partitions=3)
    assert len(grown["partitions"]) == 3
    with pytest.raises(Conflict) as shrink:
        await hub.create_topic(topic, partitions=1)
    assert shrink.value.fields["field"] == "partitions"
    await hub.delete_topic(topic)
    with pytest.raises(TopicNotFound):
        await hub.topic(topic)
    with pytest.raises(TopicNotFound):
        await hub.delete_topic(topic)


async def test_a_compacted_topic(hub: AsyncClient, topic: str) -> None:
    created = await hub.create_topic(topic, compaction="key", delete_retention="2h")
    assert (created["compaction"], created["delete_retention"]) == ("key", 7200)
    changed = await hub.create_topic(topic, compaction="none")
    assert (changed["compaction"], changed["delete_retention"]) == ("none", 7200)
    with pytest.raises(BadRequest) as caught:
        await hub.create_topic(topic, compaction="latest")  # type: ignore[arg-type]
    assert caught.value.fields["field"] == "compaction"


async def test_bad_topic_name_is_a_bad_request(hub: AsyncClient) -> None:
    with pytest.raises(BadRequest) as caught:
        await hub.create_topic("-starts-with-a-dash")
    assert caught.value.fields["field"] == "topic"


# -- consumer groups ----------------------------------------------------------------------


async def test_group_lifecycle(hub: AsyncClient, topic: str) -> None:
    await hub.create_topic(topic)
    created = await hub.create_group(
        topic,
        "payments",
        start="latest",
        ack_wait=5,
        max_deliver=3,
        dead_letter_topic=f"{topic}-dead",
        ordering="key",
        types=["order.*"],
    )
    assert created["config"] == {
        "start": "latest",
        "ack_wait": 5.0,
        "max_deliver": 3,
        "dead_letter_topic": f"{topic}-dead",
        "ordering": "key",
        "types": ["order.*"],
    }
    assert (await hub.group(topic, "payments"))["lag"] == 0
    assert ("payments", topic) in [(g["name"], g["topic"]) for g in await hub.groups()]
    await hub.delete_group(topic, "payments")
    with pytest.raises(GroupNotFound) as caught:
        await hub.group(topic, "payments")
    assert caught.value.fields == {"topic": topic, "group": "payments"}


async def test_group_calls_on_unknown_topic_or_group(hub: AsyncClient, topic: str) -> None:
    with pytest.raises(TopicNotFound):
        await hub.fetch(topic, "nobody")
    await hub.create_topic(topic)
    with pytest.raises(GroupNotFound):
        await hub.fetch(topic, "nobody")
    with pytest.raises(GroupNotFound):
        await hub.ack(topic, "nobody", ["0.0.1.abcd"])


async def test_fetch_ack_and_lag(hub: AsyncClient, topic: str) -> None:
    await hub.publish_many(topic, [{"type": "order.placed", "data": i} for i in range(3)])
    await hub.create_group(topic, "ship")
    assert (await hub.group(topic, "ship"))["lag"] == 3
    deliveries = await hub.fetch(topic, "ship", max=2)
    assert [d.event.data for d in deliveries] == [0, 1]
    assert all(isinstance(d, Delivery) and d.deliveries == 1 for d in deliveries)
    assert deliveries[0].record.topic == topic
    assert await hub.ack(topic, "ship", deliveries) == 2
    assert await hub.ack(topic, "ship", []) == 0
    (last,) = await hub.fetch(topic, "ship", max=10, types=["order.placed"])
    assert await hub.ack(topic, "ship", last.lease) == 1
    info = await hub.group(topic, "ship")
    assert (info["lag"], info["pending"], info["delivered"]) == (0, 0, 3)


async def test_fetch_long_polls(hub: AsyncClient, topic: str) -> None:
    await hub.create_group(topic, "late")
    fetcher = asyncio.create_task(hub.fetch(topic, "late", wait=5))
    await asyncio.sleep(0.2)
    await hub.publish(topic, "order.placed")
    (delivery,) = await asyncio.wait_for(fetcher, 3)
    assert delivery.event.type == "order.placed"


async def test_stale_lease(hub: AsyncClient, topic: str) -> None:
    await hub.publish(topic, "order.placed")
    await hub.create_group(topic, "g")
    (delivery,) = await hub.fetch(topic, "g")
    await hub.ack(topic, "g", delivery)
    with pytest.raises(StaleLease) as caught:
        await hub.ack(topic, "g", delivery)
    assert caught.value.fields["stale"] == [delivery.lease]
    assert isinstance(caught.value, Conflict)


async def test_nack_redelivers_then_dead_letters(hub: AsyncClient, topic: str) -> None:
    await hub.publish(topic, "order.placed", {"n": 1})
    await hub.create_group(topic, "g", max_deliver=2)
    (first,) = await hub.fetch(topic, "g")
    assert await hub.nack(topic, "g", [first]) == 1
    (second,) = await hub.fetch(topic, "g")
    assert (second.deliveries, second.record.offset) == (2, first.record.offset)
    await hub.nack(topic, "g", second)
    assert await hub.fetch(topic, "g") == []
    records, _ = await hub.read(f"{topic}.dlq")
    dead = records[0].event
    assert dead.data == {"n": 1}
    assert dead.extensions["dlqgroup"] == "g" and dead.extensions["dlqdeliveries"] == 2
    info = await hub.group(topic, "g")
    assert (info["redelivered"], info["dead_lettered"]) == (1, 1)


async def test_nack_with_delay(hub: AsyncClient, topic: str) -> None:
    await hub.publish(topic, "order.placed")
    await hub.create_group(topic, "g")
    (first,) = await hub.fetch(topic, "g")
    await hub.nack(topic, "g", first, delay=0.3)
    assert await hub.fetch(topic, "g") == []
    (again,) = await hub.fetch(topic, "g", wait=3)
    assert again.deliveries == 2


async def test_seek(hub: AsyncClient, topic: str) -> None:
    await hub.publish_many(topic, [{"type": "e", "data": i} for i in range(4)])
    await hub.create_group(topic, "g")
    assert await hub.seek(topic, "g", "latest") == "0:4"
    assert await hub.fetch(topic, "g") == []
    assert await hub.seek(topic, "g", {"partition": 0, "offset": 2}) == "0:2"
    assert [d.event.data for d in await hub.fetch(topic, "g")] == [2, 3]
    assert await hub.seek(topic, "g", "earliest") == "0:0"
    assert await hub.seek(topic, "g", "0:1") == "0:1"
    assert await hub.seek(topic, "g", datetime.now(UTC) + timedelta(hours=1)) == "0:4"
    with pytest.raises(BadPosition):
        await hub.seek(topic, "g", {"offset": 1})


async def test_redrive(hub: AsyncClient, topic: str) -> None:
    await hub.publish(topic, "order.placed", data={"n": 1})
    await hub.create_group(topic, "g", max_deliver=1)
    await hub.nack(topic, "g", await hub.fetch(topic, "g"))
    assert await hub.redrive(topic, "g") == 1
    (again,) = await hub.fetch(topic, "g")
    assert again.event.data == {"n": 1} and "dlqreason" not in again.event.extensions
    assert await hub.redrive(topic, "g") == 0


# -- consume ------------------------------------------------------------------------------


async def test_consume_acks_when_the_block_succeeds(hub: AsyncClient, topic: str) -> None:
    await hub.publish_many(topic, [{"type": "order.placed", "data": i} for i in range(3)])
    await hub.create_group(topic, "payments")
    seen = []
    async with hub.consume(topic, "payments", wait=1) as messages:
        async for msg in messages:
            async with msg:
                seen.append(msg.event.data)
            assert msg.settled
            if len(seen) == 3:
                break
    assert seen == [0, 1, 2]
    info = await hub.group(topic, "payments")
    assert (info["lag"], info["pending"]) == (0, 0)


async def test_consume_nacks_and_reraises_when_the_block_fails(
    hub: AsyncClient, topic: str
) -> None:
    await hub.publish(topic, "order.placed", {"order_id": "o-1"})
    await hub.create_group(topic, "payments")
    with pytest.raises(ValueError, match="card declined"):
        async for msg in hub.consume(topic, "payments", wait=1):
            async with msg:
                raise ValueError("card declined")
    async for msg in hub.consume(topic, "payments", wait=1):
        async with msg:
            assert msg.event.data == {"order_id": "o-1"}
            assert msg.deliveries == 2  # delivered again at once, not after ack_wait
        break
    assert (await hub.group(topic, "payments"))["lag"] == 0


async def test_consume_explicit_nack_and_close_hands_back(hub: AsyncClient, topic: str) -> None:
    await hub.publish_many(topic, [{"type": "e", "data": i} for i in range(3)])
    await hub.create_group(topic, "g")
    consumer = hub.consume(topic, "g", max=3, wait=1)
    msg = await anext(consumer)
    async with msg:
        await msg.nack(delay=60)  # settled by hand: the block leaves it alone
    await consumer.aclose()  # the two fetched and not handed out go back
    assert [d.event.data for d in await hub.fetch(topic, "g")] == [1, 2]


# -- auth ---------------------------------------------------------------------------------


async def test_bearer_token_is_sent(secured_hub_url: str, topic: str) -> None:
    async with AsyncClient(secured_hub_url, token="shop-secret") as shop:
        await shop.publish(f"orders-{topic}", "order.placed")
        records, _ = await shop.read(f"orders-{topic}")
        assert len(records) == 1
        with pytest.raises(Forbidden, match="may not publish"):
            await shop.publish(topic, "order.placed")
        # Any valid token may list; a listing shows the topics it may subscribe to.
        assert f"orders-{topic}" in [t["name"] for t in await shop.topics()]
        with pytest.raises(Forbidden):
            await shop.metrics()  # names every topic and group: admin only
    async with AsyncClient(secured_hub_url, token="ops-secret") as ops:
        assert f"orders-{topic}" in [t["name"] for t in await ops.topics()]
    async with AsyncClient(secured_hub_url) as anonymous:
        with pytest.raises(Unauthorized):
            await anonymous.topics()
