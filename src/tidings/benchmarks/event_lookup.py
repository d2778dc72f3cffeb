"""Event lookup benchmark: an order's trace and an event by id, a million events later.

Against a real hub (``python -m tidings serve --fsync interval:5``, a process of
its own, on a new data directory), in one run::

    1. the order:  ORDER_STEPS events of one order (correlationid o-bench), one a
                   request, over five topics, as the shop's services publish them
    2. the rest:   --events other events (default 1,000,000) over the same topics and
                   a sixth, in batches of 1000 from 4 connections, each with the
                   correlationid of one of --events / 5 other orders
    3. catch-up:   GET /v1/events?correlationid=o-bench until it answers 200, not
                   503: the index has taken in everything
    4. lookups:    --lookups times each, in turn, over one keep-alive connection:
                   ours     GET /v1/events?correlationid=o-bench   (the whole trace)
                            GET /v1/events/{id}                    (one of the order's ids)
                   ceiling  GET /v1/topics/{t}/events?partition=&from=&limit=1
                            (the same record read where it is known to be)
                            GET /healthz                           (an HTTP round trip)

It prints p50 and p99 of each, beside the goal: a trace under 50 ms. Run it with
``tidings bench lookup`` or ``python -m tidings.benchmarks.event_lookup``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop
from rich import box
from rich.console import Console
from rich.table import Table

from tidings.benchmarks.processes import BenchmarkFailed, free_port, scratch_dir, serve_process

ORDER = "o-bench"
TOPICS = ("orders", "inventory", "payments", "shipping", "notifications", "cart")
ORDER_STEPS = [
    ("orders", "order.placed"), ("inventory", "stock.reserved"),
    ("payments", "payment.succeeded"), ("orders", "order.paid"),
    ("shipping", "shipment.sent"), ("notifications", "email.sent"),
]  # fmt: skip
BATCH = 1000
CONNECTIONS = 4
GOAL_MS = 50.0
_DEADLINE_S = 900.0  # publishing and catching up may take no longer

_now = time.perf_counter


def _other_events(start: int, n: int) -> bytes:
    """A batch of other orders' events: about 256 bytes each, five to an order."""
    events = [
        {
            "type": "order.step",
            "source": "/shop",
            "partitionkey": f"o-{(start + i) // 5}",
            "correlationid": f"o-{(start + i) // 5}",
            "data": {"order_id": f"o-{(start + i) // 5}", "step": (start + i) % 5,
                     "customer": "cus_1234", "total": "42.00", "note": "x" * 40},
        }
        for i in range(n)
    ]  # fmt: skip
    return orjson.dumps(events)


async def _publish_order(http: aiohttp.ClientSession, url: str) -> list[tuple[str, int, int, str]]:
    """The order's events, one a request, a few ms apart: (topic, partition, offset, id)."""
    out = []
    for topic, type_ in ORDER_STEPS:
        body = {"type": type_, "source": "/shop", "correlationid": ORDER, "partitionkey": ORDER,
                "data": {"order_id": ORDER}}  # fmt: skip
        async with http.post(
            f"{url}/v1/topics/{topic}/events",
            data=orjson.dumps(body),
            headers={"content-type": "application/cloudevents+json"},
        ) as resp:
            if resp.status != 202:
                raise BenchmarkFailed(f"publish to {topic}: {resp.status} {await resp.text()}")
            [pos] = (await resp.json())["events"]
        out.append((topic, pos["partition"], pos["offset"], pos["id"]))
        await asyncio.sleep(0.005)
    return out


