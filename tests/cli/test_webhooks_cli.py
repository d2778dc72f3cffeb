"""``tidings webhooks`` against a real hub and a real receiver, as a user types it."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hubapi import publish, unique
from hubproc import HubFactory, HubProcess, hub_env, serve_command
from receivers import Receiver, always
from standardwebhooks import Webhook


def tidings(hub: HubProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args, "--url", hub.base_url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**hub_env(), "COLUMNS": "250"},  # a wide terminal: tables not cut
    )


async def cli(hub: HubProcess, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    # In a thread: the receiver answers on this test's event loop meanwhile.
    out = await asyncio.to_thread(tidings, hub, *args)
    if ok:
        assert out.returncode == 0, out.stderr
    return out


async def cli_json(hub: HubProcess, *args: str) -> Any:
    return json.loads((await cli(hub, *args, "--json")).stdout)


@pytest.fixture(scope="module")
def whub(module_hub_factory: HubFactory) -> HubProcess:
    return module_hub_factory.start(
        "--webhook-allow-net", "127.0.0.0/8", "--webhook-retry-schedule", "0,0.1"
    )


async def test_a_webhooks_session(
    whub: HubProcess, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    topic = unique()
    created = await cli_json(whub, "webhooks", "create", receiver.url, "--topic", topic,
                             "--description", "orders to the CRM")  # fmt: skip
    wh, secret = created["id"], created["secret"]
    assert wh in [w["id"] for w in await cli_json(whub, "webhooks", "list")]
    table = await cli(whub, "webhooks", "list")
    assert wh in table.stdout and "healthy" in table.stdout

    # a failing receiver: both attempts fail, the event is dead-lettered
    receiver.answer = always(500)
    sent = await publish(http, whub.base_url, topic, {"type": "order.placed"})
    for _ in range(100):
        dead = (await cli_json(whub, "webhooks", "dead-letters", wh))["dead_letters"]
        if dead:
            break
        await asyncio.sleep(0.1)
    assert [d["msg_id"] for d in dead] == [sent[0]["id"]]
    failed = await cli_json(whub, "webhooks", "attempts", wh, "--status", "failed")
    assert [a["status"] for a in failed["attempts"]] == [500, 500]
    shown = await cli(whub, "webhooks", "attempts", wh)
    assert "failed" in shown.stdout and f"{topic}/0@0" in shown.stdout

    # fixed: send the dead letter again
    receiver.answer = always(200)
    await cli(whub, "webhooks", "dead-letters", wh, "--replay")
    await receiver.wait_for(lambda: len(receiver.requests) >= 3)
    last = receiver.requests[-1]
    assert Webhook(secret).verify(last.body, last.headers)["id"] == sent[0]["id"]

    # replay everything since the epoch: the event comes once more
    await cli(whub, "webhooks", "replay", wh, "--since", "0")
    await receiver.wait_for(lambda: len(receiver.requests) >= 4)

    tested = await cli_json(whub, "webhooks", "test", wh)
    assert tested["attempt"]["outcome"] == "success"

    rotated = await cli_json(whub, "webhooks", "rotate-secret", wh, "--grace", "0")
    assert rotated["secret"] != secret
    disabled = await cli_json(whub, "webhooks", "update", wh, "--disable")
    assert disabled["state"] == "disabled" and not disabled["enabled"]
    enabled = await cli_json(whub, "webhooks", "update", wh, "--enable")
    assert enabled["state"] == "healthy"
    shown = await cli_json(whub, "webhooks", "show", wh)
    assert shown["description"] == "orders to the CRM" and shown["lag"] == {topic: 0}
    await cli(whub, "webhooks", "delete", wh)
    gone = await cli(whub, "webhooks", "show", wh, ok=False)
    assert gone.returncode == 2 and "does not exist" in gone.stderr


async def test_bad_input_is_a_clear_error(whub: HubProcess) -> None:
    out = await cli(whub, "webhooks", "create", "ftp://example.com/x", "--topic", "t", ok=False)
    assert out.returncode == 2 and "http or https" in out.stderr
    out = await cli(whub, "webhooks", "create", "http://127.0.0.1:9/x", "--topic", "t",
                    "--ordering", "fifo", ok=False)  # fmt: skip
    assert out.returncode == 2 and "ordering" in out.stderr
    out = await cli(whub, "webhooks", "replay", "wh_nope", "--since", "0", ok=False)
    assert out.returncode == 2 and "wh_nope" in out.stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--webhook-retry-schedule", "0,soon", "not a number of seconds"),
        ("--webhook-retry-schedule", "-1", "0 to 604800"),
        ("--webhook-allow-net", "10.0.0.0/33", "CIDR"),
        ("--webhook-timeout", "0", "webhook-timeout"),
    ],
)
def test_serve_refuses_bad_webhook_settings(
    tmp_path: Path, flag: str, value: str, message: str
) -> None:
    out = subprocess.run(
        serve_command(1, tmp_path / "data", "interval:5", (flag, value)),
        capture_output=True,
        text=True,
        timeout=60,
        env=hub_env(),
    )
    assert out.returncode == 2, out.stderr
    assert message in out.stderr


async def test_human_output_has_no_reprs_nor_epoch_milliseconds(
    whub: HubProcess, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    topics = [unique(), unique()]
    created = await cli(whub, "webhooks", "create", receiver.url, "--topic", topics[0],
                        "--topic", topics[1], "--type", "order.*")  # fmt: skip
    text = created.stdout
    assert "['" not in text and "{'" not in text, text
    assert f"topics: {topics[0]}, {topics[1]}" in text
    assert "types: order.*" in text
    created_line = next(line for line in text.splitlines() if line.startswith("created:"))
    # a local time, not 1796422373674
    assert re.fullmatch(r"created: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", created_line), created_line
    wh = next(line for line in text.splitlines() if line.startswith("id:")).split()[1]

    receiver.answer = always(503, body=b"upstream is down for maintenance")
    await publish(http, whub.base_url, topics[0], {"type": "order.placed"})
    for _ in range(100):
        page = await cli_json(whub, "webhooks", "attempts", wh)
        if page["attempts"]:
            break
        await asyncio.sleep(0.1)
    table = (await cli(whub, "webhooks", "attempts", wh)).stdout
    assert "answer" in table and "upstream is down" in table, table
    shown = (await cli(whub, "webhooks", "show", wh)).stdout
    assert f"lag: {topics[0]}=" in shown and "['" not in shown
    await cli(whub, "webhooks", "delete", wh)


def test_the_id_column_is_never_cut_on_a_narrow_terminal(whub: HubProcess) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tidings", "webhooks", "create", "https://93.184.215.14/h",
         "--topic", unique(), "--json", "--url", whub.base_url],
        capture_output=True, text=True, timeout=60, env=hub_env(),
    )  # fmt: skip
    wh = json.loads(out.stdout)["id"]
    narrow = subprocess.run(
        [sys.executable, "-m", "tidings", "webhooks", "list", "--url", whub.base_url],
        capture_output=True, text=True, timeout=60, env={**hub_env(), "COLUMNS": "80"},
    )  # fmt: skip
    assert wh in narrow.stdout
    tidings(whub, "webhooks", "delete", wh)
