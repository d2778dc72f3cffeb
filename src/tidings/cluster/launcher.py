"""A local cluster on loopback: N ``nats-server`` processes routed to each other
(JetStream, ``sync_interval: always``) and N hub nodes (``tidings serve --backend
nats://... --replicas N``) on them, each with its own directory under one root.

``LocalCluster`` starts and stops them (``tidings cluster`` and the NATS benchmarks);
``run`` is ``tidings cluster``'s foreground: it prints where everything is, reports
a process that exits, and stops everything on SIGINT or SIGTERM. Every process it
starts is in a session of its own (a Ctrl-C reaches the launcher only, which stops
the hubs, then the servers) and, on Linux, is killed by the kernel if the launcher
dies first, so no process outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from tidings.cluster.natsproc import NatsCluster, NatsServer, die_with_parent, free_port

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
SIZES = (1, 3, 5)


class ClusterFailed(Exception):
    """A process did not start in time, exited while starting, or a port is taken."""


class HubNode:
    """One ``tidings serve`` process on a NATS backend."""

    def __init__(self, root: Path, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.data_dir = root / name
        self.log_path = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, backend: Sequence[str], replicas: int, extra: Sequence[str] = ()) -> HubNode:
        argv = [
            sys.executable, "-m", "tidings", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--backend", ",".join(backend), "--replicas", str(replicas),
            "--log-level", "warning", *extra,
        ]  # fmt: skip
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                preexec_fn=die_with_parent(), start_new_session=True,
            )  # fmt: skip
        return self

    def wait_healthy(self, deadline: float) -> None:
        while True:
            if not self.running:
                code = None if self.proc is None else self.proc.returncode
                raise ClusterFailed(
                    f"hub node {self.name} exited with {code} while starting: "
                    f"{_tail(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ClusterFailed(
                    f"hub node {self.name} did not answer {self.url}/healthz in time; "
                    f"see {self.log_path}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)


class LocalCluster:
    """``size`` nats-servers and ``hubs`` hub nodes under ``root``; streams of ``size``
    replicas. ``port``: the hubs listen on ``port``, ``port + 1``...; ``nats_port``:
    the servers' client ports (routes 100 above, monitoring 200 above); 0 takes free
    ports. One server is a plain server (no cluster block)."""

    def __init__(
        self,
        root: Path,
        *,
        size: int = 3,
        hubs: int | None = None,
        port: int = 8701,
        nats_port: int = 4301,
        hub_args: Sequence[str] = (),
        nats_gomaxprocs: int | None = None,
        topics: Sequence[tuple[str, int]] = (),
    ) -> None:
        if size not in SIZES:
            raise ClusterFailed(f"a cluster of {size} servers: give 1, 3 or 5")
        hubs = size if hubs is None else hubs
        if hubs < 1:
            raise ClusterFailed(f"{hubs} hub nodes: give at least 1")
        _check_free("hub", [port + i for i in range(hubs)] if port else [])
        if nats_port:
            _check_free(
                "nats-server",
                [nats_port + above + i for above in (0, 100, 200) for i in range(size)],
            )
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.replicas = size
        if size == 1:
            monitor = nats_port + 200 if nats_port else 0
            self.servers = [
                NatsServer(
                    root / "nats", "n1", sync="always", port=nats_port, http_port=monitor,
                    gomaxprocs=nats_gomaxprocs,
                )
            ]  # fmt: skip
        else:
            self.servers = NatsCluster(root / "nats", size, "always", first_port=nats_port).servers
        self.hubs = [
            HubNode(root, f"hub{i + 1}", port + i if port else free_port()) for i in range(hubs)
        ]
        self.hub_args = tuple(hub_args)
        self.topics = tuple(topics)

    @property
    def nats_urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def hub_urls(self) -> list[str]:
        return [h.url for h in self.hubs]

    def start(self, timeout: float = START_TIMEOUT_S) -> LocalCluster:
        """Start the servers, wait until JetStream answers on each, then the hubs one by
        one (the first makes the cluster's buckets and hub id, and ``topics`` that do
        not exist yet, so that every node knows them: a node sees a topic another
        node made only at its start); all within ``timeout``.
        On a failure everything started is stopped and ``ClusterFailed`` says why."""
        deadline = time.monotonic() + timeout
        try:
            for s in self.servers:
                s.start()
            for s in self.servers:
                try:
                    s.wait_ready(max(0.1, deadline - time.monotonic()))
                except RuntimeError as exc:
                    raise ClusterFailed(f"nats-server {exc}: {_tail(s.log_path)}") from None
            urls = self.nats_urls
            for i, hub in enumerate(self.hubs):
                # each node tries another server first; any of them will do
                k = i % len(urls)
                hub.start(urls[k:] + urls[:k], self.replicas, self.hub_args)
                hub.wait_healthy(deadline)
                if i == 0:
                    for name, partitions in self.topics:
                        _ensure_topic(hub.url, name, partitions)
        except BaseException:
            self.close()
            raise
        self.write_state()
        return self

    def processes(self) -> Iterator[tuple[str, str, str, int | None]]:
        """(kind, name, url, pid) of every process, hubs first."""
        for h in self.hubs:
            yield "hub", h.name, h.url, h.pid
        for s in self.servers:
            yield "nats-server", s.name, s.url, s.pid

    def state(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "hubs": [{"name": h.name, "url": h.url, "pid": h.pid} for h in self.hubs],
            "nats": [
                {
                    "name": s.name,
                    "url": s.url,
                    "pid": s.pid,
                    "monitor": f"http://127.0.0.1:{s.http_port}",
                    "store": str(s.dir / "store"),
                }
                for s in self.servers
            ],
        }

    def write_state(self) -> Path:
        """``cluster.json`` under the root: the URLs and process ids, for scripts."""
        path = self.root / "cluster.json"
        path.write_text(json.dumps(self.state(), indent=2) + "\n")
        return path

    def close(self) -> None:
        """Stop the hubs (SIGTERM, then SIGKILL after a while), then the servers."""
        for h in self.hubs:
            h.stop()
        for s in self.servers:
            s.stop()


class _Stop(BaseException):
    """SIGINT or SIGTERM arrived."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def run(cluster: LocalCluster, timeout: float = START_TIMEOUT_S, out: TextIO = sys.stdout) -> int:
    """``tidings cluster``: start, print, watch until SIGINT/SIGTERM, stop. 0 when stopped
    by a signal, 1 when the cluster did not start."""
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        n = len(cluster.servers)
        hubs = len(cluster.hubs)
        _say(out, f"starting {n} nats-server and {hubs} hub processes in {cluster.root} ...")
        try:
            cluster.start(timeout)
        except ClusterFailed as exc:
            _say(out, f"error: the cluster did not start within {timeout:g} s (--timeout): {exc}")
            return 1
        _say(out, _banner(cluster))
        _watch(cluster, out)
        return 0  # not reached: _watch ends by a signal
    except _Stop as stop:
        for s in previous:
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C does not cut the stop short
        _say(out, f"{stop}: stopping the hub nodes, then the nats-servers ...")
        cluster.close()
        _say(out, "stopped; the data stays in " + str(cluster.root))
        return 0
    finally:
        cluster.close()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _watch(cluster: LocalCluster, out: TextIO) -> None:
    """Report each process that exits; the others carry on."""
    reported: set[str] = set()
    procs: list[tuple[str, str, HubNode | NatsServer]] = [(h.name, "hub", h) for h in cluster.hubs]
    procs += [(s.name, "nats-server", s) for s in cluster.servers]
    while True:
        for name, kind, p in procs:
            if name not in reported and not p.running:
                reported.add(name)
                code = None if p.proc is None else p.proc.returncode
                how = f"signal {-code}" if code is not None and code < 0 else f"status {code}"
                _say(
                    out,
                    f"{kind} {name} (pid {p.pid}) exited with {how}; the other nodes carry "
                    "on. Ctrl-C and start again to bring it back (the data stays)",
                )
        time.sleep(0.2)


