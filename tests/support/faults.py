"""Fault campaigns beside the kill loops: a full disk, flipped bits, power loss and a soak.

- :func:`disk_full`: the hub's data directory on a small tmpfs (see ``fulldisk``);
  producers publish, the disk fills, publishes are refused (503) and retried, the
  hub is killed and started again while the disk is still full (it must start and
  serve reads), the space is freed, and the hub must heal by itself; then every
  acknowledged event is checked.
- :func:`bit_flips`: after each kill one bit of one batch, in the active segment or
  a sealed one, is flipped; the hub restarts, and every acknowledged event that is
  not in a flipped publish must still be readable at its position, the damage
  reported as skipped, and a consumer group must get past it.
- :func:`power_loss`: ``powerloss.campaign`` (everything not fsynced is dropped),
  when that module is there.
- :func:`soak`: ``soak.soak`` for its time, then every ordinary publish it got a
  202 for is read back: none missing, none twice, each key in order.
"""

from __future__ import annotations

import asyncio
import importlib
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from campaign import LogCheck, Producer, Result, absorb, session, verify
from fulldisk import small_disk
from hubapi import group_post, put_group, put_topic, read_all
from hubproc import HubProcess, free_port
from killloops import KILL_AFTER_S, START_TIMEOUT_S, end_round, round_hub

from tidings.log import format as fmt

# -- a full disk -----------------------------------------------------------------------


async def disk_full(root: Path, rounds: int, seconds: float, seed: int) -> Result:
    res = Result("disk full")
    started = time.monotonic()
    try:
        with small_disk(root / "disk") as disk:
            rng = random.Random(seed)
            deadline = started + seconds
            done = 0
            while done < rounds and time.monotonic() < deadline:
                fsync = ("interval:5", "always")[done % 2]
                hub = HubProcess(disk.path / "data", free_port(), fsync, ())
                hub.start_timeout = START_TIMEOUT_S
                hub.log_path = root / f"disk-full-{done}.hub.log"
                done += 1
                try:
                    await full_disk_round(hub, disk, rng, res)
                except RuntimeError as exc:  # a hub that did not start: this round ends
                    res.problem(str(exc)[:1500])
                finally:
                    disk.free()
                    end_round(hub, res)
            res.counts["rounds"] = done
    except pytest.skip.Exception as exc:  # no root, or no tmpfs here
        res.ran = False
        res.notes.append(f"did not run: {exc}")
    res.seconds = time.monotonic() - started
    return res


async def full_disk_round(hub: HubProcess, disk: Any, rng: random.Random, res: Result) -> None:
    producers = [
        Producer(f"w{n}", random.Random(rng.random()), data_bytes=2000) for n in range(3)
    ]
    check = LogCheck("full", 3)
    await asyncio.to_thread(hub.start)
    base = hub.base_url
    async with session() as http:
        await put_topic(http, base, "full", 201, partitions=3)
        # load, then fill the disk under it: publishes are refused and retried
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(p.run(http, base, "full", stop)) for p in producers]
        await asyncio.sleep(rng.uniform(0.1, 0.4))
        disk.fill()
        refused = await until_refused(http, base, producers)
        if not refused:
            res.problem("the full disk never refused a publish")
        if await status(http, f"{base}/readyz") != 503:
            res.problem("ready while the disk is full")
        await asyncio.sleep(rng.uniform(*KILL_AFTER_S))
        hub.kill()
        res.kills += 1
        stop.set()
        await asyncio.gather(*tasks)
    # a hub starts on a full disk and serves what it has
    await asyncio.to_thread(hub.start)
    async with session(30) as http:
        await verify(check, producers, http, base, res)
        disk.free()
        deadline = time.monotonic() + 15
        while await status(http, f"{base}/readyz") != 200:
            if time.monotonic() > deadline:
                res.problem("not ready 15 s after the space was freed")
                break
            await asyncio.sleep(0.1)
        # healed: the refused batches go in now, then more, and a kill at a random moment
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(p.run(http, base, "full", stop)) for p in producers]
        await asyncio.sleep(rng.uniform(*KILL_AFTER_S))
        hub.kill()
        res.kills += 1
        stop.set()
        await asyncio.gather(*tasks)
    await asyncio.to_thread(hub.start)
    async with session(30) as http:
        await verify(check, producers, http, base, res)
    res.counts["publishes refused while full"] += sum(p.statuses["503"] for p in producers)
    absorb(producers, res)


async def until_refused(
    http: aiohttp.ClientSession, base: str, producers: list[Producer], timeout: float = 10
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.statuses["503"] for p in producers):
            return True
        await asyncio.sleep(0.02)
    return False


async def status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as resp:
        await resp.read()
        return resp.status


# -- flipped bits ----------------------------------------------------------------------

FLIP_PARTITIONS = 3


