"""The order chain as a benchmark: the shop's services under a rising order rate.

The whole shop runs as real processes, as ``tidings demo`` starts it (see
``examples/shop/demo.py``): the hub (``tidings serve`` on the embedded backend),
inventory, payments, shipping and notifications (each ``tidings run``), the
orders API and the partner (uvicorn), the partner's webhook registered. No
payment is declined or fails once, so every order takes the same path of five
events (``order.placed``, ``inventory.reserved``, ``payment.succeeded``,
``shipment.created``, ``customer.notified``).

First the hub's single-event publish capacity is measured on that hub (wrk, one
event per request to a topic of its own, as ``tidings bench http`` does).
Then, for each rate, orders are placed at that fixed rate (``POST /orders``,
open loop: an order is sent when it is due, whether or not earlier ones were
answered) for ``--seconds``, and the run waits up to ``--drain`` seconds for
the rest to finish. For each rate: orders/s completed, p50/p99 from the 202 to
the order's ``customer.notified`` (seen on a WebSocket subscription), and
whether every order finished. The steps stop after the first one whose p99 is
250 ms or more, or that leaves orders unfinished. The figure: the highest rate
whose p99 stays under 250 ms with every order finished, and its events (5 per
order) over the hub's capacity.

Run it from the root of the repository: ``tidings bench shop``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import random
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop
from rich import box
from rich.console import Console
from rich.table import Table

from tidings.benchmarks.http_ingest import STRUCTURED, build_events
from tidings.benchmarks.http_load import Wrk
from tidings.benchmarks.processes import BenchmarkFailed, scratch_dir
from tidings.client.async_client import AsyncClient

P99_GOAL_MS = 250.0
EVENTS_PER_ORDER = 5
CAPACITY_TOPIC = "bench.capacity"
MAX_IN_FLIGHT = 2000  # orders sent and not yet answered; past it the step is not at rate
SKUS = ("tea", "mug", "pot")  # 100,000 of each in stock

_now = time.perf_counter


@dataclass(frozen=True, slots=True)
class Step:
    rate: float
    placed: int
    finished: int
    failed: int  # POST /orders answered other than 202, or not at all
    late_sends: int  # orders sent more than 100 ms after they were due
    completed_per_s: float
    p50_ms: float
    p99_ms: float

    @property
    def all_finished(self) -> bool:
        return self.placed > 0 and self.finished == self.placed and self.failed == 0

    @property
    def met(self) -> bool:
        return self.all_finished and self.p99_ms < P99_GOAL_MS


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


class Watcher:
    """Follows ``notifications``: when each order's ``customer.notified`` came."""

    def __init__(self, hub_url: str) -> None:
        self.hub_url = hub_url
        self.notified: dict[str, float] = {}
        self.statuses: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._client: AsyncClient | None = None

    async def start(self) -> None:
        self._client = AsyncClient(self.hub_url)
        sub = self._client.subscribe("notifications", start="latest")
        await sub.start()  # type: ignore[union-attr]

        async def follow() -> None:
            async for record in sub:
                data = record.event.data
                if isinstance(data, dict) and isinstance(data.get("order_id"), str):
                    self.notified.setdefault(data["order_id"], _now())
                    self.statuses[data["order_id"]] = str(data.get("status"))

        self._task = asyncio.get_running_loop().create_task(follow())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._client is not None:
            await self._client.close()


