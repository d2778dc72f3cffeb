"""The outbox: what handlers hand in during one turn of the loop goes as one request
per topic, one request at a time, in order; a failed request fails only the handlers
whose own events cannot be stored."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from tidings.app.outbox import MAX_EVENTS_PER_REQUEST, Outbox
from tidings.errors import InvalidEvent, StorageUnavailable


class Recorder:
    def __init__(self, fail: Any = None) -> None:
        self.requests: list[tuple[str, list[dict[str, Any]]]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail = fail  # (topic, events) -> an exception to raise, or None

    async def publish(self, topic: str, events: Sequence[dict[str, Any]]) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            error = self.fail(topic, list(events)) if self.fail else None
            if error is not None:
                raise error
            self.requests.append((topic, list(events)))
        finally:
            self.in_flight -= 1


def ev(n: int) -> dict[str, Any]:
    return {"type": "t", "id": f"e{n}"}


async def test_what_is_handed_in_during_one_turn_goes_as_one_request_per_topic() -> None:
    rec = Recorder()
    box = Outbox(rec.publish)
    futs = [box.submit("a", [ev(1)]), box.submit("b", [ev(2)]), box.submit("a", [ev(3), ev(4)])]
    await asyncio.gather(*futs)
    assert rec.requests == [("a", [ev(1), ev(3), ev(4)]), ("b", [ev(2)])]


async def test_one_request_is_out_at_a_time_and_order_holds() -> None:
    rec = Recorder()
    box = Outbox(rec.publish)

    async def handler(n: int) -> None:
        for k in range(5):
            await box.submit("a", [ev(n * 100 + k)])

    await asyncio.gather(*(handler(n) for n in range(8)))
    assert rec.most_in_flight == 1
    sent = [e["id"] for _, evs in rec.requests for e in evs]
    assert sorted(sent) == sorted(f"e{n * 100 + k}" for n in range(8) for k in range(5))
    for n in range(8):  # each handler's events in the order it handed them in
        mine = [i for i in sent if i.startswith("e") and int(i[1:]) // 100 == n]
        assert mine == [f"e{n * 100 + k}" for k in range(5)]
    assert len(rec.requests) < 40  # gathered, not one request per event


async def test_a_large_turn_is_cut_between_handlers_never_inside_one() -> None:
    rec = Recorder()
    box = Outbox(rec.publish)
    size = MAX_EVENTS_PER_REQUEST // 3 + 1
    futs = [box.submit("a", [ev(n * 10_000 + k) for k in range(size)]) for n in range(4)]
    await asyncio.gather(*futs)
    assert [len(evs) for _, evs in rec.requests] == [2 * size, 2 * size]
    assert all(len(evs) <= MAX_EVENTS_PER_REQUEST for _, evs in rec.requests)


async def test_a_bad_event_fails_its_own_handler_and_the_others_are_stored() -> None:
    def fail(topic: str, events: list[dict[str, Any]]) -> Exception | None:
        if any(e.get("bad") for e in events):
            return InvalidEvent("attribute 'bad' is not allowed", attribute="bad")
        return None

    rec = Recorder(fail)
    box = Outbox(rec.publish)
    good1 = box.submit("a", [ev(1)])
    bad = box.submit("a", [{**ev(2), "bad": True}])
    good2 = box.submit("a", [ev(3)])
    await good1
    await good2
    with pytest.raises(InvalidEvent):
        await bad
    assert rec.requests == [("a", [ev(1)]), ("a", [ev(3)])]


async def test_when_the_hub_is_down_every_waiting_handler_gets_the_error() -> None:
    tries: list[int] = []

    def down(topic: str, events: list[dict[str, Any]]) -> Exception:
        tries.append(len(events))
        return StorageUnavailable("down")

    rec = Recorder(down)
    box = Outbox(rec.publish)
    futs = [box.submit("a", [ev(n)]) for n in range(3)]
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert all(isinstance(r, StorageUnavailable) for r in results)
    assert tries == [3]  # one request that failed, not one more a handler
    # The outbox goes on once the hub is back.
    rec.fail = None
    await box.submit("a", [ev(9)])
    assert rec.requests == [("a", [ev(9)])]


async def test_a_handler_cancelled_while_it_waits_leaves_the_others_be() -> None:
    rec = Recorder()
    box = Outbox(rec.publish)
    first = box.submit("a", [ev(1)])
    waiter = asyncio.ensure_future(first)
    second = box.submit("a", [ev(2)])
    waiter.cancel()
    await second
    assert [e["id"] for _, evs in rec.requests for e in evs] == ["e1", "e2"]
