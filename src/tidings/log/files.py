"""Open files of the log, bounded: descriptors opened on demand, least recently used closed.

Every segment holds its ``.log`` file, and the active segment its two index files,
as a :class:`SegmentFile`: a path and how to reopen it, with a descriptor only
while it is open. One :class:`OpenFiles` per hub keeps at most ``limit`` of them
open across all partitions, closing the least recently used when it needs room,
so thousands of idle partitions cost no descriptors and a hub with more files
than ``ulimit -n`` still starts.

Every use asks for the descriptor again (:meth:`SegmentFile.get`) and is done,
on the event loop's thread, before another file is opened, so nothing closes it
meanwhile. A worker thread (an fsync) uses one only while it is pinned
(:meth:`SegmentFile.pin`): a pinned file is never closed to make room, and one
closed for good (its segment deleted) is closed when the thread lets it go.
Closing a file that was written and not yet fsynced is safe: the pages stay in
the page cache and a later ``fdatasync`` on a new descriptor of the same file
flushes them.
"""

from __future__ import annotations

import errno
import os
from collections import OrderedDict

from tidings.errors import StorageUnavailable

__all__ = ["DEFAULT_MAX_OPEN_FILES", "OpenFiles", "SegmentFile", "shared_files"]

DEFAULT_MAX_OPEN_FILES = 256
"""Files of the log a hub keeps open at once, unless told otherwise."""

_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)


class OpenFiles:
    """At most ``limit`` open segment and index files, closed least recently used first."""

    def __init__(self, limit: int = DEFAULT_MAX_OPEN_FILES) -> None:
        if limit < 4:
            raise ValueError(f"max open files must be at least 4, not {limit}")
        self.limit = limit
        self._lru: OrderedDict[SegmentFile, None] = OrderedDict()
        self.opens = 0  # files opened, reopenings included
        self.closes = 0  # files closed to make room

    @property
    def open_count(self) -> int:
        """How many of its files are open now."""
        return len(self._lru)

    def file(self, path: str | os.PathLike[str], flags: int) -> SegmentFile:
        """A file reopened with ``flags`` whenever it is used after being closed."""
        return SegmentFile(self, os.fspath(path), flags)

    def _open(self, f: SegmentFile, flags: int) -> int:
        lru = self._lru
        while len(lru) >= self.limit and self._close_one():
            pass
        while True:
            try:
                fd = os.open(f.path, flags, 0o644)
            except OSError as exc:
                if exc.errno not in _OUT_OF_DESCRIPTORS:
                    raise
                if self._close_one():
                    continue  # the process is out of descriptors: give one of ours back
                raise StorageUnavailable(
                    f"cannot open {f.path}: the process is out of file descriptors "
                    f"({os.strerror(exc.errno)}); the log keeps at most {self.limit} open "
                    "(--max-open-files), the rest are sockets and databases: raise "
                    "ulimit -n or lower --max-open-files",
                    limit="max_open_files",
                    max_open_files=self.limit,
                ) from None
            break
        self.opens += 1
        f.fd = fd
        lru[f] = None
        return fd

    def _close_one(self) -> bool:
        """Close the least recently used file that no thread holds; False if none."""
        for f in self._lru:
            if not f.pins:
                del self._lru[f]
                fd, f.fd = f.fd, -1
                os.close(fd)
                self.closes += 1
                return True
        return False

    def _forget(self, f: SegmentFile) -> None:
        del self._lru[f]


class SegmentFile:
    """One file of a segment: its descriptor while open, and how to reopen it."""

    __slots__ = ("closed", "fd", "files", "flags", "path", "pins")

    def __init__(self, files: OpenFiles, path: str, flags: int) -> None:
        self.files = files
        self.path = path
        self.flags = flags
        self.fd = -1
        self.pins = 0
        self.closed = False  # closed for good while pinned: the last unpin closes it

    def open(self, flags: int) -> int:
        """Open it now with ``flags`` (O_CREAT, O_TRUNC: what only the first open does)."""
        if self.fd >= 0:
            self.close()
        self.closed = False
        return self.files._open(self, flags)

    def get(self) -> int:
        """The descriptor, reopened if it was closed; marks the file recently used."""
        fd = self.fd
        if fd < 0:
            return self.files._open(self, self.flags)
        self.files._lru.move_to_end(self)
        return fd

    def pin(self) -> int:
        """The descriptor, kept open until :meth:`unpin`: for use from another thread."""
        fd = self.get()
        self.pins += 1
        return fd

    def unpin(self) -> None:
        self.pins -= 1
        if not self.pins and self.closed:
            self.close()

    def close(self) -> None:
        """Close it (a segment closed or deleted); if a thread holds it, once released."""
        if self.pins:
            self.closed = True
            return
        fd = self.fd
        if fd >= 0:
            self.files._forget(self)
            self.fd = -1
            os.close(fd)


_shared = OpenFiles()


def shared_files() -> OpenFiles:
    """The pool of partitions opened without one of their own (tests, tools)."""
    return _shared