async def run_step(
    orders_url: str, watcher: Watcher, rate: float, seconds: float, drain: float, first: int
) -> Step:
    """Orders at ``rate`` per second for ``seconds``, then up to ``drain`` s for the rest."""
    accepted: dict[str, float] = {}
    failed = 0
    late = 0
    total = max(1, round(rate * seconds))
    in_flight: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as http:

        async def place(i: int) -> None:
            nonlocal failed
            body = {
                "customer": f"customer-{i % 500}",
                "items": [{"sku": SKUS[i % len(SKUS)], "qty": 1}],
                "promo_code": "WELCOME10" if i % 4 == 0 else None,
            }
            try:
                async with http.post(orders_url + "/orders", json=body) as resp:
                    answer = await resp.read()
                    if resp.status != 202:
                        failed += 1
                        return
                    accepted[orjson.loads(answer)["order_id"]] = _now()
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                failed += 1

        start = _now()
        loop = asyncio.get_running_loop()
        for n in range(total):
            due = start + n / rate
            wait = due - _now()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.1:
                late += 1
            if len(in_flight) >= MAX_IN_FLIGHT:
                late += total - n  # the orders API cannot keep up: the rest is not sent
                break
            task = loop.create_task(place(first + n))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(set(in_flight), timeout=30)
        placed_by = _now()
        deadline = placed_by + drain
        while _now() < deadline and any(o not in watcher.notified for o in accepted):
            await asyncio.sleep(0.05)
    ids = list(accepted)
    done = [o for o in ids if o in watcher.notified]
    # A notification may be seen before its 202 is read: that order took no time.
    latencies = [max(0.0, watcher.notified[o] - accepted[o]) * 1000 for o in done]
    last = max((watcher.notified[o] for o in done), default=start)
    span = last - start
    return Step(
        rate,
        len(ids),
        len(done),
        failed,
        late,
        len(done) / span if span > 0 else 0.0,
        _pct(latencies, 0.50),
        _pct(latencies, 0.99),
    )


def measure_capacity(hub_url: str, scratch: Path, seconds: int, connections: int) -> float:
    """Single-event publishes per second the hub answers 202 (wrk, one event each)."""
    exe = shutil.which("wrk")
    if exe is None:
        raise BenchmarkFailed("wrk is not on PATH (apt-get install -y wrk)")
    body = build_events(1)[0]
    wrk = Wrk(exe, 2, scratch)
    url = f"{hub_url}/v1/topics/{CAPACITY_TOPIC}/events"
    wrk.run(url, body, STRUCTURED, 1, connections, 1)  # warm-up
    load = wrk.run(url, body, STRUCTURED, 1, connections, seconds)
    if load.errors:
        raise BenchmarkFailed(f"{load.errors} single-event publishes failed")
    return load.req_per_s


