"""The crash test: SIGKILL a writing process at random, reopen, and check every acknowledgment.

A child process appends batches from several concurrent tasks (so group commit
happens) and prints one line per acknowledged append. The parent kills it with
SIGKILL at a random moment, reopens the directory in-process and checks that
every acknowledged record is there, intact and in order, and that nothing up to
the end of the recovered log is anything but a record the child wrote. The same
directory is used again and again, so recovery of a recovered log is covered too.

The payload at each offset is a function of the directory's seed and the offset,
so a record the child wrote but had not yet acknowledged can be checked as well.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tidings.log.config import FsyncPolicy, LogConfig
from tidings.log.partition import PartitionLog

KILLS = 50
BUDGET_S = 55
# A loaded machine makes fewer kills within the budget; this many still exercise
# every policy several times (the count reached is printed).
MIN_KILLS = 12
POLICIES = ["always", "interval:5", "never"]
SEGMENT_BYTES = 64 * 1024
RETENTION_BYTES = 256 * 1024


def expected_payload(seed: int, offset: int) -> bytes:
    """The payload the child writes at ``offset``: ``offset:seed:`` padded to a size from both."""
    digest = hashlib.blake2b(f"{seed}:{offset}".encode(), digest_size=16).digest()
    roll = int.from_bytes(digest[:4], "little")
    # mostly small, now and then a record larger than an index interval
    size = roll % 400 if roll % 16 else roll % 12_000
    head = f"{offset}:{seed}:".encode()
    return (head + digest * (size // 16 + 1))[: max(size, len(head))]


def batch_digest(seed: int, base: int, count: int) -> str:
    h = hashlib.blake2b(digest_size=8)
    for offset in range(base, base + count):
        h.update(expected_payload(seed, offset))
    return h.hexdigest()


CHILD = """
import asyncio
import hashlib
import os
import random
import sys
from pathlib import Path

from tidings.log.config import FsyncPolicy, LogConfig
from tidings.log.partition import PartitionLog

{helpers}

APPENDERS = 4


async def main() -> None:
    directory, policy, seed, rng_seed, retention = sys.argv[1:6]
    seed, retention = int(seed), int(retention)
    rng = random.Random(int(rng_seed))
    config = LogConfig(
        segment_bytes={segment_bytes}, index_interval=1024, retention_bytes=retention or None
    )
    log = PartitionLog.open(Path(directory), config, FsyncPolicy.parse(policy))
    out = sys.stdout
    next_offset = log.end_offset
    out.write(f"start {{log.start_offset}} {{log.end_offset}}\\n")
    out.flush()

    async def appender() -> None:
        nonlocal next_offset
        while True:
            count = rng.randint(1, 8)
            # offsets are assigned in call order, so the next one is known here
            base, next_offset = next_offset, next_offset + count
            got = await log.append([expected_payload(seed, base + i) for i in range(count)])
            if got != base:
                out.write(f"wrong base {{got}} for {{base}}\\n")
                out.flush()
                os._exit(3)
            out.write(f"ack {{base}} {{count}} {{batch_digest(seed, base, count)}}\\n")
            out.flush()
            if retention and rng.random() < 0.02:
                log.apply_retention_now()

    async def flusher() -> None:
        # what the embedded backend does under interval:<ms>
        while True:
            await asyncio.sleep(log.policy.interval_ms / 1000)
            if log.dirty:
                await log.sync_in_thread()

    tasks = [appender() for _ in range(APPENDERS)]
    if log.policy.mode == "interval":
        tasks.append(flusher())
    await asyncio.gather(*tasks)


