"""The command line as a new user tries it from the README, against a real hub."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hubapi import unique
from hubproc import HubProcess, hub_env


def tidings(
    hub: HubProcess, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args, "--url", hub.base_url],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=hub_env(),
    )


def test_publish_one_then_tail_it(hub: HubProcess) -> None:
    topic = unique()
    out = tidings(
        hub,
        "publish",
        topic,
        "--type",
        "order.placed",
        "--data",
        '{"order_id": "o-2"}',
        "--key",
        "o-2",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{topic}/0@0 ")

    tail = tidings(hub, "tail", topic, "--from", "earliest", "--limit", "1")
    assert tail.returncode == 0, tail.stderr
    assert "order.placed" in tail.stdout and '{"order_id":"o-2"}' in tail.stdout

    tail = tidings(hub, "tail", topic, "--from", "earliest", "--limit", "1", "--json")
    record = json.loads(tail.stdout)
    assert record["offset"] == 0
    assert record["event"]["partitionkey"] == "o-2"
    assert record["event"]["data"] == {"order_id": "o-2"}


def test_publish_json_lines_from_stdin(hub: HubProcess) -> None:
    topic = unique()
    lines = "".join(
        json.dumps({"type": "order.paid", "data": {"n": i}}) + "\n" for i in range(1200)
    )
    out = tidings(hub, "publish", topic, "--json", stdin=lines)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"topic": topic, "published": 1200}
    topics = json.loads(tidings(hub, "topics", "--json").stdout)
    [info] = [t for t in topics if t["name"] == topic]
    assert info["events"] == 1200


def test_replay_copies_a_range(hub: HubProcess) -> None:
    source, target = unique(), unique()
    lines = "".join(json.dumps({"type": f"t.{i % 2}", "id": f"e{i}"}) + "\n" for i in range(10))
    assert tidings(hub, "publish", source, stdin=lines).returncode == 0
    out = tidings(hub, "replay", source, "--to", target, "--type", "t.1", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"from": source, "to": target, "copied": 5}
    tail = tidings(hub, "tail", target, "--from", "earliest", "--limit", "5", "--json")
    ids = [json.loads(line)["event"]["id"] for line in tail.stdout.splitlines()]
    assert ids == ["e1", "e3", "e5", "e7", "e9"]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["publish", "x", "--type", "t", "--data", "{bad"], None, "--data is not JSON"),
        (["publish", "x"], "not json\n", "stdin line 1 is not JSON"),
        (["publish", "x"], "[1, 2]\n", "stdin line 1 is not a JSON object"),
        (["publish", "bad name!", "--type", "t"], None, "topic name"),
    ],
)
def test_bad_input_is_a_clear_error(
    hub: HubProcess, args: list[str], stdin: str | None, message: str
) -> None:
    out = tidings(hub, *args, stdin=stdin)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_an_unreachable_hub_is_a_clear_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tidings", "topics", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        env=hub_env(),
    )
    assert out.returncode == 2
    assert "cannot reach the hub" in out.stderr


def test_serve_refuses_a_bad_fsync_policy(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tidings",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--fsync",
            "sometimes",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=hub_env(),
    )
    assert out.returncode == 2
    assert "fsync policy 'sometimes'" in out.stderr


def test_serve_refuses_a_bad_allowed_origin(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "tidings", "serve", "--data-dir", str(tmp_path)]
    out = subprocess.run(
        [*argv, "--allowed-origin", "shop.example"],
        capture_output=True,
        text=True,
        timeout=60,
        env=hub_env(),
    )
    assert out.returncode == 2
    assert "--allowed-origin 'shop.example'" in out.stderr