async def _publish_rest(url: str, total: int, err: Console) -> tuple[float, str]:
    """``total`` other events over TOPICS; the seconds it took and the last id."""
    next_start = 0
    last_id = ""
    done = 0
    started = _now()
    deadline = started + _DEADLINE_S

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal next_start, last_id, done
        while next_start < total:
            start = next_start
            n = min(BATCH, total - start)
            next_start += n
            topic = TOPICS[(start // BATCH) % len(TOPICS)]
            async with http.post(
                f"{url}/v1/topics/{topic}/events",
                data=_other_events(start, n),
                headers={"content-type": "application/cloudevents-batch+json"},
            ) as resp:
                if resp.status != 202:
                    raise BenchmarkFailed(f"publish: {resp.status} {await resp.text()}")
                last_id = (await resp.json())["events"][-1]["id"]
            done += n
            if done % 100_000 < BATCH:
                err.log(f"published {done:,} of {total:,}")
            if _now() > deadline:
                raise BenchmarkFailed(f"publishing took over {_DEADLINE_S:g} s")

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(CONNECTIONS)))
    return _now() - started, last_id


async def _timed(http: aiohttp.ClientSession, url: str, check: Any = None) -> float:
    t0 = _now()
    async with http.get(url) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise BenchmarkFailed(f"GET {url}: {resp.status} {body[:300]!r}")
    elapsed = (_now() - t0) * 1000
    if check is not None:
        check(orjson.loads(body))
    return elapsed


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered), 3), "p99_ms": round(p99, 3),
            "max_ms": round(ordered[-1], 3)}  # fmt: skip


async def run(opts: argparse.Namespace, root: Path, err: Console) -> dict[str, Any]:
    data = root / "hub"
    port = free_port()
    argv = [sys.executable, "-m", "tidings", "serve", "--port", str(port), "--data-dir", str(data),
            "--fsync", "interval:5", "--log-level", "warning"]  # fmt: skip
    with serve_process("hub", argv, port, root) as url:
        timeout = aiohttp.ClientTimeout(total=60)
        connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            for topic in TOPICS:
                async with http.put(f"{url}/v1/topics/{topic}", json={"partitions": 3}) as r:
                    if r.status not in (200, 201):
                        raise BenchmarkFailed(f"PUT topic {topic}: {r.status}")
            err.log(f"publishing the order {ORDER} ({len(ORDER_STEPS)} events)")
            order = await _publish_order(http, url)
            err.log(f"publishing {opts.events:,} other events")
            publish_s, _ = await _publish_rest(url, opts.events, err)
            t0 = _now()
            trace_url = f"{url}/v1/events?correlationid={ORDER}"
            while True:
                # A trace answers 200 only once every record acknowledged before it is
                # indexed (a lookup waits up to 2 s, then answers 503 while it trails).
                async with http.get(trace_url) as resp:
                    await resp.read()
                    if resp.status == 200:
                        break
                    if resp.status != 503:
                        raise BenchmarkFailed(f"GET {trace_url}: {resp.status}")
                if _now() - t0 > _DEADLINE_S:
                    raise BenchmarkFailed("the index did not catch up")
            catch_up_s = _now() - t0
            err.log(f"published in {publish_s:.1f} s; index caught up {catch_up_s:.2f} s later")

            want = [eid for _, _, _, eid in order]

            def whole_trace(page: dict[str, Any]) -> None:
                got = [r["event"]["id"] for r in page["records"]]
                if got != want or page["next"] is not None:
                    raise BenchmarkFailed(f"the trace answered {got}, not {want}")

            samples: dict[str, list[float]] = {k: [] for k in ("trace", "by_id", "read", "healthz")}
            for i in range(opts.warmup + opts.lookups):
                topic, part, offset, eid = order[i % len(order)]

                def same(record: dict[str, Any], eid: str = eid) -> None:
                    if record["event"]["id"] != eid:
                        raise BenchmarkFailed(f"GET /v1/events/{eid} answered another event")

                def one(page: dict[str, Any], eid: str = eid) -> None:
                    if [r["event"]["id"] for r in page["records"]] != [eid]:
                        raise BenchmarkFailed("the read by position answered another event")

                got = {
                    "trace": await _timed(http, trace_url, whole_trace),
                    "by_id": await _timed(http, f"{url}/v1/events/{eid}", same),
                    "read": await _timed(
                        http,
                        f"{url}/v1/topics/{topic}/events?partition={part}&from={offset}&limit=1",
                        one,
                    ),
                    "healthz": await _timed(http, f"{url}/healthz"),
                }
                if i >= opts.warmup:
                    for k, v in got.items():
                        samples[k].append(v)
        index_bytes = sum(
            p.stat().st_size for p in data.glob("index.sqlite3*") if p.is_file()
        )
        log_bytes = sum(p.stat().st_size for p in (data / "topics").rglob("*.log"))
    return {
        "events": opts.events + len(ORDER_STEPS),
        "order_events": len(ORDER_STEPS),
        "lookups": opts.lookups,
        "publish_s": round(publish_s, 2),
        "publish_per_s": round(opts.events / publish_s),
        "index_catch_up_s": round(catch_up_s, 2),
        "index_bytes": index_bytes,
        "log_bytes": log_bytes,
        "trace": _stats(samples["trace"]),
        "by_id": _stats(samples["by_id"]),
        "read_by_position": _stats(samples["read"]),
        "healthz": _stats(samples["healthz"]),
        "goal_ms": GOAL_MS,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--events", type=int, default=1_000_000, help="other events published after the order"
    )
    p.add_argument("--lookups", type=int, default=500, help="timed lookups of each kind")
    p.add_argument("--warmup", type=int, default=20, help="lookups of each kind before timing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data-dir", type=Path, help="where the scratch directory is made")
    opts = p.parse_args(argv)
    if not 1_000 <= opts.events <= 10_000_000:
        p.error("--events must be from 1000 to 10000000")
    if not 10 <= opts.lookups <= 100_000 or not 0 <= opts.warmup <= 10_000:
        p.error("--lookups must be from 10 to 100000 and --warmup from 0 to 10000")
    return opts


