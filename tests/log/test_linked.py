"""Publishes over several partitions: whole or absent after SIGKILL, never read in part.

The kill test (up to 20 kills per fsync policy) runs a child that appends
linked batches (each over two or three partitions of one topic, through the
embedded backend) beside plain ones, while a reader task in the child tails every
partition. The parent kills it at random, reopens the same directory and checks:
every batch in the log is whole, every acknowledged batch and every batch the
reader saw is there, offsets are dense.
Small segments make rolls (and the ``.linked`` marks) frequent.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.errors import StorageUnavailable
from tidings.log import format as fmt
from tidings.log.config import Disk, FsyncPolicy, LogConfig, Retention, use_disk
from tidings.log.partition import PartitionLog
from tidings.log.segment import Segment

KILLS = 20
BUDGET_S = 25
PARTITIONS = 3
SEGMENT_BYTES = 16 * 1024
TOPIC = "t"

CHILD = """
import asyncio
import json
import random
import sys

from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.log.config import FsyncPolicy, LogConfig, Retention

PARTITIONS = {partitions}


def payloads(name, n, k):
    return [json.dumps({{"b": name, "n": n, "i": i}}).encode() for i in range(k)]


async def main() -> None:
    directory, policy, run = sys.argv[1:4]
    rng = random.Random(int(run))
    storage = EmbeddedStorage(
        directory, FsyncPolicy.parse(policy), LogConfig(segment_bytes={segment_bytes})
    )
    await storage.save_topic("{topic}", {{"partitions": PARTITIONS}})
    parts = [await storage.open_partition("{topic}", p, Retention()) for p in range(PARTITIONS)]
    out = sys.stdout
    out.write("start\\n")
    out.flush()
    counter = 0

    async def linked() -> None:
        nonlocal counter
        while True:
            counter += 1
            name = f"{{run}}-{{counter}}"
            chosen = rng.sample(range(PARTITIONS), rng.choice((2, 3)))
            sizes = [rng.randint(1, 4) for _ in chosen]
            n = sum(sizes)
            await storage.append_linked(
                "{topic}", [(p, payloads(name, n, k)) for p, k in zip(chosen, sizes)]
            )
            out.write(f"ack {{name}}\\n")
            out.flush()

    async def plain() -> None:
        nonlocal counter
        while True:
            counter += 1
            name = f"{{run}}-{{counter}}"
            k = rng.randint(1, 5)
            await parts[rng.randrange(PARTITIONS)].append(payloads(name, k, k))
            out.write(f"ack {{name}}\\n")
            out.flush()

    async def reader() -> None:
        pos = [p.end_offset for p in parts]
        while True:
            for p, part in enumerate(parts):
                got = part.read_now(pos[p], 1000)
                for _, _, payload in got:
                    out.write(f"seen {{json.loads(payload)['b']}}\\n")
                if got:
                    pos[p] = got[-1][0] + 1
            out.flush()
            await asyncio.sleep(0.001)

    await asyncio.gather(linked(), linked(), linked(), plain(), reader())


