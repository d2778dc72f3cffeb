"""The kill test: an app running a fold view and a tumbling window, SIGKILLed at random
moments under publish load and restarted, ends with every view value and every window
result equal to a plain-Python reference over the topic's events.

Nothing missed, nothing counted twice (the fold counts and sums; the window sums
positive values), and no window result id published twice with different values
(the result topic is read whole). Every event is either in exactly one window
result or in the late topic.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hubproc import HubFactory

from tidings.app.processor import load_changelog
from tidings.app.transport import HttpTransport
from tidings.core.positions import parse_time_ms
from tidings.events.envelope import rfc3339_ms

pytestmark = pytest.mark.anyio

KILLS = int(os.environ.get("TIDINGS_STREAM_KILLS", "20"))
KEYS = 12
TOPIC, VIEW, WINDOW = "sales", "totals", "per_second"

WORKER = f"""
import os
from tidings import App
from tidings.streams import Sum, Tumbling

app = App("analytics", hub=os.environ["HUB"], poll_wait=0.2, register_schemas=False)

@app.view({VIEW!r}, topics=[{TOPIC!r}], key=lambda e: e.data["k"], commit_interval=0.05)
def totals(current, e):
    c = current or {{"n": 0, "sum": 0}}
    return {{"n": c["n"] + 1, "sum": c["sum"] + e.data["v"]}}

app.window({WINDOW!r}, topic={TOPIC!r}, window=Tumbling("1s", grace="0s", idle="1500ms"),
           key=lambda e: e.data["k"], agg=Sum(lambda e: e.data["v"]), emit="final",
           commit_interval=0.05)
"""


class AppProcess:
    def __init__(self, directory: Path, hub: str, worker: str = WORKER, name: str = "app") -> None:
        (directory / "worker.py").write_text(textwrap.dedent(worker))
        self.directory = directory
        self.name = name
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        self.env.update(PYTHONUNBUFFERED="1", HUB=hub)
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.runs += 1
        with (self.directory / f"{self.name}-{self.runs}.log").open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tidings", "run", "worker:app"],
                cwd=self.directory, env=self.env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=out,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(
            (self.directory / f"{self.name}-{i}.log").read_text(errors="replace")[-3000:]
            for i in range(max(1, self.runs - 2), self.runs + 1)
        )


async def publish_load(t: HttpTransport, stop: asyncio.Event, rng: random.Random) -> int:
    """Batches of sales with event times from the hub's clock, until ``stop``."""
    n = 0
    last = 0
    while not stop.is_set():
        batch = []
        for _ in range(rng.randint(1, 20)):
            last = max(last + 1, t.clock.time_ms())
            batch.append({
                "type": "sale", "id": f"s{n}", "time": rfc3339_ms(last),
                "data": {"k": f"k{rng.randrange(KEYS)}", "v": rng.randint(1, 100)},
            })
            n += 1
        await t.publish(TOPIC, batch)
        await asyncio.sleep(rng.uniform(0.005, 0.03))
    return n


async def test_sigkill_at_random_moments_loses_and_doubles_nothing(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    rng = random.Random(int(os.environ.get("TIDINGS_SEED", "16")))
    hub = hub_factory.start(fsync="interval:5")
    t = HttpTransport(hub.base_url)
    await t.open()
    app = AppProcess(tmp_path, hub.base_url)
    stop = asyncio.Event()
    load = asyncio.create_task(publish_load(t, stop, rng))
    try:
        app.start()
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.4, 2.0))
            app.kill()
            app.start()
        await asyncio.sleep(1.0)
        stop.set()
        published = await load
        events = [r["event"] for r in await t.read_all(TOPIC)]
        assert len(events) == published
        # Let the last run catch up and close the last windows (the hub's clock moves on).
        last_end = max(parse_time_ms(e["time"]) for e in events) // 1000 * 1000 + 1000
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            view = await load_changelog(t, VIEW)
            win = await load_changelog(t, WINDOW)
            ckpt = win.checkpoint or {}
            done = ckpt.get("clock", {}).get("watermark", 0) >= last_end and (
                view.checkpoint or {}
            ).get("inputs", {}).get(TOPIC, {}).get("0") == len(events)
            if done or loop.time() > deadline:
                break
            await asyncio.sleep(0.2)
        assert app.stop() == 0, app.logs()
        view = await load_changelog(t, VIEW)
        win = await load_changelog(t, WINDOW)
        results = [r["event"] for r in await t.read_all(WINDOW)]
        late = [r["event"] for r in await t.read_all(WINDOW + ".late")]
    finally:
        stop.set()
        if app.proc is not None and app.proc.poll() is None:
            app.kill()
        await t.close()

    # The fold: every event counted once.
    want: dict[str, dict[str, int]] = {}
    for e in events:
        c = want.setdefault(e["data"]["k"], {"n": 0, "sum": 0})
        c["n"] += 1
        c["sum"] += e["data"]["v"]
    assert view.values == want, app.logs()
    assert (view.checkpoint or {})["inputs"][TOPIC]["0"] == len(events)

    # Late events: each at most once, and only events of the topic.
    late_ids = [x["data"]["event"]["id"] for x in late]
    by_late_id: dict[str, list[dict[str, Any]]] = {}
    for x in late:
        by_late_id.setdefault(x["id"], []).append(x["data"])
    assert all(v == vs[0] for vs in by_late_id.values() for v in vs)
    late_set = set(late_ids)
    assert late_set <= {e["id"] for e in events}

    # Window results: one value per id, and the final values equal the reference.
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_id.setdefault(r["id"], []).append(r["data"])
    twice = {i: vs for i, vs in by_id.items() if any(v != vs[0] for v in vs)}
    assert not twice, f"window results published twice with different values: {twice}"
    got = {(d[0]["key"], d[0]["start"]): d[0]["value"] for d in by_id.values()}
    assert len(got) == len(by_id), "two ids for one window"
    ref: dict[tuple[str, str], int] = {}
    for e in events:
        if e["id"] in late_set:
            continue
        ms = parse_time_ms(e["time"])
        k = (e["data"]["k"], rfc3339_ms(ms - ms % 1000))
        ref[k] = ref.get(k, 0) + e["data"]["v"]
    assert got == ref, app.logs()
    served = {k: v["value"] for k, v in win.values.items()}
    assert served == {f"{k}@{s}": v for (k, s), v in ref.items()}
    # Late events are rare here (only an event appended after a pause of more than the
    # idle time, and more than the idle time after its own time, can be late).
    assert len(late_set) < len(events) // 10
    assert app.runs == KILLS + 1
