"""The HTTP ingest benchmark's pieces: its events, its ceiling, and wrk's exact counts."""

from __future__ import annotations

import shutil
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from tidings.benchmarks.http_ingest import BATCH, build_events, ceiling_app
from tidings.benchmarks.http_load import TAG_LEN, TAG_MARK, Wrk
from tidings.benchmarks.http_report import EVENT_BYTES
from tidings.benchmarks.processes import free_port, serve_process


def test_keyed_events_are_exactly_256_bytes_once_tagged_each_with_its_own_key() -> None:
    events = build_events(1000, keyed=True)
    tagged = [e.replace(TAG_MARK, b"x" * TAG_LEN) for e in events]
    assert all(len(e) == EVENT_BYTES for e in tagged)
    parsed = [orjson.loads(e) for e in tagged]
    assert len({p["partitionkey"] for p in parsed}) == 1000
    assert len({p["id"] for p in parsed}) == 1000
    assert all(e.count(TAG_MARK) == 1 for e in events)


def test_unkeyed_events_carry_no_id_and_no_key() -> None:
    for e in build_events(50):
        assert len(e) == EVENT_BYTES
        assert not {"id", "partitionkey"} & set(orjson.loads(e))


async def test_the_ceiling_answers_each_events_id_partition_and_offset() -> None:
    body = b"[" + b",".join(build_events(3, keyed=True)) + b"]"
    chunks = [{"type": "http.request", "body": body[:100], "more_body": True},
              {"type": "http.request", "body": body[100:], "more_body": False}]  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await ceiling_app({"type": "http", "method": "POST", "path": "/x"}, receive, send)
    assert sent[0]["status"] == 202
    answer = orjson.loads(sent[1]["body"])
    ids = [orjson.loads(e)["id"] for e in build_events(3, keyed=True)]
    assert answer == {
        "events": [{"id": i, "partition": 0, "offset": n} for n, i in enumerate(ids)]
    }


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_counts_2xx_answers_and_tags_every_request(tmp_path: Path) -> None:
    # A real hub: keyed requests with ids unique per request are all stored, none
    # deduplicated, and the 2xx count is exactly what the hub answered.
    port = free_port()
    argv = [sys.executable, "-m", "tidings", "serve", "--port", str(port),
            "--data-dir", str(tmp_path / "data"), "--log-level", "warning"]  # fmt: skip
    body = b"[" + b",".join(build_events(10, keyed=True)) + b"]"
    wrk = Wrk(shutil.which("wrk") or "wrk", 2, tmp_path)
    with serve_process("hub", argv, port, tmp_path) as url:
        load = wrk.run(f"{url}/v1/topics/t/events", body, BATCH, 10, 4, 1)
        time.sleep(0.5)  # requests wrk cut at its stop are stored by now, or never
        with urllib.request.urlopen(f"{url}/v1/topics/t", timeout=10) as r:
            stored = orjson.loads(r.read())["events"]
        bad = wrk.run(f"{url}/v1/topics/t/events", b"{", BATCH, 1, 2, 1)
    assert load.ok > 0 and load.errors == 0
    cut = stored - load.ok * 10
    assert 0 <= cut <= 4 * 10 and cut % 10 == 0
    assert bad.ok == 0 and bad.errors > 0  # 400s are failures, not answers
