"""Small HTTP helpers for the server tests: plain aiohttp calls, no SDK."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import aiohttp
import orjson

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
PROBLEM = "application/problem+json"

T = TypeVar("T")
_counter = itertools.count()


def unique(prefix: str = "t") -> str:
    """A topic or group name no other test uses, even on a shared hub."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}-{time.monotonic_ns() % 1_000_000}"


async def json_of(resp: aiohttp.ClientResponse) -> Any:
    return await resp.json(content_type=None)


async def expect(resp: aiohttp.ClientResponse, status: int) -> Any:
    """The JSON body of ``resp`` after checking its status (the body is shown if it differs)."""
    if resp.status != status:
        body = await resp.text()
        raise AssertionError(
            f"{resp.method} {resp.url}: expected {status}, got {resp.status}: {body}"
        )
    if status == 204:
        return None
    return await json_of(resp)


async def expect_problem(resp: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    """An RFC 9457 problem with ``status``: media type and the four required members."""
    body = await resp.text()
    assert resp.status == status, f"expected {status}, got {resp.status}: {body}"
    assert resp.content_type == PROBLEM, f"{resp.content_type}: {body}"
    problem = await json_of(resp)
    for member in ("type", "title", "status", "detail"):
        assert member in problem, f"problem without {member!r}: {problem}"
    assert problem["status"] == status
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["detail"], str) and problem["detail"]
    return problem


async def put_topic(
    http: aiohttp.ClientSession, base: str, topic: str, status: int | None = None, **body: Any
) -> dict[str, Any]:
    async with http.put(f"{base}/v1/topics/{topic}", json=body) as resp:
        if status is None:
            assert resp.status in (200, 201), await resp.text()
            return await json_of(resp)  # type: ignore[no-any-return]
        return await expect(resp, status)  # type: ignore[no-any-return]


async def get_topic(http: aiohttp.ClientSession, base: str, topic: str) -> dict[str, Any]:
    async with http.get(f"{base}/v1/topics/{topic}") as resp:
        return await expect(resp, 200)  # type: ignore[no-any-return]


async def next_offsets(http: aiohttp.ClientSession, base: str, topic: str) -> list[int]:
    info = await get_topic(http, base, topic)
    return [p["next_offset"] for p in info["partitions"]]


async def publish(
    http: aiohttp.ClientSession,
    base: str,
    topic: str,
    *events: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Publish one event in structured mode, or several as one batch; the 202's positions."""
    if len(events) == 1:
        body, ctype = events[0], STRUCTURED
    else:
        body, ctype = list(events), BATCH
    async with http.post(
        f"{base}/v1/topics/{topic}/events",
        data=orjson.dumps(body),
        headers={"content-type": ctype, **(headers or {})},
    ) as resp:
        out = await expect(resp, 202)
    assert len(out["events"]) == len(events)
    return out["events"]  # type: ignore[no-any-return]


async def read(http: aiohttp.ClientSession, base: str, topic: str, **params: Any) -> dict[str, Any]:
    query = {k: str(v) for k, v in params.items() if v is not None}
    async with http.get(f"{base}/v1/topics/{topic}/events", params=query) as resp:
        return await expect(resp, 200)  # type: ignore[no-any-return]


async def read_all(
    http: aiohttp.ClientSession, base: str, topic: str, limit: int = 1000, **params: Any
) -> list[dict[str, Any]]:
    """Every record from ``from`` (earliest by default), following ``next`` to the end."""
    records: list[dict[str, Any]] = []
    page = await read(http, base, topic, limit=limit, **params)
    params.pop("from", None)
    params.pop("from_time", None)
    for _ in range(100_000):
        records.extend(page["records"])
        if not page["records"]:
            return records
        page = await read(http, base, topic, limit=limit, **{"from": page["next"]}, **params)
    raise AssertionError("read_all did not reach the end")


async def put_group(
    http: aiohttp.ClientSession,
    base: str,
    topic: str,
    group: str,
    status: int | None = None,
    **config: Any,
) -> dict[str, Any]:
    async with http.put(f"{base}/v1/topics/{topic}/groups/{group}", json=config) as resp:
        if status is None:
            assert resp.status in (200, 201), await resp.text()
            return await json_of(resp)  # type: ignore[no-any-return]
        return await expect(resp, status)  # type: ignore[no-any-return]


async def group_post(
    http: aiohttp.ClientSession,
    base: str,
    topic: str,
    group: str,
    op: str,
    body: Any,
    status: int = 200,
) -> Any:
    async with http.post(f"{base}/v1/topics/{topic}/groups/{group}/{op}", json=body) as resp:
        return await expect(resp, status)


async def fetch(
    http: aiohttp.ClientSession,
    base: str,
    topic: str,
    group: str,
    max: int = 10,
    wait: float | str = 0,
    types: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"max": max, "wait": wait}
    if types is not None:
        body["types"] = list(types)
    out = await group_post(http, base, topic, group, "fetch", body)
    return out["records"]  # type: ignore[no-any-return]


async def ack(
    http: aiohttp.ClientSession, base: str, topic: str, group: str, leases: Sequence[str]
) -> int:
    out = await group_post(http, base, topic, group, "ack", {"leases": list(leases)})
    return int(out["acked"])


async def get_group(http: aiohttp.ClientSession, base: str, topic: str, group: str) -> Any:
    async with http.get(f"{base}/v1/topics/{topic}/groups/{group}") as resp:
        return await expect(resp, 200)


async def fetch_all(
    http: aiohttp.ClientSession,
    base: str,
    topic: str,
    group: str,
    *,
    quiet_s: float = 0.3,
    max_records: int = 100,
) -> list[dict[str, Any]]:
    """Lease all the group has to give now: fetch until a fetch with a short wait is empty."""
    out: list[dict[str, Any]] = []
    for _ in range(10_000):
        got = await fetch(http, base, topic, group, max=max_records, wait=quiet_s)
        if not got:
            return out
        out.extend(got)
    raise AssertionError("fetch_all did not drain the group")


async def poll_until(
    probe: Callable[[], Awaitable[T | None]],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call ``probe`` until it returns other than None or False; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if got is not None and got is not False:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def ids(records: Sequence[Mapping[str, Any]]) -> list[str]:
    return [r["event"]["id"] for r in records]


def parse_prometheus(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of the Prometheus text format 0.0.4: (name, labels) -> value."""
    sample = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?")
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = sample.fullmatch(line.strip())
        assert m, f"not a Prometheus sample line: {line!r}"
        name, labels, value = m.groups()
        pairs = frozenset(label.findall(labels or ""))
        if labels:
            rebuilt = ",".join(f'{k}="{v}"' for k, v in label.findall(labels))
            assert rebuilt == labels, f"bad labels in {line!r}"
        out[(name, pairs)] = float(value)
    return out