def batches_of(segment: Path) -> list[tuple[int, fmt.BatchHeader, fmt.Link | None]]:
    """(position, header, link) of each batch of an intact segment, by its framing."""
    raw = segment.read_bytes()
    out = []
    pos = 0
    while pos + fmt.BATCH_HEADER_LEN <= len(raw):
        try:
            header = fmt.BatchHeader(raw[pos : pos + fmt.BATCH_HEADER_LEN])
        except ValueError:
            break  # a header flipped by an earlier round: its size cannot be trusted
        if pos + header.size > len(raw) or not fmt.check_crc(header, raw[pos : pos + header.size]):
            break  # damaged already, or a tail being written
        out.append((pos, header, fmt.decode_link(header, raw[pos : pos + header.size])))
        pos += header.size
    return out


def flip_one(data_dir: Path, topic: str, rng: random.Random, res: Result) -> set[tuple[int, int]]:
    """Flip one bit of one batch (not the last of its partition: that would be a torn
    tail) in a random partition; the positions of the publish it belonged to."""
    parts = list(range(FLIP_PARTITIONS))
    rng.shuffle(parts)
    for p in parts:
        segments = sorted((data_dir / "topics" / topic / str(p)).glob("*.log"))
        choices = []
        for k, segment in enumerate(segments):
            found = batches_of(segment)
            last = len(found) - 1 if k == len(segments) - 1 else len(found)
            choices += [(segment, k, *b) for b in found[:last]]
        if not choices:
            continue
        segment, k, pos, header, link = rng.choice(choices)
        at = pos + rng.randrange(header.size)
        with open(segment, "r+b") as f:
            f.seek(at)
            byte = f.read(1)[0]
            f.seek(at)
            f.write(bytes([byte ^ (1 << rng.randrange(8))]))
        res.counts["flips in sealed segments" if k < len(segments) - 1 else
                   "flips in active segments"] += 1
        spans = link.parts if link is not None else ((p, header.base_offset, header.count),)
        return {(q, base + i) for q, base, count in spans for i in range(count)}
    return set()


async def bit_flips(
    root: Path, kills: int, seconds: float, seed: int, round_kills: int = 10
) -> Result:
    res = Result("bit flips")
    rng = random.Random(seed)
    started = time.monotonic()
    deadline = started + seconds
    rounds = 0
    topic = "flips"
    while res.kills < kills and time.monotonic() < deadline:
        fsync = ("always", "interval:5")[rounds % 2]
        hub = round_hub(root, f"flips-{rounds}", fsync, "--segment-bytes", "16384")
        rounds += 1
        producers = [Producer(f"w{n}", random.Random(rng.random())) for n in range(2)]
        damaged: set[tuple[int, int]] = set()
        await asyncio.to_thread(hub.start)
        async with session() as http:
            await put_topic(http, hub.base_url, topic, 201, partitions=FLIP_PARTITIONS)
        try:
            for _ in range(min(round_kills, kills - res.kills)):
                if time.monotonic() >= deadline:
                    break
                stop = asyncio.Event()
                async with session() as http:
                    tasks = [
                        asyncio.ensure_future(p.run(http, hub.base_url, topic, stop))
                        for p in producers
                    ]
                    await asyncio.sleep(rng.uniform(0.2, 0.6))
                    hub.kill()
                    res.kills += 1
                    stop.set()
                    await asyncio.gather(*tasks)
                damaged |= flip_one(hub.data_dir, topic, rng, res)
                await asyncio.to_thread(hub.start)
                async with session(30) as http:
                    await check_flips(http, hub, topic, producers, damaged, res)
            async with session(30) as http:
                await group_past_damage(http, hub, topic, producers, damaged, res)
        except RuntimeError as exc:  # a hub that did not start: this round ends
            res.problem(str(exc)[:1500])
        finally:
            absorb(producers, res)
            end_round(hub, res)
    res.counts["rounds"] = rounds
    res.seconds = time.monotonic() - started
    return res


async def check_flips(
    http: aiohttp.ClientSession,
    hub: HubProcess,
    topic: str,
    producers: list[Producer],
    damaged: set[tuple[int, int]],
    res: Result,
) -> None:
    """The whole topic read again: everything acknowledged and not flipped is at its
    position; whatever is missing was reported as skipped."""
    check = LogCheck(topic, FLIP_PARTITIONS)
    await check.advance(http, hub.base_url, res)
    skipped = check.skipped

    def reported(pos: tuple[int, int]) -> bool:
        return any(s["partition"] == pos[0] and s["from"] <= pos[1] < s["to"] for s in skipped)

    for prod in producers:
        for eid, pos in prod.acked.items():
            found = check.where.get(eid)
            if found == pos:
                continue
            if found is not None:
                res.lost += 1
                res.problem(f"acknowledged {eid} at {pos} reads back at {found}")
            elif pos not in damaged:
                res.lost += 1
                res.problem(f"acknowledged {eid} at {pos} is gone; it was not in a flipped batch"
                            + (" (reported as skipped)" if reported(pos) else ""))
            elif not reported(pos):
                res.problem(f"{eid} at {pos} is gone and no read said so")
        prod.new_acks.clear()
    check.check_unanswered(producers, res)
    res.counts["acknowledged events in flipped batches"] = len(damaged & {
        pos for p in producers for pos in p.acked.values()
    })


