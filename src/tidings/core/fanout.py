"""Shared tail readers: one read of a partition's new records for every live subscriber.

A live subscription near the end of a partition does not read the log itself.
It *follows* that partition's :class:`PartitionTail`, which reads each new
record once, builds the shared part of its ``event`` frame once
(:class:`SharedRecord`) and offers the batch to every follower. Rules:

- A follower takes only records at its own position (``offset == position``);
  records below it are skipped, a record above it is a gap and never happens,
  because a follower joins only at or past the tail's ``next`` offset.
- A follower that cannot take a record (its send buffer is full) answers False
  and leaves the tail at that record; it reads on its own from there (the log
  keeps what it has not taken) and may join again once caught up.
- A subscriber behind the tail reads on its own until its position reaches the
  tail's ``next``, then joins.
- The record's type is parsed at most once, when the first follower with a type
  filter asks for it.

No sockets here: the WebSocket layer implements :class:`Follower`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Protocol

import orjson

from tidings.core.hub import Hub
from tidings.core.session import event_body
from tidings.errors import TidingsError

#: How long a tail's long poll waits before it looks again whether anyone follows.
TAIL_WAIT_S = 30.0


class SharedRecord:
    """One record as every follower gets it: ``body`` is the frame's shared tail."""

    __slots__ = ("_type", "body", "offset", "payload")

    def __init__(self, partition: int, offset: int, payload: bytes) -> None:
        self.offset = offset
        self.payload = payload
        self.body = event_body(partition, offset, payload)
        self._type: str | None = None

    @property
    def type(self) -> str:
        """The event's ``type``, parsed on first use and kept for the other followers."""
        t = self._type
        if t is None:
            t = self._type = str(orjson.loads(self.payload).get("type", ""))
        return t


class Follower(Protocol):
    """A subscriber cursor on one or more partition tails."""

    def offer(self, partition: int, records: Sequence[SharedRecord]) -> bool:
        """Take the records at or past its position; False: it fell behind and leaves."""
        ...

    def stop(self, partition: int, error: TidingsError | None) -> None:
        """The tail stopped: the hub is closing (``error`` None) or the topic is gone."""
        ...


class PartitionTail:
    """The one reader of a partition's new records for all of its followers."""

    def __init__(
        self, registry: TailRegistry, topic: str, partition: int, next_offset: int
    ) -> None:
        self.registry = registry
        self.topic = topic
        self.partition = partition
        #: The next offset the tail reads: everything below was offered already.
        self.next = next_offset
        self.followers: dict[Follower, None] = {}  # an ordered set
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        hub, p, topic = self.registry.hub, self.partition, self.topic
        error: TidingsError | None = None
        try:
            while self.followers:
                result = await hub.read(
                    topic, {p: self.next}, limit=self.registry.batch, wait_s=TAIL_WAIT_S
                )
                if hub.closing:
                    break
                if result.records:
                    shared = [SharedRecord(p, o, payload) for _, o, payload in result.records]
                    self.next = result.next[p]
                    leaving = [f for f in list(self.followers) if not f.offer(p, shared)]
                    for f in leaving:
                        self.followers.pop(f, None)
                    # The hub counted one read; each follower is one delivery.
                    hub.metrics.delivered(topic, len(shared) * (len(self.followers) - 1))
                else:
                    self.next = result.next[p]
        except TidingsError as exc:
            error = exc
        finally:
            self.registry.drop(self)
        if error is not None or hub.closing:
            for f in list(self.followers):
                f.stop(p, error)
        self.followers.clear()


class TailRegistry:
    """The tails of one hub, by (topic, partition); a tail runs while anyone follows it."""

    def __init__(self, hub: Hub, batch: int = 500, near_end: int = 100) -> None:
        self.hub = hub
        self.batch = batch
        #: How close to a partition's end a subscriber may start a tail.
        self.near_end = near_end
        self.tails: dict[tuple[str, int], PartitionTail] = {}

    def join(self, follower: Follower, topic: str, partition: int, position: int) -> bool:
        """Follow the partition's tail from ``position``; False: read on your own first.

        Joins when ``position`` is at or past the running tail's ``next`` (records
        below it would be missed), or, with no tail running, when it is within
        ``near_end`` records of the partition's end (a tail starts there).
        """
        if self.hub.closing or topic not in self.hub.topics:
            return False
        key = (topic, partition)
        tail = self.tails.get(key)
        if tail is None:
            part = self.hub.topics[topic].partitions[partition]
            if position < part.end_offset - self.near_end or position < part.start_offset:
                return False
            tail = self.tails[key] = PartitionTail(self, topic, partition, position)
            tail.followers[follower] = None
            tail.task = asyncio.get_running_loop().create_task(tail.run())
            return True
        if position < tail.next:
            return False
        tail.followers[follower] = None
        return True

    def leave(self, follower: Follower, topic: str, partition: int) -> None:
        tail = self.tails.get((topic, partition))
        if tail is not None:
            tail.followers.pop(follower, None)

    def drop(self, tail: PartitionTail) -> None:
        key = (tail.topic, tail.partition)
        if self.tails.get(key) is tail:
            del self.tails[key]

    async def close(self) -> None:
        tasks = [t.task for t in self.tails.values() if t.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["Follower", "PartitionTail", "SharedRecord", "TailRegistry"]
