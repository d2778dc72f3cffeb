"""``tidings views``: list, get, keys and rebuild, against a real hub."""

from __future__ import annotations

import json

import requests
from hubapi import unique
from hubproc import HubProcess
from test_lookup_cli import tidings
from viewhelp import commit_events


def test_list_get_keys_and_rebuild_a_view(hub: HubProcess) -> None:
    name, topic = unique("v"), unique()
    base = hub.base_url
    r = requests.put(
        f"{base}/v1/views/{name}", json={"kind": "view", "inputs": [topic], "app": "cli"}
    )
    assert r.status_code == 201, r.text
    values = {f"sku-{i}": {"n": i} for i in range(1203)} | {"other": "x"}
    body = {"generation": 0, "expect": 0, "events": commit_events(name, 0, 0, values, {})}
    r = requests.post(f"{base}/v1/views/{name}/commit", json=body, timeout=60)
    assert r.status_code == 200, r.text
    listed = tidings(hub, "views", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert name in [v["name"] for v in json.loads(listed.stdout)]
    table = tidings(hub, "views", "list")
    assert name in table.stdout and "cli" in table.stdout
    got = tidings(hub, "views", "get", name, "sku-7")
    assert got.returncode == 0 and json.loads(got.stdout) == {"n": 7}
    missing = tidings(hub, "views", "get", name, "nope")
    assert missing.returncode == 2 and "no key 'nope'" in missing.stderr
    keys = tidings(hub, "views", "keys", name, "--prefix", "sku-", "--json")
    assert keys.returncode == 0, keys.stderr
    assert len(json.loads(keys.stdout)) == 1203  # two pages and a bit
    first = tidings(hub, "views", "keys", name, "--limit", "2")
    assert first.stdout.splitlines() == ['other  "x"', 'sku-0  {"n":0}']
    rebuilt = tidings(hub, "views", "rebuild", name)
    assert rebuilt.returncode == 0 and "generation 1" in rebuilt.stdout
    assert json.loads(tidings(hub, "views", "keys", name, "--json").stdout) == []
    # A new layout only by a rebuild that asks for it.
    r = requests.put(
        f"{base}/v1/views/{name}",
        json={"kind": "view", "inputs": [topic], "app": "cli", "partitioned": True},
    )
    assert r.status_code == 409 and f"views rebuild {name} --partitioned" in r.json()["detail"]
    laid = tidings(hub, "views", "rebuild", name, "--partitioned", "--json")
    assert laid.returncode == 0, laid.stderr
    info = json.loads(laid.stdout)
    assert (info["partitioned"], info["tasks"], info["generation"]) == (True, 1, 2)
    kept = tidings(hub, "views", "rebuild", name, "--json")
    assert json.loads(kept.stdout)["partitioned"] is True
    back = tidings(hub, "views", "rebuild", name, "--no-partitioned", "--json")
    assert json.loads(back.stdout)["partitioned"] is False
