"""A real hub in a subprocess, for the client and App tests (imported by their conftests).

One hub serves the whole session (starting one costs about a second); each test
works in topics of its own, named by the ``topic`` fixture.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tidings.client import AsyncClient

# Until ``tidings serve`` exists: the same app under uvicorn, started by hand.
_FALLBACK = """
import sys
import uvicorn
from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.core.hub import Hub
from tidings.log.config import FsyncPolicy
from tidings.server.app import create_app
from tidings.server.auth import Auth

host, port, data_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
auth = Auth.load(sys.argv[4] if len(sys.argv) > 4 else None, None)
hub = Hub(EmbeddedStorage(data_dir, FsyncPolicy.parse("interval:5")))
uvicorn.run(create_app(hub, auth), host=host, port=port, loop="uvloop", log_level="warning")
"""

TOKENS = {
    "tokens": [
        {"name": "shop", "token": "shop-secret", "publish": ["orders*"], "subscribe": ["*"]},
        {
            # A service that runs an App: it makes its groups (manage) and publishes
            # its results and its dead letters ({topic}.dlq) on the orders topics.
            "name": "payments",
            "token": "payments-secret",
            "publish": ["orders*"],
            "subscribe": ["orders*"],
            "manage": ["orders*"],
        },
        {"name": "ops", "token": "ops-secret", "admin": True},
    ]
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@functools.cache
def _has_serve_command() -> bool:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tidings", "serve", "--help"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _hub_command(port: int, data_dir: Path, auth_file: Path | None) -> list[str]:
    if not _has_serve_command():
        auth = [] if auth_file is None else [str(auth_file)]
        return [sys.executable, "-c", _FALLBACK, "127.0.0.1", str(port), str(data_dir), *auth]
    command = [
        sys.executable,
        "-m",
        "tidings",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--fsync",
        "interval:5",
        "--log-level",
        "warning",
    ]
    return command if auth_file is None else [*command, "--auth-file", str(auth_file)]


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the hub exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the hub did not answer /healthz within 30 s:\n{log.read_text()}")


@contextlib.contextmanager
def _running_hub(base: Path, auth_file: Path | None = None) -> Iterator[str]:
    port = _free_port()
    log = base / "hub.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            _hub_command(port, base / "data", auth_file),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def hub_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of an open hub on a fresh data directory, stopped after the session."""
    with _running_hub(tmp_path_factory.mktemp("hub")) as url:
        yield url


@pytest.fixture(scope="session")
def secured_hub_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A hub that wants the bearer tokens of ``TOKENS``."""
    base = tmp_path_factory.mktemp("secured-hub")
    auth_file = base / "tokens.json"
    auth_file.write_text(json.dumps(TOKENS))
    with _running_hub(base, auth_file) as url:
        yield url


@pytest.fixture
async def hub(hub_url: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(hub_url, timeout=10) as client:
        yield client


@pytest.fixture
def topic() -> str:
    """A topic name no other test uses."""
    return "t-" + uuid.uuid4().hex[:12]
