"""A linked publish whose partition fails (a write or fsync that raises, injected at
``os.fdatasync``) is refused whole: no part is acknowledged or read, nothing waiting
behind it hangs, and every partition heals back to what it acknowledged."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fulldisk import Disk, small_disk

from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.errors import StorageUnavailable
from tidings.log import format as fmt
from tidings.log.config import FsyncPolicy, Retention
from tidings.log.linked import append_linked
from tidings.log.partition import PartitionLog


def fdatasync_failing_under(
    directory: Path, blocked: threading.Event | None = None
) -> Callable[[int], None]:
    """An ``os.fdatasync`` that fails for files under ``directory``; with ``blocked``,
    every other fsync waits for it to be set first."""
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(f"{directory}/"):
            raise OSError(errno.EIO, "injected fsync failure")
        if blocked is not None:
            blocked.wait(10)
        real(fd)

    return fdatasync


async def test_a_part_fsynced_while_its_publish_failed_is_not_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``always``: a's fsync fails while b's fsync of its part still runs; b is
    failed by the publish, and when its fsync returns the part stays refused."""
    always = FsyncPolicy.parse("always")
    a = PartitionLog.open(tmp_path / "a", policy=always)
    b = PartitionLog.open(tmp_path / "b", policy=always)
    try:
        assert await a.append([b"a0"]) == 0
        assert await b.append([b"b0"]) == 0
        go_on = threading.Event()
        monkeypatch.setattr(os, "fdatasync", fdatasync_failing_under(tmp_path / "a", go_on))
        publish = append_linked([(0, a, [b"pa"]), (1, b, [b"pb"])], 1_000)
        with pytest.raises(StorageUnavailable):
            await publish
        assert b.failure is not None
        go_on.set()  # b's fsync returns now, after the publish failed
        await b.flush()
        assert b.end_offset == 1
        assert [r[2] for r in b.read_now(0)] == [b"b0"]
        monkeypatch.undo()
        assert a.heal() and b.heal()
        assert await b.append([b"b1"]) == 1  # the refused part was cut, its offset reused
        assert [r[2] for r in b.read_now(0)] == [b"b0", b"b1"]
        assert await a.append([b"a1"]) == 1
    finally:
        go_on.set()
        await a.close()
        await b.close()


async def test_a_publish_whose_partition_fails_its_interval_fsync_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``interval``: both parts are written, then the flusher's fsync of a fails
    (in a thread) before the publish releases them: no part is shown, the publish and
    the append behind a's part fail rather than hang, and both partitions heal."""
    interval = FsyncPolicy.parse("interval:60000")
    a = PartitionLog.open(tmp_path / "a", policy=interval)
    b = PartitionLog.open(tmp_path / "b", policy=interval)
    try:
        assert await a.append([b"a0"]) == 0
        assert await b.append([b"b0"]) == 0
        monkeypatch.setattr(os, "fdatasync", fdatasync_failing_under(tmp_path / "a"))
        failed: list[BaseException] = []

        def flusher_fails() -> None:  # as the interval flusher does: pin on the loop,
            pinned = a.pin_active()  # fsync in a thread
            assert pinned is not None

            def sync() -> None:
                try:
                    a.sync(pinned)
                except OSError as exc:
                    failed.append(exc)

            thread = threading.Thread(target=sync)
            thread.start()
            thread.join()
            pinned.unpin()

        publish = append_linked([(0, a, [b"pa"]), (1, b, [b"pb"])], 1_000)
        after = a.append([b"after"])  # waits behind a's held part
        # Runs once both parts are written, before the publish releases them.
        asyncio.get_running_loop().call_soon(flusher_fails)
        with pytest.raises(StorageUnavailable):
            await publish
        assert failed
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(after, 2)
        assert (a.end_offset, b.end_offset) == (1, 1)
        assert [r[2] for r in b.read_now(0)] == [b"b0"]
        monkeypatch.undo()
        assert a.heal() and b.heal()
        assert await a.append([b"a1"]) == 1
        assert await b.append([b"b1"]) == 1
        assert [r[2] for r in b.read_now(0)] == [b"b0", b"b1"]
    finally:
        await a.close()
        await b.close()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    with small_disk(tmp_path / "disk") as d:
        yield d


async def test_a_torn_linked_batch_on_a_full_disk_is_cut_once_there_is_room(disk: Disk) -> None:
    """Start-up finds a linked batch missing its other part, and no room for the side
    copy of the cut: the partition opens failed, reads stop before the torn batch, and
    healing makes the cut, its bytes kept, once the disk has room."""
    setup = EmbeddedStorage(disk.path)
    await setup.save_topic("t", {"partitions": 2})
    await setup.close()
    topic = disk.path / "topics" / "t"
    (topic / "0").mkdir(parents=True)
    (topic / "1").mkdir(parents=True)
    with open(topic / "0" / fmt.segment_name(0, ".log"), "ab") as f:
        f.write(fmt.encode_batch(0, [b"kept"], 1_000))
        torn = fmt.encode_link(fmt.Link(8, ((0, 1, 1), (1, 0, 1))))  # partition 1 never got it
        f.write(fmt.encode_batch(1, [b"torn"], 1_000, torn))
        f.write(fmt.encode_batch(2, [b"after" * 2000], 1_000))  # waited behind it
    disk.fill()
    storage = EmbeddedStorage(disk.path)
    try:
        p0 = await storage.open_partition("t", 0, Retention())
        assert p0.failure is not None
        assert p0.end_offset == 1
        assert [r[2] for r in p0.read_now(0)] == [b"kept"]
        with pytest.raises(StorageUnavailable):
            p0.append([b"no room"])
        assert not p0.heal()  # still full

        disk.free()
        assert p0.heal()
        [side] = (topic / "0").glob("*.cut-*")
        assert side.read_bytes().endswith(b"after" * 2000)
        assert await p0.append([b"next"]) == 1
        assert [r[2] for r in p0.read_now(0)] == [b"kept", b"next"]
    finally:
        await storage.close()
    again = EmbeddedStorage(disk.path)
    try:
        p0 = await again.open_partition("t", 0, Retention())
        assert p0.failure is None
        assert [r[2] for r in p0.read_now(0)] == [b"kept", b"next"]
        assert list((topic / "0").glob("*.linked")) == []
    finally:
        await again.close()
