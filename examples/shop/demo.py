"""``make demo`` / ``tidings demo``: the whole shop on this machine, and a load option.

Starts the hub, the four services (each its own ``tidings run`` process), the
orders API and the partner, registers the partner's webhook, prints where to
look, and stops everything on Ctrl-C. With ``--orders N`` it places N orders,
shows progress, and prints how many reached each final state and the time from
202 to the customer's notification (p50, p99).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tidings import AsyncClient

SERVICES = ("inventory", "payments", "shipping", "notifications")
START_S = 30.0


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    health: str | None = None  # a URL that answers 200 once it is up
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, start_new_session=True,
            )  # fmt: skip
        if self.health is not None:
            deadline = time.monotonic() + START_S
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"{self.name} exited at start; see {self.log}")
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(self.health, timeout=1) as r,
                ):
                    if r.status == 200:
                        return
                time.sleep(0.1)
            raise RuntimeError(f"{self.name} did not start within {START_S:g} s; see {self.log}")

    def signal(self, signum: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> None:
        p = self.popen
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@dataclass
class Stack:
    """Every process of the shop, on loopback ports from ``base_port``."""

    data_dir: Path
    base_port: int = 8700
    retry_schedule: str = "0,0.5,2,5,15,30,60"
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.base_port}"

    @property
    def orders_url(self) -> str:
        return f"http://127.0.0.1:{self.base_port + 10}"

    @property
    def partner_url(self) -> str:
        return f"http://127.0.0.1:{self.base_port + 20}"

    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        env.update(TIDINGS_URL=self.hub_url, PYTHONUNBUFFERED="1", **extra)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
        return env

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        py = sys.executable
        hub = Proc(
            "hub",
            [py, "-m", "tidings", "serve", "--port", str(self.base_port),
             "--data-dir", str(self.data_dir / "hub"), "--log-level", "warning",
             "--webhook-allow-net", "127.0.0.0/8",
             "--webhook-retry-schedule", self.retry_schedule],
            self._env(), logs / "hub.log", self.hub_url + "/healthz",
        )  # fmt: skip
        self.procs["hub"] = hub
        hub.start()
        secret = asyncio.run(self._register_partner())
        uvicorn = [py, "-m", "uvicorn", "--host", "127.0.0.1", "--log-level", "warning"]
        self.procs["partner"] = Proc(
            "partner",
            [*uvicorn, "--port", str(self.base_port + 20), "examples.shop.partner:app"],
            self._env(SHOP_PARTNER_SECRET=secret), logs / "partner.log",
            self.partner_url + "/healthz",
        )  # fmt: skip
        self.procs["orders"] = Proc(
            "orders",
            [*uvicorn, "--port", str(self.base_port + 10), "examples.shop.orders:app"],
            self._env(), logs / "orders.log", self.orders_url + "/healthz",
        )  # fmt: skip
        for name in SERVICES:
            self.procs[name] = Proc(
                name,
                [py, "-m", "tidings", "run", f"examples.shop.{name}:app"],
                self._env(), logs / f"{name}.log",
            )  # fmt: skip
        for name in ("partner", "orders", *SERVICES):
            self.procs[name].start()

    async def _register_partner(self) -> str:
        """The partner's webhook on notifications, made anew: its secret is shown once."""
        url = self.partner_url + "/webhooks/tidings"
        async with AsyncClient(self.hub_url) as hub:
            for wh in await hub.webhooks():
                if wh["url"] == url:
                    await hub.delete_webhook(wh["id"])
            created = await hub.create_webhook(
                url, ["notifications"], description="the shop's partner", ordering="key"
            )
        return str(created["secret"])

    def restart(self, name: str, *, hard: bool = False) -> None:
        proc = self.procs[name]
        if hard:
            proc.kill()
        else:
            proc.stop()
        proc.start()

    def stop(self) -> None:
        # The producers and consumers of events together (each stops gracefully),
        # then the partner, the hub last.
        for group in (("orders", *SERVICES), ("partner",), ("hub",)):
            procs = [self.procs[n] for n in group if n in self.procs]
            for p in procs:
                p.signal(signal.SIGTERM)
            for p in procs:
                p.stop()


# -- load ---------------------------------------------------------------------------


