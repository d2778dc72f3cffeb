"""A small tmpfs that a test fills to the last byte and empties again.

Mounting needs root (CI runs the suite as root); elsewhere the tests skip.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

DISK_BYTES = 16 << 20


class Disk:
    """A mounted tmpfs of ``DISK_BYTES`` at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        """Take every free byte: whole pages, then the last few bytes one by one."""
        for size in (1 << 16, 4096, 512, 64, 1):
            with self.filler.open("ab", buffering=0) as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@contextlib.contextmanager
def small_disk(path: Path) -> Iterator[Disk]:
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield Disk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