asyncio.run(main())
"""


def child_source() -> str:
    return CHILD.format(partitions=PARTITIONS, segment_bytes=SEGMENT_BYTES, topic=TOPIC)


def run_and_kill(script: Path, data: Path, policy: str, run: int, delay: float) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, str(script), str(data), policy, str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines: list[bytes] = []
    started = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            started.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        started.wait(20)
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        reader.join(10)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    return [line.decode() for line in lines if line.endswith(b"\n")]


async def read_log(data: Path, policy: str) -> tuple[Counter[str], dict[str, int], int]:
    """Recover, then every batch's records counted, each batch's size, and records cut."""
    config = LogConfig(segment_bytes=SEGMENT_BYTES)
    storage = EmbeddedStorage(data, FsyncPolicy.parse(policy), config)
    try:
        got: Counter[str] = Counter()
        sizes: dict[str, int] = {}
        cut = 0
        for p in range(PARTITIONS):
            part = await storage.open_partition(TOPIC, p, Retention())
            cut += len(part.report.truncated)
            offset = part.start_offset
            while offset < part.end_offset:
                records = part.read_now(offset, 5000, 1 << 24)
                for rec_offset, _, payload in records:
                    assert rec_offset == offset, f"partition {p} has a gap at {offset}"
                    event = json.loads(payload)
                    got[event["b"]] += 1
                    sizes[event["b"]] = event["n"]
                    offset += 1
        return got, sizes, cut
    finally:
        await storage.close()


@pytest.mark.parametrize("policy", ["always", "interval:5"])
def test_linked_batches_are_whole_or_absent_after_sigkill(tmp_path: Path, policy: str) -> None:
    script = tmp_path / "child.py"
    script.write_text(child_source())
    data = tmp_path / "data"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"seed {seed}")
    acked: set[str] = set()
    seen: set[str] = set()
    started = time.monotonic()
    kills = cuts = 0
    while kills < KILLS and time.monotonic() - started < BUDGET_S:
        lines = run_and_kill(script, data, policy, kills, rng.uniform(0.05, 0.4))
        kills += 1
        for line in lines:
            word, _, name = line.strip().partition(" ")
            if word == "ack":
                acked.add(name)
            elif word == "seen":
                seen.add(name)
        got, sizes, cut = asyncio.run(read_log(data, policy))
        cuts += cut
        torn = sorted(b for b, k in got.items() if k != sizes[b])
        assert torn == [], f"kill {kills} (seed {seed}): batches kept in part: {torn[:5]}"
        lost = sorted(acked - set(got))
        assert lost == [], f"kill {kills} (seed {seed}): acknowledged and lost: {lost[:5]}"
        unread = sorted(seen - set(got))
        assert unread == [], f"kill {kills} (seed {seed}): read and then lost: {unread[:5]}"
    print(f"{kills} kills, {len(acked)} batches acknowledged, {cuts} torn tails cut")
    assert kills >= 5
    assert acked, "the child acknowledged nothing"


def write_batch(directory: Path, base: int, payloads: list[bytes], link: bytes = b"") -> None:
    """Append one batch to the segment at offset 0, as a partition would have."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / fmt.segment_name(0, ".log"), "ab") as f:
        f.write(fmt.encode_batch(base, payloads, 1_000, link))


async def test_recovery_cuts_a_linked_batch_missing_a_part(tmp_path: Path) -> None:
    """A crash after partition 0 got its part and a later append, before partition 1 got
    its part: partition 0 is cut back to before the linked batch; the bytes are kept."""
    setup = EmbeddedStorage(tmp_path)
    await setup.save_topic(TOPIC, {"partitions": 2})
    await setup.close()
    topic = tmp_path / "topics" / TOPIC
    whole = fmt.encode_link(fmt.Link(7, ((0, 0, 1), (1, 0, 2))))
    write_batch(topic / "0", 0, [b"w0"], whole)
    write_batch(topic / "1", 0, [b"w1", b"w2"], whole)
    torn = fmt.encode_link(fmt.Link(8, ((0, 1, 2), (1, 2, 1))))
    write_batch(topic / "0", 1, [b"t0", b"t1"], torn)
    write_batch(topic / "0", 3, [b"after"])  # waited behind the torn batch: never acked
    storage = EmbeddedStorage(tmp_path)
    try:
        p0 = await storage.open_partition(TOPIC, 0, Retention())
        p1 = await storage.open_partition(TOPIC, 1, Retention())
        assert [r[2] for r in p0.read_now(0)] == [b"w0"]
        assert [r[2] for r in p1.read_now(0)] == [b"w1", b"w2"]
        [(path, position, nbytes, why)] = p0.report.truncated
        assert "linked" in why
        side = Path(f"{path}.cut-{position}")
        assert side.read_bytes().endswith(b"after") and len(side.read_bytes()) == nbytes
        # The partition goes on where the cut left it.
        assert await p0.append([b"next"]) == 1
    finally:
        await storage.close()


async def test_a_held_part_and_what_follows_it_are_unreadable_until_released(
    tmp_path: Path,
) -> None:
    log = PartitionLog.open(tmp_path / "p", policy=FsyncPolicy.parse("always"))
    try:
        await log.append([b"before"])
        link = fmt.encode_link(fmt.Link(1, ((0, 1, 1), (1, 0, 1))))
        part = log.append_held([b"held"], link, 1_000)
        after = log.append([b"after"])
        assert await part == 1  # written: the part's future resolves ...
        await asyncio.sleep(0.05)
        assert not after.done()  # ... but what follows is not acknowledged
        assert [r[2] for r in log.read_now(0)] == [b"before"]  # nor readable
        assert log.end_offset == 1
        log.release(1)
        assert await after == 2
        assert [r[2] for r in log.read_now(0)] == [b"before", b"held", b"after"]
    finally:
        await log.close()


