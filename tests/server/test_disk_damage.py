"""Damage on disk is found, named and contained, against real hub processes.

A flipped byte in the middle of the active segment costs its own batch only: the
acknowledged events after it are kept and readable after a restart, and offsets
are never reused. A damaged batch in a sealed segment is stepped over by reads,
groups and the dedupe refill: every intact record of every partition is
delivered and no fetch fails.
"""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from hubapi import (
    ack,
    expect,
    get_group,
    get_topic,
    group_post,
    ids,
    parse_prometheus,
    publish,
    put_group,
    put_topic,
    read,
    read_all,
    unique,
)
from hubproc import HubFactory, HubProcess, hub_env
from receivers import Receiver

HEADER = 40  # see tidings.log.format: the batch header
RECORD_HEADER = 8


def batches(segment: Path) -> list[tuple[int, int, int, int]]:
    """(position, size, base offset, count) of each batch of a segment, by its framing."""
    raw = segment.read_bytes()
    out = []
    position = 0
    while position < len(raw):
        length, _crc, base, count = struct.unpack_from("<IIQI", raw, position)
        out.append((position, length + 4, base, count))
        position += length + 4
    return out


def flip(path: Path, position: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ 0x20]))


def tidings_check(data_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", "check", str(data_dir), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        env=hub_env(),
    )


def partition_dir(data_dir: Path, topic: str, partition: int) -> Path:
    return data_dir / "topics" / topic / str(partition)


def event(n: int, key: str | None = None) -> dict[str, Any]:
    ev: dict[str, Any] = {"type": "test.damage", "id": f"ev-{n}", "source": "/t", "data": n}
    if key is not None:
        ev["partitionkey"] = key
    return ev


