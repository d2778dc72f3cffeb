"""A view keyed by a field that is not its events' partitionkey, repartitioned through
the hub's topic ``__view.{name}.by-key`` and shared by app processes, against a
real hub and real app processes.

Orders are partitioned by order id; the views are keyed by SKU. Each run checks
the fold view and the tumbling window against a plain-Python reference over the
orders: nothing missed, nothing counted twice, no window result id published with
two values. The processes share both stages' tasks (routing and view tasks); a
SIGKILLed process under load leaves the result exact; a rebuild drops and remakes
the repartition topic and the replay gives the same values. Bad declarations are
refused with 400 naming what is wrong, and no client may publish to the
repartition topic, delete it or make a group on it (403).
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
from test_streams_scale import AppRun

from tidings import App
from tidings.app.processor import ChangelogState, load_changelog
from tidings.client import AsyncClient
from tidings.core.positions import parse_time_ms
from tidings.errors import BadRequest, Forbidden, NotFound
from tidings.events.envelope import rfc3339_ms
from tidings.streams import Count, Tumbling

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

PARTS = 3  # of the orders topic, and so of the repartition topic
SKUS = 20
TOPIC, VIEW, WINDOW = "orders", "per_sku", "sku_per_second"
BY_KEY = {name: f"__view.{name}.by-key" for name in (VIEW, WINDOW)}

WORKER = f"""
import os
from tidings import App
from tidings.streams import Sum, Tumbling

app = App("analytics", hub=os.environ["HUB"], poll_wait=0.2, register_schemas=False)

@app.view({VIEW!r}, topics=[{TOPIC!r}], key=lambda e: e.data["sku"], commit_interval=0.05,
          repartition=True)
def per_sku(current, e):
    c = current or {{"n": 0, "sum": 0}}
    return {{"n": c["n"] + 1, "sum": c["sum"] + e.data["qty"]}}

app.window({WINDOW!r}, topic={TOPIC!r}, window=Tumbling("1s", grace="3s", idle="1500ms"),
           key=lambda e: e.data["sku"], agg=Sum(lambda e: e.data["qty"]), emit="final",
           commit_interval=0.05, repartition=True)
"""


class Run(AppRun):
    """The orders topic of three partitions, keyed (partitionkey) by order id: not
    the views' key."""

    topic, partitions, worker, view = TOPIC, PARTS, WORKER, VIEW
    most, patience = 3000, 90.0

    def event(self, n: int, ms: int, rng: random.Random) -> dict[str, Any]:
        order = f"o{n}"
        return {
            "type": "order.placed", "id": order, "time": rfc3339_ms(ms), "partitionkey": order,
            "data": {"sku": f"sku{rng.randrange(SKUS)}", "qty": rng.randint(1, 9)},
        }  # fmt: skip

    async def done(self) -> bool:
        """Every order is routed, every copy processed, and every window closed."""
        for name in (VIEW, WINDOW):
            try:
                info = await self.client.view(name)
            except NotFound:
                return False
            if any(info["lag"].values()) or set(info["lag"]) != {TOPIC, BY_KEY[name]}:
                return False
            ends = await self.t.end_positions(BY_KEY[name])
            if sum(ends.values()) != self.published:
                return False
        last: dict[int, int] = {}
        for r in await self.t.read_all(BY_KEY[WINDOW]):
            ms = parse_time_ms(r["event"]["time"])
            last[r["partition"]] = max(last.get(r["partition"], 0), ms)
        for task, ms in last.items():
            win = await load_changelog(self.t, WINDOW, task)
            mark = (win.checkpoint or {}).get("clock", {}).get("watermark") or 0
            if mark < ms // 1000 * 1000 + 1000 + 3000:
                return False
        return True

    async def states(self, name: str) -> list[ChangelogState]:
        return [await load_changelog(self.t, name, task) for task in range(PARTS)]


