"""Power loss at any instant: what survives, checked after a restart.

A real hub (``Hub`` over ``EmbeddedStorage``) runs a publish and consume load in
this process while :class:`RecordingDisk`, swapped in under the log's
durability seam (``tidings.log.config.use_disk``), notes what every fsync made
durable: a file's bytes (``fdatasync``/``fsync``) and a directory's entries
(``fsync_dir``). At a cut point the data directory is rebuilt elsewhere as a
machine that lost power then could have left it (see :meth:`RecordingDisk.cut`):

- every file holds what its last fsync kept, plus an arbitrary choice of the
  4 KiB pages written since: a prefix of them in page order ("prefix" cuts) or
  any subset, the file's size either the old or the new one ("pages" cuts);
- a directory entry made, replaced or removed since the directory's last fsync
  may be there or not (a rename is all or nothing);
- SQLite's files (the metadata store) are taken as they stand: SQLite makes its
  own commits durable, below the log's seam.

A new hub then starts on the rebuilt directory and the run checks it: no
acknowledged event lost (under ``interval:MS``, none acknowledged longer ago
than one flush round before the cut), each partition a gapless prefix of what
was written with every event where its acknowledgement said, every publish
(one partition or several: linked batches) there whole or not at all, offsets
going on from the end, a retry of every publish deduped exactly (each id once
in the log), and the consumer group delivering every surviving event it had not
acknowledged.

``python tests/support/powerloss.py --cuts N --seed S --seconds T [--keep DIR]``
prints the summary of :func:`campaign` as JSON (each failing run with its seed,
policy, cut mode, problems and where its cut directory was kept).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import stat
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson

from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.core.groups import GroupConfig
from tidings.core.hub import Hub, HubOptions
from tidings.events.envelope import normalize_event
from tidings.log.config import Disk, FsyncPolicy, LogConfig, use_disk

PAGE = 4096
TOPIC = "orders"
PARTITIONS = 3
GROUP = "billing"
COUNTS = ("runs", "acknowledged", "lost", "duplicated", "out_of_order", "torn")


def _sqlite(name: str) -> bool:
    return name.startswith("meta.sqlite3")


# -- the disk ---------------------------------------------------------------------


def _entries(directory: str) -> dict[str, tuple[int, bool]]:
    """name -> (inode, is a directory) of what ``directory`` holds now."""
    out: dict[str, tuple[int, bool]] = {}
    with os.scandir(directory) as it:
        for entry in it:
            out[entry.name] = (entry.inode(), entry.is_dir(follow_symlinks=False))
    return out


class RecordingDisk(Disk):
    """A :class:`Disk` that notes what each sync made durable, under ``root``.

    It makes nothing durable for real (the page cache is the disk of this model),
    so a run costs no real fsync. Thread-safe: the log syncs from worker threads, and
    each sync reads and notes under one lock, so what is noted follows the syncs' order.
    """

    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)
        self.lock = threading.Lock()
        self.recording = True
        self.data: dict[int, bytes] = {}  # inode -> bytes its last sync kept
        # directory path -> its entries at its last sync; the root counts as synced.
        self.dirs: dict[str, dict[str, tuple[int, bool]]] = {self.root: _entries(self.root)}
        self.syncs: list[float] = []  # monotonic start of every data sync, for the bound

    def _inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + os.sep)

    def _keep(self, fd: int) -> None:
        path = os.path.realpath(f"/proc/self/fd/{fd}")
        if not self._inside(path):
            return
        ino = os.fstat(fd).st_ino
        # Read under the lock too: a sync in one thread (the interval flusher's) that
        # read the file before a write must not note its bytes after a sync in another
        # (a roll sealing the segment) noted the newer ones. An fsync never takes back
        # what another made durable; noted out of order, a cut lost a sealed tail.
        with self.lock:
            if self.recording:
                self.data[ino] = self._read(fd)

    def _read(self, fd: int) -> bytes:
        """The bytes of the file open as ``fd`` now."""
        with open(f"/proc/self/fd/{fd}", "rb") as f:  # write-only descriptors too
            return f.read()

    def fdatasync(self, fd: int) -> None:
        self.syncs.append(time.monotonic())
        self._keep(fd)

    def fsync(self, fd: int) -> None:
        self._keep(fd)

    def fsync_dir(self, path: str | os.PathLike[str]) -> None:
        real = os.path.realpath(path)
        if not self._inside(real):
            return
        with self.lock:  # listed under the lock, as in _keep
            if self.recording:
                self.dirs[real] = _entries(real)

    def cut(self, dest: Path, rng: random.Random, mode: str) -> dict[str, int]:
        """Stop recording and build at ``dest`` what a power cut now could leave.

        ``mode`` "prefix" keeps a prefix of each file's unsynced pages, "pages" any
        subset of them, "synced" none (nor any unsynced directory change).

        Returns counts of what the cut dropped: pages not kept, entries not kept.
        """
        stats = {"pages_dropped": 0, "pages_kept": 0, "entries_changed": 0}
        with self.lock:
            self.recording = False
            self._build(self.root, dest, rng, mode, stats)
        return stats

    def _build(
        self, real: str, dest: Path, rng: random.Random, mode: str, stats: dict[str, int]
    ) -> None:
        dest.mkdir()
        now = _entries(real)
        synced = self.dirs.get(real, {})
        decided: dict[int, bool] = {}  # inode -> the entry change that names it kept

        def keep_new(ino: int) -> bool:
            if mode == "synced":
                return False
            if ino not in decided:
                decided[ino] = rng.random() < 0.5
            return decided[ino]

        for name in sorted(set(now) | set(synced)):
            new, old = now.get(name), synced.get(name)
            if new == old or (real == self.root and _sqlite(name)):
                chosen = new
            else:
                stats["entries_changed"] += 1
                # One decision per inode: a rename moves both of its names, or neither.
                chosen = new if keep_new(new[0] if new else old[0]) else old  # type: ignore[index]
            if chosen is None:
                continue
            ino, is_dir = chosen
            here = now.get(name) == chosen
            if is_dir:
                if here:
                    self._build(os.path.join(real, name), dest / name, rng, mode, stats)
                continue
            if real == self.root and _sqlite(name):
                shutil.copyfile(os.path.join(real, name), dest / name)
                continue
            kept = self.data.get(ino, b"")
            if here:
                with open(os.path.join(real, name), "rb") as f:
                    current = f.read()
                kept = _mix(kept, current, rng, mode, stats)
            (dest / name).write_bytes(kept)


def _mix(old: bytes, new: bytes, rng: random.Random, mode: str, stats: dict[str, int]) -> bytes:
    """What a file written from ``old`` to ``new`` since its last sync may hold."""
    if old == new:
        return new
    if mode == "synced":
        return old
    n = max(len(old), len(new))
    pages = [
        i
        for i in range((n + PAGE - 1) // PAGE)
        if old[i * PAGE : (i + 1) * PAGE] != new[i * PAGE : (i + 1) * PAGE]
    ]
    if mode == "prefix":
        k = rng.randint(0, len(pages))
        kept = set(pages[:k])
        if k == len(pages):
            size = len(new)
        else:
            size = max(len(old), min(len(new), (pages[k - 1] + 1) * PAGE)) if k else len(old)
    else:
        kept = {i for i in pages if rng.random() < 0.5}
        size = rng.choice((len(old), len(new)))
    stats["pages_kept"] += len(kept)
    stats["pages_dropped"] += len(pages) - len(kept)
    out = bytearray(size)
    for i in range((size + PAGE - 1) // PAGE):
        src = new if i in kept else old
        piece = src[i * PAGE : min((i + 1) * PAGE, size)]
        out[i * PAGE : i * PAGE + len(piece)] = piece
    return bytes(out)


# -- one run ----------------------------------------------------------------------


@dataclass
class Publish:
    events: list[dict[str, Any]]
    acked_at: float | None = None  # monotonic, when the publish answered
    positions: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Run:
    seed: int
    policy: FsyncPolicy
    mode: str
    publishes: list[Publish] = field(default_factory=list)
    group_acked: set[str] = field(default_factory=set)  # ids the group acked before the cut
    started_at: float = 0.0  # when the first partition opened: the flusher's start
    cut_at: float = 0.0
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _event(rng: random.Random, key: str | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {"type": "order.placed", "id": str(uuid.UUID(int=rng.getrandbits(128)))}
    if key is not None:
        attrs["partitionkey"] = key
    attrs["data"] = {"pad": "x" * rng.randint(10, 900)}
    return normalize_event(attrs, topic=TOPIC)


def _batch(rng: random.Random) -> list[dict[str, Any]]:
    kind = rng.random()
    if kind < 0.3:
        return [_event(rng, f"k{rng.randint(0, 40)}")]
    if kind < 0.5:
        key = f"k{rng.randint(0, 40)}"
        return [_event(rng, key) for _ in range(rng.randint(2, 6))]
    if kind < 0.85:  # spread over partitions: linked batches
        return [_event(rng, f"k{rng.randint(0, 40)}") for _ in range(rng.randint(2, 10))]
    return [_event(rng, None) for _ in range(rng.randint(1, 6))]


def _options() -> HubOptions:
    return HubOptions(sweep_s=0.05)


async def _load(
    run: Run, data: Path, disk: RecordingDisk, cut_dir: Path, rng: random.Random
) -> None:
    """Publish and consume until the cut, then build the cut directory."""
    segment_bytes = rng.choice((8192, 20000, 1 << 20))
    storage = EmbeddedStorage(data, run.policy, LogConfig(segment_bytes=segment_bytes))
    hub = Hub(storage, _options())
    await hub.start()
    cut = asyncio.Event()
    target_acks = rng.randint(0, 300)
    acks = 0
    try:
        run.started_at = time.monotonic()
        await hub.create_topic(TOPIC, PARTITIONS)
        await hub.put_group(TOPIC, GROUP, GroupConfig(ack_wait_ms=60_000))

        async def produce(prng: random.Random) -> None:
            nonlocal acks
            while not cut.is_set():
                pub = Publish(_batch(prng))
                run.publishes.append(pub)
                out = await hub.publish(TOPIC, [dict(e) for e in pub.events])
                if cut.is_set():
                    return  # answered after the power went: never acknowledged
                pub.acked_at = time.monotonic()
                pub.positions = [(p.partition, p.offset) for p in out]
                acks += 1
                if acks >= target_acks:
                    cut.set()
                if prng.random() < 0.3:
                    await asyncio.sleep(prng.random() * 0.003)

        async def consume(prng: random.Random) -> None:
            while not cut.is_set():
                got = await hub.fetch(TOPIC, GROUP, prng.randint(1, 30), wait_s=0.01)
                if cut.is_set():
                    return
                done = [d for d in got if prng.random() < 0.9]
                if done:
                    await hub.ack(TOPIC, GROUP, [d.lease for d in done])
                    if cut.is_set():
                        return
                    run.group_acked.update(orjson.loads(d.payload)["id"] for d in done)

        tasks = [asyncio.ensure_future(produce(random.Random(rng.random()))) for _ in range(4)]
        tasks.append(asyncio.ensure_future(consume(random.Random(rng.random()))))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cut.wait(), rng.uniform(0.002, 0.25))
        # The power goes now: nothing runs between here and the cut.
        cut.set()
        run.cut_at = time.monotonic()
        run.counts.update(disk.cut(cut_dir, rng, run.mode))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await hub.close()


async def _check(run: Run, cut_dir: Path) -> None:
    c = run.counts
    storage = EmbeddedStorage(cut_dir, run.policy, LogConfig(segment_bytes=8192))
    hub = Hub(storage, _options())
    await hub.start()
    try:
        if TOPIC not in hub.topics:
            # The topic is made durable before its first publish answers.
            if any(p.acked_at is not None for p in run.publishes):
                run.problems.append("the topic is gone")
                c["lost"] += sum(len(p.events) for p in run.publishes if p.acked_at is not None)
            return
        topic = hub.topics[TOPIC]
        logs = topic.partitions

        def contents() -> dict[tuple[int, int], str]:
            out: dict[tuple[int, int], str] = {}
            for p, log in enumerate(logs):
                if log.start_offset != 0:
                    run.problems.append(f"partition {p} starts at {log.start_offset}")
                if log.damage:
                    c["torn"] += 1
                    run.problems.append(f"partition {p} damaged: {log.damage}")
                offset = 0
                while offset < log.end_offset:
                    for o, _, payload in log.read_now(offset, 1000, 1 << 22):
                        if o != offset:
                            c["gaps"] += 1
                            run.problems.append(f"partition {p}: offset {o} after {offset - 1}")
                        out[(p, o)] = orjson.loads(payload)["id"]
                        offset = o + 1
            return out

        found = contents()
        where: dict[str, tuple[int, int]] = {}
        for pos, eid in found.items():
            if eid in where:
                c["duplicated"] += 1
                run.problems.append(f"{eid} at {where[eid]} and {pos}")
            where[eid] = pos
        attempted = {e["id"] for p in run.publishes for e in p.events}
        c["phantom"] += len(set(where) - attempted)
        window = _window(run)
        for pub in run.publishes:
            there = [e["id"] in where for e in pub.events]
            if any(there) and not all(there):
                c["torn"] += 1
                kept = [where.get(e["id"]) for e in pub.events]
                run.problems.append(
                    f"publish of {len(there)} ({'acknowledged' if pub.acked_at else 'not'}) "
                    f"kept {sum(there)}: {kept}"
                )
            if pub.acked_at is None:
                continue
            c["acknowledged"] += len(pub.events)
            for e, pos in zip(pub.events, pub.positions, strict=True):
                got = where.get(e["id"])
                if got is None:
                    age = run.cut_at - pub.acked_at
                    if run.policy.mode == "interval" and age <= window:
                        c["lost_in_window"] += 1
                        c["max_lost_age_us"] = max(c["max_lost_age_us"], int(age * 1e6))
                    else:
                        c["lost"] += 1
                        run.problems.append(
                            f"acknowledged {e['id']} at {pos} lost "
                            f"({age * 1000:.1f} ms before the cut)"
                        )
                elif got != pos:
                    c["out_of_order"] += 1
                    run.problems.append(f"{e['id']} acknowledged at {pos}, found at {got}")
        # Offsets go on from the end: one keyless event per partition, in turn.
        ends = [log.end_offset for log in logs]
        for _ in range(PARTITIONS):
            [got_pub] = await hub.publish(TOPIC, [_event(random.Random(), None)])
            if got_pub.offset != ends[got_pub.partition]:
                c["out_of_order"] += 1
                run.problems.append(
                    f"after restart partition {got_pub.partition} took offset "
                    f"{got_pub.offset}, its end was {ends[got_pub.partition]}"
                )
            ends[got_pub.partition] = got_pub.offset + 1
        # A producer retries every publish: kept events are deduped to where they are.
        for pub in run.publishes:
            out = await hub.publish(TOPIC, [dict(e) for e in pub.events])
            for e, p in zip(pub.events, out, strict=True):
                kept = where.get(e["id"])
                if kept is not None and (not p.duplicate or (p.partition, p.offset) != kept):
                    c["dedupe_errors"] += 1
                    run.problems.append(f"retry of kept {e['id']} answered {p}")
        after = contents()
        seen: dict[str, int] = {}
        for eid in after.values():
            seen[eid] = seen.get(eid, 0) + 1
        c["duplicated"] += sum(n - 1 for n in seen.values() if n > 1)
        if set(seen) < attempted:
            run.problems.append(f"{len(attempted - set(seen))} ids missing after the retries")
            c["lost"] += len(attempted - set(seen))
        # The group delivers every event it had not acknowledged, once.
        expect = {
            eid
            for pos, eid in after.items()
            if not (eid in run.group_acked and found.get(pos) == eid)
        }
        delivered: dict[str, int] = {}
        for _ in range(1000):
            got = await hub.fetch(TOPIC, GROUP, 500)
            if not got:
                break
            for d in got:
                eid = orjson.loads(d.payload)["id"]
                delivered[eid] = delivered.get(eid, 0) + 1
            await hub.ack(TOPIC, GROUP, [d.lease for d in got])
        missed = expect - set(delivered)
        again = [eid for eid, n in delivered.items() if n > 1]
        c["group_errors"] += len(missed) + len(again)
        if missed or again:
            run.problems.append(f"group missed {len(missed)}, delivered {len(again)} twice")
    finally:
        await hub.close()


def _window(run: Run) -> float:
    """How long before the cut an acknowledged event may be lost under ``interval``.

    The flusher fsyncs every dirty partition each ``MS`` (later on a busy loop: its
    cadence is measured here as the longest gap between two fsync starts, of any
    file, from the flusher's start to the cut). An event acknowledged just after
    its partition was synced in one round is synced in the next: one round's gap,
    plus how far into that round its partition's turn comes, which one more gap
    bounds only when a round's syncs follow each other quickly. A round's syncs
    of several partitions spread over up to a gap of their own, so the bound is
    three gaps (two lost a cut by 1.3 ms, 31.3 ms against 30.0 ms, on a loaded run).
    """
    interval = run.policy.interval_ms / 1000
    return 3 * max(interval, run.counts.get("max_sync_gap_us", 0) / 1e6)


async def one_run(seed: int, policy: FsyncPolicy, workdir: Path) -> Run:
    rng = random.Random(seed)
    run = Run(seed, policy, rng.choice(("prefix", "pages")))
    run.counts = dict.fromkeys(
        ("acknowledged", "lost", "lost_in_window", "max_lost_age_us", "duplicated",
         "out_of_order", "torn", "gaps", "phantom", "dedupe_errors", "group_errors"), 0
    )
    data = workdir / f"run-{seed}"
    cut_dir = workdir / f"cut-{seed}"
    data.mkdir()
    disk = RecordingDisk(data)
    previous = use_disk(disk)
    try:
        await _load(run, data, disk, cut_dir, rng)
    finally:
        use_disk(previous)
    points = [run.started_at, *(t for t in disk.syncs if t <= run.cut_at), run.cut_at]
    gaps = [b - a for a, b in pairwise(points)]
    run.counts["max_sync_gap_us"] = int(max(gaps, default=0.0) * 1e6)
    restart = workdir / f"restart-{seed}"
    shutil.copytree(cut_dir, restart)  # the cut itself stays as it was, for a look
    try:
        await _check(run, restart)
    finally:
        shutil.rmtree(restart, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
        if not run.problems:
            shutil.rmtree(cut_dir, ignore_errors=True)
    return run


POLICIES = (FsyncPolicy("always"), FsyncPolicy("interval", 5), FsyncPolicy("interval", 20))


def campaign(cuts: int, seed: int, seconds: float, keep: Path | None = None) -> dict[str, Any]:
    """Run up to ``cuts`` power cuts (seeded: run ``k`` uses seed ``seed + k``), stopping
    early once ``seconds`` have passed; the summary of all runs.

    Each run's policy is ``always``, ``interval:5`` or ``interval:20`` in turn. Runs
    work in a RAM disk when there is one. A run that found a problem keeps its cut
    directory (moved under ``keep`` if given) and is listed in ``failures`` with what
    was wrong.
    """
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="powerloss-", dir=_scratch()))
    summary: dict[str, Any] = dict.fromkeys(COUNTS, 0)
    summary.update(seed=seed, by_policy={}, failures=[], modes={"prefix": 0, "pages": 0})
    totals: dict[str, int] = {}
    try:
        for k in range(cuts):
            if k and time.monotonic() - started > seconds:
                break
            policy = POLICIES[k % len(POLICIES)]
            run = asyncio.run(one_run(seed + k, policy, base))
            summary["runs"] += 1
            summary["modes"][run.mode] += 1
            mine = summary["by_policy"].setdefault(str(policy), {"runs": 0})
            mine["runs"] += 1
            for name, n in run.counts.items():
                if name.startswith("max_"):
                    totals[name] = max(totals.get(name, 0), n)
                    mine[name] = max(mine.get(name, 0), n)
                else:
                    totals[name] = totals.get(name, 0) + n
                    mine[name] = mine.get(name, 0) + n
            if run.problems:
                summary["failures"].append(
                    {"seed": run.seed, "policy": str(policy), "mode": run.mode,
                     "cut_dir": str(base / f"cut-{run.seed}"),
                     "window_ms": round(_window(run) * 1000, 1),
                     "problems": run.problems[:10]}
                )
    finally:
        if keep is not None:
            for failure in summary["failures"]:
                moved = keep / Path(failure["cut_dir"]).name
                shutil.move(failure["cut_dir"], moved)
                failure["cut_dir"] = str(moved)
        if keep is not None or not summary["failures"]:
            shutil.rmtree(base, ignore_errors=True)
    summary.update(totals)
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def _scratch() -> str:
    """A RAM disk when there is one: the runs make no real fsync, SQLite does."""
    shm = "/dev/shm"
    usable = os.path.isdir(shm) and os.access(shm, os.W_OK) and stat.S_ISDIR(os.stat(shm).st_mode)
    return shm if usable else tempfile.gettempdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cuts", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument(
        "--keep", type=Path,
        help="move the cut directories of failing runs here (made if missing); "
        "without it they stay in the campaign's scratch directory",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.cuts < 1 or args.seconds <= 0:
        parser.error("--cuts must be at least 1 and --seconds more than 0")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    summary = campaign(args.cuts, args.seed, args.seconds, keep=args.keep)
    json.dump(summary, sys.stdout, indent=1)
    print()
    bad = summary["lost"] + summary["duplicated"] + summary["out_of_order"] + summary["torn"]
    return 1 if bad or summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
