"""The window operator's own cost per event: ``python bench/streams_operator.py``.

By default a 1-minute tumbling count (grace 10 s; ``--window`` and ``--agg`` pick
others) over 1,000 keys, 1,000,000 events (``time``
with microseconds, as the hub fills it in), 2% out of order within the grace and
0.1% beyond it. The events are stored as JSON, as the log holds them; each batch
of ``--batch`` is parsed with orjson just before it is processed, as a read hands
it over, and only the processing is timed. Printed beside its ceiling from the
same run: the bare loop that counts the same freshly parsed events per key in a
dict with the same key function (no time, no windows). The operator drains every
``--drain`` events, as a runtime does at each commit. Best of ``--rounds``, CPU
time of this process.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson

from tidings.events.envelope import rfc3339_ms
from tidings.streams import (
    Aggregation,
    Count,
    Hopping,
    Mean,
    Session,
    Sliding,
    Sum,
    Tumbling,
    Window,
    window_operator,
)
from tidings.streams.eventview import EventView

T0 = 1_796_464_800_000
WINDOWS: dict[str, Callable[[], Window]] = {
    "tumbling": lambda: Tumbling("1m", grace="10s"),
    "hopping": lambda: Hopping("5m", every="1m", grace="10s"),
    "session": lambda: Session("30s", grace="10s"),
    "sliding": lambda: Sliding("5s", grace="1s"),
}
AGGS: dict[str, Callable[[], Aggregation]] = {
    "count": Count,
    "sum": lambda: Sum(lambda e: e.data["total"]),
    "mean": lambda: Mean(lambda e: e.data["total"]),
}
Batch = list[tuple[int, bytes]]  # (appended_ms, the event as JSON)


def make_events(n: int, keys: int, batch: int, seed: int = 7) -> list[Batch]:
    rnd = random.Random(seed)
    batches: list[Batch] = []
    for i in range(n):
        appended = T0 + i // 2  # 2,000 events a second of append time
        r = rnd.random()
        if r < 0.001:
            t_ms = appended - rnd.randint(75_000, 180_000)  # beyond the grace: late
        elif r < 0.021:
            t_ms = appended - rnd.randint(1_000, 9_000)  # out of order, within the grace
        else:
            t_ms = appended - rnd.randint(0, 20)
        text = rfc3339_ms(t_ms)[:-1] + f"{rnd.randint(0, 999):03d}Z"
        ev = {
            "specversion": "1.0", "id": f"e{i}", "source": "/topics/orders",
            "type": "order.placed", "time": text, "partitionkey": f"sku-{i % keys}",
            "data": {"sku": f"sku-{i % keys}", "total": 5},
        }
        if i % batch == 0:
            batches.append([])
        batches[-1].append((appended, orjson.dumps(ev)))
    return batches


def parse(batch: Batch, first: int) -> list[tuple[int, int, int, int, dict[str, Any]]]:
    return [(0, 0, first + j, a, orjson.loads(raw)) for j, (a, raw) in enumerate(batch)]


def run_operator(
    batches: list[Batch], drain: int, window: str = "tumbling", agg: str = "count"
) -> tuple[float, int, int]:
    op = window_operator(
        "per_minute", ["orders"], WINDOWS[window](), lambda e: e.data["sku"], AGGS[agg]()
    )
    results = late = since = offset = 0
    took = 0.0
    for batch in batches:
        recs = parse(batch, offset)
        offset += len(recs)
        start = time.process_time()
        op.process_all(recs)
        op.advance(recs[-1][3])
        since += len(recs)
        if since >= drain:
            since = 0
            out = op.drain()
            results += len(out.results)
            late += len(out.late)
        took += time.process_time() - start
    out = op.drain()
    return took, results + len(out.results), late + len(out.late)


def run_ceiling(batches: list[Batch]) -> float:
    counts: defaultdict[str, int] = defaultdict(int)
    key: Callable[[EventView], str] = lambda e: e.data["sku"]  # noqa: E731 - the view's key
    took = 0.0
    offset = 0
    for batch in batches:
        recs = parse(batch, offset)
        offset += len(recs)
        start = time.process_time()
        for rec in recs:
            counts[key(EventView(rec[4]))] += 1
        took += time.process_time() - start
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--drain", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", choices=sorted(WINDOWS), default="tumbling")
    parser.add_argument("--agg", choices=sorted(AGGS), default="count")
    args = parser.parse_args()
    batches = make_events(args.events, args.keys, args.batch)
    best = ceiling = float("inf")
    for _ in range(args.rounds):
        took, results, late = run_operator(batches, args.drain, args.window, args.agg)
        best = min(best, took)
        ceiling = min(ceiling, run_ceiling(batches))
    n = args.events
    print(f"{args.window} {args.agg}, {n:,} events, {args.keys:,} keys: {results:,} results, "
          f"{late:,} late")
    print(f"  operator: {best / n * 1e9:7.0f} ns/event  {n / best:12,.0f} events/s")
    print(f"  ceiling (dict count with the same key function): "
          f"{ceiling / n * 1e9:7.0f} ns/event  {n / ceiling:12,.0f} events/s")
    print(f"  operator beyond the ceiling: {(best - ceiling) / n * 1e9:7.0f} ns/event")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
