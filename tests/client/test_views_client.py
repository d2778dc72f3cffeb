"""The view calls of AsyncClient and Client, and reads with append times, on a real hub."""

from __future__ import annotations

import asyncio

import pytest
from viewhelp import commit_events

from tidings import Conflict, ViewBehind, ViewNotFound
from tidings.client import AsyncClient, Client


async def test_a_processor_and_a_reader_over_the_async_client(hub_url: str, topic: str) -> None:
    name = f"v-{topic}"
    async with AsyncClient(hub_url) as hub:
        await hub.create_topic(topic)
        placed = await hub.publish(topic, "stock.set", {"sku": "a", "n": 3}, key="a")
        records, _, horizon = await hub.read(topic, appended=True)
        [record] = records
        assert record.appended is not None and record.appended <= horizon
        assert record.to_dict()["appended"] == record.appended
        info = await hub.put_view(name, {"kind": "view", "inputs": [topic], "app": "tests"})
        assert info["generation"] == 0
        waiting = asyncio.create_task(
            hub.view_get(name, "a", min_position={0: placed["offset"]}, wait=30)
        )
        events = commit_events(name, 0, 0, {"a": 3}, {topic: {"0": 1}})
        assert await hub.commit_view(name, 0, 0, events) == {"offset": 0, "next": 2}
        assert (await waiting)["value"] == 3
        with pytest.raises(Conflict) as lost:
            await hub.commit_view(name, 0, 0, events)
        assert lost.value.fields["next_offset"] == 2
        page = await hub.view_keys(name, prefix="a")
        assert page == {"keys": [{"key": "a", "value": 3, "position": "0:0"}], "next": None}
        assert name in [v["name"] for v in await hub.views()]
        assert (await hub.view(name))["lag"] == {topic: 0}
        await hub.publish(topic, "stock.set", {"sku": "a", "n": 4}, key="a")
        with pytest.raises(ViewBehind):
            await hub.view_get(name, "a", min_position="latest", wait=0.1)
        with pytest.raises(ViewNotFound) as missing:
            await hub.view_get(name, "b")
        assert missing.value.fields["key"] == "b"
        assert (await hub.rebuild_view(name))["generation"] == 1


def test_the_blocking_client_reads_views(hub_url: str, topic: str) -> None:
    name = f"v-{topic}"
    with Client(hub_url) as hub:
        hub.create_topic(topic)
        hub.put_view(name, {"kind": "view", "inputs": [topic]})
        hub.commit_view(name, 0, 0, commit_events(name, 0, 0, {"x": [1]}, {topic: {"0": 0}}))
        assert hub.view_get(name, "x")["value"] == [1]
        assert hub.view_keys(name)["keys"][0]["key"] == "x"
        assert hub.view(name)["keys"] == 1
        records, _, horizon = hub.read(topic, appended=True)
        assert records == [] and horizon > 0
        with pytest.raises(ViewNotFound):
            hub.view("nope-" + name)
