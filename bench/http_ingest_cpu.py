"""CPU per publish, in process: ``python bench/http_ingest_cpu.py CASE APP [--requests N]``.

``tidings bench http``'s requests (CASE ``single``, ``batch`` or ``keyed``: the same
256-byte order.placed events, a keyed batch's ids made unique per request) sent
straight to an ASGI app, with no sockets: APP ``hub`` is the app ``tidings serve``
builds (embedded backend, ``--fsync interval:5``, a new data directory in the
system temp dir, removed at the end), ``ceiling`` the benchmark's ceiling app. 64
one-event requests or 8 batches are in flight at a time. After a warm-up of a
tenth of the requests, the figure is the CPU time of the whole process (every
thread) over the measured requests and until the event index has taken them in
(its catch-up is counted, and also printed on its own), divided by the requests
or events. On a shared machine CPU time is steadier than throughput; measure the
ceiling in the same minutes, and take the least of a few runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import orjson
import uvloop

from tidings.benchmarks.http_ingest import KEYED_TOPIC, build_events, ceiling_app
from tidings.benchmarks.http_load import TAG_LEN, TAG_MARK
from tidings.log.config import FsyncPolicy
from tidings.server.serve import ServeConfig, build

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def _lifespan(app: App) -> tuple[asyncio.Future[None], asyncio.Queue[dict[str, Any]]]:
    """Start the app's lifespan and wait (at most 30 s) for its startup to complete."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox.put_nowait({"type": "lifespan.startup"})
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, inbox.get, send))
    for _ in range(600):
        if messages:
            break
        await asyncio.sleep(0.05)
    if not messages or messages[0]["type"] != "lifespan.startup.complete":
        raise SystemExit(f"the app did not start: {messages}")
    return task, inbox


async def measure(case: str, which: str, requests: int) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="tidings-cpu-"))
    try:
        hub = None
        app: App = ceiling_app
        if which == "hub":
            config = ServeConfig(
                data_dir=scratch, fsync=FsyncPolicy.parse("interval:5"), log_level="warning"
            )
            uv, hub = build(config)
            app = cast(App, uv.app)
        life, inbox = await _lifespan(app)
        path = "/v1/topics/bench/events"
        if case == "single":
            bodies = build_events(1000)
            ctype = b"application/cloudevents+json"
        else:
            events = build_events(1000, keyed=case == "keyed")
            bodies = [b"[" + b",".join(events) + b"]"]
            ctype = b"application/cloudevents-batch+json"
            if case == "keyed":
                path = f"/v1/topics/{KEYED_TOPIC}/events"
                if hub is not None:
                    await hub.create_topic(KEYED_TOPIC, 3)
        statuses: dict[int, int] = {}
        sent = 0

        async def one(i: int) -> None:
            nonlocal sent
            body = bodies[i % len(bodies)]
            if case == "keyed":
                sent += 1
                body = body.replace(TAG_MARK, b"%0*d" % (TAG_LEN, sent))
            headers = [(b"host", b"127.0.0.1"), (b"content-type", ctype),
                       (b"content-length", b"%d" % len(body))]  # fmt: skip
            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
                "query_string": b"", "root_path": "", "headers": headers, "state": {},
                "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8700),
            }  # fmt: skip
            given = False

            async def receive() -> dict[str, Any]:
                nonlocal given
                if given:  # a disconnect never comes: the answer ends the request
                    await asyncio.sleep(3600)
                given = True
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses[message["status"]] = statuses.get(message["status"], 0) + 1

            await app(scope, receive, send)

        async def run(n: int) -> None:
            numbers = iter(range(n))

            async def worker() -> None:
                for i in numbers:
                    await one(i)

            await asyncio.gather(*(worker() for _ in range(64 if case == "single" else 8)))

        await run(max(64, requests // 10))
        if hub is not None and not await hub.index.settle(60):
            raise SystemExit("the event index did not catch up with the warm-up")
        gc.collect()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await run(requests)
        cpu1 = time.process_time()
        if hub is not None and not await hub.index.settle(120):
            raise SystemExit("the event index did not catch up within 120 s")
        cpu2, wall2 = time.process_time(), time.perf_counter()
        inbox.put_nowait({"type": "lifespan.shutdown"})
        await asyncio.wait_for(life, 30)
        per = 1 if case == "single" else 1000
        return {
            "case": case, "app": which, "requests": requests, "statuses": statuses,
            "cpu_us_per_request": round((cpu2 - cpu0) / requests * 1e6, 1),
            "cpu_us_per_event": round((cpu2 - cpu0) / requests / per * 1e6, 3),
            "index_catch_up_us_per_event": round((cpu2 - cpu1) / requests / per * 1e6, 3),
            "wall_s": round(wall2 - wall0, 2),
            **({} if hub is None else {"index_read_back": hub.index.read_back_total,
                                       "indexed": hub.index.indexed_total}),
        }  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=["single", "batch", "keyed"])
    parser.add_argument("app", choices=["hub", "ceiling"])
    parser.add_argument("--requests", type=int, help="20000 single, 200 batches by default")
    opts = parser.parse_args()
    requests = opts.requests or (20_000 if opts.case == "single" else 200)
    figures = uvloop.run(measure(opts.case, opts.app, requests))
    print(orjson.dumps(figures, option=orjson.OPT_NON_STR_KEYS).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
