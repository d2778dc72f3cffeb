"""Webhook deliveries per second, beside a bare aiohttp posting loop in the same run.

Both post to the same receiver, a separate process on loopback that answers every POST
with ``200 ok`` at once and counts them. The ceiling is one process on uvloop (as the
hub runs) running ``--concurrency`` aiohttp tasks that post the same signed event over
keep-alive connections, as fast as answers come. Ours is a ``tidings serve`` process
draining a backlog: the endpoint is registered disabled, ``--events`` events are
published, and the endpoint is enabled; deliveries are counted at the receiver. Each
figure is the receiver's count over the middle of the run, so connection set-up and the
tail do not count. Each round measures the ceiling right before and right after ours,
and the ratio is ours over the mean of the two, so a machine that gets busier or quieter
in between moves both."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop
from rich.console import Console
from rich.table import Table

from tidings.benchmarks.processes import BenchmarkFailed, free_port, scratch_dir, serve_process
from tidings.core.webhooks.signing import new_secret, secret_key, signature_header

EVENT = {
    "specversion": "1.0",
    "id": "01a21bb2-ccb5-746b-8667-fa23f82c2470",
    "source": "/topics/orders",
    "type": "order.placed",
    "time": "2026-11-27T06:30:32.373403Z",
    "partitionkey": "o-1",
    "data": {"order_id": "o-1", "customer": "c-42", "items": [{"sku": "tea", "qty": 2}],
             "total": 12.5},
}  # fmt: skip


# -- the receiver (a process of its own) ------------------------------------------------------


def receiver_main(port: int) -> None:
    import uvloop
    from aiohttp import web

    count = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        count += 1
        return web.Response(text="ok")

    async def counted(request: web.Request) -> web.Response:
        return web.Response(text=str(count))

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/count", counted)
    app.router.add_get("/healthz", healthz)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def _count(receiver: str) -> int:
    with urllib.request.urlopen(receiver + "/count", timeout=5) as r:
        return int(r.read())


async def _window(receiver: str, total: int | None, seconds: float) -> float:
    """Deliveries per second at the receiver over the middle of a run: from the
    first tenth of the work (or second) to nine tenths of it (or the end)."""
    loop = asyncio.get_running_loop()
    start = await loop.run_in_executor(None, _count, receiver)
    if total is None:
        # A run of fixed length needs two readings only: the ceiling's process,
        # which posts, asks no more of the receiver than that.
        t0 = time.perf_counter()
        await asyncio.sleep(seconds * 0.1)
        t_lo, n_lo = time.perf_counter(), await loop.run_in_executor(None, _count, receiver)
        await asyncio.sleep(max(0.0, t0 + seconds * 0.9 - time.perf_counter()))
        t_hi, n_hi = time.perf_counter(), await loop.run_in_executor(None, _count, receiver)
        if n_hi <= n_lo:
            raise BenchmarkFailed(f"the receiver counted {n_hi - start} deliveries")
        return (n_hi - n_lo) / (t_hi - t_lo)
    deadline = time.perf_counter() + seconds * 3 + 60
    marks: list[tuple[float, int]] = []
    lo: tuple[float, int] | None = None
    hi: tuple[float, int] | None = None
    while time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
        n = await loop.run_in_executor(None, _count, receiver) - start
        now = time.perf_counter()
        marks.append((now, n))
        if lo is None and n >= total * 0.1:
            lo = (now, n)
        if n >= total * 0.9:
            hi = (now, n)
            break
    if lo is None or hi is None or hi[0] <= lo[0]:
        raise BenchmarkFailed(f"the receiver counted {marks[-1][1] if marks else 0} deliveries")
    return (hi[1] - lo[1]) / (hi[0] - lo[0])


# -- the ceiling: a bare aiohttp loop --------------------------------------------------------------


async def ceiling(receiver: str, concurrency: int, seconds: float) -> float:
    body = orjson.dumps(EVENT)
    key = secret_key(new_secret())
    stamp = int(time.time())
    headers: dict[str, str] = {
        "content-type": "application/cloudevents+json",
        "webhook-id": str(EVENT["id"]),
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature_header([key], str(EVENT["id"]), stamp, body),
        # The hub's own headers on a delivery: the same request on the wire.
        "tidings-attempt": "1",
        "tidings-topic": "bench-webhooks",
        "tidings-partition": "0",
        "tidings-offset": "12345",
    }
    stop = False

    async def worker(session: aiohttp.ClientSession) -> None:
        while not stop:
            async with session.post(receiver + "/hook", data=body, headers=headers) as r:
                await r.read()

    # The hub's collector settings (tidings.server.app), so that neither pays more
    # for the cyclic collector than the other.
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
            try:
                rate = await _window(receiver, None, seconds)
            finally:
                stop = True
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    return rate


# -- ours ---------------------------------------------------------------------------------------


async def ours(hub: str, receiver: str, concurrency: int, events: int, seconds: float) -> float:
    async with aiohttp.ClientSession() as http:
        topic = "bench-webhooks"
        async with http.post(
            hub + "/v1/webhooks",
            json={"url": receiver + "/hook", "topics": [topic], "concurrency": concurrency},
        ) as r:
            if r.status != 201:
                raise BenchmarkFailed(f"registering the webhook: {r.status} {await r.text()}")
            wh = await r.json()
        async with http.patch(f"{hub}/v1/webhooks/{wh['id']}", json={"enabled": False}) as r:
            if r.status != 200:
                raise BenchmarkFailed(f"disabling the webhook: {r.status} {await r.text()}")
        batch = orjson.dumps([{k: v for k, v in EVENT.items() if k != "id"}] * 1000)
        for _ in range(events // 1000):
            async with http.post(
                f"{hub}/v1/topics/{topic}/events",
                data=batch,
                headers={"content-type": "application/cloudevents-batch+json"},
            ) as r:
                if r.status != 202:
                    raise BenchmarkFailed(f"publishing: {r.status} {await r.text()}")
        await _indexed(http, hub)
        async with http.patch(f"{hub}/v1/webhooks/{wh['id']}", json={"enabled": True}) as r:
            if r.status != 200:
                raise BenchmarkFailed(f"enabling the webhook: {r.status} {await r.text()}")
        rate = await _window(receiver, events // 1000 * 1000, seconds)
        async with http.delete(f"{hub}/v1/webhooks/{wh['id']}") as r:
            pass
        async with http.delete(f"{hub}/v1/topics/{topic}") as r:
            pass
    return rate


async def _indexed(http: aiohttp.ClientSession, hub: str) -> None:
    """Wait until the hub has indexed the backlog (publishing's work, measured by the
    HTTP ingest benchmark): a lookup of an id no event has answers 404 once the index
    has caught up with the log, 503 while it trails it."""
    deadline = time.perf_counter() + 300
    while time.perf_counter() < deadline:
        async with http.get(f"{hub}/v1/events/no-such-event") as r:
            if r.status == 404:
                return
            if r.status != 503:
                raise BenchmarkFailed(f"looking up an event: {r.status} {await r.text()}")
        await asyncio.sleep(0.1)
    raise BenchmarkFailed("the hub's event index did not catch up with the backlog in 300 s")


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Options:
    concurrency: int
    events: int
    seconds: float
    rounds: int
    json: bool
    data_dir: Path | None


def run(opts: Options, progress: Console) -> list[dict[str, float]]:
    root = scratch_dir("tidings-bench-webhooks-", opts.data_dir)
    rport = free_port()
    rows: list[dict[str, float]] = []
    receiver_argv = [sys.executable, "-m", "tidings.benchmarks.webhooks", "--receiver", str(rport)]
    with serve_process("receiver", receiver_argv, rport, root) as receiver:
        for i in range(opts.rounds):
            progress.print(f"round {i + 1}: ceiling (bare aiohttp, concurrency {opts.concurrency})")
            # On uvloop, as the hub runs.
            bare = uvloop.run(ceiling(receiver, opts.concurrency, opts.seconds))
            hport = free_port()
            argv = [
                sys.executable, "-m", "tidings", "serve", "--port", str(hport),
                "--data-dir", str(root / f"hub{i}"), "--log-level", "warning",
                "--webhook-allow-net", "127.0.0.0/8",
            ]  # fmt: skip
            progress.print(f"round {i + 1}: tidings, {opts.events:,} events")
            with serve_process(f"hub{i}", argv, hport, root) as hub:
                ours_rate = asyncio.run(
                    ours(hub, receiver, opts.concurrency, opts.events, opts.seconds)
                )
            progress.print(f"round {i + 1}: ceiling again")
            after = uvloop.run(ceiling(receiver, opts.concurrency, opts.seconds))
            mean = (bare + after) / 2
            rows.append(
                {
                    "ours": ours_rate,
                    "ceiling_before": bare,
                    "ceiling_after": after,
                    "ceiling": mean,
                    "ratio": ours_rate / mean,
                }
            )
    return rows


def to_table(rows: list[dict[str, float]], opts: Options) -> Table:
    table = Table(title=f"webhook deliveries/s, concurrency {opts.concurrency}")
    for col in ("round", "tidings", "bare loop before", "after", "ratio to their mean"):
        table.add_column(col, justify="right")
    for i, r in enumerate(rows, 1):
        table.add_row(
            str(i), f"{r['ours']:,.0f}", f"{r['ceiling_before']:,.0f}",
            f"{r['ceiling_after']:,.0f}", f"{r['ratio']:.2f}x",
        )  # fmt: skip
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--concurrency", type=int, default=50, help="POSTs in flight")
    ap.add_argument("--events", type=int, default=40_000, help="backlog the hub drains")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the ceiling's run")
    ap.add_argument("--rounds", type=int, default=2, help="ceiling then ours, this many times")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    ap.add_argument("--data-dir", type=Path, default=None, help="where the hub's data goes")
    ap.add_argument("--receiver", type=int, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.receiver is not None:
        receiver_main(args.receiver)
        return 0
    if args.events < 1000:
        print("--events must be at least 1000", file=sys.stderr)
        return 2
    opts = Options(
        args.concurrency, args.events, args.seconds, args.rounds, args.json, args.data_dir
    )
    progress = Console(stderr=True)
    try:
        rows = run(opts, progress)
    except BenchmarkFailed as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    if opts.json:
        out: dict[str, Any] = {
            "benchmark": "webhooks",
            "concurrency": opts.concurrency,
            "events": opts.events,
            "rounds": rows,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        }
        print(json.dumps(out))
    else:
        Console().print(to_table(rows, opts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