def _banner(c: LocalCluster) -> str:
    lines = [f"tidings cluster: R{c.replicas} streams, data in {c.root}", ""]
    lines += [f"  hub node {h.name}   {h.url}   pid {h.pid}   log {h.log_path}" for h in c.hubs]
    lines += [
        f"  nats-server {s.name}   {s.url}   pid {s.pid}   "
        f"monitor http://127.0.0.1:{s.http_port}   log {s.log_path}"
        for s in c.servers
    ]
    first, last = c.hubs[0].url, c.hubs[-1].url
    every = ",".join(c.hub_urls)
    made = ", ".join(f"{t} ({p} partitions)" for t, p in c.topics)
    lines += ["", f"Topics made before the other nodes started: {made}"] if made else []
    lines += [
        "",
        "Try it (in another terminal):",
        f"  tidings tail orders --url {last}",
        f"  tidings publish orders -t order.placed -d '{{\"id\": 1}}' --url {first}",
        f"  tidings publish orders -t order.placed -d '{{\"id\": 2}}' --url {every}",
        "Kill a node: kill -9 PID (a hub node or a nats-server, from the list above);",
        "  the other nodes carry on, and a client given every URL (as above) fails over.",
        f"URLs and PIDs as JSON: {c.root / 'cluster.json'}",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def _ensure_topic(hub_url: str, name: str, partitions: int) -> None:
    """Create the topic through the hub at ``hub_url`` unless it exists (as it may with
    another partition count: it is left as it is)."""
    url = f"{hub_url}/v1/topics/{urllib.parse.quote(name, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=10):
            return
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise ClusterFailed(f"GET {url} answered {exc.code}: {exc.read()[:500]!r}") from None
    body = json.dumps({"partitions": partitions}).encode()
    req = urllib.request.Request(
        url, body, method="PUT", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30):
            pass
    except urllib.error.HTTPError as exc:
        raise ClusterFailed(f"PUT {url} answered {exc.code}: {exc.read()[:500]!r}") from None


def _say(out: TextIO, text: str) -> None:
    print(text, file=out, flush=True)


def _check_free(what: str, ports: Sequence[int]) -> None:
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # as the servers bind: a port with connections in TIME_WAIT is free
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                raise ClusterFailed(
                    f"port {port} (for a {what}) is in use on 127.0.0.1; "
                    "stop what holds it, or give other ports (--port, --nats-port)"
                ) from None


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-1500:].strip() or "(no output)"
    except FileNotFoundError:
        return "(no log)"
