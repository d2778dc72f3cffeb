"""One partition of the hub over a JetStream stream (the ``PartitionStore`` seam).

Offsets are the stream's sequences less one, assigned by JetStream when it stores a
record, not by this node when ``append`` is called: several nodes may append to the
same stream, and only the stream orders them. What "assigned at the call" keeps is
the order: this node sends a partition's appends one batch at a time, in call order
(appends queued meanwhile go together as one atomic batch of at most 1000 records),
so its own appends land in call order, and the awaitable answers the offset
JetStream gave. Records of other nodes may fall between two appends of this one.

How current the synchronous properties are:

- ``end_offset``: the highest of this node's acknowledged appends, the records its
  tail subscription (an ordered consumer started when the partition opens) has
  delivered from any node, and the last read; behind the stream by the delivery delay
  of the subscription.
- ``start_offset`` and ``size_bytes``: the stream's state when the partition opened
  and at each ``apply_retention`` (JetStream removes old records by itself; the hub
  calls ``apply_retention`` on its retention interval); the start moves on too when
  a read finds it gone, and the size grows by the payloads of this node's appends
  (the stream counts headers and subjects as well: a little more).
- ``failure``: the error of this node's last append if it failed; None again after
  one succeeds. ``damage``: always empty (JetStream's replicas repair their files).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tidings.backends.nats import names
from tidings.backends.nats.connection import MAX_ATOMIC_BATCH
from tidings.backends.nats.linked import LINK_HEADER, Links
from tidings.core.storage import Deduplicated
from tidings.errors import BadRequest, OffsetOutOfRange, StorageUnavailable, TidingsError
from tidings.log.config import LogRecord, Retention
from tidings.log.damage import Damage

if TYPE_CHECKING:
    from tidings.backends.nats.log import NatsLog


# Held-back linked records remembered per partition for ``horizon``: a read stops at
# the first one it meets, so there are few; the latest are let go past this.
_HELD_KEPT = 1000


@dataclass
class _Append:
    payloads: Sequence[bytes]
    headers: dict[str, str] | None
    called_ms: int
    future: asyncio.Future[int]
    msg_ids: list[str] | None = None  # from the records' event ids, if given
    expect_end: int | None = None  # sent alone, for JetStream to check (see append)


def msg_id(topic: str, event_id: str) -> str:
    """The ``Nats-Msg-Id`` of a record of ``topic`` with ``event_id``: the same on every
    node, so JetStream's duplicate window answers a retry through any of them (a hash:
    an event id may hold what a message id may not)."""
    return hashlib.blake2b(f"{topic}\0{event_id}".encode(), digest_size=16).hexdigest()


def _landed(offsets: Sequence[int], repeated: Sequence[bool]) -> int:
    """What an append's future answers: its first offset, a ``Deduplicated`` when
    some records were stored before or the offsets are not consecutive."""
    first = offsets[0]
    if any(repeated) or offsets[-1] - first != len(offsets) - 1:
        return Deduplicated(offsets, repeated)
    return first


class NatsPartition:
    """A partition of a topic: appends queued in call order, reads that hold back at
    an undecided linked record (see ``linked``) and step over aborted ones."""

    def __init__(
        self, log: NatsLog, links: Links, topic: str, partition: int, retention: Retention
    ) -> None:
        self.log = log
        self.links = links
        self.topic = topic
        self.partition = partition
        self.retention = retention
        self.stream = names.stream_name(topic, partition)
        self._start = 0
        self._end = 0
        self._size = 0
        self._failure: str | None = None
        self._queue: collections.deque[_Append] = collections.deque()
        self._inflight_ms: int | None = None  # call time of the oldest append being sent
        self._writer: asyncio.Task[None] | None = None
        # Undecided linked records reads held back at: offset -> JetStream time stamp.
        self._held: dict[int, int] = {}
        self.closed = False

    async def refresh(self) -> int:
        """Read the stream's state; how far its start moved on."""
        info = await self.log.conn.api(f"STREAM.INFO.{self.stream}")
        state = info["state"]
        end = int(state["last_seq"])
        start = end if int(state["messages"]) == 0 else int(state["first_seq"]) - 1
        moved = max(start - self._start, 0)
        self._start = max(self._start, start)
        self._end = max(self._end, end)
        self._size = int(state["bytes"])
        self._forget_held()
        return moved

    def _forget_held(self) -> None:
        """Held-back records that retention removed are never to be read."""
        for off in [o for o in self._held if o < self._start]:
            del self._held[off]

    # -- the synchronous view --------------------------------------------------------

    @property
    def start_offset(self) -> int:
        return self._start

    @property
    def end_offset(self) -> int:
        return max(self._end, self.log.tail_end(self.topic, self.partition))

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def damage(self) -> Sequence[Damage]:
        return []

    @property
    def failure(self) -> str | None:
        return self._failure

    def horizon(self, now_ms: int) -> int:
        """``now_ms``, or if earlier: the call time of this node's oldest append not
        acknowledged yet, or the time stamp of the oldest linked record a read of this
        node held back at (stored, its link not decided yet: readable once committed).
        Append times are JetStream's (the stream leader's clock), so this holds as far
        as the clocks of the nodes and servers agree, and only for what this node saw:
        another node's append in flight is not seen."""
        pending = [self._queue[0].called_ms] if self._queue else []
        if self._inflight_ms is not None:
            pending.append(self._inflight_ms)
        if self._held:
            pending.append(min(self._held.values()))
        return min([now_ms, *pending])

    # -- appends -----------------------------------------------------------------

    def append(
        self,
        payloads: Sequence[bytes],
        timestamp_ms: int | None = None,
        ids: Sequence[str] | None = None,
        expect_end: int | None = None,
    ) -> asyncio.Future[int]:
        """Queue the records; the future answers the first one's offset once JetStream
        acknowledged them all. ``timestamp_ms`` is not kept: JetStream stamps each
        record with the time it stored it. With ``ids`` (event ids), each record's
        ``Nats-Msg-Id`` is :func:`msg_id`: a record whose id JetStream holds in its
        duplicate window (stored by any node) is not stored again, and the future
        answers a ``Deduplicated``. ``expect_end``: sent as a batch of its own that
        JetStream stores only at that offset (the stream's end, whichever node appended
        before), else the future raises ``WrongEnd``."""
        return self.enqueue(payloads, None, ids, expect_end)

    def check(self, payloads: Sequence[bytes]) -> None:
        """Raise what ``enqueue`` would refuse ``payloads`` for."""
        if self.closed:
            raise StorageUnavailable(f"partition {self.partition} of {self.topic!r} is closed")
        if not 1 <= len(payloads) <= MAX_ATOMIC_BATCH:
            raise BadRequest(
                f"an append on NATS holds 1 to {MAX_ATOMIC_BATCH} records, not {len(payloads)}",
                field="events",
            )
        self.log.conn.check_size(payloads)

    def enqueue(
        self,
        payloads: Sequence[bytes],
        headers: dict[str, str] | None,
        ids: Sequence[str] | None = None,
        expect_end: int | None = None,
    ) -> asyncio.Future[int]:
        """Queue one append (``headers`` on each record; ``ids`` and ``expect_end`` as
        ``append`` takes them); its first offset, once stored."""
        self.check(payloads)
        if ids is not None and len(ids) != len(payloads):
            raise BadRequest(f"{len(payloads)} records but {len(ids)} ids", field="ids")
        msg_ids = None if ids is None else [msg_id(self.topic, i) for i in ids]
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append(
            _Append(payloads, headers, int(time.time() * 1000), fut, msg_ids, expect_end)
        )
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write())
        return fut

    async def _write(self) -> None:
        while self._queue:
            first = self._queue.popleft()
            batch = [first]
            count = len(first.payloads)
            if first.headers is None and first.expect_end is None:
                while (  # plain appends queued together: one atomic batch
                    self._queue
                    and self._queue[0].headers is None
                    and self._queue[0].expect_end is None
                    and count + len(self._queue[0].payloads) <= MAX_ATOMIC_BATCH
                ):
                    more = self._queue.popleft()
                    batch.append(more)
                    count += len(more.payloads)
            await self._send(batch)

    async def _send(self, batch: list[_Append]) -> None:
        """Append ``batch`` as one atomic batch, and settle each append's future. A
        batch of several appends that JetStream refuses for an id it holds (a retry of
        one of them) is sent again one append at a time: each whole or not at all."""
        first = batch[0]
        self._inflight_ms = first.called_ms
        payloads = [p for a in batch for p in a.payloads]
        base = uuid.uuid4().hex  # one random id per batch, a suffix per record
        ids: list[str] = []
        for a in batch:
            n = len(ids)
            ids += a.msg_ids or [f"{base}-{n + j}" for j in range(len(a.payloads))]
        split = len(batch) == 1
        began = time.monotonic()
        try:
            try:
                landed = await self._append_marked(first, payloads, ids, None, split)
            except StorageUnavailable:
                # Not answered in time, yet perhaps stored: sent again under the same
                # ids within the duplicate window, JetStream answers the offsets it
                # stored them at (or stores them now); those are this call's own, not
                # repeats. Only a second failure fails the append.
                landed = await self._append_marked(first, payloads, ids, began, split)
                if landed is not None:
                    landed = (landed[0], [False] * len(landed[0]))
        except Exception as exc:
            self._inflight_ms = None
            if not isinstance(exc, TidingsError):
                exc = StorageUnavailable(f"append to {self.stream} failed: {exc}")
            if isinstance(exc, StorageUnavailable):
                self._failure = str(exc)
            for a in batch:
                if not a.future.done():
                    a.future.set_exception(exc)
            return
        if landed is None:  # an id held: one append at a time
            self._inflight_ms = None
            for a in batch:
                await self._send([a])
            return
        offsets, repeated = landed
        self._inflight_ms = None
        self._failure = None
        self._end = max(self._end, max(offsets) + 1)
        self._size += sum(len(p) for p, r in zip(payloads, repeated, strict=True) if not r)
        i = 0
        for a in batch:
            n = len(a.payloads)
            if not a.future.done():
                a.future.set_result(_landed(offsets[i : i + n], repeated[i : i + n]))
            i += n

    async def _append_marked(
        self, first: _Append, payloads: list[bytes], ids: list[str],
        repeats: float | None, split: bool,
    ) -> tuple[list[int], list[bool]] | None:  # fmt: skip
        """``log.append_marked`` of a batch; ``expect_end`` is passed only by an append
        that has one."""
        args = (self.topic, self.partition, payloads, ids, first.headers, repeats, split)
        if first.expect_end is None:
            return await self.log.append_marked(*args)
        return await self.log.append_marked(*args, expect_end=first.expect_end)

    async def drain(self) -> None:
        """Wait for the appends queued so far (their errors go to their callers)."""
        while self._writer is not None and not self._writer.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writer)

    # -- reads -------------------------------------------------------------------

    async def _read(
        self, offset: int, max_records: int, max_bytes: int
    ) -> tuple[list[LogRecord], int | None]:
        """Records from ``offset``, and the offset of an undecided linked record the
        read stopped at (None if it did not)."""
        while True:
            try:
                raw = await self.log.read_with_headers(
                    self.topic, self.partition, offset, max_records, max_bytes
                )
            except OffsetOutOfRange as exc:
                start = exc.fields.get("start")
                if not isinstance(start, int):
                    raise
                self._start = max(self._start, start)
                self._forget_held()
                if not 0 <= offset < start:
                    raise
                # JetStream removed records (max_age, max_bytes) since this node last
                # looked: read on from the start, as a read at start_offset would (the
                # caller finds the range it skipped empty, like retention's).
                offset = start
                continue
            out: list[LogRecord] = []
            for off, ts, data, hdrs in raw:
                link = hdrs.get(LINK_HEADER)
                if link is not None:
                    decided = await self.links.decision(link)
                    if decided is None:
                        if len(self._held) >= _HELD_KEPT:
                            self._held.pop(max(self._held))  # the oldest ones matter
                        self._held[off] = ts
                        return out, off
                    self._held.pop(off, None)
                    if not decided:
                        continue  # an aborted part: a gap
                out.append((off, ts, data))
            if raw:
                self._end = max(self._end, raw[-1][0] + 1)
            if out or not raw:
                return out, None
            offset = raw[-1][0] + 1  # only gaps: the records after them

    async def read(
        self, offset: int, max_records: int = 1000, max_bytes: int = 1 << 20
    ) -> list[LogRecord]:
        if self.closed:
            raise StorageUnavailable(f"partition {self.partition} of {self.topic!r} is closed")
        return (await self._read(offset, max_records, max_bytes))[0]

    async def offset_for_time(self, ts_ms: int) -> int:
        return await self.log.offset_for_time(self.topic, self.partition, ts_ms)

    async def wait(self, offset: int, timeout: float | None = None) -> bool:
        """True once a record at ``offset`` (or, past gaps, after it) can be read:
        stored, and not held back by an undecided linked record."""
        until = None if timeout is None else time.monotonic() + timeout
        pause = 0.01
        while not self.closed:
            left = None if until is None else max(until - time.monotonic(), 0)
            if not await self.log.wait(self.topic, self.partition, offset, left):
                return False
            try:
                records, held = await self._read(offset, 1, 1 << 20)
            except OffsetOutOfRange:
                return True  # the reader learns why from its read
            if records:
                return True
            if held is None:  # gaps up to the end: wait for a record after them
                offset = max(offset, self.end_offset)
                continue
            left = None if until is None else until - time.monotonic()
            if left is not None and left <= 0:
                return False
            await self.links.changed(pause if left is None else min(pause, left))
            pause = min(pause * 2, 0.5)
        return False

    async def apply_retention(self, now_ms: int | None = None) -> int:
        """JetStream applies the stream's ``max_age``/``max_bytes`` itself: this reads
        how far the start moved on since the last look (the records removed)."""
        return await self.refresh()

    async def close(self) -> None:
        await self.drain()
        self.closed = True
