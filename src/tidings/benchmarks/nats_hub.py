"""The hub on NATS JetStream beside bare nats-py on the same servers, in the same run.

For R1 (one nats-server) and R3 (three, routed, ``GOMAXPROCS=1`` each), every server
with ``sync_interval: always``, started on free loopback ports with one hub node
(``tidings serve --backend nats://... --replicas N``) on them::

    publish, single   ours: wrk POSTs one 256-byte event per request (--connections)
                      ceiling: js.publish_async of the same events, as many acks
                      outstanding as wrk has connections, each awaited
    publish, batch    ours: wrk POSTs batches of 1000 (--batch-connections)
                      ceiling: the same 1000 as one atomic JetStream batch (the
                      batch headers, one commit answered), one batch at a time
    fetch/ack         ours: a group fetching 1000 at a time over HTTP, each batch's
                      ack sent while the next fetch goes out (the bare loop of
                      ``tidings bench handlers``)
                      ceiling: a durable pull consumer on the same stream, fetch of
                      1000, then the batch acked (AckAll, the last message's ack
                      awaited), over the same records

The ceilings' streams are made by the backend's own log (same configuration:
file storage, replicas, duplicate window, atomic batches) and every record carries a
``Nats-Msg-Id`` as the hub's do. Each round runs every case once, ours first in even
rounds and the ceiling first in odd ones. Each figure is events/s, the best of the
rounds; each ratio is ours over its ceiling, both from the same run. Run it with
``tidings bench nats``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvloop

from tidings.backends.nats import NatsLog, NatsSettings, names
from tidings.benchmarks.http_ingest import BATCH, STRUCTURED, build_events
from tidings.benchmarks.http_load import Wrk
from tidings.benchmarks.processes import BenchmarkFailed, scratch_dir
from tidings.client.async_client import AsyncClient
from tidings.client.groups import group_path
from tidings.cluster.launcher import ClusterFailed, LocalCluster

BATCH_EVENTS = 1000
_DEADLINE_S = 120.0


@dataclass(frozen=True, slots=True)
class Figure:
    replicas: int
    case: str
    ours: float  # events/s
    ceiling: float

    @property
    def ratio(self) -> float:
        return self.ours / self.ceiling if self.ceiling > 0 else 0.0


def _post(url: str, body: bytes, content_type: str) -> None:
    req = urllib.request.Request(url, body, {"Content-Type": content_type}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        if r.status != 202:
            raise BenchmarkFailed(f"POST {url} answered {r.status}, not 202")


def _put_topic(url: str, topic: str) -> None:
    body = orjson.dumps({"partitions": 1})
    req = urllib.request.Request(
        f"{url}/v1/topics/{topic}", body, {"Content-Type": "application/json"}, method="PUT"
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        if r.status not in (200, 201):
            raise BenchmarkFailed(f"PUT {url}/v1/topics/{topic} answered {r.status}")


async def raw_single(log: NatsLog, nc: Any, topic: str, events: list[bytes], window: int,
                     seconds: float) -> float:  # fmt: skip
    """js.publish_async, ``window`` acks outstanding, each awaited (ack before answer)."""
    js = nc.jetstream(publish_async_max_pending=window * 2)
    subject = names.subject(topic, 0)
    pending: collections.deque[Any] = collections.deque()
    done = 0
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        if len(pending) >= window:
            await pending.popleft()
            done += 1
        ev = events[n % len(events)]
        pending.append(await js.publish_async(subject, ev, headers={"Nats-Msg-Id": f"{topic}-{n}"}))
        n += 1
    for fut in pending:
        await fut
        done += 1
    return done / (time.perf_counter() - start)


async def raw_atomic(nc: Any, topic: str, events: list[bytes], seconds: float) -> float:
    """Atomic batches of 1000 by hand (nats-py has no call for them): the batch headers
    on each message, the commit's answer awaited, one batch at a time."""
    subject = names.subject(topic, 0)
    chunk = (events * (BATCH_EVENTS // len(events) + 1))[:BATCH_EVENTS]
    stored = 0
    b = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        for i, p in enumerate(chunk):
            hdrs = {
                "Nats-Batch-Id": f"{topic}-{b}",
                "Nats-Batch-Sequence": str(i + 1),
                "Nats-Msg-Id": f"{topic}-{b}-{i}",
            }
            if i == len(chunk) - 1:
                hdrs["Nats-Batch-Commit"] = "1"
                ack = await nc.request(subject, p, timeout=10, headers=hdrs)
                if b'"count"' not in ack.data:
                    raise BenchmarkFailed(f"an atomic batch was refused: {ack.data[:300]!r}")
            else:
                await nc.publish(subject, p, headers=hdrs)
        stored += len(chunk)
        b += 1
    return stored / (time.perf_counter() - start)


async def ours_fetch_ack(url: str, topic: str, group: str, want: int) -> float:
    """The bare HTTP group loop of ``tidings bench handlers``: a batch's ack goes out
    together with the next fetch."""
    async with AsyncClient(url, timeout=60) as client:
        await client.create_group(topic, group, start="earliest")
        path = group_path(topic, group)
        call = client._call
        body = {"max": BATCH_EVENTS, "wait": 1.0}
        got = 0
        acking: asyncio.Future[Any] | None = None
        start = time.perf_counter()
        while got < want:
            if time.perf_counter() - start > _DEADLINE_S:
                raise BenchmarkFailed(f"the hub's group loop got {got} of {want} events")
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
        return got / (time.perf_counter() - start)


async def raw_fetch_ack(nc: Any, topic: str, durable: str, want: int, replicas: int) -> float:
    """A durable pull consumer (AckAll) on the topic's stream: fetch 1000, ack the last,
    awaited."""
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js import api
    from nats.js.errors import ServiceUnavailableError

    js = nc.jetstream()
    stream = names.stream_name(topic, 0)
    # no filter: the stream's two subjects (each append's last record is on the second)
    await js.add_consumer(
        stream,
        api.ConsumerConfig(
            durable_name=durable, ack_policy=api.AckPolicy.ALL,
            deliver_policy=api.DeliverPolicy.ALL, num_replicas=replicas, max_ack_pending=-1,
        ),
    )  # fmt: skip
    sub = await js.pull_subscribe_bind(durable, stream)
    got = 0
    start = time.perf_counter()
    while got < want:
        if time.perf_counter() - start > _DEADLINE_S:
            raise BenchmarkFailed(f"the raw pull consumer got {got} of {want} events")
        try:
            msgs = await sub.fetch(BATCH_EVENTS, timeout=5)
        except NatsTimeoutError:
            continue
        except ServiceUnavailableError:  # an R3 consumer's leader not elected yet
            await asyncio.sleep(0.05)
            continue
        await msgs[-1].ack_sync(timeout=10)
        got += len(msgs)
    rate = got / (time.perf_counter() - start)
    await sub.unsubscribe()
    return rate


async def _measure(
    cluster: LocalCluster, opts: argparse.Namespace, wrk: Wrk, events: list[bytes], run: int
) -> list[Figure]:
    import nats

    hub = cluster.hub_urls[0]
    r = cluster.replicas
    log = await NatsLog.connect(NatsSettings(servers=tuple(cluster.nats_urls)), replicas=r)
    nc = await nats.connect(cluster.nats_urls)
    figures: list[Figure] = []
    try:
        single, batch, filled = f"single{run}", f"batch{run}", f"fa{run}"
        for t in (single, batch, filled):
            _put_topic(hub, t)
            await log.create_topic("raw-" + t, 1)
        body = b"[" + b",".join(events[:BATCH_EVENTS]) + b"]"

        def hub_load(topic: str, one: bool) -> float:
            url = f"{hub}/v1/topics/{topic}/events"
            payload, ctype = (events[0], STRUCTURED) if one else (body, BATCH)
            _post(url, payload, ctype)  # outside the timing
            conns = opts.connections if one else opts.batch_connections
            load = wrk.run(url, payload, ctype, 1 if one else BATCH_EVENTS, conns, opts.seconds)
            if load.errors:
                raise BenchmarkFailed(f"{load.errors} publishes to {topic} failed")
            return load.events_per_s

        # ours first in even rounds, the ceiling first in odd ones (drift hits both)
        async def pair(ours_first: bool, *sides: Any) -> tuple[float, float]:
            ours_side, ceiling_side = sides
            if ours_first:
                a = await ours_side()
                return a, await ceiling_side()
            b = await ceiling_side()
            return await ours_side(), b

        first = run % 2 == 0
        ours, ceiling = await pair(
            first,
            lambda: asyncio.to_thread(hub_load, single, True),
            lambda: raw_single(log, nc, "raw-" + single, events, opts.connections, opts.seconds),
        )
        figures.append(Figure(r, "publish single", ours, ceiling))
        ours, ceiling = await pair(
            not first,
            lambda: asyncio.to_thread(hub_load, batch, False),
            lambda: raw_atomic(nc, "raw-" + batch, events, opts.seconds),
        )
        figures.append(Figure(r, f"publish batch of {BATCH_EVENTS}", ours, ceiling))

        # the same records for both consumers: published through the hub
        for _ in range(opts.records // BATCH_EVENTS):
            await asyncio.to_thread(_post, f"{hub}/v1/topics/{filled}/events", body, BATCH)
        want = (opts.records // BATCH_EVENTS) * BATCH_EVENTS
        ours, ceiling = await pair(
            first,
            lambda: ours_fetch_ack(hub, filled, f"g{run}", want),
            lambda: raw_fetch_ack(nc, filled, f"raw{run}", want, r),
        )
        figures.append(Figure(r, f"group fetch/ack of {BATCH_EVENTS}", ours, ceiling))
    finally:
        await nc.close()
        await log.close()
    return figures


def run_all(opts: argparse.Namespace, root: Path) -> list[Figure]:
    exe = shutil.which("wrk")
    if exe is None:
        raise BenchmarkFailed("wrk is not on PATH (apt-get install -y wrk)")
    wrk = Wrk(exe, opts.threads, root)
    events = build_events(BATCH_EVENTS)
    figures: list[Figure] = []
    for replicas in opts.replicas:
        cluster = LocalCluster(root / f"r{replicas}", size=replicas, hubs=1, port=0, nats_port=0)
        cluster.start()
        try:
            for run in range(opts.rounds):
                print(f"R{replicas} round {run + 1} ...", file=sys.stderr, flush=True)
                figures += uvloop.run(_measure(cluster, opts, wrk, events, run))
        finally:
            cluster.close()
    return figures


def _summary(figures: list[Figure]) -> list[dict[str, Any]]:
    """Per replicas and case: the best of the rounds of each side, and their ratio."""
    out: dict[tuple[int, str], dict[str, Any]] = {}
    for f in figures:
        empty = {"replicas": f.replicas, "case": f.case, "ours": 0.0, "ceiling": 0.0}
        row = out.setdefault((f.replicas, f.case), {**empty, "rounds": []})
        row["ours"] = max(row["ours"], f.ours)
        row["ceiling"] = max(row["ceiling"], f.ceiling)
        row["rounds"].append({"ours": round(f.ours), "ceiling": round(f.ceiling),
                              "ratio": round(f.ratio, 3)})  # fmt: skip
    for row in out.values():
        row["ratio"] = round(row["ours"] / row["ceiling"], 3) if row["ceiling"] else 0.0
        row["ours"], row["ceiling"] = round(row["ours"]), round(row["ceiling"])
    return list(out.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tidings bench nats", description=__doc__.splitlines()[0])
    p.add_argument("--replicas", default="1,3", help="comma-separated: 1, 3 (default 1,3)")
    p.add_argument("--seconds", type=int, default=5, help="seconds per publish measurement")
    p.add_argument("--records", type=int, default=20_000, help="records each consumer takes")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--connections", type=int, default=50, help="single publishes in flight")
    p.add_argument("--batch-connections", type=int, default=2, help="batch requests in flight")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--data-dir", type=Path, default=None, help="where the run's files go")
    p.add_argument("--json", action="store_true")
    opts = p.parse_args(argv)
    given = opts.replicas.split(",")
    if not given or any(r not in ("1", "3") for r in given) or len(set(given)) < len(given):
        p.error(f"--replicas {opts.replicas!r}: give 1, 3 or 1,3")
    opts.replicas = [int(r) for r in given]
    root = scratch_dir("tidings-bench-nats-", opts.data_dir)
    try:
        figures = run_all(opts, root)
    except (BenchmarkFailed, ClusterFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if opts.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    rows = _summary(figures)
    if opts.json:
        print(orjson.dumps({"load_average": os.getloadavg(), "figures": rows}).decode())
        return 0
    print(f"nats-server sync_interval: always; events of 256 B; best of {opts.rounds} rounds; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
    for row in rows:
        rounds = ", ".join(f"{x['ratio']:.2f}" for x in row["rounds"])
        print(f"  R{row['replicas']} {row['case']:26s} ours {row['ours']:>9,} ev/s   "
              f"ceiling {row['ceiling']:>9,} ev/s   ratio {row['ratio']:.2f} "
              f"(rounds: {rounds})")  # fmt: skip
    return 0