async def check_exact(run: Run) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """The view and window against the reference; (values, window values, late ids)."""
    records = await run.t.read_all(TOPIC)
    events = [r["event"] for r in records]
    assert len(events) == run.published
    await run.wait_for("caught up", run.done)
    values: dict[str, Any] = {}
    for s in await run.states(VIEW):
        assert not set(values) & set(s.values), "a key in two tasks"
        values.update(s.values)
    want: dict[str, dict[str, int]] = {}
    for e in events:
        c = want.setdefault(e["data"]["sku"], {"n": 0, "sum": 0})
        c["n"] += 1
        c["sum"] += e["data"]["qty"]
    assert values == want, run.logs()

    # Each copy in the repartition topic is one order, once.
    origin = {f"{r['partition']}.{r['offset']}": r["event"]["id"] for r in records}
    for name in (VIEW, WINDOW):
        copies = [r["event"] for r in await run.t.read_all(BY_KEY[name])]
        got = sorted(origin[c["id"].split(".", 3)[3]] for c in copies)
        assert got == sorted(origin.values()), f"{name}: orders routed twice or missed"
        for c in copies:
            assert c["partitionkey"] == c["data"]["sku"]
            assert c["routedid"] == c["routedkey"] == origin[c["id"].split(".", 3)[3]]

    results = [r["event"] for r in await run.t.read_all(WINDOW)]
    late = [r["event"] for r in await run.t.read_all(WINDOW + ".late")]
    late_ids = {x["data"]["event"]["id"] for x in late}  # the orders' own ids
    assert len(late_ids) == len(late), "a late event published twice"
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_id.setdefault(r["id"], []).append(r["data"])
    twice = {i: vs for i, vs in by_id.items() if any(v != vs[0] for v in vs)}
    assert not twice, f"window results published twice with different values: {twice}"
    got_w = {(d[0]["key"], d[0]["start"]): d[0]["value"] for d in by_id.values()}
    assert len(got_w) == len(by_id), "two ids for one window"
    ref: dict[tuple[str, str], int] = {}
    for e in events:
        if e["id"] in late_ids:
            continue
        ms = parse_time_ms(e["time"])
        k = (e["data"]["sku"], rfc3339_ms(ms - ms % 1000))
        ref[k] = ref.get(k, 0) + e["data"]["qty"]
    assert got_w == ref, run.logs()
    served: dict[str, Any] = {}
    for s in await run.states(WINDOW):
        served.update({k: v["value"] for k, v in s.values.items()})
    assert served == {f"{k}@{s}": v for (k, s), v in ref.items()}
    return values, served, late_ids


async def stop_all(run: Run) -> None:
    for app in run.apps:
        if app.proc is not None and app.proc.poll() is None:
            assert await asyncio.to_thread(app.stop) == 0, app.logs()


def runs(app: AppProcess, members: dict[str, list[int]]) -> list[int]:
    assert app.proc is not None
    return next((ts for m, ts in members.items() if f":{app.proc.pid}:" in m), [])


