"""HTTP ingest benchmark: the hub's publish route beside a bare ASGI ceiling, in one run.

Both servers run as their own process on a free loopback port, under uvicorn with
uvloop and httptools and no access log, and take the same load from the same
load generator (``wrk``; an aiohttp loop in this process when wrk is missing)::

    ours      python -m tidings serve --fsync interval:5 --log-level warning
    ceiling   ceiling_app below: a bare ASGI app with the hub's collector tuning
              that reads the body, parses it with orjson and answers 202 with
              each event's id, partition and offset

    single    one 256-byte order.placed CloudEvent per request
              (application/cloudevents+json): req/s, p50, p99
    batch     1000 of them per request (application/cloudevents-batch+json): events/s
    keyed     1000 per request, each with its own partitionkey and id (unique to
              the request), to a topic of 3 partitions: events/s
    validate  (with --schemas) single and batch again on a topic with schemas
              "validate" and order.placed's schema registered (ORDER_SCHEMA), beside
              ours without schemas from the same run: the cost of checking data

Only 2xx answers count, and the hub must have stored exactly their events (plus
those of requests wrk cut at its stop). The unkeyed events carry no ``id``, so the
hub gives each one a UUIDv7 and no request hits the dedupe window; the keyed ones
are checked against it. Anchors, measured when the service answers on loopback and
skipped otherwise: NATS JetStream (nats-py ``publish_async``) and Redis Streams
(redis-py, pipelined ``XADD``, 1000 per pipeline), the same events, one client.

Run it with ``tidings bench http`` or ``python bench/http_ingest.py``.
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvloop
from rich.console import Console

from tidings.benchmarks.anchors import Anchor, nats_anchor, redis_anchor
from tidings.benchmarks.http_load import TAG_LEN, TAG_MARK, Load, LoadFn, Wrk, aiohttp_load
from tidings.benchmarks.http_report import (
    EVENT_BYTES,
    Case,
    Options,
    Run,
    to_json,
    to_table,
)
from tidings.benchmarks.processes import BenchmarkFailed, free_port, scratch_dir, serve_process

TOPIC = "bench.orders"
PATH = f"/v1/topics/{TOPIC}/events"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
VALIDATED_TOPIC = "bench.validated"
VALIDATED_PATH = f"/v1/topics/{VALIDATED_TOPIC}/events"
# What build_events makes, as a JSON Schema 2020-12 document.
ORDER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^ord_[0-9]+$"},
        "customer": {"type": "string", "minLength": 1},
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                "required": ["sku", "qty"],
            },
        },
        "total": {"type": "string", "pattern": "^[0-9]+\\.[0-9]{2}$"},
    },
    "required": ["order_id", "customer", "items", "total"],
}

KEYED_TOPIC = "bench.keyed"
KEYED_PATH = f"/v1/topics/{KEYED_TOPIC}/events"
KEYED_PARTITIONS = 3


# -- the ceiling ------------------------------------------------------------------------


async def ceiling_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """What any Python ASGI ingest route costs at least: the ceiling for ``tidings serve``.

    A bare ASGI app, as the hub's publish route is, with the hub's collector tuning
    (frozen start-up objects, young collections every 50,000 allocations), under the
    same server. It reads the body, parses it with orjson and answers 202 with what
    the hub answers: each event's id, partition and offset. It stores nothing and
    checks nothing.
    """
    kind = scope["type"]
    if kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                gc.collect()
                gc.freeze()
                gc.set_threshold(50_000, 20, 100)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if kind != "http":
        return
    if scope["method"] == "POST":
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        obj = orjson.loads(b"".join(chunks) if len(chunks) > 1 else chunks[0])
        events = obj if isinstance(obj, list) else [obj]
        answer = orjson.dumps(
            {
                "events": [
                    {"id": e.get("id"), "partition": 0, "offset": n}
                    for n, e in enumerate(events)
                ]
            }
        )
        status = 202
    else:  # GET /healthz
        answer, status = b'{"status":"ok"}', 200
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


# -- the events -------------------------------------------------------------------------


def build_events(count: int, seed: int = 7, keyed: bool = False) -> list[bytes]:
    """``count`` distinct ``order.placed`` CloudEvents, each exactly 256 bytes.

    Unkeyed ones carry no ``id`` (the hub makes one) and no ``partitionkey``. Keyed
    ones carry a ``partitionkey`` of their own (``k0000``...) and an ``id`` made of
    :data:`TAG_MARK` and their number: each request replaces the mark with a tag of
    :data:`TAG_LEN` characters unique to it, so that no request repeats an id (the
    size counts the tag, not the mark).

    See https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/formats/json-format.md
    """
    rng = random.Random(seed)
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    out: list[bytes] = []
    for n in range(count):
        qty = [rng.randrange(1, 5) for _ in range(rng.randrange(1, 4))]
        items = [{"sku": f"SKU-{rng.randrange(1000, 9999)}", "qty": q} for q in qty]
        total = f"{sum(qty) * rng.randrange(500, 5000) / 100:.2f}"
        data: dict[str, Any] = {"order_id": f"ord_{n:08d}", "customer": "cus_", "items": items}
        head = {"id": "x" * TAG_LEN + f"-{n:04d}", "partitionkey": f"k{n:04d}"} if keyed else {}

        def size() -> int:
            return len(_order_placed(now, data, total, head))  # noqa: B023

        # Fewer items until it fits, then a longer customer id up to the exact size.
        while size() > EVENT_BYTES and len(items) > 1:
            items.pop()
        short = EVENT_BYTES - size()
        data["customer"] += "".join(rng.choice("abcdefghjkmnpqrstuvwxyz") for _ in range(short))
        event = _order_placed(now, data, total, head)
        if len(event) != EVENT_BYTES:
            raise ValueError(f"an order.placed event is {len(event)} bytes, not {EVENT_BYTES}")
        if keyed:
            event = event.replace(b"x" * TAG_LEN + b"-", TAG_MARK + b"-", 1)
        out.append(event)
    return out


def _order_placed(now: str, data: dict[str, Any], total: str, head: dict[str, str]) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            **head,
            "source": "/shop/orders",
            "type": "order.placed",
            "time": now,
            "data": {**data, "total": total},
        }
    )


# -- results ----------------------------------------------------------------------------


def _put(url: str, body: Any) -> None:
    req = urllib.request.Request(
        url, orjson.dumps(body), {"Content-Type": "application/json"}, method="PUT"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        if r.status not in (200, 201):
            raise BenchmarkFailed(f"PUT {url} answered {r.status}")


def _put_topic(url: str, topic: str, partitions: int) -> None:
    body = orjson.dumps({"partitions": partitions})
    req = urllib.request.Request(
        f"{url}/v1/topics/{topic}", body, {"Content-Type": "application/json"}, method="PUT"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        if r.status not in (200, 201):
            raise BenchmarkFailed(f"PUT {url}/v1/topics/{topic} answered {r.status}")


def _post(url: str, body: bytes, content_type: str) -> None:
    """One request outside the timing: checks the route answers 202, and creates the topic."""
    req = urllib.request.Request(url, body, {"Content-Type": content_type}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        if r.status != 202:
            raise BenchmarkFailed(f"POST {url} answered {r.status}, not 202")


def _stored_events(url: str, topic: str) -> int:
    with urllib.request.urlopen(f"{url}/v1/topics/{topic}", timeout=10) as r:
        count: int = orjson.loads(r.read())["events"]
        return count


def _load_generator(opts: Options, scratch: Path) -> tuple[str, LoadFn, list[str]]:
    exe = shutil.which("wrk") if opts.load in ("auto", "wrk") else None
    if exe is not None:
        wrk = Wrk(exe, opts.threads, scratch)
        return f"{wrk.version}, {opts.threads} threads", wrk.run, []
    if opts.load == "wrk":
        raise BenchmarkFailed("wrk is not on PATH (apt-get install -y wrk)")

    def run(*args: Any) -> Load:
        return uvloop.run(aiohttp_load(*args))

    if opts.load == "aiohttp":
        return "aiohttp", run, []
    note = "wrk not found: the load came from an aiohttp loop in the benchmark's process"
    return "aiohttp (wrk not found)", run, [note]


# -- the run ------------------------------------------------------------------------------


def run_all(opts: Options, root: Path, progress: Console) -> Run:
    events = build_events(opts.batch)
    single, batch = events[0], b"[" + b",".join(events) + b"]"
    keyed = b"[" + b",".join(build_events(opts.batch, keyed=True)) + b"]"
    tool, load, notes = _load_generator(opts, root)
    python = sys.executable
    hub_port, ceiling_port = free_port(), free_port()
    hub_argv = [
        python,
        "-m",
        "tidings",
        "serve",
        "--port",
        str(hub_port),
        "--data-dir",
        str(root / "hub-data"),
        "--fsync",
        "interval:5",
        "--log-level",
        "warning",
    ]
    ceiling_argv = [
        python,
        "-m",
        "uvicorn",
        "tidings.benchmarks.http_ingest:ceiling_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(ceiling_port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--lifespan",
        "on",
        "--log-level",
        "warning",
    ]
    cases: list[Case] = []
    progress.log(f"load: {tool}; starting the hub and the ceiling")
    with (
        serve_process("hub", hub_argv, hub_port, root) as hub,
        serve_process("ceiling", ceiling_argv, ceiling_port, root) as ceiling,
    ):
        for url in (hub, ceiling):
            _post(url + PATH, single, STRUCTURED)
        _put_topic(hub, KEYED_TOPIC, KEYED_PARTITIONS)
        measured = [
            ("single", PATH, single, STRUCTURED, 1, opts.connections),
            (f"batch {opts.batch}", PATH, batch, BATCH, opts.batch, opts.batch_connections),
            (
                f"keyed batch {opts.batch}, {KEYED_PARTITIONS} partitions",
                KEYED_PATH, keyed, BATCH, opts.batch, opts.batch_connections,
            ),
        ]  # fmt: skip
        if opts.schemas:
            _put(hub + "/v1/schemas/order.placed", {"schema": ORDER_SCHEMA})
            _put(hub + f"/v1/topics/{VALIDATED_TOPIC}", {"schemas": "validate"})
            _post(hub + VALIDATED_PATH, single, STRUCTURED)

        def ours_exactly(
            name: str, path: str, body: bytes, ctype: str, per_request: int, conns: int
        ) -> tuple[Load, int, int]:
            topic = path.split("/")[3]
            progress.log(f"{name}: ours, {conns} connections, {opts.seconds} s")
            if opts.warmup:
                load(hub + path, body, ctype, per_request, conns, opts.warmup)
            time.sleep(0.5)  # requests wrk cut at its stop are stored by now, or never
            before = _stored_events(hub, topic)
            ours = load(hub + path, body, ctype, per_request, conns, opts.seconds)
            time.sleep(0.5)
            stored = _stored_events(hub, topic) - before
            # Exactly the events of the 2xx answers are stored, plus those of requests
            # wrk cut at its stop (at most one per connection), and nothing else.
            cut = stored - ours.ok * per_request
            if cut < 0 or cut > conns * per_request or cut % per_request:
                raise BenchmarkFailed(
                    f"{name}: the hub stored {stored} events while it answered "
                    f"{ours.ok} requests of {per_request} with a 2xx"
                )
            return ours, stored, cut

        for name, path, body, ctype, per_request, conns in measured:
            ours, stored, cut = ours_exactly(name, path, body, ctype, per_request, conns)
            progress.log(f"{name}: ceiling, {conns} connections, {opts.seconds} s")
            if opts.warmup:
                load(ceiling + path, body, ctype, per_request, conns, opts.warmup)
            bare = load(ceiling + path, body, ctype, per_request, conns, opts.seconds)
            cases.append(Case(name, conns, ours, bare, stored, cut))
            if opts.schemas and path == PATH:
                # Checked against ours without schemas, measured just before.
                checked, stored, cut = ours_exactly(
                    f"{name}, schemas validate", VALIDATED_PATH, body, ctype, per_request, conns
                )
                cases.append(Case(f"{name}, schemas validate", conns, checked, ours, stored, cut))
        topics = (TOPIC, KEYED_TOPIC, *((VALIDATED_TOPIC,) if opts.schemas else ()))
        stored_total = sum(_stored_events(hub, t) for t in topics)
    for c in cases:
        for who, figure in (("ours", c.ours), ("ceiling", c.ceiling)):
            if figure.errors:
                notes.append(f"{c.name}, {who}: {figure.errors} failed requests (not counted)")
    anchors: list[Anchor] = []
    if opts.anchors:
        progress.log(f"anchor: NATS JetStream at {opts.nats_url}")
        anchors.append(uvloop.run(nats_anchor(opts.nats_url, events, opts.seconds)))
        progress.log(f"anchor: Redis Streams at {opts.redis_url}")
        anchors.append(redis_anchor(opts.redis_url, events, opts.seconds))
    return Run(opts, tool, cases, anchors, stored_total, notes)


# -- command line -------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not above 0")
    return value


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="tidings bench http",
        description="Publish throughput of tidings serve over HTTP, beside a bare ASGI "
        "ceiling measured in the same run, with NATS JetStream and Redis Streams as anchors.",
    )
    add = parser.add_argument
    add("--seconds", type=_positive_int, default=8, help="length of each figure (default 8)")
    add("--warmup", type=int, default=1, help="seconds of load before each figure (default 1)")
    add(
        "--connections",
        type=_positive_int,
        default=64,
        help="connections for single-event requests (default 64)",
    )
    add(
        "--batch-connections",
        type=_positive_int,
        default=8,
        help="connections for batch requests (default 8)",
    )
    add("--threads", type=_positive_int, default=2, help="wrk threads (default 2)")
    add("--batch", type=_positive_int, default=1000, help="events per batch request (default 1000)")
    add(
        "--load",
        choices=("auto", "wrk", "aiohttp"),
        default="auto",
        help="load generator: wrk, else aiohttp (default auto)",
    )
    add("--nats-url", default="nats://127.0.0.1:4222", help="NATS anchor (default %(default)s)")
    add(
        "--redis-url", default="redis://127.0.0.1:6379/0", help="Redis anchor (default %(default)s)"
    )
    add("--no-anchors", dest="anchors", action="store_false", help="skip NATS and Redis")
    add("--json", action="store_true", help="print one JSON object")
    add(
        "--schemas",
        action="store_true",
        help="also measure publishing to a topic with schemas validate, beside ours without",
    )
    add(
        "--data-dir",
        type=Path,
        default=None,
        help="where the hub writes: a fresh directory inside it, removed after "
        "(default: one in the system temp dir)",
    )
    ns = parser.parse_args(argv)
    if ns.warmup < 0:
        parser.error("--warmup must be 0 or more")
    return Options(
        ns.seconds,
        ns.warmup,
        ns.connections,
        ns.batch_connections,
        ns.threads,
        ns.batch,
        ns.load,
        ns.nats_url,
        ns.redis_url,
        ns.anchors,
        ns.json,
        ns.data_dir,
        ns.schemas,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the HTTP ingest benchmark; returns the process exit status."""
    try:
        opts = parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else 2
    err = Console(stderr=True, log_path=False)
    try:
        root = scratch_dir("tidings-bench-http-", opts.data_dir)
    except OSError as exc:
        err.print(f"cannot make a data directory: {exc}")
        return 1
    try:
        run = run_all(opts, root, err)
    except (BenchmarkFailed, OSError, subprocess.SubprocessError, TimeoutError) as exc:
        err.print(f"HTTP ingest benchmark failed: {exc}")
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if opts.json:
        sys.stdout.write(orjson.dumps(to_json(run), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        Console().print(to_table(run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
