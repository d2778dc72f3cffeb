"""Ours in the streams benchmark: publishing the events, and the timed replay.

The parent (:mod:`tidings.benchmarks.streams`) publishes the events with
:func:`publish_embedded` or :func:`publish_http`, 1000 a batch in file order, to
topic ``bench.sales`` of ONE partition: the merged order (append time, then
partition) is then the file's order, which the reference follows.

The replay runs in a process of its own (``python -m
tidings.benchmarks.streams_ours --hub HUB --mode MODE ... OUT.json``), so its
peak memory is its own, in one of two modes:

``app``
    ``App("benchstreams", hub=HUB)`` with ``app.window("sales_per_minute",
    topic="bench.sales", window=Tumbling(size, grace=grace), key=partitionkey,
    agg=Count(), emit="final", commit_interval=...)``: a new view, so it reads
    its input from earliest; checkpoints on (every commit publishes the
    results, then appends the changed state and a checkpoint to the changelog).
    Timed from ``app.start()`` to the moment its last checkpoint covers the
    whole input and its topic holds every closed window's result (polled every
    10 ms). With ``embedded:`` the hub's core is opened first, untimed (its
    recovery and dedupe refill are a restart's cost, reported beside), as the
    parent waits for a served hub's ``/readyz`` before starting this process.
``engine``
    The engine's window operator (``window_operator``) driven directly over the hub's records
    (``read_timed``, 1000 a read): process each record, ``advance`` to the
    read's horizon, ``drain``. No App runtime, no commits, no checkpoints: what
    the operators cost alone, with the reads. Embedded only; timed from the
    first read to the last drain.

Results come back from the view's topic (``app``) or the drains (``engine``) as
``{(key, window start): count}``; the late events are counted from
``sales_per_minute.late`` or the drains.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop

from tidings.app.transport import EmbeddedTransport, Transport, open_transport
from tidings.benchmarks.processes import peak_rss_kib
from tidings.benchmarks.streams_events import TOPIC, parse_ms, read_jsonl
from tidings.client.async_client import AsyncClient
from tidings.core.positions import format_token
from tidings.errors import TopicNotFound

VIEW = "sales_per_minute"
MODES = ("app", "engine")
_POLL_S = 0.01
_DEADLINE_S = 1800.0


def describe(mode: str, hub: str) -> str:
    where = "embedded: (in process)" if hub == "embedded" else "tidings serve (over HTTP)"
    if mode == "app":
        return f"App window view, checkpoints on, {where}"
    return f"window operator alone over the hub's records, {where}"


def missing(mode: str, *, http: bool = False) -> str | None:
    """Why ``mode`` cannot run on this build (a part not there yet), or None."""
    if importlib.util.find_spec("tidings.streams") is None:
        return "no tidings.streams (the window engine) in this build"
    import tidings.streams as streams

    if not hasattr(streams, "window_operator"):
        return "tidings.streams has no window_operator in this build"
    from tidings.app.app import App

    if mode == "app" and not hasattr(App, "window"):
        return "App has no window() (the stream runtime) in this build"
    if not hasattr(EmbeddedTransport, "read_timed"):
        return "the transports cannot read with append times in this build"
    if mode == "engine" and http:
        return "the engine mode reads the hub's core: embedded only"
    return None


async def publish_embedded(data_dir: Path, events: Path) -> None:
    """The events, 1000 a batch in file order, to a one-partition topic in ``data_dir``."""
    transport = EmbeddedTransport(data_dir)
    await transport.open()
    try:
        await transport.hub.create_topic(TOPIC, partitions=1)
        for batch in read_jsonl(events):
            await transport.publish(TOPIC, batch)
        # The event index trails a burst of publishes: let it finish here, so that the
        # replay's process does not index the input while it is timed.
        if not await transport.hub.index.settle(timeout=_DEADLINE_S):
            raise RuntimeError("the event index did not catch up with the events")
    finally:
        await transport.close()


async def publish_http(url: str, events: Path) -> None:
    """As :func:`publish_embedded`, to the hub at ``url``, one request after another."""
    async with AsyncClient(url, timeout=120) as client:
        await client.create_topic(TOPIC, partitions=1)
        for batch in read_jsonl(events):
            await client.publish_many(TOPIC, batch)
    # As embedded: wait for the event index. A lookup answers 503 while the index
    # trails what was acknowledged before it, 200 once it has caught up.
    deadline = time.perf_counter() + _DEADLINE_S
    probe = f"{url}/v1/events?correlationid=bench-none"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        while True:
            async with http.get(probe) as resp:
                await resp.read()
                if resp.status == 200:
                    return
                if resp.status != 503 or time.perf_counter() > deadline:
                    raise RuntimeError(f"the event index did not catch up: {resp.status}")


async def ready(url: str) -> None:
    """Wait for a served hub's ``/readyz`` (its dedupe window refilled from the log)."""
    deadline = time.perf_counter() + _DEADLINE_S
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        while True:
            async with http.get(url + "/readyz") as resp:
                await resp.read()
                if resp.status == 200:
                    return
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{url} was not ready in {_DEADLINE_S:g} s: {resp.status}")
            await asyncio.sleep(0.05)


def _window(event: dict[str, Any]) -> tuple[tuple[str, int], int]:
    """A result event's ``((key, start_ms), count)``."""
    data = event["data"]
    return (str(data["key"]), parse_ms(data["start"])), int(data["value"])


