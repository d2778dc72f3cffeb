"""``tidings cluster`` as a user runs it: a process of its own that starts three
nats-servers and three hub nodes. Events published on one node are read on another;
a hub node and a nats-server killed with SIGKILL lose no acknowledged event; SIGINT
stops every process it started; a bad option or a taken port is refused clearly."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hubapi import ids, poll_until, publish, read_all

READY_LINE = "Ctrl-C stops everything."


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie counts as gone


class Launcher:
    """``python -m tidings cluster`` on free ports, its output read line by line."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tidings", "cluster", "--data-dir", str(root),
             "--port", "0", "--nats-port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.output = ""

    def read_until(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while text not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} in {timeout} s; output so far:\n{self.output}"
            if self.sel.select(min(left, 0.5)):
                chunk = self.proc.stdout.read()
                if chunk:
                    self.output += chunk.decode(errors="replace")
                elif self.proc.poll() is not None:
                    raise AssertionError(
                        f"exited with {self.proc.returncode} before {text!r}:\n{self.output}"
                    )
        return self.output

    def finish(self, timeout: float) -> int:
        self.proc.wait(timeout)
        self.read_rest()
        return self.proc.returncode

    def read_rest(self) -> None:
        assert self.proc.stdout is not None
        rest = self.proc.stdout.read()
        self.output += (rest or b"").decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.sel.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def event(n: int) -> dict[str, Any]:
    return {
        "specversion": "1.0", "id": f"ev-{n}", "source": "/test", "type": "order.placed",
        "partitionkey": f"k{n % 7}", "data": {"n": n},
    }  # fmt: skip


async def publish_until_acked(
    http: aiohttp.ClientSession, bases: list[str], n: int, deadline: float
) -> None:
    """Publish event ``n``, on each node in turn until one acknowledges it (a node or
    a server may be down, a stream leader being elected)."""
    failures: list[str] = []
    for attempt in range(10_000):
        base = bases[attempt % len(bases)]
        try:
            await publish(http, base, "orders", event(n))
            return
        except (AssertionError, aiohttp.ClientError, TimeoutError) as exc:
            failures.append(f"{base}: {str(exc)[:200]}")
        assert time.monotonic() < deadline, f"event {n} never acknowledged: {failures[-5:]}"
        await asyncio.sleep(0.2)


@pytest.mark.skipif(sys.platform != "linux", reason="/proc and PR_SET_PDEATHSIG are Linux's")
@pytest.mark.timeout(240)
async def test_a_cluster_serves_on_every_node_loses_nothing_and_stops_whole(
    tmp_path: Path,
) -> None:
    launcher = Launcher(tmp_path / "cluster", "--timeout", "120")
    try:
        text = launcher.read_until(READY_LINE, 150)
        state = json.loads((tmp_path / "cluster" / "cluster.json").read_text())
        hubs = [h["url"] for h in state["hubs"]]
        nats = state["nats"]
        pids = [h["pid"] for h in state["hubs"]] + [s["pid"] for s in nats]
        assert state["replicas"] == 3 and len(hubs) == 3 and len(nats) == 3
        for url in hubs:
            assert url in text
        for pid in pids:
            assert f"pid {pid}" in text and alive(pid)
        assert "kill -9 PID" in text

        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            # published on the first node, read on the second
            for n in range(30):
                await publish(http, hubs[0], "orders", event(n))
            before = {f"ev-{n}" for n in range(30)}

            async def holds(base: str, want: set[str]) -> bool:
                try:
                    return want <= set(ids(await read_all(http, base, "orders")))
                except (AssertionError, aiohttp.ClientError, TimeoutError):
                    return False  # a stream leader being elected: ask again

            await poll_until(lambda: holds(hubs[1], before), 20, 0.2, "the events on hub2")

            # a hub node and a nats-server killed with SIGKILL
            os.kill(state["hubs"][1]["pid"], signal.SIGKILL)
            os.kill(nats[0]["pid"], signal.SIGKILL)
            launcher.read_until(f"hub hub2 (pid {pids[1]}) exited with signal 9", 10)
            launcher.read_until(f"nats-server n1 (pid {nats[0]['pid']}) exited with signal 9", 10)

            deadline = time.monotonic() + 90
            alive_hubs = [hubs[0], hubs[2]]
            for n in range(30, 60):
                await publish_until_acked(http, alive_hubs, n, deadline)
            acked = {f"ev-{n}" for n in range(60)}
            for base in alive_hubs:
                await poll_until(lambda b=base: holds(b, acked), 60, 0.2, f"the events on {base}")

        launcher.proc.send_signal(signal.SIGINT)
        assert launcher.finish(60) == 0, launcher.output
        assert "stopped" in launcher.output
        for pid in pids:
            assert not alive(pid), f"process {pid} outlived the cluster:\n{launcher.output}"
    finally:
        launcher.close()
        for pid in locals().get("pids", []):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(60)
def test_a_taken_port_or_a_bad_size_is_refused_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "tidings", "cluster", "--data-dir", str(tmp_path / "c"),
             "--port", str(port), "--nats-port", "0"],
            capture_output=True, text=True, timeout=50,
        )  # fmt: skip
    assert run.returncode == 2
    assert f"port {port}" in run.stderr and "in use" in run.stderr, run.stderr
    assert not (tmp_path / "c").exists()
    run = subprocess.run(
        [sys.executable, "-m", "tidings", "cluster", "--data-dir", str(tmp_path / "c"),
         "--nodes", "2", "--port", "0", "--nats-port", "0"],
        capture_output=True, text=True, timeout=50,
    )  # fmt: skip
    assert run.returncode == 2 and "give 1, 3 or 5" in run.stderr, run.stderr
    assert not (tmp_path / "c").exists()


def processes_under(root: Path) -> list[int]:
    """The processes whose command line names ``root`` (the servers' configs, the
    hubs' data directories)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(root).encode() in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.timeout(120)
def test_a_cluster_that_does_not_start_in_time_says_so_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "slow"
    run = subprocess.run(
        [sys.executable, "-m", "tidings", "cluster", "--data-dir", str(root),
         "--port", "0", "--nats-port", "0", "--timeout", "1"],
        capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert "error: the cluster did not start" in run.stdout, run.stdout
    assert "in time" in run.stdout or "not ready in" in run.stdout, run.stdout
    assert not (root / "cluster.json").exists()
    assert processes_under(root) == []