async def group_past_damage(
    http: aiohttp.ClientSession,
    hub: HubProcess,
    topic: str,
    producers: list[Producer],
    damaged: set[tuple[int, int]],
    res: Result,
) -> None:
    """A group from the earliest offset gets every intact acknowledged event."""
    await put_group(http, hub.base_url, topic, "g", 201, start="earliest")
    got: set[str] = set()
    for _ in range(10_000):
        answer = await group_post(http, hub.base_url, topic, "g", "fetch", {"max": 500, "wait": 0})
        if not answer["records"]:
            break
        got.update(r["event"]["id"] for r in answer["records"])
        leases = [r["lease"] for r in answer["records"]]
        await group_post(http, hub.base_url, topic, "g", "ack", {"leases": leases})
    intact = {eid for p in producers for eid, pos in p.acked.items() if pos not in damaged}
    if intact - got:
        res.lost += len(intact - got)
        res.problem(f"a group never got {len(intact - got)} intact events, "
                    f"e.g. {sorted(intact - got)[:3]}")


# -- power loss --------------------------------------------------------------------------


def power_loss(cuts: int, seconds: float, seed: int, keep: Path | None = None) -> Result:
    """``powerloss.campaign`` when the module is there; a row that says so when not.

    Each failing run is a problem naming its seed, fsync policy, cut mode, what was
    wrong and where its cut directory was kept: under ``keep`` (made if missing), or
    a new ``tidings-powerloss-*`` directory in the system's temporary directory.
    """
    res = Result("power loss")
    started = time.monotonic()
    try:
        powerloss = importlib.import_module("powerloss")
    except ModuleNotFoundError as exc:
        if exc.name != "powerloss":
            raise
        res.ran = False
        res.notes.append("did not run: tests/support/powerloss.py is not here")
        return res
    made = keep is None
    kept = Path(tempfile.mkdtemp(prefix="tidings-powerloss-")) if keep is None else keep
    kept.mkdir(parents=True, exist_ok=True)
    try:
        out = powerloss.campaign(cuts=cuts, seed=seed, seconds=seconds, keep=kept)
    finally:
        if made and not any(kept.iterdir()):
            kept.rmdir()
    for f in out["failures"]:
        res.problem(
            f"run seed {f['seed']}, {f['policy']}, {f['mode']} cut "
            f"(window {f['window_ms']} ms), cut kept at {f['cut_dir']}: "
            + "; ".join(f["problems"])
        )
    res.cuts = int(out["runs"])
    for name in ("acknowledged", "lost", "duplicated", "out_of_order", "torn"):
        setattr(res, name, int(out[name]))
    res.counts.update({k: v for k, v in out.items() if isinstance(v, int) and k != "runs"})
    res.seconds = time.monotonic() - started
    return res


# -- the soak ----------------------------------------------------------------------------


async def soak(root: Path, seconds: float, *, rate: float = 100.0, slow: int = 200,
               topics: int = 1200) -> Result:
    """``soak.soak`` on a hub of its own, then its ordinary publishes read back."""
    import soak as soak_mod  # a sibling module of this one

    res = Result("soak")
    started = time.monotonic()
    data = root / "soak" / "data"
    data.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = soak_mod.start_hub(port, data, [], nofile=1024)
    acked: list[dict[str, Any]] = []
    base = f"http://127.0.0.1:{port}"
    try:
        out = await soak_mod.soak(
            base, port, proc.pid, seconds, rate=rate, slow=slow, topic_count=topics, acked=acked
        )
        async with session(60) as http:
            records = await read_all(http, base, "soak.orders", limit=5000)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    res.acknowledged = len(acked)
    where = {}
    for r in records:
        eid = r["event"]["id"]
        if eid in where:
            res.duplicated += 1
            res.problem(f"{eid} stored twice")
        where[eid] = (r["partition"], r["offset"])
    for a in acked:
        if where.get(a["id"]) != (a["partition"], a["offset"]):
            res.lost += 1
            res.problem(f"acknowledged {a['id']} at {a['partition']}:{a['offset']} is not there")
    # one publisher, keys k0..k7: each key's events in the order they were sent
    last: dict[str, int] = {}
    for r in records:
        event = r["event"]
        key, i = event.get("partitionkey"), event["data"]["i"]
        if key in last and i < last[key]:
            res.out_of_order += 1
        last[key] = i
    statuses = Counter(out["publish"]["statuses"])
    if set(statuses) != {"202"}:
        res.problem(f"ordinary publishes were answered {dict(statuses)}")
    hub = out["hub"]
    mib = 1 << 20
    res.notes.append(
        f"hub RSS {hub['rss']['start'] // mib}->{hub['rss']['max'] // mib}->"
        f"{hub['rss']['end'] // mib} MiB (start, max, end), descriptors max {hub['fds']['max']}; "
        f"publish p50 {out['publish']['p50_ms']} ms, p99 {out['publish']['p99_ms']} ms"
    )
    log = (data.parent / "hub.log").read_text(errors="replace")
    if "Traceback" in log:
        res.problem("the soak hub logged a traceback")
    shutil.rmtree(data.parent, ignore_errors=True)
    res.seconds = time.monotonic() - started
    return res
