"""The log's bounded open files: many partitions through a small pool, pins, reopening."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tidings.log.config import FsyncPolicy, LogConfig
from tidings.log.files import OpenFiles
from tidings.log.partition import PartitionLog


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("policy", ["always", "interval:5", "never"])
async def test_many_partitions_through_a_few_descriptors(tmp_path: Path, policy: str) -> None:
    files = OpenFiles(8)
    before = open_descriptors()
    config = LogConfig(segment_bytes=4096, index_interval=512)
    logs = [
        PartitionLog.open(tmp_path / str(i), config, FsyncPolicy.parse(policy), files=files)
        for i in range(40)
    ]
    for round_ in range(6):
        for i, log in enumerate(logs):
            await log.append([f"{i}:{round_}:".encode() + b"x" * 900])
    assert files.open_count <= 8
    assert open_descriptors() - before <= 8
    assert files.closes > 0  # it had to make room, again and again
    for i, log in enumerate(logs):
        assert log.segment_count > 1  # rolled: sealed segments were reopened to read
        got = [payload.split(b":")[:2] for _, _, payload in log.read_now(0, 100)]
        assert got == [[str(i).encode(), str(r).encode()] for r in range(6)]
        await log.flush()
    for log in logs:
        await log.close()
    assert files.open_count == 0
    # Reopened whole: the indexes written through reopened descriptors check out.
    again = [
        PartitionLog.open(tmp_path / str(i), config, FsyncPolicy.parse(policy), files=files)
        for i in range(40)
    ]
    for log in again:
        assert log.end_offset == 6 and not log.report.truncated and not log.report.corrupt
        assert len(log.read_now(0, 100)) == 6
        await log.close()


def test_a_pinned_file_stays_open_while_others_come_and_go(tmp_path: Path) -> None:
    files = OpenFiles(4)
    pinned = files.file(tmp_path / "pinned", os.O_RDWR | os.O_APPEND)
    fd = pinned.open(os.O_RDWR | os.O_CREAT | os.O_APPEND)
    assert pinned.pin() == fd
    others = [files.file(tmp_path / f"f{i}", os.O_RDWR) for i in range(10)]
    for f in others:
        f.open(os.O_RDWR | os.O_CREAT)
    assert pinned.fd == fd and os.fstat(fd)  # never closed for room
    assert files.open_count == 4
    pinned.unpin()
    for f in others:
        f.get()
    assert pinned.fd == -1  # once unpinned, the least recently used goes first
    os.write(pinned.get(), b"again")  # and comes back on use, without O_CREAT or O_TRUNC
    assert (tmp_path / "pinned").read_bytes() == b"again"
    for f in [pinned, *others]:
        f.close()
    assert files.open_count == 0


def test_a_file_that_went_missing_is_not_created_again(tmp_path: Path) -> None:
    files = OpenFiles(4)
    f = files.file(tmp_path / "gone", os.O_RDWR | os.O_APPEND)
    f.open(os.O_RDWR | os.O_CREAT | os.O_APPEND)
    f.close()
    (tmp_path / "gone").unlink()
    with pytest.raises(FileNotFoundError):
        f.get()
    assert not (tmp_path / "gone").exists()


def test_closing_a_pinned_file_waits_for_its_release(tmp_path: Path) -> None:
    """A segment deleted while a thread fsyncs its file: the descriptor stays valid."""
    files = OpenFiles(4)
    f = files.file(tmp_path / "busy", os.O_RDWR | os.O_APPEND)
    fd = f.open(os.O_RDWR | os.O_CREAT | os.O_APPEND)
    f.pin()
    f.close()
    os.fdatasync(fd)  # still this file's descriptor
    assert f.fd == fd
    f.unpin()
    assert f.fd == -1 and files.open_count == 0
    with pytest.raises(OSError):
        os.fstat(fd)


_OUT_OF_DESCRIPTORS = """
import os, resource, sys
from tidings.errors import StorageUnavailable
from tidings.log.files import OpenFiles

resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
root = sys.argv[1]
files = OpenFiles(1000)  # more than the process may open: EMFILE comes first
opened = [files.file(f"{root}/f{i}", os.O_RDWR) for i in range(200)]
for f in opened:
    f.open(os.O_RDWR | os.O_CREAT)  # each EMFILE closes one of ours and tries again
assert files.open_count < 64 and files.closes > 0, (files.open_count, files.closes)
for f in opened:
    if f.fd >= 0:
        f.pin()  # every open file held by a thread: none can be given back
try:
    files.file(f"{root}/last", os.O_RDWR).open(os.O_RDWR | os.O_CREAT)
except StorageUnavailable as exc:
    assert exc.fields["limit"] == "max_open_files", exc.fields
    print("503:", exc.detail)
"""


def test_running_out_of_descriptors_gives_back_ours_then_answers_503(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _OUT_OF_DESCRIPTORS, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("503:") and "--max-open-files" in done.stdout, done.stdout
