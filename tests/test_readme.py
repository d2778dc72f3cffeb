"""Every code block of the README runs as written, in order, against a real hub.

The blocks are read from README.md and run one after another against one hub
started as ``make run`` starts it (only on a free port instead of 8700):

- ``sh``: each command line in one bash session, ``set -e``; a line whose
  comment says "Ctrl-C" follows for ever, so it gets SIGINT after it has
  printed something. Lines starting with ``make`` are this repository's own
  commands (``make test`` is what runs this file) and are not run again.
- ``python``: a block whose first line is ``# name.py`` is written to that file
  (a module a later block imports or runs); a block that opens with
  ``# test_name.py`` is run with plain ``pytest`` in a directory of its own, with
  none of this repository's settings; any other block is run as a script.
- ``js``: in headless Chromium, as a module script of a page of the hub.
- ``json``: the auth file: a hub is started with it and its tokens are tried.

What a reader fills in from an earlier answer (the ``wh_01…`` id a command
printed, the lease a fetch answered) is filled the same way here, from the
output of the commands before it; the README's example receiver address is
replaced by a local receiver, since this machine reaches no other host.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from chromium import CHROMIUM, LAUNCH_ARGS
from hubproc import HubFactory, HubProcess, hub_env
from receivers import Receiver

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
README_URL = "http://127.0.0.1:8700"
README_RECEIVER = "https://crm.example.com/hooks"


@dataclass
class Block:
    lang: str
    code: str
    line: int  # where it starts in README.md


def blocks() -> list[Block]:
    out: list[Block] = []
    lines = README.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if fence:
            start = i + 1
            j = start
            while not lines[j].startswith("```"):
                j += 1
            out.append(Block(fence.group(1), "\n".join(lines[start:j]) + "\n", start + 1))
            i = j
        i += 1
    return out


class Reader:
    """Runs the blocks in order, keeping what a reader would have seen."""

    def __init__(self, hub: HubProcess, receiver: Receiver, workdir: Path) -> None:
        self.hub = hub
        self.receiver = receiver
        self.workdir = workdir
        self.seen = ""  # everything the commands printed so far

    def fill(self, code: str) -> str:
        """The README's addresses as this test's; placeholders from what was printed."""
        code = code.replace(README_URL, self.hub.base_url)
        code = code.replace(README_RECEIVER, self.receiver.url)
        code = code.replace(".venv/bin/", f"{BIN}/")
        if "wh_01…" in code:
            ids = re.findall(r"\bwh_[0-9a-f]{32}\b", self.seen)
            assert ids, "a block names wh_01… before any command printed a webhook id"
            code = code.replace("wh_01…", ids[-1])
        if "0.0.1.ab12cd34" in code:
            leases = re.findall(r'"lease":\s*"([^"]+)"', self.seen)
            assert leases, "a block acks a lease before any fetch answered one"
            code = code.replace("0.0.1.ab12cd34", leases[-1])
        return code

    def env(self) -> dict[str, str]:
        # the CLI's default address, 127.0.0.1:8700, is this hub
        env = {**hub_env(), "PYTHONPATH": str(self.workdir), "COLUMNS": "200"}
        return {**env, "TIDINGS_URL": self.hub.base_url}

    def sh(self, block: Block) -> None:
        for raw in block.code.replace("\\\n", " ").splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or line.startswith("make "):
                continue
            line = self.fill(line)
            follows = "Ctrl-C" in line
            proc = subprocess.Popen(
                ["bash", "-c", f"set -eo pipefail; {line}"],
                cwd=self.workdir,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=self.env(),
                start_new_session=True,
            )
            if follows:
                time.sleep(4)  # long enough to print what is there, then as a reader: Ctrl-C
                os.killpg(proc.pid, signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
                raise AssertionError(f"README.md:{block.line}: {line!r} did not finish") from None
            where = f"README.md:{block.line}: {line!r}"
            if follows:
                assert (out + err).strip(), f"{where} printed nothing before Ctrl-C"
                assert "Traceback" not in err, f"{where}: {err}"
                assert '"level": "error"' not in err, f"{where}: {err}"
            else:
                assert proc.returncode == 0, f"{where} failed ({proc.returncode}): {err}{out}"
            self.seen += out

    def python(self, block: Block) -> None:
        code = self.fill(block.code)
        first = code.splitlines()[0]
        named = re.match(r"^# (\w+\.py)\b", first)
        if named and named.group(1).startswith("test_"):
            alone = self.workdir / "pytest-run"
            alone.mkdir(exist_ok=True)
            (alone / named.group(1)).write_text(code)
            out = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "--rootdir", str(alone), named.group(1)],
                cwd=alone, capture_output=True, text=True, timeout=120, env=self.env(),
            )  # fmt: skip
            assert out.returncode == 0, f"README.md:{block.line}: pytest failed:\n{out.stdout}"
            assert " passed" in out.stdout
            return
        if named:
            (self.workdir / named.group(1)).write_text(code)
            return
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=self.workdir, capture_output=True, text=True, timeout=60, env=self.env(),
        )  # fmt: skip
        assert out.returncode == 0, f"README.md:{block.line}: failed:\n{out.stderr}"
        self.seen += out.stdout


async def test_every_block_runs_as_written(
    hub_factory: HubFactory, receiver: Receiver, tmp_path: Path
) -> None:
    # make run, and a receiver on this machine as the CRM the README posts to
    hub = hub_factory.start("--webhook-allow-net", "127.0.0.0/8")
    reader = Reader(hub, receiver, tmp_path)
    ran: list[str] = []
    for block in blocks():
        if block.lang == "sh":
            await asyncio.to_thread(reader.sh, block)
        elif block.lang == "python":
            if "webhooks.verify(" in block.code:
                await run_verify_fragment(reader, block)
            else:
                await asyncio.to_thread(reader.python, block)
        elif block.lang == "js":
            await asyncio.to_thread(run_js, hub, block)
        elif block.lang == "json":
            await asyncio.to_thread(run_auth_file, hub_factory, block)
        elif block.lang:
            raise AssertionError(f"README.md:{block.line}: no way to run a {block.lang} block")
        else:
            continue  # a transcript or a diagram, not code
        ran.append(f"{block.lang}@{block.line}")
    assert len(ran) >= 10, ran


async def run_verify_fragment(reader: Reader, block: Block) -> None:
    """The receiver's check, with the names it uses bound to a delivery the hub made."""
    secrets = re.findall(r"\bwhsec_[A-Za-z0-9+/=]+", reader.seen)
    assert secrets, "the verify fragment comes before a webhook was created"
    for _ in range(100):
        if reader.receiver.requests:
            break
        await asyncio.sleep(0.1)
    delivery = reader.receiver.requests[-1]
    names: dict[str, object] = {
        "secret": secrets[-1],
        "request": delivery,
        "body": delivery.body,
    }
    exec(compile(block.code, f"README.md:{block.line}", "exec"), names)
    event = names["event"]
    assert isinstance(event, dict) and event["type"].startswith("order.")


