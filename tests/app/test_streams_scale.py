"""Several processes of one app share a partitioned view's tasks (one per input
partition), against a real hub and real app processes.

Each run checks the fold view and the tumbling window against a plain-Python
reference over the topic's events: nothing missed, nothing counted twice, no window
result id published with two values, every event in one window result or late. The
processes share the work (each task's checkpoint is written by one of them, and
they are not all the same), a SIGKILLed process's tasks go to the survivor, and a
replay from earliest by one process gives the same values as the run by three.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

import pytest
from hubproc import HubFactory
from test_streams_kill import AppProcess

from tidings.app.processor import ChangelogState, load_changelog
from tidings.app.transport import HttpTransport
from tidings.client import AsyncClient
from tidings.core.positions import parse_time_ms
from tidings.errors import NotFound
from tidings.events.envelope import rfc3339_ms

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

TASKS = 3
KEYS = 24
TOPIC, VIEW, WINDOW = "sales", "totals", "per_second"

WORKER = f"""
import os
from tidings import App
from tidings.streams import Sum, Tumbling

app = App("analytics", hub=os.environ["HUB"], poll_wait=0.2, register_schemas=False)

@app.view({VIEW!r}, topics=[{TOPIC!r}], key=lambda e: e.data["k"], commit_interval=0.05,
          partitioned=True)
def totals(current, e):
    c = current or {{"n": 0, "sum": 0}}
    return {{"n": c["n"] + 1, "sum": c["sum"] + e.data["v"]}}

app.window({WINDOW!r}, topic={TOPIC!r}, window=Tumbling("1s", grace="0s", idle="1500ms"),
           key=lambda e: e.data["k"], agg=Sum(lambda e: e.data["v"]), emit="final",
           commit_interval=0.05, partitioned=True)
