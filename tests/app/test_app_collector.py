"""Who tunes the process's garbage collector for views (``settle_collector``): a
process tidings owns (``tidings run``, ``App.run()``), never an App started with
``start()`` as a library or under the ``TestHub`` harness. Each case runs in a
process of its own, as the collector is the process's."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)

_SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, json, sys
    from tidings import App

    mode, hub = sys.argv[1], sys.argv[2]
    app = App("gcapp", hub=hub, register_schemas=False)

    @app.view("counts", topics=["clicks"], key=lambda e: e.get("partitionkey"))
    def counts(current, event):
        return (current or 0) + 1

    async def stop_once_settled():
        for _ in range(1000):  # bounded: 10 s
            if gc.get_freeze_count():
                break
            await asyncio.sleep(0.01)
        await app.stop()

    async def main():
        before = gc.get_threshold()
        if mode == "start":
            await app.start()
            await asyncio.sleep(0.2)
            after = gc.get_threshold(), gc.get_freeze_count()
            await app.stop()
        elif mode == "harness":
            from tidings.testing import TestHub
            async with TestHub(app) as hub:
                await hub.publish("clicks", type="click", data={}, key="home")
                await hub.drain()
                after = gc.get_threshold(), gc.get_freeze_count()
        else:
            stopper = asyncio.ensure_future(stop_once_settled())
            await app.run()
            await stopper
            after = gc.get_threshold(), gc.get_freeze_count()
        print(json.dumps({"before": before, "after": after[0], "frozen": after[1]}))

    asyncio.run(main())
    """
)


def run(mode: str, data_dir: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode, f"embedded:{data_dir}"],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return got


@pytest.mark.parametrize("mode", ["start", "harness"])
def test_an_app_started_as_a_library_leaves_the_collector_alone(
    mode: str, tmp_path: Path
) -> None:
    got = run(mode, tmp_path)
    assert got["after"] == got["before"] and got["frozen"] == 0


def test_an_app_run_as_the_process_entry_settles_the_collector(tmp_path: Path) -> None:
    got = run("run", tmp_path)
    assert got["frozen"] > 0
    assert got["after"][0] >= 50_000 and got["after"] != got["before"]
