"""Request body bytes held at once across requests are bounded (issue 13, hole 6).

Eight concurrent 15 MiB bodies were all read at once and added 135 MiB to the
hub. Past ``--max-body-bytes-in-flight`` a body is refused before it is read:
503 with ``Retry-After``. Memory is the hub process's own peak RSS.
"""

from __future__ import annotations

import asyncio
import io

import aiohttp
import orjson
from hubapi import expect, expect_problem, put_topic, unique
from hubproc import HubFactory, HubProcess
from test_http_limits import peak_rss

MiB = 1 << 20
STRUCTURED = {"content-type": "application/cloudevents+json"}


def big_event(size: int) -> bytes:
    """One structured event of ``size`` bytes: read and parsed whole, then refused (413)."""
    head = orjson.dumps({"specversion": "1.0", "id": "big", "source": "/t", "type": "big"})
    pad = size - len(head) - len(b',"data":""')
    return head[:-1] + b',"data":"' + b"x" * pad + b'"}'


async def post_many(
    http: aiohttp.ClientSession, hub: HubProcess, topic: str, body: bytes, n: int
) -> list[tuple[int, str | None, dict[str, object]]]:
    async def one() -> tuple[int, str | None, dict[str, object]]:
        async with http.post(
            f"{hub.base_url}/v1/topics/{topic}/events", data=io.BytesIO(body), headers=STRUCTURED
        ) as resp:
            return resp.status, resp.headers.get("retry-after"), await resp.json(content_type=None)

    return await asyncio.gather(*(one() for _ in range(n)))


async def test_concurrent_big_bodies_stay_within_the_budget(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    hub = hub_factory.start("--max-body-bytes-in-flight", str(16 * MiB))
    topic = unique()
    await put_topic(http, hub.base_url, topic)
    body = big_event(15 * MiB)
    # One alone is read and parsed (and refused as too large an event, 413): the hub's
    # memory for one body is in the baseline.
    [(status, _, _)] = await post_many(http, hub, topic, body, 1)
    assert status == 413
    before = peak_rss(hub)
    answers = await post_many(http, hub, topic, body, 8)
    grew = peak_rss(hub) - before
    statuses = sorted(s for s, _, _ in answers)
    assert 413 in statuses, statuses
    busy = [(after, problem) for s, after, problem in answers if s == 503]
    assert busy, statuses
    for after, problem in busy:
        assert after == "1"
        assert problem["status"] == 503 and problem["retry_after"] == 1, problem
        assert "max_body_bytes_in_flight" in str(problem["detail"]), problem
    assert "Traceback" not in hub.log_text()
    assert grew < 40 * MiB, f"8 bodies of 15 MiB at once: peak RSS grew {grew / MiB:.0f} MiB"


async def test_a_refused_body_may_be_retried(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    """The budget is given back when a request is answered: later bodies fit again."""
    hub = hub_factory.start("--max-body-bytes-in-flight", str(16 * MiB))
    topic = unique()
    await put_topic(http, hub.base_url, topic)
    for _ in range(3):
        statuses = [s for s, _, _ in await post_many(http, hub, topic, big_event(12 * MiB), 2)]
        assert sorted(statuses) in ([413, 413], [413, 503]), statuses
    small = orjson.dumps({"specversion": "1.0", "id": "a", "source": "/t", "type": "t"})
    async with http.post(
        f"{hub.base_url}/v1/topics/{topic}/events", data=small, headers=STRUCTURED
    ) as resp:
        await expect(resp, 202)
    async with http.post(
        f"{hub.base_url}/v1/topics/{topic}/events", data=b"{", headers=STRUCTURED
    ) as resp:
        await expect_problem(resp, 400)
