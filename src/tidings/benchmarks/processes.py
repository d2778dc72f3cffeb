"""Servers the benchmarks start as processes of their own, on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

# How long a server may take to start and to stop.
START_S = 30.0
STOP_S = 15.0


class BenchmarkFailed(Exception):
    """A server did not start, a load generator failed, or a figure cannot be trusted."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def serve_process(name: str, argv: list[str], port: int, logs: Path) -> Iterator[str]:
    """Start ``argv`` as a process serving on ``port``, yield its URL once it answers, stop it."""
    with server_process(name, argv, port, logs) as (url, _):
        yield url


@contextlib.contextmanager
def server_process(name: str, argv: list[str], port: int, logs: Path) -> Iterator[tuple[str, int]]:
    """:func:`serve_process`, yielding the process id beside the URL."""
    url = f"http://127.0.0.1:{port}"
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as log:
        # Its own session: a Ctrl-C here reaches us, and we stop it in order.
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    try:
        deadline = time.perf_counter() + START_S
        while True:
            if proc.poll() is not None:
                raise BenchmarkFailed(f"{name} exited with {proc.returncode}: {_tail(log_path)}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(url + "/healthz", timeout=1) as r,
            ):
                if r.status == 200:
                    break
            if time.perf_counter() > deadline:
                raise BenchmarkFailed(f"{name} did not answer within {START_S:g} s")
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_S)


def peak_rss_kib(pid: int | None = None) -> int:
    """A process's resident-set high-water mark (``VmHWM`` in /proc/PID/status), in KiB;
    this process's by default.

    Not ``ru_maxrss``: Linux carries the high-water mark of the image a process
    replaced by ``exec`` into it, so a child that a 300 MB parent started (by
    fork or vfork, then exec) reports at least 300 MB. ``VmHWM`` starts anew
    with the new image.
    """
    pid = os.getpid() if pid is None else pid
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise BenchmarkFailed(f"no VmHWM in /proc/{pid}/status")


def run_process(name: str, argv: list[str], logs: Path, timeout_s: float) -> None:
    """Run ``argv`` to its end (its output to ``logs/NAME.log``); fail on an error status."""
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as log:
        try:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            raise BenchmarkFailed(f"{name} ran over {timeout_s:g} s: {_tail(log_path)}") from None
    if proc.returncode != 0:
        raise BenchmarkFailed(f"{name} exited with {proc.returncode}: {_tail(log_path)}")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:].strip() or "(no output)"


def scratch_dir(prefix: str, under: Path | None) -> Path:
    """A new directory for one run, in the system temp dir or inside ``under``."""
    if under is not None:
        under.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=under))
