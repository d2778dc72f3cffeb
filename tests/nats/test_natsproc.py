"""The nats-server processes of the tests do not outlive a test run killed with
SIGKILL (no teardown runs then)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import time
from pathlib import Path
from tidings.cluster.natsproc import NatsServer
server = NatsServer(Path({root!r}), "orphan").start()
server.wait_ready()
print(server.proc.pid, flush=True)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.timeout(60)
def test_a_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    script = SCRIPT.format(root=str(tmp_path))
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    pid = 0
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert alive(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 20
        while alive(pid):
            assert time.monotonic() < deadline, f"nats-server {pid} outlived its parent"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait(timeout=10)
        if parent.stdout is not None:
            parent.stdout.close()
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
