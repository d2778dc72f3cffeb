"""Producer-side batching: concurrent publishes share batch requests, each caller its answer."""

from __future__ import annotations

import asyncio

import pytest

from tidings import BadRequest, InvalidEvent
from tidings.client import AsyncClient, PublishBatcher


async def test_concurrent_publishes_are_coalesced(hub_url: str, topic: str) -> None:
    async with AsyncClient(hub_url, batch_linger_ms=5) as hub:
        answers = await asyncio.gather(
            *(hub.publish(topic, "cart.item.added", {"n": i}) for i in range(200))
        )
        assert hub.batcher is not None
        assert hub.batcher.requests_sent <= 5, hub.batcher.requests_sent
        assert hub.batcher.events_sent == 200
        records, _ = await hub.read(topic, limit=1000)
    # Each caller got the position of its own event.
    assert sorted(a["offset"] for a in answers) == list(range(200))
    by_offset = {r.offset: r.event for r in records}
    for i, a in enumerate(answers):
        assert by_offset[a["offset"]].data == {"n": i}
        assert by_offset[a["offset"]].id == a["id"]


async def test_batch_max_splits_batches(hub_url: str, topic: str) -> None:
    async with AsyncClient(hub_url, batch_linger_ms=50, batch_max=50) as hub:
        await asyncio.gather(*(hub.publish(topic, "e", i) for i in range(200)))
        assert hub.batcher is not None and hub.batcher.requests_sent == 4
        assert (await hub.topic(topic))["events"] == 200


async def test_batches_are_per_topic(hub_url: str, topic: str) -> None:
    async with AsyncClient(hub_url, batch_linger_ms=5) as hub:
        answers = await asyncio.gather(
            *(hub.publish(f"{topic}-{i % 2}", "e", i) for i in range(10))
        )
        assert hub.batcher is not None and hub.batcher.requests_sent == 2
    assert [a["offset"] for a in answers] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


async def test_a_bad_event_fails_only_its_caller(hub_url: str, topic: str) -> None:
    async with AsyncClient(hub_url, batch_linger_ms=20) as hub:
        results = await asyncio.gather(
            hub.publish(topic, "ok", 1),
            hub.publish(topic, event={"type": "bad", "time": "noon"}),
            hub.publish(topic, "ok", 2),
            return_exceptions=True,
        )
        ok1, bad, ok2 = results
        assert isinstance(bad, InvalidEvent)
        # As a single publish would have said it: no batch index.
        assert bad.attribute == "time" and "index" not in bad.fields
        assert not bad.detail.startswith("event ")
        assert isinstance(ok1, dict) and isinstance(ok2, dict)
        assert (ok1["offset"], ok2["offset"]) == (0, 1)
        assert hub.batcher is not None and hub.batcher.requests_sent == 2


async def test_an_error_for_the_whole_batch_reaches_every_caller(hub_url: str) -> None:
    async with AsyncClient(hub_url, batch_linger_ms=5) as hub:
        results = await asyncio.gather(
            *(hub.publish("-not-a-name", "e", i) for i in range(3)), return_exceptions=True
        )
    assert all(isinstance(r, BadRequest) for r in results), results


async def test_close_sends_what_is_waiting(hub_url: str, topic: str) -> None:
    hub = AsyncClient(hub_url, batch_linger_ms=10_000)
    waiting = [asyncio.create_task(hub.publish(topic, "e", i)) for i in range(3)]
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in waiting)
    await hub.close()
    assert [t.result()["offset"] for t in waiting] == [0, 1, 2]


async def test_batcher_with_a_recording_sender() -> None:
    """The seam: a sender that records bodies and answers offsets, no hub needed."""
    bodies: list[bytes] = []

    async def send(topic: str, body: bytes) -> list[dict[str, object]]:
        bodies.append(body)
        n = body.count(b"},{") + 1
        return [{"id": str(i), "partition": 0, "offset": i} for i in range(n)]

    batcher = PublishBatcher(send, linger_ms=1, max_events=2)
    answers = await asyncio.gather(*(batcher.publish("t", b'{"type":"e"}') for _ in range(3)))
    assert [a["offset"] for a in answers] == [0, 1, 0]
    assert bodies == [b'[{"type":"e"},{"type":"e"}]', b'[{"type":"e"}]']
    with pytest.raises(ValueError):
        PublishBatcher(send, linger_ms=0)
