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
import asyncio
import gc
import itertools
import os
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop
from rich import box
from rich.console import Console
from rich.table import Table

from tidings.benchmarks.anchors import Anchor, nats_anchor, redis_anchor
from tidings.benchmarks.processes import BenchmarkFailed, free_port, scratch_dir, serve_process

EVENT_BYTES = 256
TOPIC = "bench.orders"
PATH = f"/v1/topics/{TOPIC}/events"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
VALIDATED_TOPIC = "bench.validated"
VALIDATED_PATH = f"/v1/topics/{VALIDATED_TOPIC}/events"
GOALS = {"single": 0.60, "batch": 0.40, "validate": 0.70}
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

# Bounds besides --seconds: how far past its deadline a measurement may run, and how
# many events an anchor may send.
_GRACE_S = 30.0
_MAX_REQUESTS = 20_000_000

_now = time.perf_counter

# Keyed events' ids hold this mark; each request replaces it with a tag of TAG_LEN
# characters of its own (two of the run, two of the wrk thread, eight of a counter).
TAG_MARK = b"~TAG~"
TAG_LEN = 12
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


@dataclass(frozen=True, slots=True)
class Load:
    """What one load run saw: 2xx answers, everything else, and the answers' latency."""

    ok: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    events_per_request: int

    @property
    def req_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def events_per_s(self) -> float:
        return self.req_per_s * self.events_per_request


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    connections: int
    ours: Load
    ceiling: Load
    # Events the hub stored while ours was measured (warm-up excluded), and of
    # them those of requests wrk cut at its stop (stored, never answered).
    stored: int = 0
    cut: int = 0

    @property
    def ratio(self) -> float:
        c = self.ceiling.events_per_s
        return self.ours.events_per_s / c if c > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Options:
    seconds: int
    warmup: int
    connections: int
    batch_connections: int
    threads: int
    batch: int
    load: str
    nats_url: str
    redis_url: str
    anchors: bool
    json: bool
    data_dir: Path | None
    schemas: bool = False


@dataclass(frozen=True, slots=True)
class Run:
    options: Options
    load_tool: str
    cases: list[Case]
    anchors: list[Anchor]
    stored: int
    notes: list[str]


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


# -- load generators ----------------------------------------------------------------------

