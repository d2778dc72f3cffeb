"""Handler framework benchmark: a no-op ``App`` beside the bare group fetch/ack loop.

Both consume the same ``--events`` events of one topic, each through a new
consumer group that starts at the earliest offset, in the same run::

    over a running hub (python -m tidings serve, a process of its own)
      ceiling   fetch(max=--batch), then the batch's one ack sent while the next
                fetch goes out, over the SDK's HTTP client; the answer's leases
                taken from the parsed JSON, nothing else made per record
      ours      App("bench", hub="http://…", fetch_max=--batch): @app.on a no-op handler
    embedded (the hub's core in this process, on a data directory)
      ceiling   Hub.fetch(max=--batch) then one Hub.ack per batch, on the core, the
                stored events left undecoded
      ours      App("bench", hub="embedded:DIR", fetch_max=--batch): the same no-op handler

Each ``--concurrency`` given (1 and 8 by default) is measured on its own, with
its own ceiling measured in the same rounds; both loops run on uvloop, in one
process, with the same garbage-collector settings.

Two shapes of handler, each its own case:

    model+ctx   async def h(order: OrderPlaced, ctx: Context): the README's shape,
                the data validated into a pydantic model and a Context per event
    dict        async def h(data: dict): no model, no Context (the cheapest)

Ours runs with every default on: payload decoding, idempotency memory (in
SQLite under ``embedded:``), one ack per batch. Its time runs from the end of
``app.start()`` (the group made, as the bare loops' time starts once theirs
is) to the last event handled. Each case runs ``--rounds`` times, the order of
the cases turning each round (so that drift of a shared machine hits all
alike), and each ratio is taken from the sums. Run it with ``tidings bench handlers`` or
``python bench/handlers.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import orjson
import uvloop
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Table

from tidings.app.app import App
from tidings.app.handlers import Context
from tidings.app.transport import EmbeddedTransport
from tidings.benchmarks.processes import BenchmarkFailed, free_port, scratch_dir, serve_process
from tidings.client.async_client import AsyncClient
from tidings.client.groups import group_path
from tidings.errors import NotFound, ServerBusy, TidingsError

TOPIC = "bench.orders"
_DEADLINE_S = 300.0  # no measurement may take longer

_now = time.perf_counter


@dataclass(frozen=True, slots=True)
class Rate:
    events: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _events(n: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "order.placed",
            "source": "/shop/orders",
            "partitionkey": f"ord_{i % 1000:04d}",
            "data": {"order_id": f"ord_{i:08d}", "customer": "cus_1234", "total": "42.00"},
        }
        for i in range(n)
    ]


class OrderPlaced(BaseModel):
    """The events' data, as a handler in the README's shape declares it."""

    event_type: ClassVar[str] = "order.placed"
    order_id: str
    customer: str
    total: float


# The shapes of handler measured: the README's (a model and a Context), and the
# cheapest the framework takes (the data as a dict, no Context).
SHAPES = ("model+ctx", "dict")


def _noop_app(
    name: str, hub: str, opts: argparse.Namespace, shape: str, concurrency: int
) -> tuple[App, asyncio.Event, list[int]]:
    app = App(name, hub=hub, fetch_max=opts.batch, poll_wait=1.0)
    want = opts.events
    done = asyncio.Event()
    seen = [0]

    if shape == "dict":

        @app.on(TOPIC, concurrency=concurrency)
        async def noop(data: dict[str, Any]) -> None:
            seen[0] += 1
            if seen[0] >= want:
                done.set()

    else:

        @app.on(TOPIC, concurrency=concurrency)
        async def handle(order: OrderPlaced, ctx: Context) -> None:
            seen[0] += 1
            if seen[0] >= want:
                done.set()

    return app, done, seen


async def _ours(
    name: str, hub: str, opts: argparse.Namespace, shape: str, concurrency: int
) -> Rate:
    app, done, seen = _noop_app(name, hub, opts, shape, concurrency)
    await app.start()  # as the bare loops, timed once the group exists
    start = _now()
    try:
        await asyncio.wait_for(done.wait(), _DEADLINE_S)
        took = _now() - start
    finally:
        await app.stop()
    return Rate(seen[0], took)


async def _bare_http(url: str, group: str, batch: int, want: int) -> Rate:
    """The fastest bare consumer measured over HTTP: a batch's ack goes out together
    with the next fetch (the hub answers one while the client reads the other);
    one ack at a time, each batch acked only once it was received whole."""
    async with AsyncClient(url, timeout=60) as client:
        await client.create_group(TOPIC, group, start="earliest")
        path = group_path(TOPIC, group)
        call = client._call
        body = {"max": batch, "wait": 1.0}
        got = 0
        acking: asyncio.Future[Any] | None = None
        start = _now()
        end = start + _DEADLINE_S
        while got < want:
            if _now() > end:
                raise BenchmarkFailed(f"the bare HTTP loop got {got} of {want} events")
            records = (await call("POST", path + "/fetch", body, wait=1.0))["records"]
            if acking is not None:
                await acking
                acking = None
            if records:
                leases = {"leases": [r["lease"] for r in records]}
                acking = asyncio.ensure_future(call("POST", path + "/ack", leases))
                got += len(records)
        if acking is not None:
            await acking
        return Rate(got, _now() - start)


async def _bare_core(transport: EmbeddedTransport, group: str, batch: int, want: int) -> Rate:
    from tidings.core.groups import GroupConfig

    hub = transport.hub
    await hub.put_group(TOPIC, group, GroupConfig())
    got = 0
    start = _now()
    end = start + _DEADLINE_S
    while got < want:
        if _now() > end:
            raise BenchmarkFailed(f"the bare core loop got {got} of {want} events")
        deliveries = await hub.fetch(TOPIC, group, batch, 1.0)
        if deliveries:
            await hub.ack(TOPIC, group, [d.lease for d in deliveries])
            got += len(deliveries)
    return Rate(got, _now() - start)


Round = dict[str, Rate]  # "bare" and each shape -> its rate


async def _round(
    r: int,
    bare: Callable[[str], Awaitable[Rate]],
    hub: str,
    opts: argparse.Namespace,
    concurrency: int,
) -> Round:
    """The bare loop and each shape once; the order turns each round, so that drift of
    a shared machine hits every case alike."""
    names = ["bare", *opts.shapes]
    turn = r % len(names)
    out: Round = {}
    for name in names[turn:] + names[:turn]:
        group = f"{name.replace('+', '-')}-c{concurrency}-{r}"
        if name == "bare":
            out[name] = await bare(group)
        else:
            out[name] = await _ours(group, hub, opts, name, concurrency)
    return out


async def _rounds(
    where: str,
    bare: Callable[[str], Awaitable[Rate]],
    hub: str,
    opts: argparse.Namespace,
    err: Console,
) -> dict[int, list[Round]]:
    """Every round of each concurrency, the ceiling measured in each."""
    out: dict[int, list[Round]] = {}
    for c in opts.concurrency:
        rounds = out[c] = []
        for r in range(opts.rounds):
            rates = await _round(r, bare, hub, opts, c)
            figures = ", ".join(f"{k} {v.per_s:,.0f}/s" for k, v in rates.items())
            err.log(f"{where} concurrency {c} round {r + 1}: {figures}")
            rounds.append(rates)
    return out


async def _indexed(client: AsyncClient, last_id: str) -> None:
    """Wait until the hub has indexed the last event published (it indexes in the
    background): no case is measured against that work."""
    end = _now() + _DEADLINE_S
    while True:
        try:
            await client.get_event(last_id)
            return
        except (NotFound, ServerBusy):
            if _now() > end:
                raise BenchmarkFailed("the hub did not index the published events") from None
            await asyncio.sleep(0.2)


async def run_http(
    opts: argparse.Namespace, root: Path, err: Console
) -> dict[int, list[Round]]:
    port = free_port()
    argv = [
        sys.executable, "-m", "tidings", "serve", "--port", str(port),
        "--data-dir", str(root / "hub"), "--fsync", "interval:5", "--log-level", "warning",
    ]  # fmt: skip
    with serve_process("hub", argv, port, root) as url:
        async with AsyncClient(url, timeout=60) as client:
            events = _events(opts.events)
            for i in range(0, len(events), 1000):
                answer = await client.publish_many(TOPIC, events[i : i + 1000])
            await _indexed(client, answer[-1]["id"])

        async def bare(group: str) -> Rate:
            return await _bare_http(url, group, opts.batch, opts.events)

        return await _rounds("http", bare, url, opts, err)


async def run_embedded(
    opts: argparse.Namespace, root: Path, err: Console
) -> dict[int, list[Round]]:
    data_dir = root / "embedded"
    transport = EmbeddedTransport(data_dir)
    await transport.open()  # the apps below share this core: one per directory
    try:
        events = _events(opts.events)
        for i in range(0, len(events), 1000):  # as over HTTP: one log batch per 1000
            await transport.publish(TOPIC, events[i : i + 1000])
        # The hub indexes what was published in the background: measured after that.
        if not await transport.hub.index.settle(timeout=_DEADLINE_S):
            raise BenchmarkFailed("the hub did not index the published events in time")

        async def bare(group: str) -> Rate:
            return await _bare_core(transport, group, opts.batch, opts.events)

        return await _rounds("embedded", bare, f"embedded:{data_dir}", opts, err)
    finally:
        await transport.close()


def _summary(rounds: list[Round]) -> dict[str, Any]:
    def total(name: str) -> Rate:
        return Rate(sum(r[name].events for r in rounds), sum(r[name].seconds for r in rounds))

    bare = total("bare")
    shapes = [name for name in rounds[0] if name != "bare"] if rounds else []
    out: dict[str, Any] = {
        "rounds": [{name: round(rate.per_s) for name, rate in r.items()} for r in rounds],
        "bare_per_s": round(bare.per_s),
    }
    for name in shapes:
        ours = total(name)
        out[name] = {
            "per_s": round(ours.per_s),
            "ratio": round(ours.per_s / bare.per_s, 3) if bare.per_s else 0.0,
        }
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=200_000, help="events per measurement")
    p.add_argument("--batch", type=int, default=100, help="events per fetch (both loops)")
    p.add_argument("--rounds", type=int, default=4, help="rounds per case (ceiling and ours)")
    p.add_argument("--only", choices=["http", "embedded"], help="run one case")
    p.add_argument(
        "--concurrency",
        default="1,8",
        help="the handlers' concurrency, comma-separated: each measured on its own, "
        "beside its own ceiling (default 1,8)",
    )
    p.add_argument(
        "--shapes",
        default=",".join(SHAPES),
        help="handler shapes measured, comma-separated: model+ctx (the README's: "
        "async def h(event: Model, ctx: Context)), dict (async def h(data: dict)); "
        "default both",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data-dir", type=Path, help="where the scratch directory is made")
    opts = p.parse_args(argv)
    if not 1_000 <= opts.events <= 2_000_000:
        p.error("--events must be from 1000 to 2000000")
    if not 1 <= opts.batch <= 10_000 or not 1 <= opts.rounds <= 10:
        p.error("--batch must be from 1 to 10000 and --rounds from 1 to 10")
    try:
        levels = [int(x) for x in opts.concurrency.split(",") if x.strip()]
    except ValueError:
        levels = []
    if not levels or not all(1 <= c <= 1000 for c in levels) or len(set(levels)) != len(levels):
        p.error("--concurrency takes integers from 1 to 1000, comma-separated, each once")
    opts.concurrency = levels
    shapes = [x.strip() for x in opts.shapes.split(",") if x.strip()]
    unknown = [x for x in shapes if x not in SHAPES]
    if not shapes or unknown or len(set(shapes)) != len(shapes):
        p.error(f"--shapes takes one or more of {', '.join(SHAPES)}, each once")
    opts.shapes = shapes
    return opts


async def run_cases(opts: argparse.Namespace, root: Path, err: Console) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if opts.only in (None, "http"):
        got = await run_http(opts, root, err)
        out["http"] = {str(c): _summary(rounds) for c, rounds in got.items()}
    if opts.only in (None, "embedded"):
        got = await run_embedded(opts, root, err)
        out["embedded"] = {str(c): _summary(rounds) for c, rounds in got.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the handler benchmark; returns the process exit status."""
    try:
        opts = parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    err = Console(stderr=True, log_path=False)
    root = scratch_dir("tidings-bench-handlers-", opts.data_dir)
    try:
        cases = uvloop.run(run_cases(opts, root, err))
    except (OSError, TidingsError, TimeoutError, BenchmarkFailed) as exc:
        err.print(f"handler benchmark failed: {exc!r}")
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "events": opts.events,
        "batch": opts.batch,
        "rounds": opts.rounds,
        "concurrency": opts.concurrency,
        "shapes": opts.shapes,
        "cases": cases,
    }
    if opts.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"no-op handlers, {opts.events:,} events a round",
        caption="bare: fetch, the batch's ack sent with the next fetch, no framework "
        "(embedded: fetch then ack on the core). model+ctx: async def h(event: "
        "OrderPlaced, ctx: Context), the README's shape. dict: async def h(data: dict), "
        "no Context. Each concurrency beside its own ceiling.",
        caption_justify="left",
    )
    table.add_column("hub")
    table.add_column("concurrency", justify="right")
    table.add_column("round", justify="right")
    table.add_column("bare fetch/ack, events/s", justify="right")
    for name in opts.shapes:
        table.add_column(f"App {name}, events/s", justify="right")
        table.add_column("/ bare", justify="right")
    for hub_name, levels in cases.items():
        for c, case in levels.items():
            for i, r in enumerate(case["rounds"], 1):
                row = [hub_name, c, str(i), f"{r['bare']:,}"]
                for name in opts.shapes:
                    row += [f"{r[name]:,}", f"{r[name] / r['bare']:.2f}x"]
                table.add_row(*row)
            row = [hub_name, c, "all", f"{case['bare_per_s']:,}"]
            for name in opts.shapes:
                row += [f"{case[name]['per_s']:,}", f"[bold]{case[name]['ratio']:.2f}x[/bold]"]
            table.add_row(*row, end_section=True)
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