@dataclass
class LoadResult:
    placed: int
    finals: dict[str, str]  # order id -> confirmed | cancelled
    latencies_ms: list[float]
    missing: list[str]

    def percentile(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def place_orders(
    stack: Stack,
    n: int,
    concurrency: int = 20,
    timeout_s: float = 120.0,
    progress: Any = None,
    midway: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> LoadResult:
    """Place ``n`` orders over HTTP and wait for each one's notification; ``midway``
    runs beside the rest once half of them are placed."""
    placed_at: dict[str, float] = {}
    finals: dict[str, str] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async with AsyncClient(stack.hub_url) as hub:
        sub = hub.subscribe("notifications", start="latest")
        await sub.start()  # type: ignore[union-attr]

        async def watch() -> None:
            async for record in sub:
                data = record.event.data
                oid = data.get("order_id") if isinstance(data, dict) else None
                if oid in placed_at and oid not in finals:
                    finals[oid] = data["status"]
                    latencies.append((time.monotonic() - placed_at[oid]) * 1000)
                    if progress is not None:
                        progress(len(finals))
                    if len(finals) == n:
                        done.set()

        watcher = asyncio.create_task(watch())
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)

        async def placer(http: aiohttp.ClientSession) -> None:
            while not queue.empty():
                i = queue.get_nowait()
                body = {
                    "customer": f"customer-{i % 50}",
                    "items": [{"sku": ("kettle" if i % 25 == 24 else "tea"), "qty": 1 + i % 3}],
                    "promo_code": "WELCOME10" if i % 4 == 0 else None,
                }
                t0 = time.monotonic()
                async with http.post(stack.orders_url + "/orders", json=body) as resp:
                    if resp.status != 202:
                        raise RuntimeError(f"POST /orders: {resp.status} {await resp.text()}")
                    placed_at[(await resp.json())["order_id"]] = t0
                if midway is not None and len(placed_at) == n // 2:
                    side.append(asyncio.create_task(midway()))

        side: list[asyncio.Task[None]] = []
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(placer(http) for _ in range(concurrency)))
        await asyncio.gather(*side)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout_s)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    missing = sorted(set(placed_at) - set(finals))
    return LoadResult(len(placed_at), finals, latencies, missing)


# -- the command ---------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tidings demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8700, help="the hub's port (others follow)")
    ap.add_argument("--data-dir", type=Path, default=Path("./tidings-demo"))
    ap.add_argument("--orders", type=int, default=0, help="place this many orders, then stop")
    ap.add_argument("--concurrency", type=int, default=20, help="orders placed at once")
    ap.add_argument(
        "--kill", choices=SERVICES, default=None,
        help="with --orders: kill -9 this service halfway through, and start it again",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if not Path("examples/shop").is_dir():
        print("run the demo from the root of the tidings repository", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.progress import Progress

    console = Console()
    stack = Stack(args.data_dir, args.port)
    try:
        with console.status("starting the hub, the services, the orders API and the partner"):
            stack.start()
        console.print(
            f"hub        {stack.hub_url}  (dashboard at /, API at /docs)\n"
            f"orders API {stack.orders_url}  (POST /orders, GET /orders/ID)\n"
            f"partner    {stack.partner_url}/received\n"
            f"logs       {args.data_dir / 'logs'}"
        )
        if args.orders:
            midway = None
            if args.kill:
                victim: str = args.kill

                async def midway() -> None:
                    await asyncio.to_thread(stack.restart, victim, hard=True)
                    console.print(f"killed {victim} (SIGKILL) and started it again")

            with Progress(console=console) as bar:
                task = bar.add_task("orders finished", total=args.orders)
                result = asyncio.run(
                    place_orders(
                        stack, args.orders, args.concurrency,
                        progress=lambda k: bar.update(task, completed=k),
                        midway=midway,
                    )
                )  # fmt: skip
            counts: dict[str, int] = {}
            for status in result.finals.values():
                counts[status] = counts.get(status, 0) + 1
            console.print(
                f"placed {result.placed}: "
                + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                + f", not finished {len(result.missing)}; "
                f"202 to notification p50 {result.percentile(0.5):.0f} ms, "
                f"p99 {result.percentile(0.99):.0f} ms"
            )
            return 0 if not result.missing else 1
        console.print("Ctrl-C stops everything.")
        # Explicitly: a shell may start a background job with SIGINT ignored.
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        with console.status("stopping"):
            stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())
