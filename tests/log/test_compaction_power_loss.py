"""Power loss during a compaction, at every sync it makes: nothing of the latest per key
is lost, offsets stay, and the partition opens clean.

The seam is ``tidings.log.config.use_disk``: :class:`CutAt` is a
``powerloss.RecordingDisk`` that builds, at its n-th sync, what a machine that lost
power at that instant could have left (see tests/support/powerloss.py).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import orjson
import pytest
from powerloss import RecordingDisk

from tidings.log.check import check_partition
from tidings.log.compaction import TMP_SUFFIX, compact_partition
from tidings.log.config import Disk, FsyncPolicy, LogConfig, use_disk
from tidings.log.partition import PartitionLog

CONFIG = LogConfig(segment_bytes=1024, index_interval=128, compaction="key")
T0 = 1_700_000_000_000


class Clock:
    def time_ms(self) -> int:
        return T0


class CutAt(RecordingDisk):
    """Cuts the power at its ``at``-th sync (counting from 0), before that sync."""

    def __init__(self, root: Path, at: int, dest: Path, mode: str, seed: int) -> None:
        super().__init__(root)
        self.at = at
        self.dest = dest
        self.mode = mode
        self.rng = random.Random(seed)
        self.calls = 0
        self.recording_before_compaction = True

    def _tick(self) -> None:
        if self.recording_before_compaction:
            return
        if self.calls == self.at and self.recording:
            self.cut(self.dest, self.rng, self.mode)
        self.calls += 1

    def fdatasync(self, fd: int) -> None:
        self._tick()
        super().fdatasync(fd)

    def fsync(self, fd: int) -> None:
        self._tick()
        super().fsync(fd)

    def fsync_dir(self, path: str | os.PathLike[str]) -> None:
        self._tick()
        super().fsync_dir(path)


def event(key: str, n: int, tombstone: bool = False) -> bytes:
    ev: dict[str, object] = {"id": f"e{n}", "type": "t", "partitionkey": key}
    if not tombstone:
        ev["data"] = {"n": n, "pad": "x" * (n % 50)}
    return orjson.dumps(ev)


async def scenario(root: Path, disk: CutAt) -> dict[str, tuple[int, bytes]]:
    """Publish, then compact under ``disk``; the latest record of each key as appended."""
    previous: Disk = use_disk(disk)
    try:
        log = PartitionLog.open(root / "p", CONFIG, FsyncPolicy("always"), Clock())
        rng = random.Random(5)
        latest: dict[str, tuple[int, bytes]] = {}
        for n in range(160):
            key = f"k{rng.randrange(12)}"
            payload = event(key, n, tombstone=rng.random() < 0.1)
            latest[key] = (await log.append([payload]), payload)
        disk.recording_before_compaction = False
        await compact_partition(log, T0)
        await compact_partition(log, T0)
        await log.close()
    finally:
        use_disk(previous)
    return latest


async def test_count_the_syncs_of_a_compaction(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    disk = CutAt(tmp_path / "data", -1, tmp_path / "unused", "synced", 0)
    await scenario(tmp_path / "data", disk)
    assert disk.calls >= 10  # the cuts below reach into every step of several rewrites


@pytest.mark.parametrize("mode", ["synced", "prefix", "pages"])
async def test_a_power_cut_at_any_sync_of_a_compaction(tmp_path: Path, mode: str) -> None:
    (tmp_path / "count").mkdir()
    counter = CutAt(tmp_path / "count", -1, tmp_path / "unused", mode, 0)
    await scenario(tmp_path / "count", counter)
    for at in range(counter.calls):
        run = tmp_path / f"run{at}"
        (run / "data").mkdir(parents=True)
        disk = CutAt(run / "data", at, run / "cut", mode, at)
        latest = await scenario(run / "data", disk)
        assert (run / "cut").exists(), at
        directory = run / "cut" / "p"
        log = PartitionLog.open(directory, CONFIG, FsyncPolicy("always"), Clock())
        try:
            assert not log.damage, (at, log.damage)
            assert log.end_offset == 160, at
            records = {o: p for o, _, p in log.read_now(0, 10_000, 1 << 24)}
            for key, (offset, payload) in latest.items():
                assert records.get(offset) == payload, (at, mode, key, offset)
            assert not list(directory.glob("*" + TMP_SUFFIX))
        finally:
            await log.close()
        check = check_partition(directory)
        assert not check.damage and check.torn is None, (at, check)
