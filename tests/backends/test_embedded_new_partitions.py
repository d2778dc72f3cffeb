"""A new topic's partitions: their directories are synced in their parents, off the loop."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.core.hub import Hub
from tidings.log.config import Disk, use_disk


class Noting(Disk):
    """The real disk, noting each directory it syncs and the thread that asked."""

    def __init__(self) -> None:
        self.dirs: list[tuple[Path, bool]] = []
        self._lock = threading.Lock()

    def fsync_dir(self, path: str | os.PathLike[str]) -> None:
        super().fsync_dir(path)
        with self._lock:
            self.dirs.append((Path(path), threading.current_thread() is threading.main_thread()))


@pytest.fixture
def disk() -> Iterator[Noting]:
    noting = Noting()
    previous = use_disk(noting)
    try:
        yield noting
    finally:
        use_disk(previous)


async def test_a_new_topic_syncs_each_partition_entry_off_the_loop(
    tmp_path: Path, disk: Noting
) -> None:
    hub = Hub(EmbeddedStorage(tmp_path))
    await hub.start()
    try:
        disk.dirs.clear()
        await hub.create_topic("wide", partitions=40)
        topics, topic = tmp_path / "topics", tmp_path / "topics" / "wide"
        # Every partition's entry in the topic's directory, and the topic's entry in
        # topics/, were synced, in a worker thread, not on the loop.
        off_loop = [p for p, on_loop in disk.dirs if not on_loop]
        assert off_loop.count(topic) == 40
        assert off_loop.count(topics) == 1
        assert [p for p, on_loop in disk.dirs if on_loop and p in (topic, topics)] == []
        # On the loop: each new partition's own directory, for its first segment file.
        on_loop = sorted(str(p) for p, on in disk.dirs if on)
        assert on_loop == sorted(str(topic / str(i)) for i in range(40))
        # The topic has every partition.
        t = hub.topic("wide")
        assert len(t.partitions) == 40
    finally:
        await hub.close()


async def test_a_topic_made_again_after_a_drop_syncs_its_new_directory(
    tmp_path: Path, disk: Noting
) -> None:
    hub = Hub(EmbeddedStorage(tmp_path))
    await hub.start()
    try:
        await hub.create_topic("again", partitions=2)
        await hub.delete_topic("again")
        disk.dirs.clear()
        await hub.create_topic("again", partitions=2)
        # The directory is new: its entry in topics/ is synced again.
        assert [p for p, _ in disk.dirs].count(tmp_path / "topics") == 1
    finally:
        await hub.close()


async def test_a_partition_added_to_a_known_topic_syncs_only_its_own_entry(
    tmp_path: Path, disk: Noting
) -> None:
    hub = Hub(EmbeddedStorage(tmp_path))
    await hub.start()
    try:
        await hub.create_topic("grow", partitions=1)
        disk.dirs.clear()
        await hub.create_topic("grow", partitions=3)
        synced = [p for p, _ in disk.dirs]
        assert synced.count(tmp_path / "topics" / "grow") == 2
        assert synced.count(tmp_path / "topics") == 0
    finally:
        await hub.close()