async def test_two_processes_share_both_stages_and_the_result_is_exact(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    rng = random.Random(int(os.environ.get("TIDINGS_SEED", "16")))
    hub = hub_factory.start(fsync="interval:5")
    run = Run(hub.base_url, tmp_path, 3)
    await run.open()
    stop = asyncio.Event()
    first, second, replayer = run.apps
    try:
        first.start()
        second.start()
        load = asyncio.create_task(run.publish(stop, rng))

        async def shared() -> bool:
            members = await run.members()
            tasks = sorted(t for ts in members.values() for t in ts)
            # Tasks 0-2 fold the copies, 3-5 route the orders' partitions.
            return tasks == list(range(2 * PARTS)) and all(
                len(ts) == PARTS for ts in members.values()
            ) and len(members) == 2

        await run.wait_for("the tasks shared", shared)
        info = await run.client.view(VIEW)
        assert info["repartition"] == {
            "topic": BY_KEY[VIEW], "partitions": PARTS,
            "routers": [[TOPIC, p] for p in range(PARTS)],
        }
        await asyncio.sleep(2.0)
        stop.set()
        await load
        live = await check_exact(run)
        info = await run.client.view(VIEW)
        owners = {c["owner"] for c in info["checkpoints"]}
        assert len(owners) == 2, owners  # both processes committed tasks
        assert {c["task"] for c in info["checkpoints"]} == set(range(2 * PARTS))
        # min_position: the newest order is reflected by both stages at once.
        placed = await run.client.publish(
            TOPIC, "order.placed", {"sku": "sku-new", "qty": 5}, key="last", id="last"
        )
        run.published += 1
        got = await run.client.view_get(VIEW, "sku-new", f"{placed['partition']}:"
                                        f"{placed['offset']}")
        assert got["value"] == {"n": 1, "sum": 5}
        await stop_all(run)
        assert await run.members() == {}
        # Batch is replay: rebuilt, the repartition topic is dropped and made again,
        # and one process routes and folds it all from earliest. (The window's result
        # topics are emptied too, to check the replay's own results: which events a
        # window finds late depends on the order the routing tasks wrote, which a
        # replay of a backlog does not keep.)
        for topic in (WINDOW, WINDOW + ".late"):
            await run.client.delete_topic(topic)
        for name in (VIEW, WINDOW):
            await run.client.rebuild_view(name)
            assert sum((await run.t.end_positions(BY_KEY[name])).values()) == 0
        replayer.start()
        values, _, _ = await check_exact(run)
        assert values == {**live[0], "sku-new": {"n": 1, "sum": 5}}
        members = await run.members()
        assert [sorted(ts) for ts in members.values()] == [list(range(2 * PARTS))]
        await stop_all(run)
    finally:
        stop.set()
        await run.close()


async def test_a_process_killed_under_load_leaves_the_result_exact(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    rng = random.Random(int(os.environ.get("TIDINGS_SEED", "16")) + 1)
    hub = hub_factory.start(fsync="interval:5")
    run = Run(hub.base_url, tmp_path, 2)
    await run.open()
    stop = asyncio.Event()
    first, second = run.apps
    try:
        first.start()
        second.start()
        load = asyncio.create_task(run.publish(stop, rng, most=5000))

        async def both_run() -> bool:
            members = await run.members()
            return bool(runs(first, members)) and bool(runs(second, members))

        await run.wait_for("both run tasks", both_run)
        for victim in (first, second, first):
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            victim.kill()  # mid-routing, mid-folding: whatever it was doing
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            victim.start()
            await run.wait_for("both run tasks", both_run)
        await asyncio.sleep(0.5)
        stop.set()
        await load
        await check_exact(run)
        await stop_all(run)
    finally:
        stop.set()
        await run.close()


async def test_bad_declarations_and_commits_are_refused(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    hub = hub_factory.start()
    client = AsyncClient(hub.base_url)
    try:
        await client.create_topic(TOPIC, partitions=PARTS)
        base = {"kind": "view", "inputs": [TOPIC]}
        for spec, field, words in (
            ({**base, "repartition": "yes"}, "repartition", "true, false or a number"),
            ({**base, "repartition": 0}, "repartition", "from 1 to 1000"),
            ({**base, "repartition": 1001}, "repartition", "from 1 to 1000"),
            ({**base, "repartition": True, "partitioned": True}, "repartition", "not both"),
        ):
            with pytest.raises(BadRequest) as bad:
                await client.put_view("v", spec)
            assert bad.value.fields.get("field") == field
            assert words in bad.value.detail
        with pytest.raises(BadRequest) as bad:
            await client.put_view("v.by-key", {**base, "repartition": True})
        assert "must not end in .by-key" in bad.value.detail
        with pytest.raises(NotFound):
            await client.view("v")  # nothing was made
        info = await client.put_view("v", {**base, "repartition": 2})
        assert info["tasks"] == 2 + PARTS and info["repartition"]["partitions"] == 2
        gen = info["generation"]

        def ckpt(task: int, inputs: dict[str, Any], pk: str = "c") -> dict[str, Any]:
            return {"specversion": "1.0", "id": f"c{task}", "source": "t", "partitionkey": pk,
                    "type": "tidings.view.checkpoint",
                    "data": {"generation": gen, "seq": 0, "inputs": inputs}}

        copy = {"specversion": "1.0", "id": "x", "source": "t", "type": "order.placed",
                "partitionkey": "sku1", "data": {"sku": "sku1"}}
        bad_commits: list[tuple[int, list[dict[str, Any]], Any, str]] = [
            (0, [ckpt(0, {"__view.v.by-key": {"0": 0}})], [copy],
             "only a routing task"),
            (2, [ckpt(2, {TOPIC: {"1": 0}})], [copy], "must name partition 0"),
            (2, [{**ckpt(2, {}, "v:a"), "type": "tidings.view.value", "data": {"value": 1}},
                 ckpt(2, {TOPIC: {"0": 1}})],
             [copy], "checkpoint only"),
            (3, [ckpt(3, {TOPIC: {"1": 1}})], [{**copy, "partitionkey": None}], "partitionkey"),
        ]
        for task, events, route, words in bad_commits:
            with pytest.raises(BadRequest) as bad:
                await client.commit_view("v", gen, 0, events, task, route)
            assert words in bad.value.detail, bad.value.detail
        parts = (await client.topic("__view.v.by-key"))["partitions"]
        assert [p["next_offset"] for p in parts] == [0, 0]  # nothing routed when refused
        # App-side checks name the argument.
        app = App("a", hub=hub.base_url)
        with pytest.raises(ValueError, match="declare one of them"):
            app.view("w", topics=[TOPIC], key=lambda e: e.data["sku"], partitioned=True,
                     repartition=True)(lambda c, e: 1)
        with pytest.raises(ValueError, match="repartition must be True"):
            app.window("w", topic=TOPIC, window=Tumbling("1s"), key=lambda e: e.data["sku"],
                       agg=Count(), repartition=0)
    finally:
        await client.close()


async def test_clients_cannot_write_or_delete_the_repartition_topic(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    hub = hub_factory.start()
    client = AsyncClient(hub.base_url)
    try:
        await client.put_view("v", {"kind": "view", "inputs": [TOPIC], "repartition": True})
        topic = "__view.v.by-key"
        with pytest.raises(Forbidden) as refused:
            await client.publish(topic, "x", {})
        assert refused.value.status == 403
        assert "repartition topic of view 'v'" in refused.value.detail
        with pytest.raises(Forbidden):
            await client.delete_topic(topic)
        with pytest.raises(Forbidden):
            await client.create_group(topic, "g")
        assert (await client.topic(topic))["name"] == topic  # it is still there
    finally:
        await client.close()
