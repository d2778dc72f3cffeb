"""Apps as ``tidings run`` runs them, in processes of their own: killed with SIGKILL
mid-work and restarted (idempotency), stopped with SIGTERM mid-handler (graceful)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from handlerhubs import suffix

from tidings import AsyncClient
from tidings.app.transport import EmbeddedTransport

WORKER = """
import asyncio, os
from typing import Any
from tidings import App, Context

app = App(
    os.environ["APP"],
    hub=os.environ["HUB"],
    poll_wait=0.5,
    shutdown_timeout=float(os.environ.get("SHUTDOWN_TIMEOUT", "30")),
)

def note(line: str) -> None:
    with open(os.environ["EFFECTS"], "a") as f:
        f.write(line + "\\n")

@app.on(os.environ["TOPIC"])
async def work(data: Any, ctx: Context) -> None:
    note("start " + ctx.id)
    if ctx.id == os.environ.get("HANG_ON"):
        await asyncio.Event().wait()
    await asyncio.sleep(float(os.environ.get("WORK_S", "0")))
    note("end " + ctx.id)
"""


class Worker:
    """``python -m tidings run worker:app`` in ``directory``, configured by environment."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        (directory / "worker.py").write_text(textwrap.dedent(WORKER))
        self.directory = directory
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        self.env.update(env, PYTHONUNBUFFERED="1", EFFECTS=str(directory / "effects.txt"))
        self.effects = directory / "effects.txt"
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, **extra: str) -> subprocess.Popen[str]:
        log = self.directory / f"app-{len(self.procs)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tidings", "run", "worker:app"],
                cwd=self.directory,
                env={**self.env, **extra},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                text=True,
            )
        self.procs.append(proc)
        return proc

    def log(self, proc: subprocess.Popen[str]) -> str:
        return (self.directory / f"app-{self.procs.index(proc)}.log").read_text()

    def lines(self) -> list[str]:
        return self.effects.read_text().splitlines() if self.effects.exists() else []

    def wait_for(self, count: int, proc: subprocess.Popen[str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines()) < count:
            if proc.poll() is not None:
                raise AssertionError(f"the app exited with {proc.returncode}: {self.log(proc)}")
            assert time.monotonic() < deadline, f"only {self.lines()} after {timeout} s"
            time.sleep(0.02)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    w = Worker(tmp_path, {})
    yield w
    w.close()


async def _publish_embedded(data_dir: Path, topic: str, ids: list[str]) -> None:
    transport = EmbeddedTransport(data_dir)
    await transport.open()
    try:
        await transport.publish(
            topic, [{"type": "job.queued", "id": i, "data": {"order": i}} for i in ids]
        )
    finally:
        await transport.close()


async def _embedded_group(data_dir: Path, topic: str, group: str) -> tuple[int, int]:
    transport = EmbeddedTransport(data_dir)
    await transport.open()
    try:
        return await transport.group_state(topic, group)
    finally:
        await transport.close()


def test_after_a_crash_the_events_handled_before_it_are_not_handled_again(
    worker: Worker, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    ids = [f"e{i}" for i in range(10)]
    asyncio.run(_publish_embedded(data, "jobs", ids))
    worker.env.update(APP="crashy", HUB=f"embedded:{data}", TOPIC="jobs")

    # e0..e8 are handled; e9 hangs, so the batch is never acked. kill -9 then.
    first = worker.start(HANG_ON="e9")
    worker.wait_for(10 + 9, first)
    time.sleep(0.5)  # handled ids are written every 50 ms
    first.send_signal(signal.SIGKILL)
    first.wait(10)

    # Restarted, the app is given all ten again (none was acked): only e9 runs again.
    second = worker.start()
    worker.wait_for(10 + 9 + 2, second)
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0, worker.log(second)

    lines = worker.lines()
    starts = [line.split()[1] for line in lines if line.startswith("start")]
    assert sorted(starts) == sorted([*ids, "e9"])  # e0..e8 once each, e9 twice
    assert [line for line in lines if line.startswith("end")] == [f"end {i}" for i in ids]
    assert asyncio.run(_embedded_group(data, "jobs", "crashy")) == (0, 0)


async def _publish(url: str, topic: str, ids: list[str]) -> None:
    async with AsyncClient(url) as hub:
        for i in ids:
            await hub.publish(topic, "job.queued", id=i)


async def _group(url: str, topic: str, group: str) -> tuple[int, int]:
    async with AsyncClient(url) as hub:
        info = await hub.group(topic, group)
    return info["lag"], info["pending"]


def test_sigterm_mid_handler_finishes_it_takes_no_new_lease_and_acks(
    worker: Worker, hub_url: str
) -> None:
    s = suffix()
    topic, app = f"slow-{s}", f"slow-{s}"
    worker.env.update(APP=app, HUB=hub_url, TOPIC=topic, WORK_S="1.0")
    asyncio.run(_publish(hub_url, topic, ["e0"]))
    proc = worker.start()
    worker.wait_for(1, proc)  # e0's handler is running
    asyncio.run(_publish(hub_url, topic, ["e1", "e2", "e3"]))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert worker.lines() == ["start e0", "end e0"]
    assert asyncio.run(_group(hub_url, topic, app)) == (3, 0)  # e0 acked; e1..e3 untouched
    logs = [json.loads(line) for line in worker.log(proc).splitlines()]
    messages = [entry["message"] for entry in logs]
    assert "signal received: stopping gracefully" in messages
    assert any(e.get("app") == app and e["message"].endswith("stopped") for e in logs)


def test_a_handler_past_the_shutdown_deadline_is_cut_and_its_event_handed_back(
    worker: Worker, hub_url: str
) -> None:
    s = suffix()
    topic, app = f"stuck-{s}", f"stuck-{s}"
    worker.env.update(APP=app, HUB=hub_url, TOPIC=topic, WORK_S="60", SHUTDOWN_TIMEOUT="0.5")
    asyncio.run(_publish(hub_url, topic, ["e0"]))
    proc = worker.start()
    worker.wait_for(1, proc)
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert time.monotonic() - began < 20  # cut at the deadline, not after the 60 s handler
    assert worker.lines() == ["start e0"]
    assert asyncio.run(_group(hub_url, topic, app)) == (1, 0)  # nacked: due again, not leased


TWO_APPS = """
import os
from typing import Any
from tidings import App

hub = "embedded:" + os.environ["DATA_DIR"]
billing = App("billing", hub=hub, poll_wait=0.5)
audit = App("audit", hub=hub, poll_wait=0.5)

def note(line: str) -> None:
    with open(os.environ["EFFECTS"], "a") as f:
        f.write(line + "\\n")

@billing.on("orders")
async def bill(data: Any) -> dict[str, Any]:
    note("billed " + data["order"])
    return {"type": "invoice.sent", "topic": "invoices", "data": data}

@audit.on("invoices")
async def record(data: Any) -> None:
    note("audited " + data["order"])
"""


def test_tidings_run_runs_several_apps_on_one_embedded_hub(worker: Worker, tmp_path: Path) -> None:
    (tmp_path / "twoapps.py").write_text(textwrap.dedent(TWO_APPS))
    data = tmp_path / "data"
    asyncio.run(_publish_embedded(data, "orders", ["o1"]))
    log = tmp_path / "two.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tidings", "run", "twoapps:billing", "twoapps:audit",
             "--log-format", "text"],
            cwd=tmp_path,
            env={**worker.env, "DATA_DIR": str(data)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 30
        while len(worker.lines()) < 2:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, worker.lines()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert worker.lines() == ["billed o1", "audited o1"]
    assert "app billing started" in log.read_text() and "app audit stopped" in log.read_text()
