"""``/asyncapi.json``: the event types each topic has carried, across a restart of the hub."""

from __future__ import annotations

import aiohttp
from hubapi import expect, publish, unique
from hubproc import HubFactory, HubProcess


async def test_the_catalogue_is_refilled_from_the_log_after_a_restart(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    hub = hub_factory.start()
    kept, dropped = unique("kept"), unique("dropped")
    await publish(http, hub.base_url, kept, {"type": "cart.added"}, {"type": "cart.removed"})
    await publish(http, hub.base_url, dropped, {"type": "like.given"})
    hub.restart()

    async with http.get(hub.base_url + "/asyncapi.json") as resp:
        doc = await expect(resp, 200)
    assert doc["asyncapi"] == "3.0.0"
    assert sorted(doc["channels"][kept]["messages"]) == ["cart.added", "cart.removed"]
    assert doc["components"]["messages"]["like.given"]["name"] == "like.given"

    await publish(http, hub.base_url, kept, {"type": "cart.cleared"})
    async with http.delete(f"{hub.base_url}/v1/topics/{dropped}") as resp:
        await expect(resp, 204)
    async with http.get(hub.base_url + "/asyncapi.json") as resp:
        doc = await expect(resp, 200)
    types = sorted(doc["channels"][kept]["messages"])
    assert types == ["cart.added", "cart.cleared", "cart.removed"]
    assert dropped not in doc["channels"]
    assert "like.given" not in doc["components"]["messages"]


async def test_a_publish_after_a_restart_does_not_hide_the_types_before_it(
    hub_factory: HubFactory,
) -> None:
    hub = hub_factory.start()
    # No kept-alive connections: the hub restarts under the session.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        await _publish_restart_publish(hub, http)


async def _publish_restart_publish(hub: HubProcess, http: aiohttp.ClientSession) -> None:
    topic = unique("orders")
    await publish(http, hub.base_url, topic, {"type": "order.placed"}, {"type": "order.paid"})
    hub.restart()
    await publish(http, hub.base_url, topic, {"type": "order.shipped"})  # before any read
    async with http.get(hub.base_url + "/asyncapi.json") as resp:
        doc = await expect(resp, 200)
    types = sorted(doc["channels"][topic]["messages"])
    assert types == ["order.paid", "order.placed", "order.shipped"]
