"""WebSocket fan-out benchmark: the hub's ``/v1/ws`` beside a bare ``websockets`` broadcast.

One run measures both, the same way, each server in its own process on a free
loopback port, and the subscribers in a third process (this module with
``--clients``, run with ``sys.executable``)::

    ours      python -m tidings serve --fsync interval:5 --log-level warning;
              N WebSocket subscribers on one topic ("from": "latest"); the
              publisher sends ``publish`` frames over its own WebSocket
    ceiling   this module with ``--ceiling``: websockets' asyncio server, which
              ``websockets.broadcast``\\ s each text frame the publisher sends on
              ``/publish`` to the same N clients. The publisher sends frames of
              the shape and size the hub sends (an ``event`` frame around the
              same CloudEvent), so the clients get the same bytes.

Each event carries its send time (``time.time_ns()`` in ``data.t``); each client
takes it out of every frame it receives and keeps publish-to-receive latency.
The publisher goes through rate steps (events/s, each for ``--seconds``):
deliveries/s is what the clients received during the step's window, over its
length; p50/p99 are over every frame of the step, including those that arrive
in the drain after it. The first step (10 events/s: 10,000 deliveries/s with
1000 clients) is the latency goal; the highest deliveries/s over all steps is
the throughput figure.

Run it with ``tidings bench ws`` or ``python bench/ws_fanout.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import os
import resource
import sys
import tempfile
import time
import urllib.request
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import uvloop
import websockets
from rich import box
from rich.console import Console
from rich.table import Table
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

from tidings.benchmarks.processes import BenchmarkFailed, free_port, serve_process

TOPIC = "fanout"
PAD = "x" * 120  # the event's data makes a ~300-byte CloudEvent, a ~420-byte frame
READY_S = 120.0
DRAIN_S = 2.0
CONNECT_AT_ONCE = 100


def raise_open_files() -> int:
    """The soft open-file limit up to the hard one: 1000 sockets need more than 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        want = 65536 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- the ceiling server ---------------------------------------------------------------------