_WRK_SCRIPT = """\
local f = assert(io.open([==[{body}]==], "rb"))
local body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local mark = "{mark}"
local parts = nil
if mark == "" then
  wrk.body = body
else
  parts = {{}}
  local i = 1
  while true do
    local j = string.find(body, mark, i, true)
    if not j then table.insert(parts, string.sub(body, i)) break end
    table.insert(parts, string.sub(body, i, j - 1))
    i = j + #mark
  end
end
-- Per thread: the 2xx answers it counted, and the requests it made.
ok = 0
sent = 0
local threads = {{}}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 end
end
if parts ~= nil then
  -- Each request's ids carry a tag of its own: run, thread, counter.
  function request()
    sent = sent + 1
    return wrk.format(nil, nil, nil, table.concat(parts, string.format("{run}%02d%08d", tid, sent)))
  end
end
function done(s, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("ok") end
  local e = s.errors
  io.write(string.format('TIDINGS_WRK {{"requests":%d,"ok":%d,"duration_us":%d,"connect":%d,' ..
    '"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}}\\n',
    s.requests, n, s.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


class Wrk:
    """``wrk`` with a Lua script that POSTs one body, counts the 2xx answers exactly,
    and reports its summary as JSON. A body holding :data:`TAG_MARK` is sent with the
    mark replaced by a tag unique to each request."""

    def __init__(self, exe: str, threads: int, scratch: Path) -> None:
        self.exe = exe
        self.threads = threads
        self.scratch = scratch
        self.runs = 0

    @property
    def version(self) -> str:
        out = subprocess.run([self.exe, "-v"], capture_output=True, text=True, timeout=10)
        found = re.search(r"wrk (\S+)", out.stdout + out.stderr)
        return f"wrk {found.group(1) if found else '?'}"

    def run(
        self, url: str, body: bytes, content_type: str, events: int, connections: int, seconds: int
    ) -> Load:
        self.runs += 1
        if self.runs > 99:
            raise BenchmarkFailed("more than 99 wrk runs: request tags would repeat")
        body_path = self.scratch / f"body-{self.runs}.json"
        body_path.write_bytes(body)
        script = self.scratch / f"post-{self.runs}.lua"
        mark = TAG_MARK.decode() if TAG_MARK in body else ""
        script.write_text(
            _WRK_SCRIPT.format(
                body=body_path, content_type=content_type, mark=mark, run=f"{self.runs:02d}"
            )
        )
        threads = min(self.threads, connections)
        if threads > 99:
            raise BenchmarkFailed("at most 99 wrk threads")
        argv = [
            self.exe,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + _GRACE_S)
        found = re.search(r"^TIDINGS_WRK (\{.*\})$", out.stdout, re.MULTILINE)
        if out.returncode != 0 or found is None:
            raise BenchmarkFailed(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
        s = orjson.loads(found.group(1))
        # Every request that did not get a 2xx answer failed, whatever its status.
        errors = s["requests"] - s["ok"] + s["connect"] + s["read"] + s["write"] + s["timeout"]
        return Load(
            ok=s["ok"],
            errors=errors,
            seconds=s["duration_us"] / 1e6,
            p50_ms=s["p50_us"] / 1000,
            p99_ms=s["p99_us"] / 1000,
            events_per_request=events,
        )


async def _aiohttp_load(
    url: str, body: bytes, content_type: str, events: int, connections: int, seconds: int
) -> Load:
    """The fallback: ``connections`` tasks in this process, each POSTing in a loop
    (a body holding :data:`TAG_MARK` with a tag of its own in each request)."""
    latencies: list[float] = []
    errors = 0
    run = next(_aiohttp_runs)
    tagged = TAG_MARK in body
    headers = {"Content-Type": content_type}
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker(n: int) -> None:
            nonlocal errors
            sent_count = 0
            while _now() < deadline and len(latencies) + errors < _MAX_REQUESTS:
                sent_count += 1
                data = body
                if tagged:
                    data = body.replace(TAG_MARK, b"%02d%04d%06d" % (run % 100, n, sent_count))
                sent = _now()
                try:
                    async with session.post(url, data=data, headers=headers) as r:
                        await r.read()
                        ok = 200 <= r.status < 300
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if ok:
                    latencies.append(_now() - sent)
                else:
                    errors += 1

        start = _now()
        deadline = start + seconds
        async with asyncio.timeout(seconds + _GRACE_S):
            await asyncio.gather(*(worker(n) for n in range(connections)))
        elapsed = _now() - start
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[int(q * (len(latencies) - 1))] * 1000 if latencies else 0.0

    return Load(len(latencies), errors, elapsed, pct(0.50), pct(0.99), events)


_aiohttp_runs = itertools.count(1)

LoadFn = Callable[[str, bytes, str, int, int, int], Load]


def _load_generator(opts: Options, scratch: Path) -> tuple[str, LoadFn, list[str]]:
    exe = shutil.which("wrk") if opts.load in ("auto", "wrk") else None
    if exe is not None:
        wrk = Wrk(exe, opts.threads, scratch)
        return f"{wrk.version}, {opts.threads} threads", wrk.run, []
    if opts.load == "wrk":
        raise BenchmarkFailed("wrk is not on PATH (apt-get install -y wrk)")

    def run(*args: Any) -> Load:
        return uvloop.run(_aiohttp_load(*args))

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


# -- output -------------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {p: metadata.version(p) for p in ("uvicorn", "uvloop", "httptools", "starlette")}
    return {"cpus": cpus, "python": sys.version.split()[0], **versions}


def _load_json(load: Load) -> dict[str, Any]:
    return {
        "requests": load.ok,
        "errors": load.errors,
        "seconds": round(load.seconds, 3),
        "req_per_s": round(load.req_per_s, 1),
        "events_per_s": round(load.events_per_s, 1),
        "p50_ms": round(load.p50_ms, 3),
        "p99_ms": round(load.p99_ms, 3),
    }


def _goal(case: Case) -> float:
    if case.name.endswith("schemas validate"):
        return GOALS["validate"]
    return GOALS["single" if case.ours.events_per_request == 1 else "batch"]


def to_json(run: Run) -> dict[str, Any]:
    opts = run.options
    ours_batch = _plain_batch(run)
    return {
        "benchmark": "http_ingest",
        "date": datetime.now(UTC).date().isoformat(),
        "event_bytes": EVENT_BYTES,
        "seconds": opts.seconds,
        "warmup": opts.warmup,
        "load": run.load_tool,
        "machine": _machine(),
        "cases": [
            {
                "case": c.name,
                "events_per_request": c.ours.events_per_request,
                "connections": c.connections,
                "ours": _load_json(c.ours),
                "ceiling": _load_json(c.ceiling),
                "ratio": round(c.ratio, 3),
                "hub_stored": c.stored,
                "hub_stored_of_cut_requests": c.cut,
                "goal": _goal(c),
                "met": c.ratio >= _goal(c),
            }
            for c in run.cases
        ],
        "hub_stored_events": run.stored,
        "anchors": [
            {
                "anchor": a.name,
                "skipped": a.skipped,
                "detail": a.detail,
                "events": a.events,
                "seconds": round(a.seconds, 3),
                "events_per_s": round(a.events_per_s, 1),
                "ours_batch_ratio": round(ours_batch / a.events_per_s, 3)
                if a.events_per_s
                else None,
            }
            for a in run.anchors
        ],
        "notes": run.notes,
    }


def _plain_batch(run: Run) -> float:
    """Ours on unkeyed batches without schemas: the anchors send the same events."""
    plain = [c for c in run.cases if c.name.startswith("batch ") and "validate" not in c.name]
    return plain[0].ours.events_per_s if plain else 0.0


def to_table(run: Run) -> Table:
    opts, m = run.options, _machine()
    notes = [
        "ours: tidings serve --fsync interval:5. ceiling: a bare ASGI route with the hub's "
        "collector tuning that reads the body, parses it with orjson and answers 202 with each "
        "event's id, partition and offset, same server settings, right after ours. "
        "Only 2xx answers count; the hub stored exactly their events (plus those of requests "
        "cut at wrk's stop). "
        "ratio: ours / ceiling in events/s, beside its goal. Anchors: one client of another "
        "store sending the same events; ratio: ours (batch) / anchor."
        + (" schemas validate: ours on a topic that checks each event's data against "
           "order.placed's registered schema; its ceiling column is ours without schemas "
           "from the same run." if opts.schemas else ""),
        *(f"{a.name}: {a.detail or 'skipped: ' + str(a.skipped)}" for a in run.anchors),
        *run.notes,
    ]
    table = Table(
        title=(
            f"HTTP ingest: {EVENT_BYTES}-byte order.placed CloudEvents, {opts.seconds} s per "
            f"figure, load {run.load_tool}, {m['cpus']} CPUs, Python {m['python']}, "
            f"uvicorn {m['uvicorn']}, uvloop, httptools"
        ),
        caption="\n".join(notes),
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("case")
    table.add_column("ours", justify="right", no_wrap=True)
    table.add_column("ceiling", justify="right", no_wrap=True)
    table.add_column("ratio", justify="right", no_wrap=True)
    for c in run.cases:
        goal = _goal(c)
        met = f"[green]>= {goal:.2f}[/green]" if c.ratio >= goal else f"[red]< {goal:.2f}[/red]"
        unit = "req/s" if c.ours.events_per_request == 1 else "events/s"
        table.add_row(
            f"{c.name}, c{c.connections}, {unit}",
            f"{c.ours.events_per_s:,.0f}",
            f"{c.ceiling.events_per_s:,.0f}",
            f"{c.ratio:.2f}x {met}",
        )
        for label in ("p50", "p99"):
            ours, ceiling = getattr(c.ours, f"{label}_ms"), getattr(c.ceiling, f"{label}_ms")
            table.add_row(f"  {label}, ms", f"{ours:,.2f}", f"{ceiling:,.2f}", "")
        table.add_section()
    ours_batch = _plain_batch(run)
    for a in run.anchors:
        if a.skipped is None and a.events_per_s > 0:
            ratio = f"{ours_batch / a.events_per_s:.2f}x"
            table.add_row(f"{a.name}", f"{ours_batch:,.0f}", f"{a.events_per_s:,.0f}", ratio)
        else:
            table.add_row(f"{a.name}", "", "skipped", "")
    return table


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