async def test_a_flipped_byte_mid_active_segment_keeps_the_events_after_it(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    hub = hub_factory.start(fsync="always")
    base = hub.base_url
    t = unique("dmg")
    await put_topic(http, base, t, partitions=1)
    # 10 acknowledged batches of 5 events: offsets 0 to 49
    for b in range(10):
        positions = await publish(http, base, t, *[event(b * 5 + i) for i in range(5)])
        assert [p["offset"] for p in positions] == list(range(b * 5, b * 5 + 5))
    hub.stop()

    [active] = sorted(partition_dir(hub.data_dir, t, 0).glob("*.log"))
    layout = batches(active)
    assert [(b[2], b[3]) for b in layout] == [(i * 5, 5) for i in range(10)]
    bad_pos, _, bad_base, _ = layout[4]  # the fifth batch
    assert bad_base == 20
    clean = tidings_check(hub.data_dir)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "no damage" in clean.stdout
    flip(active, bad_pos + HEADER + RECORD_HEADER + 10)
    damaged = tidings_check(hub.data_dir)
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    [line] = [x for x in damaged.stdout.splitlines() if x.startswith("DAMAGED")]
    assert f"{t}/0 {active.name} byte {bad_pos}" in line
    assert "offsets 20 to 24 lost (5 events): batch fails its CRC" in line
    as_json = tidings_check(hub.data_dir, "--json")
    assert as_json.returncode == 1, as_json.stdout + as_json.stderr
    report = orjson.loads(as_json.stdout)
    assert (report["damaged"], report["lost"], report["torn"]) == (1, 5, [])
    [found] = report["damage"]
    assert found["partition"] == f"{t}/0" and found["segment"] == active.name
    assert (found["position"], found["first_offset"], found["end_offset"]) == (bad_pos, 20, 25)
    assert found["why"] == "batch fails its CRC"
    hub.start()
    async with aiohttp.ClientSession() as http:  # no connection kept from the first run
        await check_active_damage(http, hub, t, active, bad_pos)


async def check_active_damage(
    http: aiohttp.ClientSession, hub: HubProcess, t: str, active: Path, bad_pos: int
) -> None:
    base = hub.base_url

    # the nine good batches are kept and readable; the bad one is skipped and named
    records = await read_all(http, base, t)
    kept = [f"ev-{n}" for n in range(50) if not 20 <= n < 25]
    assert ids(records) == kept
    page = await read(http, base, t, limit=1000)
    assert page["skipped"] == [
        {"partition": 0, "from": 20, "to": 25, "why": "batch fails its CRC"}
    ]
    info = await get_topic(http, base, t)
    [damage] = info["partitions"][0]["damage"]
    assert (damage["from"], damage["to"], damage["events"]) == (20, 25, 5)
    assert (damage["segment"], damage["position"]) == (active.name, bad_pos)
    assert info["partitions"][0]["next_offset"] == 50
    # the next publish gets a new offset, never a reused one
    [again] = await publish(http, base, t, event(50))
    assert again["offset"] == 50
    async with http.get(f"{base}/metrics") as resp:
        metrics = parse_prometheus(await resp.text())
    assert metrics[("tidings_damaged_events", frozenset({("topic", t)}))] == 5
    assert metrics[("tidings_skipped_events_total", frozenset({("topic", t)}))] >= 5
    assert "damage in" in hub.log_text()


def keys_for(partitions: int) -> list[str]:
    """One partition key per partition, as the hub places them (CRC-32 modulo the count)."""
    keys: dict[int, str] = {}
    n = 0
    while len(keys) < partitions:
        key = f"k{n}"
        keys.setdefault(zlib.crc32(key.encode()) % partitions, key)
        n += 1
    return [keys[p] for p in range(partitions)]


@dataclass
class Sealed:
    """A stopped hub whose partition 1 has one damaged batch in a sealed segment."""

    hub: HubProcess
    topic: str
    keys: list[str]
    placed: dict[str, tuple[int, int]]  # event id -> (partition, offset)
    lost: set[str]  # the ids of the damaged batch
    bad_base: int
    segment: Path


async def damage_a_sealed_batch(
    hub_factory: HubFactory, http: aiohttp.ClientSession, *args: str
) -> Sealed:
    hub = hub_factory.start("--segment-bytes", "4096", *args)
    base = hub.base_url
    t = unique("dmg")
    await put_topic(http, base, t, partitions=3)
    keys = keys_for(3)
    placed: dict[str, tuple[int, int]] = {}
    n = 0
    for _ in range(12):
        for p, key in enumerate(keys):
            got = await publish(http, base, t, *[event(n + i, key) for i in range(5)])
            for i, pos in enumerate(got):
                assert pos["partition"] == p
                placed[f"ev-{n + i}"] = (p, pos["offset"])
            n += 5
    hub.stop()

    part = partition_dir(hub.data_dir, t, 1)
    segments = sorted(part.glob("*.log"))
    assert len(segments) >= 3, "the damage must be in a sealed segment"
    layout = batches(segments[0])
    assert len(layout) >= 3
    bad_pos, _, bad_base, bad_count = layout[1]  # a batch with a good one before and after
    flip(segments[0], bad_pos + HEADER + RECORD_HEADER + 10)
    lost = {i for i, (p, o) in placed.items() if p == 1 and bad_base <= o < bad_base + bad_count}
    assert len(lost) == bad_count == 5
    return Sealed(hub, t, keys, placed, lost, bad_base, segments[0])


async def test_a_damaged_sealed_batch_never_stops_a_group(
    hub_factory: HubFactory, http: aiohttp.ClientSession
) -> None:
    d = await damage_a_sealed_batch(hub_factory, http)
    d.hub.start()
    async with aiohttp.ClientSession() as fresh:  # no connection kept from the first run
        await check_sealed_damage(
            fresh, d.hub.base_url, d.topic, d.keys, d.placed, d.lost, d.bad_base, d.segment
        )


async def test_a_webhook_delivers_every_intact_event_past_damage(
    hub_factory: HubFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    d = await damage_a_sealed_batch(hub_factory, http, "--webhook-allow-net", "127.0.0.0/8")
    d.hub.start()
    base = d.hub.base_url
    async with aiohttp.ClientSession() as fresh:
        async with fresh.post(
            f"{base}/v1/webhooks", json={"url": receiver.url, "topics": [d.topic]}
        ) as resp:
            wh = await expect(resp, 201)
        # webhooks follow from the end: replay from the start of every partition
        async with fresh.post(
            f"{base}/v1/webhooks/{wh['id']}/replay", json={"since": "0:0,1:0,2:0", "topic": d.topic}
        ) as resp:
            await expect(resp, 202)
        intact = set(d.placed) - d.lost

        def seen() -> set[str]:
            return {r.event["id"] for r in receiver.requests}

        await receiver.wait_for(lambda: len(seen()) >= len(intact))
        await asyncio.sleep(0.3)
        assert seen() == intact
        for _ in range(50):  # the webhook's lag reaches zero: nothing is stuck behind the damage
            async with fresh.get(f"{base}/v1/webhooks/{wh['id']}") as resp:
                view = await expect(resp, 200)
            if view["lag"] == {d.topic: 0}:
                break
            await asyncio.sleep(0.1)
        assert view["lag"] == {d.topic: 0}


async def check_sealed_damage(
    http: aiohttp.ClientSession,
    base: str,
    t: str,
    keys: list[str],
    placed: dict[str, tuple[int, int]],
    lost: set[str],
    bad_base: int,
    segment: Path,
) -> None:

    # the dedupe refill read past the damage: a retry of an intact event after it in
    # the same partition gets its first position back, not a second copy
    after = next(
        i for i, (p, o) in sorted(placed.items(), key=lambda x: x[1]) if p == 1 and o > bad_base + 5
    )
    [again] = await publish(http, base, t, event(int(after.removeprefix("ev-")), keys[1]))
    assert (again["partition"], again["offset"]) == placed[after]

    # a group over the three partitions gets every intact record; no fetch fails
    await put_group(http, base, t, "g", start="earliest")
    delivered: list[dict[str, Any]] = []
    told: list[dict[str, Any]] = []
    for _ in range(200):
        answer = await group_post(http, base, t, "g", "fetch", {"max": 25, "wait": 0.2})
        got = answer["records"]  # group_post asserted a 200
        told.extend(answer.get("skipped", []))
        if not got:
            break
        delivered.extend(got)
        assert await ack(http, base, t, "g", [d["lease"] for d in got]) == len(got)
    # the fetch that moved the group past the damage said so, once
    assert told == [
        {"partition": 1, "from": bad_base, "to": bad_base + 5, "why": "batch fails its CRC"}
    ]
    assert sorted(d["event"]["id"] for d in delivered) == sorted(set(placed) - lost)
    assert all(d["partition"] in (0, 1, 2) for d in delivered)
    status = await get_group(http, base, t, "g")
    assert status["lag"] == 0
    assert status["skipped_events"] == 5
    assert status["skipped"] == [
        {"partition": 1, "from": bad_base, "to": bad_base + 5, "why": "batch fails its CRC"}
    ]
    [damage] = (await get_topic(http, base, t))["partitions"][1]["damage"]
    assert (damage["from"], damage["to"], damage["segment"]) == (
        bad_base, bad_base + 5, segment.name,
    )

    assert (await get_topic(http, base, t))["partitions"][1]["next_offset"] == max(
        o for p, o in placed.values() if p == 1
    ) + 1


async def test_tidings_check_names_a_torn_tail_without_failing(
    hub_factory: HubFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    hub = hub_factory.start(fsync="always")
    t = unique("dmg")
    for b in range(3):
        await publish(http, hub.base_url, t, *[event(b * 2 + i) for i in range(2)])
    hub.stop()
    [active] = sorted(partition_dir(hub.data_dir, t, 0).glob("*.log"))
    size = active.stat().st_size
    os.truncate(active, size - 3)  # the last write did not finish
    torn = tidings_check(hub.data_dir)
    assert torn.returncode == 0, torn.stdout + torn.stderr
    assert "torn tail" in torn.stdout and "no damage" in torn.stdout
    assert active.stat().st_size == size - 3  # the check changes nothing
    as_json = tidings_check(hub.data_dir, "--json")
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    report = orjson.loads(as_json.stdout)
    assert report["damage"] == [] and report["batches"] == 2
    [cut] = report["torn"]
    assert (cut["partition"], cut["segment"]) == (f"{t}/0", active.name)

    missing = tidings_check(tmp_path / "nowhere")
    assert missing.returncode == 2
    assert "not a tidings data directory" in missing.stderr
