"""Delivery semantics of the App framework, the same test code on every kind of hub.

Each test runs three times: under ``TestHub()`` (the core in memory, virtual time),
on ``embedded:`` (the core on a data directory) and against a real ``tidings serve``.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from handlerhubs import KINDS, hub_for, suffix
from pydantic import BaseModel
from shop import Shop

from tidings import App, Context, Envelope, Event
from tidings.testing import TestHub

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    return hub_for(request.param, request, tmp_path)


async def test_a_three_service_chain_carries_correlation_and_causation(
    target: str | None,
) -> None:
    shop = Shop(suffix())
    async with TestHub(*shop.apps(), hub=target) as hub:
        for n in (1, 2):
            await hub.publish(
                shop.orders,
                type="order.placed",
                data={"order_id": f"o-{n}", "total": 10.0 * n},
                key=f"o-{n}",
                id=f"order-{n}",
                extensions={"traceparent": TRACEPARENT} if n == 1 else None,
            )
        await hub.drain()
        orders = await hub.events(shop.orders)
        shipments = await hub.events(shop.shipments)
        notes = await hub.events(shop.notifications)

    assert [e.type for e in notes] == ["customer.notified"] * 2
    for n in (1, 2):
        placed = next(e for e in orders if e.id == f"order-{n}")
        paid = next(
            e for e in orders if e.type == "payment.succeeded" and e.data["order_id"] == f"o-{n}"
        )
        shipped = next(e for e in shipments if e.data["order_id"] == f"o-{n}")
        told = next(e for e in notes if e.data["order_id"] == f"o-{n}")
        assert paid.data == {"order_id": f"o-{n}", "amount": 10.0 * n}
        # The chain: each event caused by the one before, all of one correlation.
        assert paid.causationid == placed.id
        assert shipped.causationid == paid.id
        assert told.causationid == shipped.id
        assert {paid.correlationid, shipped.correlationid, told.correlationid} == {placed.id}
        # The key travels with the chain, so one order's events stay in order downstream.
        assert {paid.partitionkey, shipped.partitionkey, told.partitionkey} == {f"o-{n}"}
        carried = {paid.get("traceparent"), shipped.get("traceparent"), told.get("traceparent")}
        assert carried == ({TRACEPARENT} if n == 1 else {None})
    assert sorted(shop.seen) == sorted(
        (s, f"o-{n}", 1) for s in ("payments", "shipping", "notify") for n in (1, 2)
    )


class Reading(BaseModel):
    sensor: str
    celsius: float


async def test_payloads_are_typed_by_the_annotation(target: str | None) -> None:
    s = suffix()
    topic = f"readings-{s}"
    app = App(f"typed-{s}", hub="http://127.0.0.1:1", poll_wait=0.5)
    got: dict[str, list[Any]] = {"model": [], "dict": [], "event": [], "list": []}

    @app.on(topic, types="reading.taken", retries=3)
    async def as_model(reading: Reading) -> None:
        got["model"].append(reading)

    @app.on(topic, types="reading.taken", group=f"raw-{s}")
    async def as_dict(data: dict[str, Any]) -> None:
        got["dict"].append(data)

    @app.on(topic, types="reading.taken", group=f"event-{s}")
    async def as_event(event: Event) -> None:
        got["event"].append(event)

    @app.on(topic, types="reading.batch", group=f"list-{s}")
    async def as_list(values: list[int]) -> None:
        got["list"].append(values)

    async with TestHub(app, hub=target) as hub:
        await hub.publish(topic, type="reading.taken", data={"sensor": "s1", "celsius": "21.5"})
        await hub.publish(topic, type="reading.taken", data={"sensor": "s2"}, id="bad-reading")
        await hub.publish(topic, type="reading.batch", data=[1, "2", 3])
        await hub.drain()
        dead = await hub.events(f"{topic}.dlq")

    assert got["model"] == [Reading(sensor="s1", celsius=21.5)]
    assert got["dict"] == [{"sensor": "s1", "celsius": "21.5"}, {"sensor": "s2"}]
    assert [e.data for e in got["event"]] == [{"sensor": "s1", "celsius": "21.5"}, {"sensor": "s2"}]
    assert all(isinstance(e, Event) and e.type == "reading.taken" for e in got["event"])
    assert got["list"] == [[1, 2, 3]]
    # Data that does not validate: dead-lettered at once, not retried, handler not run.
    [bad] = dead
    assert bad.id == "bad-reading"
    assert bad.get("dlqdeliveries") == 1
    assert bad.get("dlqgroup") == f"typed-{s}"
    # when it was dead-lettered, by the hub's clock (a test clock here)
    assert datetime.fromisoformat(bad.get("dlqtime")).tzinfo == UTC
    assert "celsius" in bad.get("dlqreason") and "Reading" in bad.get("dlqreason")


class Parcel(BaseModel):
    parcel: str
    grams: int


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_bad_data_is_dead_lettered_but_a_handler_raising_a_validation_error_is_retried(
    target: str | None, concurrency: int
) -> None:
    # The loops call the model's validator themselves: an error of that call is the
    # data's (dead-lettered at once), one the handler raises is the handler's (retried).
    s = suffix()
    topic = f"parcels-{s}"
    app = App(f"scales-{s}", hub="http://127.0.0.1:1", poll_wait=0.5)
    seen: list[tuple[str, int]] = []

    @app.on(topic, retries=2, backoff=0.05, concurrency=concurrency)
    async def weigh(parcel: Parcel, ctx: Context) -> None:
        seen.append((parcel.parcel, ctx.deliveries))
        if parcel.parcel == "p-2" and ctx.deliveries == 1:
            Parcel.model_validate({"parcel": "inner"})  # raises: grams is missing

    async with TestHub(app, hub=target) as hub:
        await hub.publish(topic, type="parcel.weighed", data={"parcel": "p-1", "grams": "7"})
        await hub.publish(topic, type="parcel.weighed", data={"parcel": "p-2", "grams": 9})
        await hub.publish(topic, type="parcel.weighed", data={"parcel": "p-3"}, id="no-grams")
        await hub.drain()
        dead = await hub.events(f"{topic}.dlq")

    assert sorted(seen) == [("p-1", 1), ("p-2", 1), ("p-2", 2)]
    [bad] = dead
    assert bad.id == "no-grams" and bad.get("dlqdeliveries") == 1
    assert "grams" in bad.get("dlqreason") and "Parcel" in bad.get("dlqreason")


async def test_a_failing_handler_is_retried_then_dead_lettered(target: str | None) -> None:
    s = suffix()
    topic = f"jobs-{s}"
    app = App(f"worker-{s}", hub="http://127.0.0.1:1", poll_wait=0.5)
    attempts: dict[str, list[int]] = {}

    @app.on(topic, retries=2, backoff=[0.05, 0.1])
    async def work(data: dict[str, Any], ctx: Context) -> None:
        attempts.setdefault(data["job"], []).append(ctx.deliveries)
        if data["job"] == "flaky" and ctx.deliveries < 3:
            raise ConnectionError("upstream not ready")
        if data["job"] == "broken":
            raise ValueError(f"cannot do job {data['job']}")

    async with TestHub(app, hub=target) as hub:
        for job in ("ok", "flaky", "broken"):
            await hub.publish(topic, type="job.queued", data={"job": job}, id=f"job-{job}")
        await hub.drain()
        dead = await hub.events(f"{topic}.dlq")
        lag, pending = await hub.group_state(topic, app.name)

    assert attempts == {"ok": [1], "flaky": [1, 2, 3], "broken": [1, 2, 3]}
    [d] = dead
    assert d.id == "job-broken" and d.data == {"job": "broken"}
    assert d.get("dlqtopic") == topic and d.get("dlqoffset") == 2
    assert d.get("dlqdeliveries") == 3
    assert "ValueError: cannot do job broken" in d.get("dlqreason")
    trace = d.get("dlqtraceback")
    assert "in work" in trace and trace.endswith("ValueError: cannot do job broken")
    assert (lag, pending) == (0, 0)


async def test_key_order_holds_under_concurrency(target: str | None) -> None:
    s = suffix()
    topic = f"accounts-{s}"
    app = App(f"ledger-{s}", hub="http://127.0.0.1:1", poll_wait=0.5)
    applied: dict[str, list[int]] = {}
    running = 0
    most = 0
    rng = random.Random(7)

    @app.on(topic, concurrency=4, ordering="key")
    async def apply(data: dict[str, Any], ctx: Context) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(rng.random() / 500)  # handlers finish out of order
        applied.setdefault(ctx.key or "", []).append(data["seq"])
        running -= 1

    async with TestHub(app, hub=target) as hub:
        for seq in range(8):
            for account in ("a", "b", "c", "d", "e"):
                await hub.publish(topic, type="entry.posted", data={"seq": seq}, key=account)
        await hub.drain()

    assert applied == {k: list(range(8)) for k in "abcde"}
    assert most > 1  # several events at once, never two of one key


async def test_middleware_wraps_consume_and_publish_alike(target: str | None) -> None:
    s = suffix()
    topic = f"mw-{s}"
    seen: list[tuple[str, str, str]] = []

    async def record(envelope: Envelope, call_next: Any) -> Any:
        seen.append((envelope.kind, envelope.topic, envelope.event["type"]))
        if envelope.kind == "publish":
            envelope.event["stamped"] = "yes"
        return await call_next(envelope)

    app = App(f"mw-{s}", hub="http://127.0.0.1:1", poll_wait=0.5, middleware=[record])

    @app.on(topic, types="ping")
    async def pong(data: Any, ctx: Context) -> dict[str, Any]:
        await ctx.publish(type="audit", data={"of": ctx.id})
        return {"type": "pong"}

    async with TestHub(app, hub=target) as hub:
        await hub.publish(topic, type="ping", id="p1")
        await hub.drain()
        events = await hub.events(topic)

    assert seen == [
        ("consume", topic, "ping"),
        ("publish", topic, "audit"),
        ("publish", topic, "pong"),
    ]
    by_type = {e.type: e for e in events}
    assert by_type["audit"].get("stamped") == "yes" and by_type["pong"].get("stamped") == "yes"
    assert by_type["audit"].causationid == "p1" and by_type["audit"].data == {"of": "p1"}
    assert by_type["audit"].id != by_type["pong"].id


async def test_a_redelivered_event_already_handled_is_acked_without_the_handler(
    target: str | None,
) -> None:
    s = suffix()
    topic = f"mail-{s}"
    app = App(f"mailer-{s}", hub="http://127.0.0.1:1", poll_wait=0.5)
    sent: list[str] = []

    @app.on(topic)
    async def send(data: dict[str, Any]) -> None:
        sent.append(data["to"])

    async with TestHub(app, hub=target) as hub:
        for to in ("ann", "bob"):
            await hub.publish(topic, type="mail.requested", data={"to": to})
        await hub.drain()
        await hub.seek(topic, app.name, "earliest")  # as if the acks had been lost
        await hub.drain()
        assert await hub.group_state(topic, app.name) == (0, 0)
    assert sent == ["ann", "bob"]


async def test_a_slow_event_holds_up_its_own_worker_only(target: str | None) -> None:
    s = suffix()
    topic = f"reports-{s}"
    app = App(f"reports-{s}", hub="http://127.0.0.1:1", poll_wait=0.5)
    late_done = asyncio.Event()
    slow_started = asyncio.Event()
    order: list[str] = []

    @app.on(topic, concurrency=2)
    async def build(data: dict[str, Any], ctx: Context) -> None:
        if ctx.id == "slow":
            slow_started.set()
            # Finishes only once an event published after it started was handled:
            # the fetch and the other worker go on meanwhile.
            await asyncio.wait_for(late_done.wait(), 20)
        order.append(ctx.id)
        if ctx.id == "late":
            late_done.set()

    async with TestHub(app, hub=target) as hub:
        await hub.publish(topic, type="report.requested", id="slow")
        await asyncio.wait_for(slow_started.wait(), 20)
        await hub.publish(topic, type="report.requested", id="late")
        await hub.drain()
        assert await hub.group_state(topic, app.name) == (0, 0)
    assert order == ["late", "slow"]


async def test_stopping_lets_running_handlers_finish_and_acks_them(target: str | None) -> None:
    s = suffix()
    topic = f"exports-{s}"
    app = App(f"exports-{s}", hub="http://127.0.0.1:1", poll_wait=0.5)
    started = 0
    all_started = asyncio.Event()
    finished: list[str] = []

    @app.on(topic, concurrency=3)
    async def export(data: dict[str, Any], ctx: Context) -> None:
        nonlocal started
        started += 1
        if started == 3:
            all_started.set()
        await asyncio.sleep(0.3)
        finished.append(ctx.id)

    async with TestHub(app, hub=target) as hub:
        for n in range(3):
            await hub.publish(topic, type="export.requested", id=f"x{n}")
        await asyncio.wait_for(all_started.wait(), 20)
        await app.stop()  # mid-handler: they finish, then their acks go out
        assert sorted(finished) == ["x0", "x1", "x2"]
        assert await hub.group_state(topic, app.name) == (0, 0)


async def test_handlers_past_the_stop_deadline_are_cut_and_their_events_handed_back(
    target: str | None,
) -> None:
    s = suffix()
    topic = f"renders-{s}"
    app = App(f"renders-{s}", hub="http://127.0.0.1:1", poll_wait=0.5)
    running = asyncio.Event()

    @app.on(topic, concurrency=2)
    async def render(data: dict[str, Any]) -> None:
        running.set()
        await asyncio.sleep(60)

    async with TestHub(app, hub=target) as hub:
        await hub.publish(topic, type="render.requested")
        await asyncio.wait_for(running.wait(), 20)
        await app.stop(timeout=0.2)
        assert await hub.group_state(topic, app.name) == (1, 0)  # due again, not leased


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_an_event_a_handler_returns_that_cannot_be_stored_fails_that_handler_alone(
    target: str | None, concurrency: int
) -> None:
    # What handlers return goes out gathered (one request per topic); a bad event
    # among them fails its own handler only, and the others' are stored once.
    s = suffix()
    topic, out = f"jobs-{s}", f"done-{s}"
    app = App(f"worker-{s}", hub="http://127.0.0.1:1", poll_wait=0.5)
    calls: dict[str, int] = {}

    @app.on(topic, retries=1, backoff=0.05, concurrency=concurrency)
    async def work(data: dict[str, Any]) -> dict[str, Any]:
        job = data["job"]
        calls[job] = calls.get(job, 0) + 1
        if job == "bad":
            return {"type": "job.done", "topic": out, "specversion": "2.0", "data": data}
        return {"type": "job.done", "topic": out, "data": data}

    async with TestHub(app, hub=target) as hub:
        for job in ("a", "bad", "c", "d"):
            await hub.publish(topic, type="job.queued", data={"job": job}, id=f"job-{job}")
        await hub.drain()
        done = await hub.events(out)
        dead = await hub.events(f"{topic}.dlq")
        lag, pending = await hub.group_state(topic, app.name)

    assert sorted(e.data["job"] for e in done) == ["a", "c", "d"]
    assert calls == {"a": 1, "bad": 2, "c": 1, "d": 1}
    [bad] = dead
    assert bad.id == "job-bad" and "specversion" in bad.get("dlqreason")
    assert (lag, pending) == (0, 0)