def run_js(hub: HubProcess, block: Block) -> None:
    """The browser snippet as a module script of a page the hub serves."""
    from playwright.sync_api import sync_playwright

    code = block.code.replace(README_URL, hub.base_url)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
            page.goto(hub.base_url + "/static/tidings.js")
            page.add_script_tag(content=code + "\nwindow.__done = true;\n", type="module")
            page.wait_for_function("window.__done === true", timeout=15_000)
            assert not errors, errors
        finally:
            browser.close()
    # what it published is in the topic
    url = f"{hub.base_url}/v1/topics/orders/events?from=earliest&types=order.viewed"
    with urllib.request.urlopen(url, timeout=10) as r:
        records = json.load(r)["records"]
    assert any(rec["event"]["data"] == {"sku": "sku-1"} for rec in records)


def run_auth_file(factory: HubFactory, block: Block) -> None:
    """The auth file as written: a hub serves with it, and its tokens do what it says."""
    path = factory.root / "auth.json"
    path.write_text(block.code)
    hub = factory.start("--auth-file", str(path))
    tokens = {t["name"]: t["token"] for t in json.loads(block.code)["tokens"]}

    def status(method: str, path: str, token: str, body: bytes | None = None) -> int:
        req = urllib.request.Request(
            hub.base_url + path, data=body, method=method,
            headers={"authorization": f"Bearer {token}",
                     "content-type": "application/cloudevents+json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    event = b'{"type": "order.placed"}'
    assert status("POST", "/v1/topics/orders/events", tokens["shop"], event) == 202
    assert status("POST", "/v1/topics/payments/events", tokens["shop"], event) == 403
    assert status("GET", "/v1/webhooks", tokens["shop"]) == 403
    assert status("GET", "/v1/webhooks", tokens["ops"]) == 200


def test_the_blocks_are_found() -> None:
    langs = [b.lang for b in blocks()]
    assert {"sh", "python", "js", "json"} <= set(langs), langs