async def _ceiling(port: int) -> None:
    clients: set[ServerConnection] = set()

    def health(connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path == "/publish":
            async for message in ws:
                broadcast(clients, message)
            return
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    async with serve(
        handler, "127.0.0.1", port, process_request=health, compression=None, max_queue=None
    ) as server:
        # The hub's collector tuning (server/app.py), so that neither pays more for it.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        await server.serve_forever()


# -- the clients process ---------------------------------------------------------------------


class _Clients:
    """N subscribers; each frame's latency goes into one array for the whole step."""

    def __init__(self) -> None:
        self.recv_ns = array("q")
        self.latency_ns = array("q")
        self.per_client: list[int] = []
        self.recording = False

    async def connect(self, url: str, kind: str, n: int) -> list[ClientConnection]:
        slots = asyncio.Semaphore(CONNECT_AT_ONCE)

        async def one(i: int) -> ClientConnection:
            async with slots:
                if kind == "ours":
                    ws = await websockets.connect(
                        url + "/v1/ws",
                        subprotocols=[websockets.Subprotocol("tidings.v1")],
                        compression=None,
                        max_queue=None,
                        open_timeout=60,
                    )
                    sub = {"type": "subscribe", "id": "s", "topic": TOPIC, "from": "latest"}
                    await ws.send(orjson.dumps(sub).decode())
                    got = orjson.loads(await ws.recv(decode=False))
                    if got.get("type") != "subscribed":
                        raise BenchmarkFailed(f"client {i}: {got}")
                else:
                    ws = await websockets.connect(
                        url + "/", compression=None, max_queue=None, open_timeout=60
                    )
                return ws

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    async def receive(self, i: int, ws: ClientConnection) -> None:
        recv_ns, latency_ns, per_client = self.recv_ns, self.latency_ns, self.per_client
        now = time.time_ns
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                frame = await ws.recv(decode=False)
                t = now()
                if not self.recording:
                    continue
                at = frame.find(b'"t":')
                if at < 0:
                    continue
                sent = int(frame[at + 4 : frame.index(b",", at)])
                recv_ns.append(t)
                latency_ns.append(t - sent)
                per_client[i] += 1

    def report(self, t0: int, t1: int) -> dict[str, Any]:
        lat = sorted(self.latency_ns)
        in_window = sum(1 for t in self.recv_ns if t0 <= t <= t1)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6 if lat else float("nan")

        out = {
            "received": len(lat),
            "in_window": in_window,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": lat[-1] / 1e6 if lat else float("nan"),
            "min_per_client": min(self.per_client),
            "max_per_client": max(self.per_client),
            # every latency, so the orchestrator can merge several clients processes
            "latency_ns": base64.b64encode(self.latency_ns.tobytes()).decode(),
        }
        del self.recv_ns[:], self.latency_ns[:]  # in place: the receive loops hold them
        self.per_client[:] = [0] * len(self.per_client)
        self.recording = False
        return out


async def _run_clients(url: str, kind: str, n: int) -> None:
    """Connect, say READY, then obey stdin: ``start`` and ``stop T0 T1`` (a JSON line back)."""
    raise_open_files()
    clients = _Clients()
    conns = await clients.connect(url, kind, n)
    clients.per_client = [0] * n
    tasks = [asyncio.create_task(clients.receive(i, ws)) for i, ws in enumerate(conns)]
    loop = asyncio.get_running_loop()
    print("READY", flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "start":
            clients.recording = True
        elif words[0] == "stop":
            report = clients.report(int(words[1]), int(words[2]))
            print(orjson.dumps(report).decode(), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)


# -- the orchestrator ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    clients: int = 1000
    client_procs: int = 2
    seconds: float = 5.0
    rates: tuple[int, ...] = (10, 50, 100, 200)
    json: bool = False


@dataclass(slots=True)
class Step:
    rate: int  # events/s published
    published: int
    seconds: float
    received: int
    in_window: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    min_per_client: int
    max_per_client: int

    @property
    def deliveries_per_s(self) -> float:
        return self.in_window / self.seconds

    @property
    def exact(self) -> bool:
        return self.min_per_client == self.max_per_client == self.published


@dataclass(slots=True)
class Target:
    name: str
    steps: list[Step] = field(default_factory=list)

    @property
    def max_deliveries_per_s(self) -> float:
        return max((s.deliveries_per_s for s in self.steps), default=0.0)


def _frame(offset: int, event: bytes) -> bytes:
    """The ``event`` frame the hub sends for ``event`` at ``offset`` (for the ceiling)."""
    return (
        b'{"type":"event","sub":"s","topic":"%s","resume":"0:%d","partition":0,"offset":%d,'
        b'"event":' % (TOPIC.encode(), offset + 1, offset) + event + b"}"
    )


def _event(i: int, t: int) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"bench-{i:09d}",
        "source": "/bench/ws-fanout",
        "type": "bench.tick",
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": {"t": t, "pad": PAD},
    }


REPORT_LIMIT = 256 * 1024 * 1024


class _ClientsProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise BenchmarkFailed(f"the clients process exited ({self.proc.returncode})")
        return raw.decode().strip()

    async def say(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()


async def _publish(ws: ClientConnection, kind: str, rate: int, seconds: float, first: int) -> int:
    """``rate`` events/s for ``seconds``, on a fixed schedule; how many were sent."""
    loop = asyncio.get_running_loop()
    count = int(rate * seconds)
    start = loop.time()
    for k in range(count):
        due = start + k / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        i = first + k
        event = _event(i, time.time_ns())
        if kind == "ours":
            await ws.send(
                orjson.dumps({"type": "publish", "ref": i, "topic": TOPIC, "event": event}),
                text=True,
            )
        else:
            await ws.send(_frame(i, orjson.dumps(event)), text=True)
    return count


async def _drain_answers(ws: ClientConnection) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for _ in ws:
            pass


def _merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One step's report from the reports of every clients process."""
    lat = array("q")
    for r in reports:
        lat.frombytes(base64.b64decode(r["latency_ns"]))
    ordered = sorted(lat)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6 if ordered else 0.0

    return {
        "received": sum(r["received"] for r in reports),
        "in_window": sum(r["in_window"] for r in reports),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": ordered[-1] / 1e6 if ordered else 0.0,
        "min_per_client": min(r["min_per_client"] for r in reports),
        "max_per_client": max(r["max_per_client"] for r in reports),
    }


async def _measure(kind: str, url: str, opts: Options, progress: Console) -> Target:
    target = Target(kind)
    shares = [
        opts.clients // opts.client_procs + (1 if i < opts.clients % opts.client_procs else 0)
        for i in range(opts.client_procs)
    ]
    ws_url = url.replace("http://", "ws://")
    procs = []
    for n in shares:
        command = [sys.executable, "-m", "tidings.benchmarks.ws_fanout", "--clients-mode"]
        command += ["--url", ws_url, "--kind", kind, "--clients", str(n)]
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=REPORT_LIMIT,  # a report line carries every latency of its step
        )
        procs.append(proc)
    group = [_ClientsProcess(proc) for proc in procs]
    try:
        for clients in group:
            ready = await clients.line(READY_S)
            if ready != "READY":
                raise BenchmarkFailed(f"a clients process said {ready!r}")
        if kind == "ours":
            pub = await websockets.connect(
                ws_url + "/v1/ws", subprotocols=[websockets.Subprotocol("tidings.v1")],
                compression=None,
            )  # fmt: skip
        else:
            pub = await websockets.connect(ws_url + "/publish", compression=None)
        answers = asyncio.create_task(_drain_answers(pub))
        first = 0
        try:
            for rate in opts.rates:
                progress.print(f"  {kind}: {rate} events/s x {opts.clients} clients")
                for clients in group:
                    await clients.say("start")
                await asyncio.sleep(0.2)  # the clients read stdin on their own
                t0 = time.time_ns()
                sent = await _publish(pub, kind, rate, opts.seconds, first)
                t1 = time.time_ns()
                first += sent
                await asyncio.sleep(DRAIN_S)
                for clients in group:
                    await clients.say(f"stop {t0} {t1}")
                reports = [orjson.loads(await clients.line(60)) for clients in group]
                target.steps.append(Step(rate, sent, (t1 - t0) / 1e9, **_merge(reports)))
        finally:
            answers.cancel()
            await pub.close()
        for clients in group:
            await clients.say("quit")
        await asyncio.wait_for(asyncio.gather(*(proc.wait() for proc in procs)), 30)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return target


def _create_topic(url: str) -> None:
    req = urllib.request.Request(
        f"{url}/v1/topics/{TOPIC}", b"{}", {"Content-Type": "application/json"}, method="PUT"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        if r.status not in (200, 201):
            raise BenchmarkFailed(f"PUT topic answered {r.status}")


def run_all(opts: Options, root: Path, progress: Console) -> list[Target]:
    raise_open_files()  # the servers inherit it
    logs = root / "logs"
    logs.mkdir()
    out: list[Target] = []
    port = free_port()
    ours = [
        sys.executable, "-m", "tidings", "serve", "--port", str(port),
        "--data-dir", str(root / "data"), "--fsync", "interval:5", "--log-level", "warning",
    ]  # fmt: skip
    with serve_process("ours", ours, port, logs) as url:
        _create_topic(url)
        out.append(uvloop.run(_measure("ours", url, opts, progress)))
    port = free_port()
    ceiling = [sys.executable, "-m", "tidings.benchmarks.ws_fanout", "--ceiling", str(port)]
    with serve_process("ceiling", ceiling, port, logs) as url:
        out.append(uvloop.run(_measure("ceiling", url, opts, progress)))
    return out


def _machine() -> dict[str, Any]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {p: metadata.version(p) for p in ("uvicorn", "uvloop", "websockets", "starlette")}
    return {"cpus": cpus, "python": sys.version.split()[0], **versions}


def to_json(targets: list[Target], opts: Options) -> dict[str, Any]:
    ours, ceiling = targets
    first_ours, first_ceiling = ours.steps[0], ceiling.steps[0]
    ratio = ours.max_deliveries_per_s / ceiling.max_deliveries_per_s
    return {
        "benchmark": "ws_fanout",
        "clients": opts.clients,
        "client_procs": opts.client_procs,
        "seconds": opts.seconds,
        "machine": _machine(),
        "targets": {
            t.name: {
                "max_deliveries_per_s": round(t.max_deliveries_per_s),
                "steps": [
                    {
                        "rate": s.rate,
                        "published": s.published,
                        "deliveries_per_s": round(s.deliveries_per_s),
                        "p50_ms": round(s.p50_ms, 2),
                        "p99_ms": round(s.p99_ms, 2),
                        "max_ms": round(s.max_ms, 2),
                        "exact": s.exact,
                        "min_per_client": s.min_per_client,
                        "max_per_client": s.max_per_client,
                    }
                    for s in t.steps
                ],
            }
            for t in targets
        },
        "ratio_max_deliveries": round(ratio, 3),
        "goals": {
            "deliveries_ratio_at_least_0.5": ratio >= 0.5,
            "p99_under_50ms_at_first_step": first_ours.p99_ms < 50,
            "first_step_deliveries_per_s": {
                "ours": round(first_ours.deliveries_per_s),
                "ceiling": round(first_ceiling.deliveries_per_s),
            },
        },
    }


def to_table(targets: list[Target], opts: Options) -> Table:
    ours, ceiling = targets
    table = Table(
        title=f"WebSocket fan-out to {opts.clients} subscribers, {opts.seconds:g} s per step",
        box=box.SIMPLE_HEAVY,
    )
    for col in ("events/s", "deliveries/s ours", "ceiling", "ratio",
                "p50 ms ours", "ceiling", "p99 ms ours", "ceiling", "exact"):  # fmt: skip
        table.add_column(col, justify="right")
    for a, b in zip(ours.steps, ceiling.steps, strict=True):
        table.add_row(
            str(a.rate),
            f"{a.deliveries_per_s:,.0f}",
            f"{b.deliveries_per_s:,.0f}",
            f"{a.deliveries_per_s / b.deliveries_per_s:.2f}x" if b.deliveries_per_s else "-",
            f"{a.p50_ms:.1f}", f"{b.p50_ms:.1f}", f"{a.p99_ms:.1f}", f"{b.p99_ms:.1f}",
            "yes" if a.exact else f"no ({a.min_per_client}..{a.max_per_client}/{a.published})",
        )  # fmt: skip
    ratio = ours.max_deliveries_per_s / ceiling.max_deliveries_per_s
    table.caption = (
        f"max deliveries/s: ours {ours.max_deliveries_per_s:,.0f}, ceiling "
        f"{ceiling.max_deliveries_per_s:,.0f}, ratio {ratio:.2f}x (goal >= 0.5x); "
        f"p99 at {ours.steps[0].rate} events/s: {ours.steps[0].p99_ms:.1f} ms (goal < 50 ms)"
    )
    return table


def _rates(text: str) -> tuple[int, ...]:
    try:
        rates = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 10,50,100") from None
    if not rates or min(rates) < 1:
        raise argparse.ArgumentTypeError("rates must be positive integers")
    return rates


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="tidings bench ws", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    ap.add_argument("--clients", type=int, default=1000, help="WebSocket subscribers")
    ap.add_argument(
        "--client-procs",
        type=int,
        default=2,
        help="processes the subscribers are spread over (one Python loop per core)",
    )
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per rate step")
    ap.add_argument(
        "--rates",
        type=_rates,
        default=(10, 50, 100, 200),
        help="events/s of each step, comma-separated; the first is the latency goal",
    )
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    ap.add_argument("--ceiling", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--clients-mode", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--kind", choices=("ours", "ceiling"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ceiling is not None:
        raise_open_files()
        uvloop.run(_ceiling(args.ceiling))
        return 0
    if args.clients_mode:
        uvloop.run(_run_clients(args.url, args.kind, args.clients))
        return 0
    if args.client_procs < 1 or args.client_procs > args.clients:
        print("--client-procs must be from 1 to --clients", file=sys.stderr)
        return 2
    opts = Options(args.clients, args.client_procs, args.seconds, args.rates, args.json)
    progress = Console(stderr=True)
    try:
        with tempfile.TemporaryDirectory(prefix="tidings-bench-ws-") as tmp:
            targets = run_all(opts, Path(tmp), progress)
    except BenchmarkFailed as exc:
        progress.print(f"[red]benchmark failed:[/red] {exc}")
        return 1
    if opts.json:
        print(orjson.dumps(to_json(targets, opts), option=orjson.OPT_INDENT_2).decode())
    else:
        Console().print(to_table(targets, opts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