def main(argv: list[str] | None = None) -> int:
    """Run the lookup benchmark; returns the process exit status."""
    try:
        opts = parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    err = Console(stderr=True, log_path=False)
    root = scratch_dir("tidings-bench-lookup-", opts.data_dir)
    try:
        result = uvloop.run(run(opts, root, err))
    except (OSError, TimeoutError, aiohttp.ClientError, BenchmarkFailed) as exc:
        err.print(f"lookup benchmark failed: {exc!r}")
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if opts.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    title = (
        f"an order's {result['order_events']} events, then {opts.events:,} others: "
        f"{opts.lookups} lookups each"
    )
    table = Table(box=box.SIMPLE_HEAD, title=title)
    for col in ("request", "", "p50, ms", "p99, ms", "max, ms"):
        table.add_column(col, justify="left" if col in ("request", "") else "right")
    rows = [
        ("GET /v1/events?correlationid=", "ours", "trace"),
        ("GET /v1/events/{id}", "ours", "by_id"),
        ("GET /v1/topics/{t}/events?from=", "ceiling", "read_by_position"),
        ("GET /healthz", "ceiling", "healthz"),
    ]
    for name, kind, key in rows:
        s = result[key]
        table.add_row(name, kind, f"{s['p50_ms']:.2f}", f"{s['p99_ms']:.2f}", f"{s['max_ms']:.2f}")
    Console().print(table)
    verdict = "met" if result["trace"]["p99_ms"] < GOAL_MS else "NOT met"
    Console().print(
        f"goal: a trace under {GOAL_MS:g} ms: {verdict} (p99 {result['trace']['p99_ms']:.2f} ms). "
        f"Published {opts.events:,} events in {result['publish_s']:.1f} s "
        f"({result['publish_per_s']:,}/s); the index caught up {result['index_catch_up_s']:.2f} s "
        f"after the last; index {result['index_bytes'] / 1e6:.0f} MB beside "
        f"{result['log_bytes'] / 1e6:.0f} MB of log."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
