"""Finding events from the command line: ``tidings events get`` and ``tidings trace``."""

from __future__ import annotations

import json
import subprocess
import sys
import time

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


def test_find_an_event_and_trace_its_order(hub: HubProcess) -> None:
    order = unique("o-")
    for topic, type_ in [("orders", "order.placed"), ("payments", "payment.succeeded")]:
        event = json.dumps({"type": type_, "correlationid": order})
        out = tidings(hub, "publish", topic, "--json", stdin=event + "\n")
        assert out.returncode == 0, out.stderr
        time.sleep(0.002)
    traced = tidings(hub, "trace", order, "--json")
    assert traced.returncode == 0, traced.stderr
    records = json.loads(traced.stdout)
    assert [(r["topic"], r["event"]["type"]) for r in records] == [
        ("orders", "order.placed"), ("payments", "payment.succeeded"),
    ]  # fmt: skip
    ids = [r["event"]["id"] for r in records]
    table = tidings(hub, "trace", order)
    assert table.returncode == 0, table.stderr
    assert "payment.succeeded" in table.stdout and ids[1] in table.stdout
    got = tidings(hub, "events", "get", ids[1], "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["topic"] == "payments"
    shown = tidings(hub, "events", "get", ids[0])
    assert shown.returncode == 0 and "orders/" in shown.stdout and ids[0] in shown.stdout
    missing = tidings(hub, "events", "get", "no-such-event")
    assert missing.returncode != 0 and "no-such-event" in missing.stderr
    none = tidings(hub, "trace", unique("o-"))
    assert none.returncode == 1 and "no events" in none.stderr
