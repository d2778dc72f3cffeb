"""Real hub processes: ``python -m tidings serve`` on a free port, restartable and killable."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from natsproc import NatsServer

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hub_env() -> dict[str, str]:
    """The environment without TIDINGS_* settings, so only the arguments configure a hub."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def serve_command(
    port: int, data_dir: Path, fsync: str, extra: tuple[str, ...], host: str = "127.0.0.1"
) -> list[str]:
    return [
        sys.executable, "-m", "tidings", "serve",
        "--host", host,
        "--port", str(port),
        "--data-dir", str(data_dir),
        "--fsync", fsync,
        "--log-level", "warning",
        *extra,
    ]  # fmt: skip


class HubProcess:
    """One ``tidings serve`` process; restartable on the same data directory and port.

    ``nofile``: the process's RLIMIT_NOFILE (``ulimit -n``), one number for soft and
    hard or a (soft, hard) pair, set in the child before it runs the hub; None
    inherits the test's.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        fsync: str,
        extra: tuple[str, ...],
        nofile: int | tuple[int, int] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.fsync = fsync
        self.extra = extra
        self.nofile = nofile
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = data_dir.parent / f"{data_dir.name}.hub.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.start_timeout = START_TIMEOUT_S  # how long start() waits for /healthz

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> HubProcess:
        assert not self.running, "hub already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                serve_command(self.port, self.data_dir, self.fsync, self.extra),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=hub_env(),
                preexec_fn=None if self.nofile is None else self._limit_files,
            )
        self._wait_healthy()
        return self

    def _limit_files(self) -> None:
        assert self.nofile is not None
        soft, hard = self.nofile if isinstance(self.nofile, tuple) else (self.nofile,) * 2
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    @property
    def open_descriptors(self) -> int:
        """How many descriptors the running hub holds (from /proc)."""
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"hub exited with {self.proc.returncode} while starting:\n{self.log_text()}"
                )
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"hub not healthy after {self.start_timeout}s:\n{self.log_text()}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code (None if not running)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def kill(self) -> None:
        """kill -9: no shutdown code runs in the hub."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self, *, hard: bool = False) -> HubProcess:
        """Stop (gracefully, or kill -9 if ``hard``) and start again on the same dir and port."""
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class HubFactory:
    """Starts hubs under one directory and stops them all at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hubs: list[HubProcess] = []

    def start(
        self,
        *extra: str,
        fsync: str = "interval:5",
        data_dir: Path | None = None,
        nofile: int | tuple[int, int] | None = None,
    ) -> HubProcess:
        if data_dir is None:
            data_dir = self.root / f"hub{len(self.hubs)}"
        hub = HubProcess(data_dir, free_port(), fsync, extra, nofile)
        self.hubs.append(hub)
        return hub.start()

    def close(self) -> None:
        for hub in self.hubs:
            hub.stop()


class BackendHubs:
    """Hubs of any configuration on one backend: ``start(*args)`` as
    ``HubFactory.start``, with ``--backend`` added on NATS (one ``nats-server`` for
    the module's hubs). ``backend`` is ``"embedded"`` or ``"nats"``."""

    def __init__(self, backend: str, factory: HubFactory, server: NatsServer | None) -> None:
        self.backend = backend
        self.factory = factory
        self.server = server

    def start(self, *extra: str, fsync: str = "interval:5") -> HubProcess:
        if self.server is not None:
            extra = ("--backend", self.server.url, *extra)
        return self.factory.start(*extra, fsync=fsync)
