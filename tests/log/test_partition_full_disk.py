"""A partition on a full disk (a small tmpfs, see ``fulldisk``): appends fail,
the partition heals once there is room, and what it kept opens clean."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from fulldisk import Disk, small_disk

from tidings.errors import StorageUnavailable
from tidings.log.config import FsyncPolicy, LogConfig
from tidings.log.partition import PartitionLog


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    with small_disk(tmp_path / "disk") as d:
        yield d


@pytest.mark.parametrize("policy", ["always", "interval:5"])
async def test_a_partition_cut_short_mid_roll_heals_and_reopens_clean(
    disk: Disk, policy: str
) -> None:
    directory = disk.path / "p"
    config = LogConfig(segment_bytes=8 * 1024)  # rolls every few appends
    log = PartitionLog.open(directory, config, FsyncPolicy.parse(policy))
    payload = b"x" * 1000
    acked: list[int] = []
    for _ in range(10):
        acked.append(await log.append([payload, payload]))
    disk.fill()
    failed = 0
    for _ in range(200):  # appends that roll, on a disk that has no room
        try:
            acked.append(await log.append([payload] * 3))
        except StorageUnavailable:
            failed += 1
            break
    assert failed == 1
    assert log.failure is not None
    with pytest.raises(StorageUnavailable):
        log.append([payload])
    assert not log.heal()  # still full
    end = log.end_offset

    disk.free()
    assert log.heal()
    assert log.failure is None
    assert not list(directory.glob("*.cut-*"))  # refused appends are not kept
    after = await log.append([b"after"])
    assert after == end  # no offset skipped
    records = log.read_now(0, 10_000, 1 << 30)
    assert [r[0] for r in records] == list(range(end + 1))
    assert records[-1][2] == b"after"
    await log.close()

    again = PartitionLog.open(directory, config, FsyncPolicy.parse(policy))
    try:
        assert (again.report.truncated, again.report.corrupt) == ([], [])
        assert again.end_offset == end + 1
        assert [r[0] for r in again.read_now(0, 10_000, 1 << 30)] == list(range(end + 1))
    finally:
        await again.close()


@pytest.mark.parametrize("policy", ["always", "interval:5"])
async def test_a_failed_write_leaves_no_unhandled_error_to_the_loop(
    disk: Disk, policy: str
) -> None:
    """The failure is logged once and refuses the appends; no callback or task of the
    log lets it escape to the event loop (which would log it again, as a traceback)."""
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    log = PartitionLog.open(disk.path / "p", LogConfig(), FsyncPolicy.parse(policy))
    await log.append([b"before"])
    disk.fill()
    with pytest.raises(StorageUnavailable):
        for _ in range(1000):
            await log.append([b"x" * 4000])
    await asyncio.sleep(0.05)
    gc.collect()  # a task's exception never retrieved is reported when it is collected
    await asyncio.sleep(0)
    assert log.failure is not None
    disk.free()
    await log.close()
    assert unhandled == []
