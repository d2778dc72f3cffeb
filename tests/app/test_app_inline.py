"""A handler with ``concurrency=1``: one batch handled at a time, in order.

Over HTTP the next batch is fetched while one is handled, and a batch's acks go
out with that fetch; these tests hold that the semantics stay those of one
batch at a time, on every kind of hub: order, acks only after the handler,
retries, and a stop that hands back what was leased and not started.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from handlerhubs import KINDS, hub_for, suffix
from pydantic import BaseModel

from tidings import App, Context
from tidings.testing import TestHub


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    return hub_for(request.param, request, tmp_path)


class Step(BaseModel):
    n: int


async def test_events_are_handled_once_each_in_order_across_batches(target: str | None) -> None:
    s = suffix()
    topic = f"steps-{s}"
    app = App(f"steps-{s}", hub="http://127.0.0.1:1", fetch_max=7, poll_wait=0.5)
    seen: list[tuple[int, str, int]] = []

    @app.on(topic)
    async def step(event: Step, ctx: Context) -> None:
        seen.append((event.n, ctx.id, ctx.deliveries))

    async with TestHub(app, hub=target) as hub:
        for n in range(50):
            await hub.publish(topic, type="step.done", data={"n": n}, id=f"s{n}")
        await hub.drain()
        assert await hub.group_state(topic, app.name) == (0, 0)
    assert seen == [(n, f"s{n}", 1) for n in range(50)]


async def test_a_failure_in_one_batch_is_retried_and_the_others_are_acked_once(
    target: str | None,
) -> None:
    s = suffix()
    topic = f"flaky-{s}"
    app = App(f"flaky-{s}", hub="http://127.0.0.1:1", fetch_max=5, poll_wait=0.5)
    runs: dict[int, int] = {}

    @app.on(topic, retries=3, backoff=0.05)
    async def flaky(event: Step, ctx: Context) -> None:
        runs[event.n] = runs.get(event.n, 0) + 1
        if event.n == 7 and ctx.deliveries < 3:
            raise RuntimeError("not yet")

    async with TestHub(app, hub=target) as hub:
        for n in range(20):
            await hub.publish(topic, type="step.done", data={"n": n}, id=f"f{n}")
        await hub.drain()
        assert await hub.group_state(topic, app.name) == (0, 0)
    assert runs == {n: (3 if n == 7 else 1) for n in range(20)}


async def test_a_stop_mid_batch_finishes_the_batch_and_hands_back_the_rest(
    target: str | None,
) -> None:
    s = suffix()
    topic = f"slowjobs-{s}"
    app = App(f"slowjobs-{s}", hub="http://127.0.0.1:1", fetch_max=2, poll_wait=0.5)
    handled: list[int] = []
    started = asyncio.Event()

    @app.on(topic)
    async def job(event: Step) -> None:
        started.set()
        await asyncio.sleep(0.3)
        handled.append(event.n)

    async with TestHub(app, hub=target) as hub:
        for n in range(6):
            await hub.publish(topic, type="job.queued", data={"n": n}, id=f"j{n}")
        await asyncio.wait_for(started.wait(), 20)
        await app.stop()  # the batch being handled finishes and is acked; no new batch
        # Whatever was fetched and not started (over HTTP, the next batch) went back:
        # nothing stays leased, and only the handled events are acknowledged.
        assert 1 <= len(handled) <= 2 and handled == list(range(len(handled)))
        assert await hub.group_state(topic, app.name) == (6 - len(handled), 0)


async def test_a_handler_cut_at_the_stop_deadline_is_handed_back_with_the_next_batch(
    target: str | None,
) -> None:
    s = suffix()
    topic = f"stuck-{s}"
    app = App(f"stuck-{s}", hub="http://127.0.0.1:1", fetch_max=1, poll_wait=0.5)
    running = asyncio.Event()

    @app.on(topic)
    async def stuck(data: dict[str, Any]) -> None:
        running.set()
        await asyncio.sleep(60)

    async with TestHub(app, hub=target) as hub:
        for n in range(3):
            await hub.publish(topic, type="job.queued", data={"n": n})
        await asyncio.wait_for(running.wait(), 20)
        await app.stop(timeout=0.2)
        assert await hub.group_state(topic, app.name) == (3, 0)  # all due again, none leased
