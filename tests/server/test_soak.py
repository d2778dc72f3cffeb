"""A short hostile soak (see ``soak``): the hub stays bounded and keeps publishing.

``make soak`` runs the same for ten minutes and prints the figures; this one runs
about half a minute in ``make test`` and checks what must hold however long it
runs: every ordinary publish is stored, every attack gets a clear refusal, and
the hub's descriptors and memory stay bounded.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from soak import free_port, soak, start_hub

NOFILE = 512
MAX_TOPICS = 150


@pytest.mark.timeout(240)
async def test_a_short_hostile_soak_keeps_the_hub_bounded(tmp_path: Path) -> None:
    port = free_port()
    proc = start_hub(
        port, tmp_path / "data", ["--max-topics", str(MAX_TOPICS)], nofile=NOFILE
    )
    try:
        result = await soak(
            f"http://127.0.0.1:{port}", port, proc.pid, 25.0,
            rate=50.0, slow=60, topic_count=MAX_TOPICS + 50,
        )  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    log = (tmp_path / "hub.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]

    publish = result["publish"]
    assert publish["statuses"] == {"202": publish["sent"]}, publish
    attacks = result["attacks"]
    # slow heads are cut off with 408, and the hub never refused a connection
    assert attacks["slow_clients"].get("answered 408", 0) > 0, attacks
    assert "connect refused" not in attacks["slow_clients"], attacks
    # an endless header is a 431, every time
    assert set(attacks["big_headers"]) == {"answered 431"}, attacks
    # big bodies: too large (413), or past the bytes in flight (503)
    assert set(attacks["big_bodies"]) <= {"413", "503"}, attacks
    # topics up to the limit, then 409 naming it
    assert attacks["topics"]["201"] == MAX_TOPICS - 1  # soak.orders is one of them
    assert set(attacks["topics"]) == {"201", "409"}, attacks
    # 100,000 type patterns: refused on the WebSocket and on a group
    wide = attacks["wide_patterns"]
    assert not {k for k in wide if k.startswith("ws subscribed")}, wide
    assert not {k for k in wide if k.startswith("group 2")}, wide
    hub = result["hub"]
    assert hub["fds"]["max"] < NOFILE, hub
    assert hub["rss"]["max"] - hub["rss"]["start"] < 300 << 20, hub
