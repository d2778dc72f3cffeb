"""The command line as a new user tries it from the README, against a real hub."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import time
import urllib.request
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


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=hub_env(),
    )


def test_tail_exits_promptly_with_a_backlog_behind_its_limit(hub: HubProcess) -> None:
    # The hub streams the backlog while the command closes: closing used to wait
    # out the WebSocket's 10 s close timeout behind the unread frames.
    topic = unique()
    lines = "".join(
        json.dumps({"type": "n.made", "data": {"n": i, "pad": "x" * 200}}) + "\n"
        for i in range(3000)
    )
    assert tidings(hub, "publish", topic, stdin=lines).returncode == 0
    started = time.monotonic()
    tail = tidings(hub, "tail", topic, "--from", "earliest", "--limit", "1")
    took = time.monotonic() - started
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout.count("n.made") == 1
    assert took < 7, f"tail took {took:.1f} s to exit"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "http://no-such-host.invalid:8700"])
def test_tail_of_an_unreachable_hub_fails_within_seconds(url: str) -> None:
    # It used to reconnect in silence for ever.
    out = _run("tail", "orders", "--url", url, timeout=30)
    assert out.returncode == 2
    assert "cannot reach the hub" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_url_without_a_scheme_is_taken_as_http(hub: HubProcess) -> None:
    topic = unique()
    bare = hub.base_url.removeprefix("http://")
    out = _run("publish", topic, "--type", "t.made", "--url", bare)
    assert out.returncode == 0, out.stderr
    out = _run("topics", "--json", "--url", bare)
    assert topic in [t["name"] for t in json.loads(out.stdout)]


@pytest.mark.parametrize(
    ("url", "message"),
    [("ftp://127.0.0.1:8700", "is not a hub address"), ("http://a:b:c", "is not a URL")],
)
def test_a_bad_url_is_named(url: str, message: str) -> None:
    out = _run("topics", "--url", url)
    assert out.returncode == 2
    assert message in " ".join(out.stderr.replace("│", " ").split())


def test_tail_from_an_offset(hub: HubProcess) -> None:
    topic = unique()
    lines = "".join(json.dumps({"type": "n.made", "data": i}) + "\n" for i in range(10))
    assert tidings(hub, "publish", topic, stdin=lines).returncode == 0
    # one partition: the offset needs no --partition
    tail = tidings(hub, "tail", topic, "--from", "7", "--limit", "2", "--json")
    assert tail.returncode == 0, tail.stderr
    assert [json.loads(line)["offset"] for line in tail.stdout.splitlines()] == [7, 8]

    many = unique()
    request = urllib.request.Request(
        f"{hub.base_url}/v1/topics/{many}", data=b'{"partitions": 3}', method="PUT",
        headers={"content-type": "application/json"},
    )  # fmt: skip
    urllib.request.urlopen(request, timeout=10).close()
    out = tidings(hub, "tail", many, "--from", "3")
    assert out.returncode == 2
    assert "name its partition with --partition" in out.stderr
    assert "Traceback" not in out.stderr


def test_version() -> None:
    out = _run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"tidings {importlib.metadata.version('tidings')}"


def test_piped_tail_output_keeps_each_record_on_one_line(hub: HubProcess) -> None:
    topic = unique()
    data = {"note": "a long value " * 5}
    out = tidings(hub, "publish", topic, "--type", "n.made", "--data", json.dumps(data))
    assert out.returncode == 0
    tail = tidings(hub, "tail", topic, "--from", "earliest", "--limit", "1")
    lines = tail.stdout.splitlines()
    assert len(lines) == 1 and "n.made" in lines[0], tail.stdout
