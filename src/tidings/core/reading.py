"""Reads on the hub: records from positions, long polls, and the read horizon.

:class:`~tidings.core.hub.Hub` takes :meth:`ReadOps.read` from here. With
``appended=True`` a read also answers each record's append time and the read's
*horizon*: a time H such that every record of the partitions read that the
reader has not received yet has an append time of at least H (see the streams
design, section 1, and :meth:`~tidings.core.storage.PartitionStore.horizon`).
A stream processor takes the records below H as final in append-time order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, overload

import orjson

from tidings.core.consuming import MAX_WAIT_S
from tidings.core.metrics import Metrics
from tidings.core.patterns import TypeFilter
from tidings.core.skipping import Skipped, read_past_damage
from tidings.errors import BadRequest, TopicNotFound

if TYPE_CHECKING:
    from tidings.core.hub import Topic
    from tidings.core.storage import PartitionStore
    from tidings.log.config import Clock


@dataclass(frozen=True, slots=True)
class ReadResult:
    records: list[tuple[int, int, bytes]]  # (partition, offset, payload)
    next: dict[int, int]
    skipped: list[Skipped] = field(default_factory=list)  # ranges lost to damage, stepped over


@dataclass(frozen=True, slots=True)
class TimedRead:
    """A read with append times: what ``read(..., appended=True)`` answers."""

    records: list[tuple[int, int, int, bytes]]  # (partition, offset, appended_ms, payload)
    next: dict[int, int]
    horizon: int  # every record not received yet was appended at or after this (ms)
    skipped: list[Skipped] = field(default_factory=list)


class ReadOps:
    """The read half of :class:`~tidings.core.hub.Hub`, which provides these."""

    clock: Clock
    metrics: Metrics
    closing: bool
    _closing: asyncio.Event
    _read_turn: int
    topics: dict[str, Topic]

    def topic(self, name: str) -> Topic:
        raise NotImplementedError

    @overload
    async def read(
        self,
        topic_name: str,
        positions: dict[int, int],
        limit: int = ...,
        wait_s: float = ...,
        types: TypeFilter | None = ...,
        appended: Literal[False] = ...,
    ) -> ReadResult: ...

    @overload
    async def read(
        self,
        topic_name: str,
        positions: dict[int, int],
        limit: int = ...,
        wait_s: float = ...,
        types: TypeFilter | None = ...,
        *,
        appended: Literal[True],
    ) -> TimedRead: ...

    async def read(
        self,
        topic_name: str,
        positions: dict[int, int],
        limit: int = 100,
        wait_s: float = 0.0,
        types: TypeFilter | None = None,
        appended: bool = False,
    ) -> ReadResult | TimedRead:
        """Records from ``positions`` in offset order per partition; ``wait_s`` long-polls.

        With ``appended``, each record comes with its append time, and the answer
        with the read's horizon: the minimum over the partitions read of
        ``part.horizon(now)`` (``now`` taken before the read) where the read reached
        the partition's end, else the append time of the next record not read.
        """
        topic = self.topic(topic_name)
        if not (1 <= limit <= 10_000):
            raise BadRequest("limit must be from 1 to 10000", field="limit")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(wait_s, 0.0), MAX_WAIT_S)
        pos = dict(positions)
        skipped: list[Skipped] = []
        while True:
            now = self.clock.time_ms()  # before reading: see the module docstring
            # (partition, offset, payload), or with appended_ms before the payload
            out: list[Any] = []
            # Start at another partition each time, so a busy one cannot starve the rest.
            order = sorted(pos)
            turn = self._read_turn % len(order) if order else 0
            self._read_turn += 1
            for p in order[turn:] + order[:turn]:
                part = topic.partitions[p]
                if pos[p] < part.start_offset:
                    pos[p] = part.start_offset  # retention moved on
                while len(out) < limit and pos[p] < part.end_offset:
                    got, nxt, lost = await read_past_damage(part, p, pos[p], limit - len(out))
                    if nxt == pos[p]:
                        break
                    pos[p] = nxt
                    skipped.extend(lost)
                    if types:
                        got = [r for r in got if types.matches(_type(r[2]))]
                    if appended:
                        out += [(p, o, t, b) for o, t, b in got]
                    else:
                        out += [(p, o, b) for o, _, b in got]
            remaining = deadline - loop.time()
            if out or skipped or remaining <= 0 or self.closing:
                self.metrics.delivered(topic_name, len(out))
                self.metrics.skipped(topic_name, sum(s.end - s.first for s in skipped))
                if appended:
                    parts = topic.partitions
                    horizon = min(
                        [await _horizon(parts[p], o, now) for p, o in pos.items()], default=now
                    )
                    return TimedRead(out, pos, horizon, skipped)
                return ReadResult(out, pos, skipped)
            waits = [
                loop.create_task(topic.partitions[p].wait(o, remaining)) for p, o in pos.items()
            ]
            waits.append(loop.create_task(self._closing.wait()))
            _, rest = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in rest:
                w.cancel()
            if topic_name not in self.topics:
                raise TopicNotFound(f"topic {topic_name!r} was deleted", topic=topic_name)


async def _horizon(part: PartitionStore, offset: int, now: int) -> int:
    """One partition's horizon for a reader whose next offset is ``offset``."""
    if offset < part.end_offset:
        # The read stopped early: the next record not read is the oldest left
        # (append times never go back), and it is readable already.
        got = await part.read(max(offset, part.start_offset), 1, 1)
        if got:
            return got[0][1]
    return part.horizon(now)


def _type(payload: bytes) -> str:
    return str(orjson.loads(payload).get("type", ""))
