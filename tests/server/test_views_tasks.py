"""Partitioned views against a real hub process: a changelog partition per task,
compare and set per partition, the members route that shares the tasks, reads and
the live feed across the partitions, and the bad inputs of each."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import orjson
import pytest
from hubapi import expect, expect_problem, next_offsets, publish, put_topic, unique
from hubproc import HubProcess
from test_sse import messages
from viewhelp import commit_events

pytestmark = pytest.mark.timeout(120)

JSON = {"content-type": "application/json"}


async def declare(
    http: aiohttp.ClientSession, base: str, name: str, inputs: list[str], status: int = 201,
    partitioned: object = True,
) -> dict[str, Any]:
    spec = {"kind": "view", "inputs": inputs, "app": "tests", "partitioned": partitioned}
    async with http.put(f"{base}/v1/views/{name}", json=spec) as resp:
        if status >= 400:
            return await expect_problem(resp, status)
        return await expect(resp, status)  # type: ignore[no-any-return]


async def commit(
    http: aiohttp.ClientSession, base: str, name: str, partition: int, expect_at: int,
    values: dict[str, Any], inputs: dict[str, dict[str, int]], *, seq: int = 0,
    generation: int = 0,
) -> aiohttp.ClientResponse:
    body = {
        "generation": generation, "expect": expect_at, "partition": partition,
        "events": commit_events(name, generation, seq, values, inputs),
    }
    return await http.post(
        f"{base}/v1/views/{name}/commit", data=io.BytesIO(orjson.dumps(body)), headers=JSON
    )


async def heartbeat(
    http: aiohttp.ClientSession, base: str, name: str, body: Any, status: int = 200
) -> dict[str, Any]:
    async with http.post(f"{base}/v1/views/{name}/members", json=body) as resp:
        if status >= 400:
            return await expect_problem(resp, status)
        return await expect(resp, status)  # type: ignore[no-any-return]


async def test_a_partitioned_view_has_a_changelog_partition_per_task(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await put_topic(http, base, topic, partitions=3)
    info = await declare(http, base, name, [topic])
    assert (info["tasks"], info["partitioned"]) == (3, True)
    assert info["changelog"]["next"] == "0:0,1:0,2:0"
    keyed = ({"type": "t", "partitionkey": f"p{i}"} for i in range(30))
    await publish(http, base, topic, *keyed)
    ends = await next_offsets(http, base, topic)
    assert all(ends)
    # Each task commits to its own partition, compared and set on that partition's end.
    for p in range(3):
        async with await commit(
            http, base, name, p, 0, {f"k{p}": p}, {topic: {str(p): ends[p]}}
        ) as r:
            assert await expect(r, 200) == {"offset": 0, "next": 2}
    async with await commit(http, base, name, 1, 0, {"k1": 9}, {topic: {"1": 6}}) as r:
        lost = await expect_problem(r, 409)
    assert (lost["field"], lost["next_offset"]) == ("expect", 2)
    async with http.get(f"{base}/v1/views/{name}/keys/k2") as r:
        assert await expect(r, 200) == {"key": "k2", "value": 2, "position": "2:0"}
    async with http.get(f"{base}/v1/views/{name}/keys") as r:
        page = await expect(r, 200)
    assert [(e["key"], e["position"]) for e in page["keys"]] == [
        ("k0", "0:0"), ("k1", "1:0"), ("k2", "2:0")
    ]
    async with http.get(f"{base}/v1/views/{name}") as r:
        info = await expect(r, 200)
    # What the view reflects is the union of the tasks' checkpoints.
    assert info["positions"] == {topic: ",".join(f"{p}:{o}" for p, o in enumerate(ends))}
    assert info["lag"] == {topic: 0}
    assert [c["task"] for c in info["checkpoints"]] == [0, 1, 2]
    assert info["changelog"]["next"] == "0:2,1:2,2:2"
    # min_position per input partition: the last event of partition 1 is task 1's.
    async with http.get(
        f"{base}/v1/views/{name}/keys/k1",
        params={"min_position": f"1:{ends[1] - 1}", "wait": "0"},
    ) as r:
        assert (await expect(r, 200))["value"] == 1


async def test_a_task_commits_only_its_own_partition_and_bad_commits_are_refused(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await put_topic(http, base, topic, partitions=2)
    await declare(http, base, name, [topic])
    # Task 0's checkpoint naming partition 1 of the input: 400, nothing written.
    async with await commit(http, base, name, 0, 0, {"a": 1}, {topic: {"0": 1, "1": 1}}) as r:
        bad = await expect_problem(r, 400)
    assert "task 0" in bad["detail"] and "partition 1" in bad["detail"]
    async with await commit(http, base, name, 2, 0, {"a": 1}, {topic: {"2": 1}}) as r:
        bad = await expect_problem(r, 400)
    assert bad["field"] == "partition" and "2 task(s)" in bad["detail"]
    for partition in (-1, "0", True, 1.5):
        body = {"generation": 0, "expect": 0, "partition": partition,
                "events": commit_events(name, 0, 0, {}, {topic: {"0": 0}})}
        async with http.post(f"{base}/v1/views/{name}/commit", json=body) as r:
            assert (await expect_problem(r, 400))["field"] == "partition", partition
    # A checkpoint naming partitions no input has, or not written as one, or a topic
    # that is not an input: 400 naming it, nothing written.
    other = unique()
    await put_topic(http, base, other, partitions=2)
    for inputs, field, words in (
        ({topic: {"1" * 5000: 1}}, "events[1].data.inputs", "leading zeros"),
        ({topic: {"00": 1}}, "events[1].data.inputs", "leading zeros"),
        ({topic: {"01": 1}}, "events[1].data.inputs", "leading zeros"),
        ({topic: {"2": 1}}, "events[1].data.inputs", "partition 2 of"),
        ({other: {"0": 1}}, "events[1].data.inputs", "does not read"),
    ):
        async with await commit(http, base, name, 0, 0, {"a": 1}, inputs) as r:
            bad = await expect_problem(r, 400)
        assert bad["field"] == field and words in bad["detail"], (inputs, bad)
    async with http.get(f"{base}/v1/views/{name}") as r:
        info = await expect(r, 200)
    assert info["changelog"]["next"] == "0:0,1:0" and info["keys"] == 0
    async with http.get(f"{base}/v1/views") as r:
        await expect(r, 200)


async def test_inputs_of_a_partitioned_view_must_be_co_partitioned(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, three, two = hub.base_url, unique("v"), unique(), unique()
    await put_topic(http, base, three, partitions=3)
    await put_topic(http, base, two, partitions=2)
    bad = await declare(http, base, name, [three, two], 400)
    assert bad["field"] == "inputs"
    assert f"{three!r} has 3" in bad["detail"] and f"{two!r} has 2" in bad["detail"]
    async with http.get(f"{base}/v1/views/{name}") as r:
        await expect_problem(r, 404)  # nothing made
    # Not partitioned, the same inputs are one task.
    info = await declare(http, base, name, [three, two], partitioned=False)
    assert info["tasks"] == 1
    for flag in ("yes", 1, None):
        bad = await declare(http, base, unique("v"), [three], 400, partitioned=flag)
        assert bad["field"] == "partitioned", flag


async def test_declared_again_with_another_layout_is_409_until_a_rebuild_changes_it(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await put_topic(http, base, topic, partitions=2)
    info = await declare(http, base, name, [topic], partitioned=False)
    assert (info["tasks"], info["generation"]) == (1, 0)
    async with await commit(http, base, name, 0, 0, {"a": 1}, {topic: {"0": 1, "1": 1}}) as r:
        await expect(r, 200)
    # A process of a rolling deploy declares it partitioned: 409 naming both, nothing
    # changed (the other processes, declaring it as it is, go on).
    for _ in range(2):
        bad = await declare(http, base, name, [topic], 409)
        assert bad["field"] == "partitioned" and (bad["partitioned"], bad["tasks"]) == (False, 1)
        assert "not partitioned (one task)" in bad["detail"]
        assert "partitioned, 2 task(s)" in bad["detail"] and "rebuild" in bad["detail"]
        info = await declare(http, base, name, [topic], 200, partitioned=False)
        assert (info["tasks"], info["generation"], info["keys"]) == (1, 0, 1)
    async with http.post(f"{base}/v1/views/{name}/rebuild", json={"partitioned": "yes"}) as r:
        assert (await expect_problem(r, 400))["field"] == "partitioned"
    # The rebuild that asks for it lays the view out anew.
    async with http.post(f"{base}/v1/views/{name}/rebuild", json={"partitioned": True}) as r:
        info = await expect(r, 200)
    assert (info["partitioned"], info["tasks"], info["generation"], info["keys"]) == (
        True, 2, 1, 0,
    )
    assert info["changelog"]["next"] == "0:0,1:0"
    info = await declare(http, base, name, [topic], 200)  # the same again: kept
    assert (info["tasks"], info["generation"]) == (2, 1)
    bad = await declare(http, base, name, [topic], 409, partitioned=False)
    assert (bad["partitioned"], bad["tasks"]) == (True, 2)
    async with http.post(f"{base}/v1/views/{name}/rebuild", json={}) as r:  # kept
        info = await expect(r, 200)
    assert (info["partitioned"], info["tasks"], info["generation"]) == (True, 2, 2)


async def test_members_share_the_tasks_and_a_leaver_gives_its_tasks_back(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await put_topic(http, base, topic, partitions=3)
    await declare(http, base, name, [topic])
    first = await heartbeat(http, base, name, {"member": "a"})
    assert first["tasks"] == [0, 1, 2] and first["session_timeout_ms"] == 10_000
    # b joins: a keeps its tasks until it heartbeats and is told to let one go.
    assert (await heartbeat(http, base, name, {"member": "b"}))["tasks"] == []
    kept = (await heartbeat(http, base, name, {"member": "a"}))["tasks"]
    got = (await heartbeat(http, base, name, {"member": "b"}))["tasks"]
    assert len(kept) == 2 and len(got) == 1 and set(kept) | set(got) == {0, 1, 2}
    c = await heartbeat(http, base, name, {"member": "c"})
    assert c["tasks"] == []
    await heartbeat(http, base, name, {"member": "a"})
    c = await heartbeat(http, base, name, {"member": "c"})
    assert (c["task_count"], c["member_count"]) == (3, 3) and "members" not in c
    async with http.get(f"{base}/v1/views/{name}") as r:
        runs = (await expect(r, 200))["members"]
    assert sorted(len(t) for t in runs.values()) == [1, 1, 1]
    assert sorted(t for ts in runs.values() for t in ts) == [0, 1, 2]  # each task once
    # a leaves: its task goes to the others at once.
    assert (await heartbeat(http, base, name, {"member": "a", "leave": True}))["tasks"] == []
    b = await heartbeat(http, base, name, {"member": "b"})
    c = await heartbeat(http, base, name, {"member": "c"})
    assert sorted(b["tasks"] + c["tasks"]) == [0, 1, 2]
    async with http.get(f"{base}/v1/views/{name}") as r:
        info = await expect(r, 200)
    assert set(info["members"]) == {"b", "c"}


async def test_bad_heartbeats_are_refused_and_change_nothing(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await put_topic(http, base, topic, partitions=2)
    await declare(http, base, name, [topic])
    for body, field in (
        ({"member": 5}, "member"), ({"member": ""}, "member"), ({"member": "x" * 201}, "member"),
        ({"member": "a\nb"}, "member"), ({}, "member"), ({"member": "a", "leave": "yes"}, "leave"),
        ({"member": "a", "colour": "red"}, "colour"),
    ):
        bad = await heartbeat(http, base, name, body, 400)
        assert bad["field"] == field, body
    async with http.post(f"{base}/v1/views/{name}/members", data=b"[1]", headers=JSON) as r:
        await expect_problem(r, 400)
    await heartbeat(http, base, unique("v"), {"member": "a"}, 404)
    async with http.get(f"{base}/v1/views/{name}") as r:
        assert (await expect(r, 200))["members"] == {}


async def test_the_live_feed_follows_every_partition_and_resumes(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    base, name, topic = hub.base_url, unique("v"), unique()
    await put_topic(http, base, topic, partitions=2)
    await declare(http, base, name, [topic])
    async with await commit(http, base, name, 0, 0, {"a": 1}, {topic: {"0": 1}}) as r:
        await expect(r, 200)
    url = f"{base}/v1/views/{name}/sse"
    async with http.get(url) as resp:
        stream = messages(resp)
        await anext(stream)
        snap = await anext(stream)
        assert snap["id"] == "0@0:2,1:0"
        async with await commit(http, base, name, 1, 0, {"b": 2}, {topic: {"1": 1}}) as r:
            await expect(r, 200)
        change = await anext(stream)
    assert change["id"] == "0@0:2,1:1"
    assert orjson.loads(change["data"]) == {"key": "b", "value": 2, "position": "1:0"}
    async with await commit(http, base, name, 0, 2, {"c": 3}, {topic: {"0": 2}}, seq=1) as r:
        await expect(r, 200)
    async with http.get(url, headers={"Last-Event-ID": change["id"]}) as resp:
        stream = messages(resp)
        await anext(stream)
        resumed = await anext(stream)
    assert resumed["event"] == "change" and orjson.loads(resumed["data"])["key"] == "c"
    assert resumed["id"] == "0@0:3,1:1"  # the token after the change it carries
    # A partition the changelog does not have, or one not named: a new snapshot; a
    # token that does not parse: 400.
    for token in ("0@0:1,2:0", "0@0:1"):
        async with http.get(url, headers={"Last-Event-ID": token}) as resp:
            stream = messages(resp)
            await anext(stream)
            again = await anext(stream)
        assert again["event"] == "snapshot" and again["id"] == "0@0:4,1:2", token
    async with http.get(url, headers={"Last-Event-ID": "0@0:x"}) as resp:
        assert (await expect_problem(resp, 400))["field"] == "Last-Event-ID"
    # Laid out anew (one task): a client's token of the old layout starts over.
    async with http.post(f"{base}/v1/views/{name}/rebuild", json={"partitioned": False}) as r:
        assert (await expect(r, 200))["tasks"] == 1
    async with http.get(url, headers={"Last-Event-ID": resumed["id"]}) as resp:
        stream = messages(resp)
        await anext(stream)
        again = await anext(stream)
    assert again["event"] == "snapshot" and again["id"] == "1@0:0"
