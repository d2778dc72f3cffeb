"""Appends linked across partitions: all or nothing on JetStream's own primitives.

An atomic batch of JetStream covers one stream, and a partition is a stream; one
publish spread over several partitions is therefore several batches, and a writer
that dies between two of them leaves some stored and others not. Each record of a
linked append carries the header ``Td-Link: <link id>`` (a fresh id per append); the
decision lives in the KV bucket ``td_links`` under that id, written once by
compare-and-set on "never written" (the first write wins, every later one fails):

- The writer, once every part is acknowledged, writes ``committed``. If that write
  fails because the key holds ``aborted``, the append failed: it raises
  :class:`~tidings.errors.StorageUnavailable` and its stored parts are gaps. If the
  write is not answered (it may have landed), the writer writes ``aborted`` the same
  way: refused, the key holds ``committed`` and the append succeeded.
- A reader that meets a linked record whose key holds nothing holds back there (the
  record and everything after it in that partition are not answered yet). Once its
  node has seen the key undecided for ``timeout_s`` (on its own monotonic clock, from
  the first time it met it: clock skew between nodes and servers does not matter),
  the reader writes ``aborted``; whichever write came first is the decision.
- ``committed`` records are read as any other; ``aborted`` ones are stepped over,
  like the gaps of a compacted topic.

Decisions never change, so each node keeps the ones it read (up to ``CACHE`` ids).
The cost: one more KV write per linked append, one KV read per link id a node meets
the first time, and a partition whose linked record belongs to a writer that died
stays held back for ``timeout_s``. The bucket keeps every decision (see
docs/architecture.md: removing those no record needs any more is not done yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from tidings.backends.nats.meta import MetaBucket
from tidings.errors import Conflict, StorageUnavailable

LINK_HEADER = "Td-Link"
LINKS_BUCKET = "td_links"
COMMITTED = "committed"
ABORTED = "aborted"
DEFAULT_TIMEOUT_S = 60.0  # longer than a writer's retries of one part (30 s)
CACHE = 100_000


class Links:
    """The decisions of linked appends, in one KV bucket."""

    def __init__(self, bucket: MetaBucket, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s}")
        self.bucket = bucket
        self.timeout_s = timeout_s
        self._decided: dict[str, bool] = {}
        self._undecided: dict[str, float] = {}  # link -> when first seen undecided here
        self._changed = asyncio.Event()  # set (and replaced) whenever this node decides

    def _remember(self, link: str, committed: bool) -> bool:
        if len(self._decided) >= CACHE:
            self._decided.clear()
        self._decided[link] = committed
        self._undecided.pop(link, None)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return committed

    async def changed(self, timeout: float) -> None:
        """Return once this node decides a link, or after ``timeout`` seconds."""
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def commit(self, link: str) -> None:
        """Decide ``committed``; StorageUnavailable if a reader aborted it first."""
        try:
            await self.bucket.put(link, COMMITTED, 0)
        except Conflict:
            entry = await self.bucket.get(link)
            if entry is None or entry.value != COMMITTED:
                self._remember(link, False)
                raise StorageUnavailable(
                    f"linked append {link} was aborted: a part took longer than {self.timeout_s} s"
                ) from None
        except StorageUnavailable as exc:
            # No answer: the write may have landed all the same. Deciding ``aborted``
            # settles it either way (the first decision wins); if that fails too, the
            # outcome is unknown and readers decide it after the timeout.
            if not await self.abort(link):
                raise StorageUnavailable(
                    f"linked append {link} failed: its commit was not answered ({exc})"
                ) from None
        self._remember(link, True)

    async def abort(self, link: str) -> bool:
        """Decide ``aborted`` unless decided already; True if it is committed."""
        try:
            await self.bucket.put(link, ABORTED, 0)
        except Conflict:
            entry = await self.bucket.get(link)
            return self._remember(link, entry is not None and entry.value == COMMITTED)
        return self._remember(link, False)

    async def decision(self, link: str) -> bool | None:
        """True if committed, False if aborted, None if undecided and first seen so by
        this node less than the timeout ago (a reader holds back there). Measured on
        this node's monotonic clock, not against the record's JetStream time stamp:
        clocks of nodes and servers that disagree do not abort appends still live."""
        known = self._decided.get(link)
        if known is not None:
            return known
        entry = await self.bucket.get(link)
        if entry is not None and entry.value in (COMMITTED, ABORTED):
            return self._remember(link, entry.value == COMMITTED)
        now = time.monotonic()
        if len(self._undecided) >= CACHE and link not in self._undecided:
            self._undecided.clear()  # each is seen again, its wait started over
        first = self._undecided.setdefault(link, now)
        if now - first < self.timeout_s:
            return None
        return await self.abort(link)