def test_a_segment_rolled_with_a_held_part_is_marked(tmp_path: Path) -> None:
    async def go() -> None:
        config = LogConfig(segment_bytes=200)
        log = PartitionLog.open(tmp_path / "p", config, FsyncPolicy.parse("always"))
        try:
            link = fmt.encode_link(fmt.Link(1, ((0, 0, 1), (1, 0, 1))))
            part = log.append_held([b"x" * 100], link, 1_000)
            after = log.append([b"y" * 150])  # does not fit: rolls while the part is held
            await part
            assert log.segment_count == 2
            marker = Segment(tmp_path / "p", 0, index_interval=4096)
            try:
                assert marker.path.with_suffix(".linked").exists()
            finally:
                marker.close()
            log.release(0)
            assert await after == 1
        finally:
            await log.close()

    asyncio.run(go())


async def test_recovery_cuts_a_torn_part_in_a_segment_rolled_since(tmp_path: Path) -> None:
    """A part held when its segment rolled, whose sibling never got written: recovery
    finds it by the segment's mark and cuts it, with the segment written after it."""
    storage = EmbeddedStorage(tmp_path, FsyncPolicy.parse("always"), LogConfig(segment_bytes=300))
    await storage.save_topic(TOPIC, {"partitions": 2})
    p0 = await storage.open_partition(TOPIC, 0, Retention())
    await storage.open_partition(TOPIC, 1, Retention())
    assert await p0.append([b"kept"]) == 0
    link = fmt.encode_link(fmt.Link(9, ((0, 1, 1), (1, 0, 1))))
    part = p0.append_held([b"p" * 100], link, 1_000)  # its sibling in partition 1 never comes
    after = p0.append([b"a" * 250])  # rolls a segment while the part is held
    assert await part == 1
    assert p0.segment_count == 2
    await storage.close()  # as if killed here: everything written, nothing released
    assert not after.done()

    again = EmbeddedStorage(tmp_path, FsyncPolicy.parse("always"), LogConfig(segment_bytes=300))
    try:
        p0 = await again.open_partition(TOPIC, 0, Retention())
        assert [r[2] for r in p0.read_now(0)] == [b"kept"]
        assert p0.end_offset == 1 and p0.segment_count == 1
        assert list((tmp_path / "topics" / TOPIC / "0").glob("*.linked")) == []
        assert await p0.append([b"next"]) == 1
    finally:
        await again.close()


async def test_start_up_costs_about_the_same_with_linked_batches_as_without(
    tmp_path: Path,
) -> None:
    """Recovery lists the linked batches of the active segment; checking them against
    each other must not read each part back from disk (it once cost ~70 us a part:
    a minute before the hub answered anything, for 40,000 publishes of four parts)."""
    event = json.dumps({"id": "x" * 20, "type": "t", "data": {"n": 1}}).encode()

    async def write(directory: Path, linked: bool) -> None:
        storage = EmbeddedStorage(directory, FsyncPolicy.parse("never"))
        await storage.save_topic(TOPIC, {"partitions": 4, "retention": {}})
        parts = [await storage.open_partition(TOPIC, p, Retention()) for p in range(4)]
        for _ in range(5):
            if linked:
                futures = [
                    storage.append_linked(TOPIC, [(p, [event, event]) for p in range(4)])
                    for _ in range(400)
                ]
            else:
                futures = [part.append([event, event]) for part in parts for _ in range(400)]
            await asyncio.gather(*futures)
        await storage.close()

    def start_up_cpu(directory: Path) -> float:
        started = time.process_time()
        storage = EmbeddedStorage(directory, FsyncPolicy.parse("never"))
        logs = [storage.open_partition_now(TOPIC, p, Retention()) for p in range(4)]
        took = time.process_time() - started
        assert [log.end_offset for log in logs] == [4000] * 4
        return took

    await write(tmp_path / "plain", linked=False)
    await write(tmp_path / "linked", linked=True)
    plain = min(start_up_cpu(tmp_path / "plain") for _ in range(3))
    linked = min(start_up_cpu(tmp_path / "linked") for _ in range(3))
    print(f"start-up CPU: {plain:.3f} s plain, {linked:.3f} s linked (2,000 publishes)")
    assert linked < 5 * plain + 0.1


