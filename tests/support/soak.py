"""A hostile soak: ordinary publishes while slow, huge and wide clients press on the hub.

``python tests/support/soak.py --seconds 600`` starts its own hub (loopback, a
fresh data directory, the flags given after ``--``), runs every attacker below
beside a steady publisher for the time given, samples the hub's memory and
descriptors each second, and prints one JSON summary. ``make soak`` runs it for
ten minutes; ``tests/server/test_soak.py`` runs a short one in ``make test``.

The attackers, each bounded in count and time:

- slow clients: connections that send one header byte a second and never finish;
- topics: created one after another up to ``--topics`` (the hub's limit, or more);
- big headers: requests whose header never ends (MiBs of it);
- big bodies: several concurrent 15 MiB bodies, again and again;
- wide pattern lists: a WebSocket ``subscribe`` and a group with 100,000 types.

What it reports: publish latency (p50, p99, max) and statuses, what each attacker
was answered, and the hub's RSS and open descriptors at the start, their maximum
and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import websockets

WIDE = 100_000


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Sampler:
    """The hub process's RSS (bytes) and open descriptors, once a second."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss: list[int] = []
        self.fds: list[int] = []

    def sample(self) -> None:
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{self.pid}/status").read_text()
            kb = next(
                int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")
            )
            self.rss.append(kb * 1024)
            self.fds.append(len(os.listdir(f"/proc/{self.pid}/fd")))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    def summary(self) -> dict[str, Any]:
        def trio(xs: list[int]) -> dict[str, int]:
            return {"start": xs[0], "max": max(xs), "end": xs[-1]} if xs else {}

        # the first and last minute's (or tenth's) maxima, to see a trend
        n = max(1, min(60, len(self.rss) // 10))
        return {
            "rss": trio(self.rss),
            "fds": trio(self.fds),
            "rss_max_first": max(self.rss[:n]) if self.rss else 0,
            "rss_max_last": max(self.rss[-n:]) if self.rss else 0,
            "samples": len(self.rss),
        }


async def publisher(
    url: str,
    stop: asyncio.Event,
    rate: float,
    out: dict[str, Any],
    acked: list[dict[str, Any]] | None = None,
) -> None:
    """Single events to one topic at ``rate``/s; each latency recorded, and each 202's
    position put in ``acked`` if given."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        i = 0
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            body = orjson.dumps(
                {"type": "soak.made", "data": {"i": i}, "partitionkey": f"k{i % 8}"}
            )
            t0 = time.perf_counter()
            try:
                async with http.post(
                    f"{url}/v1/topics/soak.orders/events",
                    data=body,
                    headers={"content-type": "application/cloudevents+json"},
                ) as r:
                    answer = await r.read()
                    statuses[str(r.status)] += 1
                    if r.status == 202:
                        latencies.append(time.perf_counter() - t0)
                        if acked is not None:
                            acked.extend(orjson.loads(answer)["events"])
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
            i += 1
            next_at += 1 / rate
            await asyncio.sleep(max(0.0, next_at - loop.time()))
    latencies.sort()

    def q(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    out["publish"] = {
        "sent": i,
        "statuses": dict(statuses),
        "p50_ms": q(0.50) if latencies else None,
        "p99_ms": q(0.99) if latencies else None,
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
    }


async def slow_clients(port: int, stop: asyncio.Event, count: int, out: Counter[str]) -> None:
    """``count`` connections that send a header byte a second; reopened when dropped."""

    async def one() -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                out["connect refused"] += 1
                await asyncio.sleep(1)
                continue
            out["opened"] += 1
            try:
                writer.write(b"GET /v1/topics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                while not stop.is_set():
                    writer.write(b"a")
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        data = await asyncio.wait_for(reader.read(1024), 1.0)
                        if data:
                            out["answered " + data.split(b"\r\n", 1)[0][9:12].decode()] += 1
                        out["dropped by the hub"] += 1
                        break
            except OSError:
                out["dropped by the hub"] += 1
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    await asyncio.gather(*(one() for _ in range(count)))


async def big_headers(port: int, stop: asyncio.Event, out: Counter[str]) -> None:
    """A request whose header goes on for up to 64 MiB; what is it answered?"""
    chunk = b"a" * (1 << 16)
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            out["connect refused"] += 1
            await asyncio.sleep(1)
            continue
        try:
            writer.write(b"GET /v1/topics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            for _ in range(1024):
                if stop.is_set():
                    break
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 5)
            data = await asyncio.wait_for(reader.read(1024), 5)
            out["answered " + (data.split(b"\r\n", 1)[0][9:12].decode() or "nothing")] += 1
        except (OSError, TimeoutError) as exc:
            out["cut: " + type(exc).__name__] += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await asyncio.sleep(0.5)


async def big_bodies(url: str, stop: asyncio.Event, out: Counter[str]) -> None:
    """Eight concurrent 15 MiB bodies, again and again."""
    body = b'{"type":"soak.big","data":"' + b"x" * (15 << 20) + b'"}'
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def one() -> None:
            try:
                async with http.post(
                    f"{url}/v1/topics/soak.big/events",
                    data=io.BytesIO(body),
                    headers={"content-type": "application/cloudevents+json"},
                ) as r:
                    await r.read()
                    out[str(r.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                out[type(exc).__name__] += 1

        while not stop.is_set():
            await asyncio.gather(*(one() for _ in range(8)))
            await asyncio.sleep(1)


async def topics(url: str, stop: asyncio.Event, limit: int, out: Counter[str]) -> None:
    """Topics created one after another, up to ``limit`` (then it stops)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for i in range(limit):
            if stop.is_set():
                return
            try:
                async with http.put(
                    f"{url}/v1/topics/soak.t{i:05d}",
                    data=b'{"partitions": 3}',
                    headers={"content-type": "application/json"},
                ) as r:
                    await r.read()
                    out[str(r.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                out[type(exc).__name__] += 1
            await asyncio.sleep(0.02)


async def wide_patterns(url: str, stop: asyncio.Event, out: Counter[str]) -> None:
    """100,000 type patterns: on a WebSocket subscribe and on a group fetch."""
    types = [f"t{i}.*" for i in range(WIDE)]
    ws_url = url.replace("http://", "ws://") + "/v1/ws"
    frame = orjson.dumps(
        {"type": "subscribe", "id": "wide", "topic": "soak.orders", "types": types}
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        while not stop.is_set():
            try:
                async with websockets.connect(
                    ws_url,
                    subprotocols=[websockets.Subprotocol("tidings.v1")],
                    max_size=None,
                    origin=websockets.Origin(url),
                ) as ws:
                    await ws.send(frame.decode())
                    answer = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
                    out["ws " + str(answer.get("type")) + " " + str(answer.get("code", ""))] += 1
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                out["ws " + type(exc).__name__] += 1
            group = f"{url}/v1/topics/soak.orders/groups/soak-wide"
            try:
                async with http.put(
                    group,
                    data=io.BytesIO(orjson.dumps({"types": types})),
                    headers={"content-type": "application/json"},
                ) as r:
                    await r.read()
                    out["group " + str(r.status)] += 1
                async with http.post(
                    group + "/fetch",
                    data=orjson.dumps({"max": 1, "wait": 0}),
                    headers={"content-type": "application/json"},
                ) as r:
                    await r.read()
                    out["fetch " + str(r.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                out["group " + type(exc).__name__] += 1
            await asyncio.sleep(2)


async def soak(
    url: str,
    port: int,
    pid: int,
    seconds: float,
    *,
    rate: float,
    slow: int,
    topic_count: int,
    acked: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Every attacker beside the steady publisher for ``seconds``; the summary. The
    publisher's 202 positions go into ``acked`` if given."""
    stop = asyncio.Event()
    sampler = Sampler(pid)
    result: dict[str, Any] = {"seconds": seconds}
    counters: dict[str, Counter[str]] = {
        k: Counter()
        for k in ("slow_clients", "big_headers", "big_bodies", "topics", "wide_patterns")
    }
    tasks = [
        asyncio.create_task(sampler.run(stop)),
        asyncio.create_task(publisher(url, stop, rate, result, acked)),
        asyncio.create_task(slow_clients(port, stop, slow, counters["slow_clients"])),
        asyncio.create_task(big_headers(port, stop, counters["big_headers"])),
        asyncio.create_task(big_bodies(url, stop, counters["big_bodies"])),
        asyncio.create_task(topics(url, stop, topic_count, counters["topics"])),
        asyncio.create_task(wide_patterns(url, stop, counters["wide_patterns"])),
    ]
    await asyncio.sleep(seconds)
    stop.set()
    done, pending = await asyncio.wait(tasks, timeout=60)
    for t in pending:
        t.cancel()
    for t in done:
        if t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    result["attacks"] = {k: dict(v) for k, v in counters.items()}
    result["hub"] = sampler.summary()
    return result


def start_hub(
    port: int, data_dir: Path, extra: list[str], nofile: int | None
) -> subprocess.Popen[bytes]:
    def limits() -> None:
        if nofile is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    log_path = data_dir.parent / "hub.log"
    argv = [sys.executable, "-m", "tidings", "serve", "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--log-level", "warning", *extra]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, preexec_fn=limits)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the hub exited with {proc.returncode}; see {log_path}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1),
        ):
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the hub did not start within 30 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=100.0, help="ordinary publishes per second")
    parser.add_argument("--slow", type=int, default=200, help="slow connections held open")
    parser.add_argument("--topics", type=int, default=1200, help="topics to try to create")
    parser.add_argument("--nofile", type=int, default=1024, help="the hub's RLIMIT_NOFILE")
    parser.add_argument("hub_args", nargs="*", help="flags for tidings serve, after --")
    args = parser.parse_args(argv)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tidings-soak-") as tmp:
        data = Path(tmp) / "data"
        proc = start_hub(port, data, args.hub_args, args.nofile)
        try:
            result = asyncio.run(
                soak(
                    f"http://127.0.0.1:{port}",
                    port,
                    proc.pid,
                    args.seconds,
                    rate=args.rate,
                    slow=args.slow,
                    topic_count=args.topics,
                )
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        result["hub_log_tail"] = (Path(tmp) / "hub.log").read_text(errors="replace")[-2000:]
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
