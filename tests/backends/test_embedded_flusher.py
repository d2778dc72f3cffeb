"""The embedded backend's interval flusher: one failed fsync does not skip the others."""

from __future__ import annotations

import pytest

from tidings.backends.embedded.storage import _sync_all


class Partition:
    """A partition as the flusher sees it: ``sync`` of a pinned file, or an error."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.synced: list[object] = []

    def sync(self, active: object) -> None:
        if self.fails:
            raise OSError(5, "Input/output error")
        self.synced.append(active)


def test_a_failed_fsync_does_not_skip_the_partitions_after_it() -> None:
    # Each was marked clean when pinned: one skipped here waited for its next write.
    parts = [Partition(False), Partition(True), Partition(False), Partition(False)]
    with pytest.raises(OSError):
        _sync_all([(p, f"file-{i}") for i, p in enumerate(parts)])  # type: ignore[misc]
    assert [p.synced for p in parts] == [["file-0"], [], ["file-2"], ["file-3"]]