class GatedDisk(Disk):
    """fsyncs of files under ``gated`` wait for :attr:`go` (and then fail if
    :attr:`error` is set): a partition whose fsync is slow, as on a loaded machine."""

    def __init__(self, gated: Path) -> None:
        self.gated = f"{gated}/"
        self.entered = threading.Event()
        self.go = threading.Event()
        self.error: OSError | None = None

    def fdatasync(self, fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(self.gated):
            self.entered.set()
            assert self.go.wait(10), "the gate was never opened"
            if self.error is not None:
                raise self.error
        super().fdatasync(fd)


async def three_partitions(data: Path) -> EmbeddedStorage:
    storage = EmbeddedStorage(data, FsyncPolicy.parse("always"))
    await storage.save_topic(TOPIC, {"partitions": 3})
    for p in range(3):
        await storage.open_partition(TOPIC, p, Retention())
    return storage


async def behind_a_slow_partition(
    storage: EmbeddedStorage, disk: GatedDisk
) -> tuple[asyncio.Future[int], asyncio.Future[list[int]], asyncio.Future[list[int]]]:
    """Append to partition 2, whose fsync hangs, then publish X over partitions 0 and 2,
    then Y over 0 and 1: X's part in partition 2 waits in its queue; Y's parts are
    written and fsynced, but Y's part in partition 0 comes after X's, not yet whole."""
    first = storage.partitions[(TOPIC, 2)].append([b"c"])
    while not disk.entered.is_set():
        await asyncio.sleep(0.001)
    x = storage.append_linked(TOPIC, [(0, [b"x0"]), (2, [b"x2"])])
    y = storage.append_linked(TOPIC, [(0, [b"y0"]), (1, [b"y1"])])
    await asyncio.wait([y], timeout=0.5)
    assert not first.done() and not x.done()
    return first, x, y


async def test_a_publish_is_acknowledged_only_once_the_publishes_before_it_are_whole(
    tmp_path: Path,
) -> None:
    """Y acknowledged while X, before it in partition 0, is not whole: a crash then cuts
    X at recovery, and Y's part behind it in partition 0 with it (acknowledged and
    lost). So Y waits for X; a copy of the files taken then, as a crash would leave
    them, holds every publish acknowledged."""
    storage = await three_partitions(tmp_path / "data")
    disk = GatedDisk(tmp_path / "data" / "topics" / TOPIC / "2")
    previous = use_disk(disk)
    try:
        first, x, y = await behind_a_slow_partition(storage, disk)
        crashed = tmp_path / "crashed"
        shutil.copytree(tmp_path / "data", crashed)  # what SIGKILL leaves: written bytes
        acked = y.done() and y.exception() is None
        disk.go.set()
        assert await first == 0
        assert await x == [0, 1]
        assert await y == [1, 0]
        assert [r[2] for r in storage.partitions[(TOPIC, 0)].read_now(0)] == [b"x0", b"y0"]
    finally:
        use_disk(previous)
        disk.go.set()
        await storage.close()
    again = EmbeddedStorage(crashed, FsyncPolicy.parse("always"))
    try:
        logs = [await again.open_partition(TOPIC, p, Retention()) for p in range(3)]
        kept = {r[2] for log in logs for r in log.read_now(log.start_offset)}
        assert not acked or {b"y0", b"y1"} <= kept, "Y was acknowledged, then lost"
        assert not acked, "Y was acknowledged before X, ahead of it, was whole"
        assert kept == {b"c"}, f"torn publishes kept: {kept}"  # written, never acknowledged
    finally:
        await again.close()


async def test_a_publish_behind_one_that_fails_is_refused_whole(tmp_path: Path) -> None:
    """X's part in partition 2 fails to be fsynced: X is refused, partition 0 fails and
    heals back to before X, so Y's part there goes too. Y is refused (503), never
    acknowledged, and its part in partition 1 is never read."""
    storage = await three_partitions(tmp_path / "data")
    disk = GatedDisk(tmp_path / "data" / "topics" / TOPIC / "2")
    previous = use_disk(disk)
    try:
        first, x, y = await behind_a_slow_partition(storage, disk)
        assert not y.done(), "Y was acknowledged before X, ahead of it, was whole"
        disk.error = OSError(5, "gated fsync failed")
        disk.go.set()
        for refused in (first, x):
            with pytest.raises(StorageUnavailable):
                await refused
        with pytest.raises(StorageUnavailable):
            await y
        logs = [storage.partitions[(TOPIC, p)] for p in range(3)]
        assert [log.end_offset for log in logs] == [0, 0, 0]
        use_disk(previous)
        deadline = time.monotonic() + 10
        while any(log.failure for log in logs) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert [log.failure for log in logs] == [None, None, None]
        assert [log.next_offset for log in logs] == [0, 0, 0]
        assert await storage.append_linked(TOPIC, [(0, [b"a"]), (1, [b"b"])]) == [0, 0]
        assert [r[2] for r in logs[1].read_now(0)] == [b"b"]
    finally:
        use_disk(previous)
        disk.go.set()
        await storage.close()
