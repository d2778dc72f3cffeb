"""Who may reach a consumer group (README "Security"), and re-drives that run at once.

Real hub processes on loopback. A group belongs to whoever may consume its topic
(fetch, ack, nack, a WebSocket join need ``subscribe``); creating, changing,
seeking, deleting and re-driving it need ``manage``. The hub's own groups (a
webhook's cursor ``webhook.{id}``, a re-drive cursor ``redrive.…``, anything
under ``tidings.``) are out of reach of every client, whatever its token.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
from hubapi import fetch_all, get_group, group_post, publish, put_group, read_all, unique
from hubproc import HubProcess


async def test_concurrent_redrives_send_each_dead_letter_back_once(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, t = hub.base_url, unique()
    await put_group(http, base, t, "g", max_deliver=1)
    n = 300
    events = [
        {"type": "order.placed", "id": f"e{i}", "partitionkey": f"k{i % 7}"} for i in range(n)
    ]
    for start in range(0, n, 100):
        await publish(http, base, t, *events[start : start + 100])
    leases = [r["lease"] for r in await fetch_all(http, base, t, "g")]
    assert len(leases) == n
    await group_post(http, base, t, "g", "nack", {"leases": leases})
    assert (await get_group(http, base, t, "g"))["dead_lettered"] == n

    answers = await asyncio.gather(
        *(group_post(http, base, t, "g", "redrive", {}) for _ in range(4))
    )
    assert sum(a["redriven"] for a in answers) == n, answers
    copies = Counter(r["event"]["id"] for r in await read_all(http, base, t))
    assert set(copies.values()) == {2} and len(copies) == n  # the original and one re-drive