asyncio.run(main())
"""


def child_source() -> str:
    helpers = inspect.getsource(expected_payload) + "\n\n" + inspect.getsource(batch_digest)
    return CHILD.format(helpers=helpers, segment_bytes=SEGMENT_BYTES)


@dataclass
class Directory:
    """One partition directory and what is known about it across kills."""

    path: Path
    seed: int
    retention: int
    lifetime: int  # kills before the next fresh directory
    acked_end: int = 0  # one past the highest acknowledged offset
    start: int = 0
    end: int = 0
    kills: int = 0
    truncated: list[tuple[str, int, int, str]] = field(default_factory=list)

    def config(self) -> LogConfig:
        return LogConfig(
            segment_bytes=SEGMENT_BYTES,
            index_interval=1024,
            retention_bytes=self.retention or None,
        )


@dataclass
class Run:
    lines: list[bytes] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)

    def pump(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)
            if line.startswith(b"start "):
                self.started.set()


def kill_child(
    script: Path, d: Directory, policy: str, rng: random.Random, err: Path
) -> list[bytes]:
    """Start a child on ``d``, SIGKILL it after a random delay, return its whole lines."""
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(d.path),
                policy,
                str(d.seed),
                str(rng.getrandbits(32)),
                str(d.retention),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    run = Run()
    reader = threading.Thread(target=run.pump, args=(proc,), daemon=True)
    reader.start()
    try:
        # Now and then kill it while it starts up (imports, recovery); mostly once it writes.
        if rng.random() >= 0.15:
            assert run.started.wait(20), f"child did not start: {err.read_text()}"
        time.sleep(rng.uniform(0.02, 0.3))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join(10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, f"child exited {proc.returncode}: {err.read_text()}"
    return [line for line in run.lines if line.endswith(b"\n")]


def check_acks(d: Directory, lines: list[bytes], policy: str) -> None:
    """The child's own lines: it resumed where recovery ended, acks follow in order."""
    expected_base = None
    for line in lines:
        words = line.decode().split()
        if words[0] == "start":
            # the child's recovery of the parent's recovered log changed nothing
            assert (int(words[1]), int(words[2])) == (d.start, d.end), (policy, line)
            expected_base = d.end
            continue
        assert words[0] == "ack", line
        base, count, digest = int(words[1]), int(words[2]), words[3]
        assert base == expected_base, f"acks out of order under {policy}: {line!r}"
        assert digest == batch_digest(d.seed, base, count), line
        expected_base = base + count
        d.acked_end = max(d.acked_end, base + count)


def recover_and_check(d: Directory, policy: str) -> None:
    log = PartitionLog.open(d.path, d.config(), FsyncPolicy.parse(policy))
    try:
        where = f"{d.path} after kill {d.kills} ({policy})"
        assert log.report.corrupt == [], where
        d.truncated.extend(log.report.truncated)
        start, end = log.start_offset, log.end_offset
        assert start >= d.start, where  # retention only ever moves the start forward
        if not d.retention:
            assert start == 0, where
        assert sorted(int(p.stem) for p in d.path.glob("*.log"))[0] == start, where
        # every acknowledged record is still there ...
        assert end >= d.acked_end, f"{where}: acked up to {d.acked_end}, recovered to {end}"
        # ... and everything up to the end is a whole record the child wrote, in order
        offset = start
        while offset < end:
            got = log.read_now(offset, max_records=5000, max_bytes=1 << 22)
            assert got, where
            for rec_offset, _ts, payload in got:
                assert rec_offset == offset, where
                assert payload == expected_payload(d.seed, offset), f"{where}: offset {offset}"
                offset += 1
        d.start, d.end = start, end
    finally:
        asyncio.run(log.close())


def test_acknowledged_records_survive_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(child_source())
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"crash test seed {seed}")  # shown if it fails
    started = time.monotonic()
    kills = 0
    dirs: list[Directory] = []
    d: Directory | None = None
    while kills < KILLS and time.monotonic() - started < BUDGET_S:
        if d is None or d.kills >= d.lifetime:
            # a fresh directory now and then; some keep only the newest segments
            d = Directory(
                tmp_path / f"p{len(dirs)}",
                seed=rng.randrange(2**32),
                retention=rng.choice([0, 0, RETENTION_BYTES]),
                lifetime=rng.randint(4, 12),
            )
            dirs.append(d)
        policy = POLICIES[kills % len(POLICIES)]
        lines = kill_child(script, d, policy, rng, tmp_path / "child.err")
        kills += 1
        d.kills += 1
        check_acks(d, lines, policy)
        recover_and_check(d, policy)

    print(
        f"{kills} kills in {time.monotonic() - started:.1f} s over {len(dirs)} directories; "
        f"{sum(x.acked_end for x in dirs)} records acknowledged; "
        f"{sum(len(x.truncated) for x in dirs)} torn tails cut"
    )
    assert kills >= MIN_KILLS, f"only {kills} kills in {BUDGET_S} s (seed {seed})"
    # the children did real work: most directories hold acknowledged records
    assert sum(x.acked_end for x in dirs) > 0, f"seed {seed}"
