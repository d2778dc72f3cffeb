"""The anchors of the HTTP ingest benchmark: what a user might pick instead.

NATS JetStream (nats-py ``publish_async``) and Redis Streams (redis-py, pipelined
``XADD``), sent the same events by one client, measured where the service
answers on loopback and skipped otherwise. They are not ceilings.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from secrets import token_hex

MAX_ANCHOR_EVENTS = 4_000_000
GRACE_S = 30.0  # how far past its deadline an anchor may run


@dataclass(frozen=True, slots=True)
class Anchor:
    name: str
    events: int = 0
    seconds: float = 0.0
    detail: str = ""
    skipped: str | None = None

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


# nats-py and redis are optional: imported by name, so mypy passes with or without them.


def listening(url: str, default_port: int) -> bool:
    parts = urllib.parse.urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or default_port)
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


async def nats_anchor(url: str, events: Sequence[bytes], seconds: int) -> Anchor:
    name = "anchor: NATS JetStream, publish_async"
    try:
        nats = importlib.import_module("nats")
        failures = (importlib.import_module("nats.errors").Error, OSError)
    except ImportError:
        return Anchor(name, skipped="nats-py is not installed")
    if not listening(url, 4222):
        return Anchor(name, skipped=f"nothing listens at {url}")

    async def quiet(exc: Exception) -> None:
        """nats-py logs each failed attempt with a traceback; the failure is reported below."""

    try:
        # The client retries a refused connect forever by default: once more, then give up.
        nc = await nats.connect(
            url,
            connect_timeout=2,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.5,
            error_cb=quiet,
        )
    except failures as exc:
        return Anchor(name, skipped=f"no NATS at {url}: {exc!r}")
    js = nc.jetstream(publish_async_max_pending=4000)
    stream, subject = f"tidings_bench_{token_hex(4)}", f"tidings.bench.{token_hex(4)}"
    try:
        await js.add_stream(name=stream, subjects=[subject])
        sent = 0
        start = time.perf_counter()
        deadline = start + seconds
        async with asyncio.timeout(seconds + GRACE_S):
            while sent < MAX_ANCHOR_EVENTS and time.perf_counter() < deadline:
                for event in events:
                    await js.publish_async(subject, event)
                sent += len(events)
            await js.publish_async_completed()
        elapsed = time.perf_counter() - start
        info = await js.stream_info(stream)
        v = nc.connected_server_version
        detail = f"nats-server {v.major}.{v.minor}.{v.patch}, {info.config.storage} storage"
        return Anchor(name, info.state.messages, elapsed, detail)
    except failures as exc:
        return Anchor(name, skipped=f"failed: {exc!r}")
    finally:
        with contextlib.suppress(*failures):
            await js.delete_stream(stream)
        await nc.close()


def redis_anchor(url: str, events: Sequence[bytes], seconds: int) -> Anchor:
    name = f"anchor: Redis Streams, XADD x{len(events)} pipelined"
    try:
        redis = importlib.import_module("redis")
    except ImportError:
        return Anchor(name, skipped="redis (redis-py) is not installed")
    failures = (redis.RedisError, OSError)
    r = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=30)
    try:
        info = r.info("server")
    except failures as exc:
        r.close()
        return Anchor(name, skipped=f"no Redis at {url}: {exc!r}")
    key = f"tidings-bench:{token_hex(6)}"
    try:
        appendonly = r.config_get("appendonly").get("appendonly")
        sent = 0
        start = time.perf_counter()
        deadline = start + seconds
        while sent < MAX_ANCHOR_EVENTS and time.perf_counter() < deadline:
            pipe = r.pipeline(transaction=False)
            for event in events:
                pipe.xadd(key, {"event": event})
            pipe.execute()
            sent += len(events)
        elapsed = time.perf_counter() - start
        detail = f"redis {info['redis_version']}, appendonly {appendonly}"
        return Anchor(name, r.xlen(key), elapsed, detail)
    except failures as exc:
        return Anchor(name, skipped=f"failed: {exc!r}")
    finally:
        with contextlib.suppress(*failures):
            r.delete(key)
        r.close()