def _add(windows: dict[tuple[str, int], int], events: list[dict[str, Any]]) -> None:
    for event in events:
        k, count = _window(event)
        if windows.get(k, count) != count:
            raise RuntimeError(f"window {k} published as {windows[k]} and as {count}")
        windows[k] = count


async def _read_all(t: Transport, topic: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    start = "earliest"
    while True:
        try:
            batch = await t.read_timed(topic, start, 1000, 0)
        except TopicNotFound:  # nothing was ever published to it
            return out
        if not batch.records:
            return out
        out.extend(ev for _, _, _, ev in batch.records)
        start = format_token(batch.next)


async def _published(t: Transport, topic: str) -> int:
    try:
        return sum((await t.end_positions(topic)).values())
    except TopicNotFound:  # made with the first result
        return 0


def _key(event: Any) -> str:
    key: str = event.get("partitionkey")
    return key


def _window_spec(opts: argparse.Namespace) -> Any:
    from tidings.streams import Tumbling

    return Tumbling(f"{opts.size_ms}ms", grace=f"{opts.grace_ms}ms")


async def run_app(opts: argparse.Namespace) -> dict[str, Any]:
    from tidings.app.app import App, settle_collector
    from tidings.streams import Count

    app = App("benchstreams", hub=opts.hub, poll_wait=1.0)
    app.window(
        VIEW, topic=TOPIC, window=_window_spec(opts), key=_key, agg=Count(), emit="final",
        commit_interval=opts.commit_interval,
    )  # fmt: skip
    watch = open_transport(opts.hub)
    t0 = time.perf_counter()
    # embedded: the hub's core opens here (recovery, the dedupe window refilled from
    # the log), untimed; the App shares it (a directory is opened once per process).
    await watch.open()
    opened, open_peak = time.perf_counter() - t0, _peak_kib()
    start, cpu = time.perf_counter(), time.process_time()
    await app.start()
    settle_collector()  # as `tidings run` does once its apps have started
    try:
        proc = app.processors[0]
        deadline = start + _DEADLINE_S
        while True:
            # The checkpoint in memory first: asking the hub costs it a request.
            at = proc.committed.get(TOPIC, {})
            if sum(at.values()) >= opts.events and await _published(watch, VIEW) >= opts.windows:
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the window view did not finish in {_DEADLINE_S:g} s")
            await asyncio.sleep(_POLL_S)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        peak = _peak_kib()  # before the results are read back
        commits = proc.commits
        await app.stop()
        windows: dict[tuple[str, int], int] = {}
        _add(windows, await _read_all(watch, VIEW))
        late = len(await _read_all(watch, VIEW + ".late"))
    finally:
        await watch.close()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "windows": windows,
        "late": late,
        "peak_rss_kib": peak,
        "detail": f"{commits} commits (checkpoints), commit_interval {opts.commit_interval:g} s"
        + _opened(opts.hub, opened, open_peak),
    }


def _peak_kib() -> int:
    """This process's resident-set high-water mark so far (``VmHWM``), in KiB."""
    return peak_rss_kib()


def _opened(hub: str, seconds: float, peak_kib: int) -> str:
    if not hub.startswith("embedded:"):
        return ""
    return (
        f"; the hub's core opened first in {seconds:.2f} s (not timed), "
        f"its high-water mark then {peak_kib / 1024:,.0f} MB"
    )


async def run_engine(opts: argparse.Namespace) -> dict[str, Any]:
    from tidings.streams import Count, window_operator

    t = open_transport(opts.hub)
    t0 = time.perf_counter()
    await t.open()
    opened, open_peak = time.perf_counter() - t0, _peak_kib()
    start, cpu = time.perf_counter(), time.process_time()
    try:
        op = window_operator(VIEW, [TOPIC], _window_spec(opts), _key, Count(), emit="final")
        windows: dict[tuple[str, int], int] = {}
        late = reads = 0
        at = "earliest"
        while True:
            batch = await t.read_timed(TOPIC, at, 1000, 0)
            if not batch.records:
                break
            reads += 1
            for p, o, ms, event in batch.records:
                op.process((0, p, o, ms, event))
            op.advance(batch.horizon)
            out = op.drain()
            _add(windows, out.results)
            late += len(out.late)
            at = format_token(batch.next)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        peak = _peak_kib()
    finally:
        await t.close()
    detail = f"{reads} reads" + _opened(opts.hub, opened, open_peak)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "windows": windows,
        "late": late,
        "peak_rss_kib": peak,
        "detail": detail,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", type=Path, help="where the JSON result is written")
    p.add_argument("--hub", required=True, help="embedded:DIR or http://HOST:PORT")
    p.add_argument("--mode", choices=MODES, default="app")
    p.add_argument("--events", type=int, required=True, help="events in the topic")
    p.add_argument("--windows", type=int, required=True, help="windows the events close")
    p.add_argument("--size-ms", type=int, required=True)
    p.add_argument("--grace-ms", type=int, required=True)
    p.add_argument("--commit-interval", type=float, default=0.1)
    opts = p.parse_args(argv)
    why = missing(opts.mode, http=not opts.hub.startswith("embedded:"))
    if why:
        p.error(why)
    result = uvloop.run(run_app(opts) if opts.mode == "app" else run_engine(opts))
    windows: dict[tuple[str, int], int] = result.pop("windows")
    result |= {
        "events": opts.events,  # every record of the topic was read and processed
        "windows": [[k, s, c] for (k, s), c in sorted(windows.items())],
    }
    opts.out.write_bytes(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
