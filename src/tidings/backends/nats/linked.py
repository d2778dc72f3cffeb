"""Appends linked across partitions: all or nothing on JetStream's own primitives.

An atomic batch of JetStream covers one stream, and a partition is a stream; one
publish spread over several partitions is therefore several batches, and a writer
that dies between two of them leaves some stored and others not. Each record of a
linked append carries the header ``Td-Link: <link id>`` (a fresh id per append); the
decision lives in the KV bucket ``td_links`` under that id, written once by
compare-and-set on "never written" (the first write wins, every later one fails):

- The writer, once every part is acknowledged, writes ``committed``. If that write
  fails because the key holds ``aborted``, the append failed: it raises
  :class:`~tidings.errors.StorageUnavailable` and its stored parts are gaps.
- A reader that meets a linked record whose key holds nothing holds back there (the
  record and everything after it in that partition are not answered yet). Once the
  record is older than ``timeout_s`` (its JetStream time stamp against this node's
  clock), the reader writes ``aborted``; whichever write came first is the decision.
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
        self._changed = asyncio.Event()  # set (and replaced) whenever this node decides

    def _remember(self, link: str, committed: bool) -> bool:
        if len(self._decided) >= CACHE:
            self._decided.clear()
        self._decided[link] = committed
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
        self._remember(link, True)

    async def abort(self, link: str) -> bool:
        """Decide ``aborted`` unless decided already; True if it is committed."""
        try:
            await self.bucket.put(link, ABORTED, 0)
        except Conflict:
            entry = await self.bucket.get(link)
            return self._remember(link, entry is not None and entry.value == COMMITTED)
        return self._remember(link, False)

    async def decision(self, link: str, stamp_ms: int) -> bool | None:
        """True if committed, False if aborted, None if undecided and younger than the
        timeout (a reader holds back there). ``stamp_ms``: the record's append time."""
        known = self._decided.get(link)
        if known is not None:
            return known
        entry = await self.bucket.get(link)
        if entry is not None and entry.value in (COMMITTED, ABORTED):
            return self._remember(link, entry.value == COMMITTED)
        if time.time() * 1000 - stamp_ms < self.timeout_s * 1000:
            return None
        return await self.abort(link)
