"""A batch that takes longer than its leases last is not handled past them."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from tidings import App
from tidings.testing import TestHub


async def test_a_slow_batch_hands_back_what_it_cannot_start_in_time(tmp_path: Path) -> None:
    app = App("slow", hub=f"embedded:{tmp_path}", fetch_max=20, poll_wait=0.2,
              idempotency_window=0)  # fmt: skip
    runs: Counter[str] = Counter()

    # 20 events a batch, 0.15 s each: 3 s, against leases of 1 s.
    @app.on("jobs", ack_wait=1.0, retries=10)
    async def work(data: dict[str, Any]) -> None:
        runs[data["n"]] += 1
        await asyncio.sleep(0.15)

    async with TestHub(app, hub=f"embedded:{tmp_path}") as hub:
        for n in range(20):
            await hub.publish("jobs", "job.queued", {"n": str(n)})
        await hub.drain(timeout=60)
    assert sorted(runs) == sorted(str(n) for n in range(20))
    assert [n for n, k in runs.items() if k > 1] == []  # none ran after its lease ran out