"""


class AppRun:
    """A hub, a topic of ``partitions`` partitions, app processes running ``worker``,
    and a publishing load (``event`` makes each event; the rest is the run's)."""

    topic: str
    partitions: int
    worker: str
    view: str  # the view whose members members() answers by default
    most = 4000  # events published at most
    patience = 60.0  # seconds wait_for waits by default

    def __init__(self, hub_url: str, directory: Path, processes: int) -> None:
        self.t = HttpTransport(hub_url)
        self.client = AsyncClient(hub_url)
        self.apps = []
        for i in range(processes):
            d = directory / f"p{i}"
            d.mkdir()
            self.apps.append(AppProcess(d, hub_url, self.worker, name=f"p{i}"))
        self.published = 0

    async def open(self) -> None:
        await self.t.open()
        await self.client.create_topic(self.topic, partitions=self.partitions)

    async def close(self) -> None:
        for app in self.apps:
            if app.proc is not None and app.proc.poll() is None:
                app.kill()
        await self.t.close()
        await self.client.close()

    def logs(self) -> str:
        return "\n".join(app.logs() for app in self.apps if app.runs)

    def event(self, n: int, ms: int, rng: random.Random) -> dict[str, Any]:
        """The ``n``-th event published, at ``ms``."""
        raise NotImplementedError

    async def publish(
        self, stop: asyncio.Event, rng: random.Random, most: int | None = None
    ) -> None:
        """Batches of 1 to 20 events, until ``stop`` or ``most`` events."""
        last = 0
        while not stop.is_set() and self.published < (most or self.most):
            batch = []
            for _ in range(rng.randint(1, 20)):
                last = max(last + 1, self.t.clock.time_ms())
                batch.append(self.event(self.published, last, rng))
                self.published += 1
            await self.t.publish(self.topic, batch)
            await asyncio.sleep(rng.uniform(0.005, 0.03))

    async def members(self, name: str | None = None) -> dict[str, list[int]]:
        """Who runs which task of the view (none before a process declared it)."""
        try:
            return dict((await self.client.view(name or self.view))["members"])
        except NotFound:
            return {}

    async def wait_for(self, what: str, check: Any, seconds: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (seconds or self.patience)
        while not await check():
            assert loop.time() < deadline, f"{what}\n{self.logs()}"
            await asyncio.sleep(0.2)


class Run(AppRun):
    """The sales topic, keyed (partitionkey) by the views' key."""

    topic, partitions, worker, view = TOPIC, TASKS, WORKER, VIEW

    def event(self, n: int, ms: int, rng: random.Random) -> dict[str, Any]:
        k = f"k{rng.randrange(KEYS)}"
        return {
            "type": "sale", "id": f"s{n}", "time": rfc3339_ms(ms),
            "partitionkey": k, "data": {"k": k, "v": rng.randint(1, 100)},
        }  # fmt: skip

    async def events(self) -> list[dict[str, Any]]:
        return [r["event"] for r in await self.t.read_all(TOPIC)]

    async def done(self, events: list[dict[str, Any]]) -> bool:
        """Every task has committed every event of its partition and closed the window
        of its partition's last event."""
        for name in (VIEW, WINDOW):
            try:
                await self.client.view(name)
            except NotFound:
                return False  # not declared yet: its changelog is not there to read
        ends = await self.t.end_positions(TOPIC)
        last: dict[int, int] = {}
        for r in await self.t.read_all(TOPIC):
            ms = parse_time_ms(r["event"]["time"])
            last[r["partition"]] = max(last.get(r["partition"], 0), ms)
        for task in range(TASKS):
            view = await load_changelog(self.t, VIEW, task)
            win = await load_changelog(self.t, WINDOW, task)
            at = (view.checkpoint or {}).get("inputs", {}).get(TOPIC, {})
            if ends.get(task, 0) and at.get(str(task)) != ends[task]:
                return False
            mark = (win.checkpoint or {}).get("clock", {}).get("watermark", 0)
            if task in last and mark < last[task] // 1000 * 1000 + 1000:
                return False
        return True

    async def states(self, name: str) -> list[ChangelogState]:
        return [await load_changelog(self.t, name, task) for task in range(TASKS)]


async def check_exact(run: Run) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """The view and window against the reference; (values, window values, late ids)."""
    events = await run.events()
    assert len(events) == run.published
    await run.wait_for("caught up", lambda: run.done(events))
    views, wins = await run.states(VIEW), await run.states(WINDOW)
    values: dict[str, Any] = {}
    for s in views:
        assert not set(values) & set(s.values), "a key in two tasks"
        values.update(s.values)
    want: dict[str, dict[str, int]] = {}
    for e in events:
        c = want.setdefault(e["data"]["k"], {"n": 0, "sum": 0})
        c["n"] += 1
        c["sum"] += e["data"]["v"]
    assert values == want, run.logs()

    results = [r["event"] for r in await run.t.read_all(WINDOW)]
    late = [r["event"] for r in await run.t.read_all(WINDOW + ".late")]
    late_ids = {x["data"]["event"]["id"] for x in late}
    assert len(late_ids) == len(late), "a late event published twice"
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_id.setdefault(r["id"], []).append(r["data"])
    twice = {i: vs for i, vs in by_id.items() if any(v != vs[0] for v in vs)}
    assert not twice, f"window results published twice with different values: {twice}"
    got = {(d[0]["key"], d[0]["start"]): d[0]["value"] for d in by_id.values()}
    assert len(got) == len(by_id), "two ids for one window"
    ref: dict[tuple[str, str], int] = {}
    for e in events:
        if e["id"] in late_ids:
            continue
        ms = parse_time_ms(e["time"])
        k = (e["data"]["k"], rfc3339_ms(ms - ms % 1000))
        ref[k] = ref.get(k, 0) + e["data"]["v"]
    assert got == ref, run.logs()
    served: dict[str, Any] = {}
    for s in wins:
        served.update({k: v["value"] for k, v in s.values.items()})
    assert served == {f"{k}@{s}": v for (k, s), v in ref.items()}
    assert len(late_ids) < len(events) // 10
    return values, served, late_ids


async def stop_all(run: Run) -> None:
    for app in run.apps:
        if app.proc is not None and app.proc.poll() is None:
            # In a thread: the loop goes on meanwhile, and sees the hub close idle
            # connections (a blocked loop would reuse one the hub has closed).
            assert await asyncio.to_thread(app.stop) == 0, app.logs()


@pytest.mark.parametrize("processes", [2, 3])
async def test_processes_share_the_tasks_and_the_result_is_exact(
    hub_factory: HubFactory, tmp_path: Path, processes: int
) -> None:
    rng = random.Random(int(os.environ.get("TIDINGS_SEED", "16")) + processes)
    hub = hub_factory.start(fsync="interval:5")
    run = Run(hub.base_url, tmp_path, processes)
    await run.open()
    stop = asyncio.Event()
    try:
        for app in run.apps:
            app.start()
        load = asyncio.create_task(run.publish(stop, rng))

        async def shared() -> bool:
            members = await run.members()
            tasks = sorted(t for ts in members.values() for t in ts)
            return len(members) == processes and tasks == list(range(TASKS)) and all(
                members.values()
            )

        # Every process runs a task; each task is run by exactly one of them.
        await run.wait_for("the tasks shared", shared)
        await asyncio.sleep(2.0)
        stop.set()
        await load
        _, _, _ = await check_exact(run)
        owners = {
            (s.checkpoint or {}).get("owner") for s in await run.states(VIEW) if s.checkpoint
        }
        assert len(owners) == min(processes, TASKS), owners  # the work was shared
        members = await run.members()
        assert sorted(t for ts in members.values() for t in ts) == list(range(TASKS))
        await stop_all(run)
        # Graceful stops leave: no member is left once every process stopped.
        assert await run.members() == {}
    finally:
        stop.set()
        await run.close()


async def test_a_killed_process_s_tasks_move_to_the_survivor_and_nothing_is_lost(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    rng = random.Random(int(os.environ.get("TIDINGS_SEED", "16")))
    hub = hub_factory.start(fsync="interval:5")
    run = Run(hub.base_url, tmp_path, 2)
    await run.open()
    stop = asyncio.Event()
    first, second = run.apps
    try:
        first.start()
        second.start()
        load = asyncio.create_task(run.publish(stop, rng, most=6000))

        def runs(app: AppProcess, members: dict[str, list[int]]) -> list[int]:
            assert app.proc is not None
            return next((ts for m, ts in members.items() if f":{app.proc.pid}:" in m), [])

        async def both_run() -> bool:
            members = await run.members()
            return bool(runs(first, members)) and bool(runs(second, members))

        await run.wait_for("both run tasks", both_run)
        # Kill one while it works; its tasks go to the survivor after the session timeout.
        for victim, survivor in ((first, second), (second, first)):
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            victim.kill()

            async def survivor_runs_all(survivor: AppProcess = survivor) -> bool:
                members = await run.members()
                return sorted(runs(survivor, members)) == list(range(TASKS))

            await run.wait_for("the survivor took every task", survivor_runs_all, 40)
            victim.start()  # back: it takes its share again
            await run.wait_for("both run tasks", both_run)
        await asyncio.sleep(1.0)
        stop.set()
        await load
        await check_exact(run)
        await stop_all(run)
    finally:
        stop.set()
        await run.close()


async def test_a_replay_by_one_process_equals_the_run_by_three(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    rng = random.Random(int(os.environ.get("TIDINGS_SEED", "16")) + 7)
    hub = hub_factory.start(fsync="interval:5")
    run = Run(hub.base_url, tmp_path, 4)
    await run.open()
    stop = asyncio.Event()
    three, one = run.apps[:3], run.apps[3]
    try:
        for app in three:
            app.start()
        load = asyncio.create_task(run.publish(stop, rng, most=3000))

        async def shared() -> bool:
            members = await run.members()
            return len(members) == 3 and all(members.values())

        await run.wait_for("each of the three runs a task", shared)
        await asyncio.sleep(2.0)
        stop.set()
        await load
        live = await check_exact(run)
        await stop_all(run)
        # Batch is replay: the same views rebuilt, read from earliest by one process.
        for name in (VIEW, WINDOW):
            await run.client.rebuild_view(name)
        one.start()
        replayed = await check_exact(run)
        assert replayed == live  # value for value, window for window, the same late events
        members = await run.members()
        assert [sorted(ts) for ts in members.values()] == [list(range(TASKS))]
        await stop_all(run)
    finally:
        stop.set()
        await run.close()


JOIN_WORKER = """
import os
from tidings import App

app = App("joiner", hub=os.environ["HUB"], poll_wait=0.2, register_schemas=False)

@app.join("paid", left="orders", right="payments", within="1h", grace="1h",
          key=lambda e: e.data["customer"], partitioned=True)
def pair(order, payment):
    return {"order": order.data["order"], "payment": payment.data["payment"]}

@app.enrich("named", stream="orders", table="customers", key=lambda e: e.data["customer"],
            table_key=lambda e: e.data["id"], partitioned=True)
def with_name(order, customer):
    return None if customer is None else {"order": order.data["order"],
                                          "name": customer["name"]}
"""


async def test_co_partitioned_joins_are_shared_and_exact(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    """A join and an enrichment over co-partitioned topics (keyed by customer) run by
    two processes: every pair once, each order with the name of its time."""
    rng = random.Random(int(os.environ.get("TIDINGS_SEED", "16")) + 3)
    hub = hub_factory.start(fsync="interval:5")
    t, client = HttpTransport(hub.base_url), AsyncClient(hub.base_url)
    await t.open()
    apps = []
    for i in range(2):
        d = tmp_path / f"p{i}"
        d.mkdir()
        apps.append(AppProcess(d, hub.base_url, JOIN_WORKER, name=f"p{i}"))
    try:
        for topic in ("orders", "payments", "customers"):
            await client.create_topic(topic, partitions=2)
        for app in apps:
            app.start()

        async def shared() -> bool:
            for view in ("paid", "named"):
                try:
                    members = (await client.view(view))["members"]
                except NotFound:
                    return False
                if len(members) != 2 or not all(members.values()):
                    return False
            return True

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not await shared():  # each process runs a task of each view
            assert loop.time() < deadline, "\n".join(a.logs() for a in apps)
            await asyncio.sleep(0.2)
        names: dict[str, str] = {}
        orders: list[tuple[str, str, str | None]] = []  # order, customer, name then
        payments: list[tuple[str, str]] = []  # payment, customer
        for step in range(60):
            c = f"c{rng.randrange(8)}"
            kind = rng.choice(["customer", "order", "payment"])
            if kind == "customer":
                names[c] = f"name{step}"
                event = {"type": "customer", "data": {"id": c, "name": names[c]}}
                topic = "customers"
            elif kind == "order":
                orders.append((f"o{step}", c, names.get(c)))
                event = {"type": "order", "data": {"order": f"o{step}", "customer": c}}
                topic = "orders"
            else:
                payments.append((f"p{step}", c))
                event = {"type": "payment", "data": {"payment": f"p{step}", "customer": c}}
                topic = "payments"
            await t.publish(topic, [{**event, "id": f"e{step}", "partitionkey": c}])
            await asyncio.sleep(0.01)  # one after the other in append order

        want_pairs = sorted(
            ({"order": o, "payment": p} for o, oc, _ in orders for p, pc in payments if oc == pc),
            key=str,
        )
        want_named = sorted(
            ({"order": o, "name": n} for o, _, n in orders if n is not None), key=str
        )

        async def results(topic: str) -> list[Any]:
            try:
                records = await t.read_all(topic)
            except NotFound:  # not made yet: the processes have not declared the view
                return []
            return sorted((r["event"]["data"] for r in records), key=str)

        deadline = loop.time() + 60
        while (await results("paid"), await results("named")) != (want_pairs, want_named):
            assert loop.time() < deadline, "\n".join(a.logs() for a in apps)
            await asyncio.sleep(0.2)
        for view in ("paid", "named"):
            info = await client.view(view)
            assert info["tasks"] == 2
            owners = {c["owner"] for c in info["checkpoints"]}
            assert len(owners) == 2, owners  # both processes ran a task
        table: dict[str, Any] = {}
        for task in range(2):
            table.update((await load_changelog(t, "named", task)).values)
        assert table == {c: {"id": c, "name": n} for c, n in names.items()}
        for app in apps:
            assert await asyncio.to_thread(app.stop) == 0, app.logs()
    finally:
        for app in apps:
            if app.proc is not None and app.proc.poll() is None:
                app.kill()
        await t.close()
        await client.close()
