"""A new partition's directory that cannot be made or synced (a full disk) is
StorageUnavailable (503 with Retry-After), not a raw OSError."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.errors import StorageUnavailable
from tidings.log.config import Disk, Retention, use_disk


class Full(Disk):
    def fsync_dir(self, path: str | os.PathLike[str]) -> None:
        if Path(path).name == "t":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        super().fsync_dir(path)


async def test_a_new_partition_directory_that_fails_is_storage_unavailable(
    tmp_path: Path,
) -> None:
    storage = EmbeddedStorage(tmp_path)
    previous = use_disk(Full())
    try:
        with pytest.raises(StorageUnavailable):
            await storage.open_partition("t", 0, Retention())
    finally:
        use_disk(previous)
        await storage.close()
