"""TestHub in virtual time: backoff, ack_wait, idempotency windows and dead letters
happen at once and the same way every run, on the hub's real core."""

from __future__ import annotations

import asyncio
from typing import Any

from tidings import App, Backoff, Context
from tidings.testing import TestHub

HOUR = 3600.0


async def run_flaky() -> tuple[list[tuple[int, int]], float, list[Any]]:
    app = App("flaky")
    attempts: list[tuple[int, int]] = []
    hub_box: list[TestHub] = []

    @app.on("jobs", retries=3, backoff=Backoff(initial=HOUR, factor=2, max=3 * HOUR))
    async def work(data: Any, ctx: Context) -> None:
        attempts.append((ctx.deliveries, hub_box[0].time_ms()))
        raise RuntimeError("still down")

    async with TestHub(app) as hub:
        hub_box.append(hub)
        start = hub.time_ms()
        await hub.publish("jobs", type="job.queued", data={"n": 1})
        await hub.drain()
        waited = (hub.time_ms() - start) / 1000
        dead = await hub.events("jobs.dlq")
    return [(d, t - start) for d, t in attempts], waited, dead


async def test_hours_of_backoff_pass_at_once_and_the_same_way_every_run() -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    first = await run_flaky()
    second = await run_flaky()
    assert loop.time() - began < 30  # a bound on a hang, not a speed goal

    attempts, waited, dead = first
    # Deliveries 1..4, each after its backoff: 1 h, 2 h, then capped at 3 h.
    assert attempts == [(1, 0), (2, 3_600_000), (3, 10_800_000), (4, 21_600_000)]
    assert waited == 6 * HOUR
    assert [d.get("dlqdeliveries") for d in dead] == [4]
    assert first[:2] == second[:2]


async def test_an_expired_lease_goes_to_another_worker_when_time_is_advanced() -> None:
    stuck = asyncio.Event()
    handled: list[tuple[str, int]] = []

    def worker(name: str) -> App:
        app = App(name, shutdown_timeout=0.1)

        @app.on("orders", group="fulfil", ack_wait=30)
        async def fulfil(data: Any, ctx: Context) -> None:
            if ctx.deliveries == 1:
                stuck.set()
                await asyncio.Event().wait()  # hangs: its lease must run out
            handled.append((name, ctx.deliveries))

        return app

    async with TestHub(worker("w1"), worker("w2")) as hub:
        await hub.publish("orders", type="order.placed", data={})
        await asyncio.wait_for(stuck.wait(), 10)
        await hub.advance(10)
        await asyncio.sleep(0.05)
        assert handled == []  # still within ack_wait
        await hub.advance(25)
        for _ in range(200):
            if handled:
                break
            await asyncio.sleep(0.01)
        assert len(handled) == 1 and handled[0][1] == 2


async def test_ids_are_remembered_for_the_window_and_then_forgotten() -> None:
    app = App("mailer", idempotency_window=600)
    sent: list[str] = []

    @app.on("mail")
    async def send(data: dict[str, str]) -> None:
        sent.append(data["to"])

    async with TestHub(app) as hub:
        await hub.publish("mail", type="mail.requested", data={"to": "ann"})
        await hub.drain()
        await hub.advance(599)
        await hub.seek("mail", "mailer")
        await hub.drain()
        assert sent == ["ann"]  # redelivered within the window: acked, not sent again
        await hub.advance(2)
        await hub.seek("mail", "mailer")
        await hub.drain()
        assert sent == ["ann", "ann"]  # past the window the id is forgotten


async def test_drain_with_no_apps_returns() -> None:
    async with TestHub() as hub:
        await hub.publish("t", type="x")
        await hub.drain(timeout=5)
        assert [e.type for e in await hub.events("t")] == ["x"]
