"""Batch publish throughput by where a batch's events go: ``python bench/keyed_publish.py``.

In-process (no HTTP): one Hub over the embedded backend in a scratch directory, a
topic of 4 partitions, batches of 100 events of about 250 bytes, each with its own
id. Three cases: no partition key (the batch lands whole in one partition), one
key per batch (the same, through the keyed path) and a key per event (the batch
spreads over every partition, as one linked append). ``--fsync`` picks the policy.
The figures are events per second of wall time and of the process's CPU time
(every thread), over ``--seconds``, best of ``--rounds``: on a shared machine the
CPU figure is the steadier one.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.core.hub import Hub
from tidings.log.config import FsyncPolicy

BATCH = 100
PARTITIONS = 4
CONCURRENCY = 8


def batch(case: str, n: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i in range(BATCH):
        ev: dict[str, Any] = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/bench",
            "type": "order.placed",
            "data": {"order": f"ord_{n:08d}_{i:03d}", "customer": "cus_" + "x" * 120},
        }
        if case == "one key":
            ev["partitionkey"] = f"k{n % 64}"
        elif case == "key per event":
            ev["partitionkey"] = f"k{i % 64}"
        events.append(ev)
    return events


async def measure(case: str, fsync: str, seconds: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as scratch:
        hub = Hub(EmbeddedStorage(Path(scratch), FsyncPolicy.parse(fsync)))
        await hub.start()
        try:
            await hub.create_topic("bench", PARTITIONS)
            batches = [batch(case, n) for n in range(400)]
            done = 0
            deadline = time.perf_counter() + seconds

            async def worker(w: int) -> None:
                nonlocal done
                k = w
                while time.perf_counter() < deadline:
                    # Fresh ids each time round, so nothing is a duplicate.
                    events = [{**ev, "id": str(uuid.uuid4())} for ev in batches[k % 400]]
                    await hub.publish("bench", events)
                    done += len(events)
                    k += CONCURRENCY

            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
            return (
                done / (time.perf_counter() - started),
                done / (time.process_time() - cpu),
            )
        finally:
            await hub.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fsync", default="interval:5")
    args = parser.parse_args()
    for case in ("no key", "one key", "key per event"):
        runs = [asyncio.run(measure(case, args.fsync, args.seconds)) for _ in range(args.rounds)]
        wall = max(r[0] for r in runs)
        cpu = max(r[1] for r in runs)
        print(
            f"{case:>14}  {args.fsync:<11} {wall:>10,.0f} events/s  "
            f"{cpu:>10,.0f} events/CPU-s"
        )


if __name__ == "__main__":
    main()
