"""``--url`` / ``TIDINGS_URL`` with several URLs of one hub, against a real hub."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from hubapi import unique
from hubproc import HubProcess, hub_env
from nodeproxy import SilentPort


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or hub_env(),
    )


@pytest.fixture
def silent() -> Iterator[SilentPort]:
    port = SilentPort()  # held for the test: no other can be given its port
    yield port
    port.close()


def test_a_node_that_is_down_is_skipped(hub: HubProcess, silent: SilentPort) -> None:
    topic = unique()
    down = silent.url.removeprefix("http://")  # no scheme: http:// is put in front, per node
    nodes = f"{down},{hub.base_url.removeprefix('http://')}"
    out = run("publish", topic, "--type", "t.made", "--data", "1", "--url", nodes)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{topic}/0@0 ")
    env = {**hub_env(), "TIDINGS_URL": f"http://{down},{hub.base_url}"}
    tail = run("tail", topic, "--from", "earliest", "--limit", "1", "--json", env=env)
    assert tail.returncode == 0, tail.stderr
    assert '"type":"t.made"' in tail.stdout.replace(" ", "")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://a:1,,http://b:1", "is empty (a stray comma?)"),
        ("http://a:1,a:1", "names the same node"),
        ("http://a:1,ftp://b:1", "must start with http:// or https://"),
        (",", "is empty"),
    ],
)
def test_a_bad_node_list_is_named(url: str, message: str) -> None:
    out = run("topics", "--url", url)
    assert out.returncode == 2
    assert message in " ".join(out.stderr.replace("│", " ").split())