def _free_base_port() -> int:
    """A port p with p, p+10 and p+20 free: the stack's hub, orders API and partner."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20_000, 40_000)
        try:
            for port in (base, base + 10, base + 20):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise BenchmarkFailed("no free ports for the shop")


@dataclass(frozen=True, slots=True)
class Run:
    capacity: float
    steps: list[Step]

    @property
    def best(self) -> Step | None:
        met = [s for s in self.steps if s.met]
        return max(met, key=lambda s: s.rate) if met else None

    @property
    def ratio(self) -> float:
        best = self.best
        if best is None or self.capacity <= 0:
            return 0.0
        return EVENTS_PER_ORDER * best.rate / self.capacity


def run(opts: argparse.Namespace, root: Path, progress: Console) -> Run:
    if not Path("examples/shop").is_dir():
        raise BenchmarkFailed("run tidings bench shop from the root of the tidings repository")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    demo = importlib.import_module("examples.shop.demo")
    # Every order on the five-event path: no declines, no provider timeouts.
    os.environ["SHOP_PAYMENT_DECLINE_RATE"] = "0"
    os.environ["SHOP_PAYMENT_ERROR_RATE"] = "0"
    stack = demo.Stack(root / "shop", _free_base_port())
    progress.log("starting the hub, the four services, the orders API and the partner")
    try:
        stack.start()
        progress.log(f"capacity: single-event publishes to the hub, {opts.capacity_seconds} s")
        capacity = measure_capacity(stack.hub_url, root, opts.capacity_seconds, 64)
        progress.log(f"capacity: {capacity:,.0f} events/s")
        steps = uvloop.run(_steps(stack.hub_url, stack.orders_url, opts, progress))
    finally:
        progress.log("stopping the shop")
        stack.stop()
    return Run(capacity, steps)


async def _steps(
    hub_url: str, orders_url: str, opts: argparse.Namespace, progress: Console
) -> list[Step]:
    watcher = Watcher(hub_url)
    await watcher.start()
    steps: list[Step] = []
    first = 0
    try:
        for rate in opts.rates:
            progress.log(f"{rate:g} orders/s for {opts.seconds:g} s")
            step = await run_step(orders_url, watcher, rate, opts.seconds, opts.drain, first)
            first += step.placed + step.failed + 1
            progress.log(
                f"{rate:g} orders/s: {step.finished}/{step.placed} finished, "
                f"{step.completed_per_s:,.1f}/s, p50 {step.p50_ms:,.0f} ms, "
                f"p99 {step.p99_ms:,.0f} ms"
            )
            steps.append(step)
            if not step.met:
                break
    finally:
        await watcher.close()
    return steps


def to_json(r: Run, opts: argparse.Namespace) -> dict[str, Any]:
    best = r.best
    return {
        "benchmark": "shop",
        "date": datetime.now(UTC).date().isoformat(),
        "seconds_per_step": opts.seconds,
        "capacity_events_per_s": round(r.capacity, 1),
        "steps": [
            {
                "rate": s.rate,
                "placed": s.placed,
                "finished": s.finished,
                "failed": s.failed,
                "late_sends": s.late_sends,
                "completed_per_s": round(s.completed_per_s, 1),
                "p50_ms": round(s.p50_ms, 1),
                "p99_ms": round(s.p99_ms, 1),
                "all_finished": s.all_finished,
                "met": s.met,
            }
            for s in r.steps
        ],
        "best_rate": best.rate if best else None,
        "ratio": round(r.ratio, 3),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }


def to_table(r: Run, opts: argparse.Namespace) -> Table:
    best = r.best
    verdict = (
        f"highest rate with p99 < {P99_GOAL_MS:g} ms: {best.rate:g} orders/s = "
        f"{EVENTS_PER_ORDER * best.rate:,.0f} events/s; hub capacity {r.capacity:,.0f} "
        f"single-event publishes/s; ratio {r.ratio:.2f}x"
        if best
        else f"no rate kept p99 under {P99_GOAL_MS:g} ms with every order finished"
    )
    table = Table(
        title=f"the shop's order chain, {opts.seconds:g} s per rate",
        caption=verdict,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for col in ("orders/s offered", "placed", "finished", "completed/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    table.add_column("every order finished")
    for s in r.steps:
        table.add_row(
            f"{s.rate:g}", f"{s.placed:,}", f"{s.finished:,}", f"{s.completed_per_s:,.1f}",
            f"{s.p50_ms:,.0f}", f"{s.p99_ms:,.0f}",
            "yes" if s.all_finished else f"no ({s.failed} failed, {s.late_sends} late)",
        )  # fmt: skip
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="tidings bench shop", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="10,25,50,100,150,200,300,400",
                    help="orders/s of each step, comma-separated, rising")  # fmt: skip
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each step")
    ap.add_argument("--drain", type=float, default=30.0, help="wait for the rest, at most")
    ap.add_argument("--capacity-seconds", type=int, default=8, help="length of the capacity run")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    ap.add_argument("--data-dir", type=Path, default=None, help="where the scratch dir is made")
    opts = ap.parse_args(argv)
    try:
        opts.rates = [float(x) for x in opts.rates.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--rates must be numbers separated by commas, not {opts.rates!r}")
    if not opts.rates or any(r <= 0 or r > 10_000 for r in opts.rates):
        ap.error("--rates must be one or more rates from above 0 to 10000")
    if opts.rates != sorted(opts.rates):
        ap.error("--rates must rise")
    if not 1 <= opts.seconds <= 600 or not 1 <= opts.drain <= 300:
        ap.error("--seconds must be from 1 to 600 and --drain from 1 to 300")
    if not 1 <= opts.capacity_seconds <= 120:
        ap.error("--capacity-seconds must be from 1 to 120")
    return opts


def main(argv: list[str] | None = None) -> int:
    """Run the shop benchmark; returns the process exit status."""
    try:
        opts = parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    err = Console(stderr=True, log_path=False)
    root = scratch_dir("tidings-bench-shop-", opts.data_dir)
    try:
        result = run(opts, root, err)
    except (BenchmarkFailed, OSError, RuntimeError) as exc:
        err.print(f"shop benchmark failed: {exc}")
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if opts.json:
        sys.stdout.write(orjson.dumps(to_json(result, opts), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        Console().print(to_table(result, opts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
