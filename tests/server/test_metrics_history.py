"""GET /v1/metrics/history and the group counters, across restarts of a real hub.

The sampler is first driven by hand over a hub in memory with a fake clock (the
``Clock`` seam); then real ``tidings serve`` processes sample every 0.2 s
(``--history-interval``), are killed with SIGKILL and started again on the same
data directory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from hubapi import (
    expect,
    expect_problem,
    fetch,
    get_group,
    get_topic,
    group_post,
    poll_until,
    publish,
    put_group,
)
from hubproc import HubFactory, HubProcess

from tidings.core.groups import GroupConfig
from tidings.core.history import MetricsHistory
from tidings.core.hub import Hub, HubOptions
from tidings.events.envelope import normalize_event
from tidings.log.memory import MemoryStorage
from tidings.server.history import HistorySampler

INTERVAL = ("--history-interval", "0.2")
T0 = 1_800_000_000_000


@pytest.fixture(scope="module")
def shared_hub(module_hub_factory: HubFactory) -> HubProcess:
    return module_hub_factory.start(*INTERVAL)


class FakeClock:
    def __init__(self) -> None:
        self.now_ms = T0

    def time_ms(self) -> int:
        return self.now_ms


def series(answer: dict[str, Any], name: str, **labels: str) -> list[float | None]:
    found = [s for s in answer["series"] if s["name"] == name and s["labels"] == labels]
    assert len(found) == 1, (name, labels, [(s["name"], s["labels"]) for s in answer["series"]])
    # NaN in process where a series has no value; null on the wire.
    return [None if v is None or v != v else v for v in found[0]["values"]]


async def test_the_sampler_reads_the_hub_at_the_times_its_clock_gives() -> None:
    clock = FakeClock()
    hub = Hub(MemoryStorage(clock), HubOptions(), clock)  # not started: no background task
    history = MetricsHistory(10_000, 100)
    sampler = HistorySampler(hub, history, connections=lambda: {"websocket": 2, "sse": 1})

    def events(n: int) -> list[dict[str, Any]]:
        return [normalize_event({"type": "order.placed"}, topic="orders") for _ in range(n)]

    await hub.put_group("orders", "payments", GroupConfig())
    sampler.sample()
    await hub.publish("orders", events(30))
    clock.now_ms += 10_000
    sampler.sample()
    got = await hub.fetch("orders", "payments", max_records=10)
    await hub.ack("orders", "payments", [d.lease for d in got])
    clock.now_ms += 10_000
    sampler.sample()

    answer = history.query()
    assert answer["times"] == [T0, T0 + 10_000, T0 + 20_000]
    assert series(answer, "events_in", topic="orders") == [None, 3.0, 0.0]
    assert series(answer, "events_out", topic="orders") == [None, 0.0, 1.0]
    assert series(answer, "group_lag", topic="orders", group="payments") == [0, 30, 20]
    assert series(answer, "connections", channel="websocket") == [2, 2, 2]
    assert all(v is not None and v > 0 for v in series(answer, "memory"))
    # A topic with no group and nothing published still has its line: 0, not a gap.
    await hub.create_topic("quiet")
    clock.now_ms += 10_000
    sampler.sample()
    assert series(history.query(), "events_in", topic="quiet")[-1] == 0.0


async def test_events_published_before_the_first_point_show_in_its_rates() -> None:
    # A hub starting reads its counters at once (begin) and makes its first point
    # later, once the stored points are back: what came in between is a rate.
    clock = FakeClock()
    hub = Hub(MemoryStorage(clock), HubOptions(), clock)
    history = MetricsHistory(10_000, 100)
    sampler = HistorySampler(hub, history)
    history.begin(clock.time_ms(), sampler.reading())
    placed = [normalize_event({"type": "order.placed"}, topic="orders") for _ in range(20)]
    await hub.publish("orders", placed)
    clock.now_ms += 10_000
    sampler.sample()
    assert series(history.query(), "events_in", topic="orders") == [2.0]


async def history(
    http: aiohttp.ClientSession, base: str, **params: str
) -> dict[str, Any]:
    async with http.get(f"{base}/v1/metrics/history", params=params) as resp:
        return await expect(resp, 200)  # type: ignore[no-any-return]


def event(n: int) -> dict[str, Any]:
    return {"id": f"o-{n}", "type": "order.placed", "source": "/shop", "data": {"n": n}}


async def test_history_and_group_counters_survive_a_kill(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    hub = hub_factory.start(*INTERVAL)
    base = hub.base_url
    await put_group(http, base, "orders", "payments", max_deliver=1)
    for n in range(10):
        await publish(http, base, "orders", event(n))
    got = await fetch(http, base, "orders", "payments", max=10)
    assert len(got) == 10
    await group_post(http, base, "orders", "payments", "ack",
                     {"leases": [r["lease"] for r in got[:5]]})  # fmt: skip
    await group_post(http, base, "orders", "payments", "nack",
                     {"leases": [r["lease"] for r in got[5:]]})  # fmt: skip
    before = await get_group(http, base, "orders", "payments")
    counted = {k: before[k] for k in ("delivered", "redelivered", "acked", "dead_lettered")}
    assert counted == {"delivered": 10, "redelivered": 0, "acked": 5, "dead_lettered": 5}

    async def published_is_charted() -> dict[str, Any] | None:
        answer = await history(http, base, series="events_in,group_lag", topic="orders")
        rates = [s for s in answer["series"] if s["name"] == "events_in"]
        return answer if rates and any(v for v in rates[0]["values"]) else None

    charted = await poll_until(published_is_charted, timeout=10, what="a rate of orders")
    killed_at = time.time() * 1000
    hub.restart(hard=True)  # SIGKILL: no shutdown code runs

    after = await get_group(http, base, "orders", "payments")
    assert {k: after[k] for k in counted} == counted
    assert (await get_topic(http, base, "orders.dlq"))["events"] == 5
    answer = await history(http, base, series="events_in,group_lag", topic="orders")
    # Every point the killed hub had shown is still there, with its values.
    kept = dict(zip(answer["times"], series(answer, "events_in", topic="orders"), strict=True))
    for t, v in zip(charted["times"], series(charted, "events_in", topic="orders"), strict=True):
        assert kept[t] == v
    assert max(answer["times"]) <= time.time() * 1000 + 200
    assert min(answer["times"]) < killed_at
    # ... and the new process goes on adding points.
    await poll_until(
        lambda: _has_point_after(http, base, killed_at + 1_000), timeout=10, what="new points"
    )
    # The counters go on from where they were.
    await publish(http, base, "orders", event(10))
    (late,) = await fetch(http, base, "orders", "payments", max=10)
    await group_post(http, base, "orders", "payments", "ack", {"leases": [late["lease"]]})
    again = await get_group(http, base, "orders", "payments")
    assert (again["delivered"], again["acked"]) == (11, 6)


async def _has_point_after(http: aiohttp.ClientSession, base: str, t: float) -> bool:
    answer = await history(http, base, series="memory")
    return bool(answer["times"]) and answer["times"][-1] > t


async def test_since_picks_the_recent_points(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    hub = hub_factory.start(*INTERVAL)
    later = time.time() * 1000 + 1_000
    await poll_until(
        lambda: _has_point_after(http, hub.base_url, later), timeout=10, what="points"
    )
    every = await history(http, hub.base_url, series="memory")
    recent = await history(http, hub.base_url, series="memory", since="1s")
    assert 0 < len(recent["times"]) < len(every["times"])
    cut = recent["times"][0]
    by_time = await history(http, hub.base_url, series="memory", since=str(cut))
    assert by_time["times"][0] == cut
    assert {s["name"] for s in every["series"]} == {"memory"}
    assert every["interval"] == 0.2


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("series=nope", "series", "'nope' is not one the hub keeps"),
        ("series=events_in,", "series", "'' is not one"),
        ("series=events_in,%20group_lag", "series", "' group_lag'"),
        ("since=yesterday", "since", "not an RFC 3339 time"),
        ("since=2026-02-30T00:00:00Z", "since", "not an RFC 3339 time"),
        ("since=-5m", "since", "duration back from now"),
        ("series=memory&series=cpu", "series", "more than once"),
        ("step=10", "step", "unknown field 'step'"),
    ],
)
async def test_bad_queries_are_refused_naming_what_is_wrong(
    shared_hub: HubProcess, http: aiohttp.ClientSession, query: str, field: str, words: str
) -> None:
    hub = shared_hub
    async with http.get(f"{hub.base_url}/v1/metrics/history?{query}") as resp:
        problem = await expect_problem(resp, 400)
    assert problem["field"] == field
    assert words in problem["detail"]


async def test_the_history_needs_an_admin_token(
    hub_factory: HubFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    auth = tmp_path / "auth.json"
    auth.write_bytes(
        orjson.dumps({"tokens": [
            {"name": "ops", "token": "adm1n", "admin": True},
            {"name": "reader", "token": "r3ader", "subscribe": ["orders"]},
        ]})
    )  # fmt: skip
    hub = hub_factory.start("--auth-file", str(auth), *INTERVAL)
    url = f"{hub.base_url}/v1/metrics/history"
    async with http.get(url) as resp:
        await expect_problem(resp, 401)
    async with http.get(url, headers={"authorization": "Bearer r3ader"}) as resp:
        await expect_problem(resp, 403)
    async with http.get(url, headers={"authorization": "Bearer adm1n"}) as resp:
        await expect(resp, 200)


async def test_a_damaged_history_file_is_moved_aside_and_the_hub_starts(
    hub_factory: HubFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data = tmp_path / "damaged"
    data.mkdir()
    (data / "history.sqlite3").write_bytes(b"this is not a database" * 100)
    hub = hub_factory.start(*INTERVAL, data_dir=data)
    await poll_until(
        lambda: _has_point_after(http, hub.base_url, 0), timeout=10, what="a point"
    )
    assert (data / "history.sqlite3.damaged").exists()
