"""The dedupe window: a repeated event ``id`` within the window appends nothing.

The window holds an entry for every event of the last two minutes, possibly
millions, so it is built to stay out of the garbage collector's way: keys are
``str`` and values packed ``int``, and a dict of only those is never tracked
by the cyclic collector (walking millions of tuples on every full collection
cost the hub half its publish throughput). Expiry rotates two generations:
entries move to ``old`` when ``new`` is ``window_ms`` old, and are dropped
one rotation later, so an entry is remembered for at least the window and at
most twice it; :meth:`get` checks the time, so nothing past the window counts.

Ids the hub made itself for a batch (UUIDv7s, made in sorted order) are kept
as one run per batch instead: the sorted ids and the position of the first, found
again by bisection. Inserting a thousand keys into a dict of millions costs a
cache miss or more each; a run costs one entry.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import islice
from operator import lt
from typing import NamedTuple

_OFFSET_BITS = 48
_PARTITION_BITS = 16
_TS_SHIFT = _OFFSET_BITS + _PARTITION_BITS
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1
_PARTITION_MASK = (1 << _PARTITION_BITS) - 1


class Position(NamedTuple):
    partition: int
    offset: int


def dedupe_key(topic: str, event_id: str) -> str:
    return f"{topic}\0{event_id}"  # \0 cannot appear in a topic name


class _Runs:
    """One topic's runs of new ids in one generation: disjoint, sorted by their first id."""

    __slots__ = ("firsts", "runs")

    def __init__(self) -> None:
        self.firsts: list[str] = []
        # (the run's ids, sorted; the packed position of the first)
        self.runs: list[tuple[tuple[str, ...], int]] = []

    def add(self, ids: list[str], packed: int) -> bool:
        """Add a run of sorted ids; False (adding nothing) if it overlaps one held."""
        first, last = ids[0], ids[-1]
        i = bisect_right(self.firsts, first)
        if i > 0 and self.runs[i - 1][0][-1] >= first:
            return False
        if i < len(self.firsts) and self.firsts[i] <= last:
            return False
        self.firsts.insert(i, first)
        self.runs.insert(i, (tuple(ids), packed))  # a tuple of str: untracked by the collector
        return True

    def find(self, event_id: str) -> int | None:
        """The packed position of ``event_id``, if a run holds it."""
        i = bisect_right(self.firsts, event_id) - 1
        if i < 0:
            return None
        ids, packed = self.runs[i]
        j = bisect_left(ids, event_id)
        if j < len(ids) and ids[j] == event_id:
            return packed + j
        return None

    def holds_any(self, event_ids: list[str]) -> bool:
        """Whether a run holds any of ``event_ids``: only those within the runs' span
        are looked up."""
        if not self.runs:
            return False
        ordered = sorted(event_ids)
        lo = bisect_left(ordered, self.firsts[0])
        hi = bisect_right(ordered, self.runs[-1][0][-1])
        return any(self.find(eid) is not None for eid in ordered[lo:hi])


class _Generation:
    __slots__ = ("keys", "runs", "size")

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}  # dedupe_key -> packed position
        self.runs: dict[str, _Runs] = {}  # topic -> its runs of new ids
        self.size = 0  # events held in runs

    def __len__(self) -> int:
        return len(self.keys) + self.size


class DedupeWindow:
    """Remembers ``(topic, id) -> position`` for ``window_ms``, up to ``max_entries``."""

    def __init__(self, window_ms: int = 120_000, max_entries: int = 2_000_000) -> None:
        self.window_ms = window_ms
        self.max_entries = max_entries
        self._new = _Generation()
        self._old = _Generation()
        self._rotated_ms: int | None = None

    def __len__(self) -> int:
        return len(self._new) + len(self._old)

    def get(
        self, topic: str, event_id: str, now_ms: int, key: str | None = None
    ) -> Position | None:
        """Where ``event_id`` landed on ``topic`` within the window; ``key`` is its
        :func:`dedupe_key` when the caller has made it already."""
        if key is None:
            key = dedupe_key(topic, event_id)
        packed = self._new.keys.get(key)
        if packed is None:
            packed = self._find(topic, event_id, key)
            if packed is None:
                return None
        if (packed >> _TS_SHIFT) <= now_ms - self.window_ms:
            return None
        return Position((packed >> _OFFSET_BITS) & _PARTITION_MASK, packed & _OFFSET_MASK)

    def _find(self, topic: str, event_id: str, key: str) -> int | None:
        """:meth:`get` past the new generation's keys: its runs, then the old generation."""
        new, old = self._new, self._old
        runs = new.runs.get(topic) if new.runs else None
        packed = runs.find(event_id) if runs is not None else None
        if packed is None and (old.keys or old.runs):
            packed = old.keys.get(key)
            if packed is None:
                runs = old.runs.get(topic)
                packed = runs.find(event_id) if runs is not None else None
        return packed

    def put(self, topic: str, event_id: str, partition: int, offset: int, now_ms: int) -> None:
        self._new.keys[dedupe_key(topic, event_id)] = _pack(now_ms, partition, offset)

    def put_many(
        self,
        topic: str,
        partition: int,
        offsets: list[int],
        times: list[int],
        event_ids: list[str | None],
        since_ms: int = -1,
    ) -> int:
        """:meth:`put` for records of one partition (an id None is skipped, and so is a
        time before ``since_ms``); returns how many were remembered."""
        keys = self._new.keys
        prefix = dedupe_key(topic, "")
        where = partition << _OFFSET_BITS
        n = 0
        for offset, ts, event_id in zip(offsets, times, event_ids, strict=True):
            if event_id is not None and ts >= since_ms:
                keys[prefix + event_id] = (ts << _TS_SHIFT) | where | offset
                n += 1
        return n

    def knows_any(self, topic: str, event_ids: list[str], keys: list[str]) -> bool:
        """Whether any of ``event_ids`` (``keys`` their dedupe keys) is held (perhaps
        expired): a batch's quick check."""
        for gen in (self._new, self._old):
            # isdisjoint walks ``keys`` and stops at the first one held; it builds nothing.
            if gen.keys and not gen.keys.keys().isdisjoint(keys):
                return True
            runs = gen.runs.get(topic) if gen.runs else None
            if runs is not None and runs.holds_any(event_ids):
                return True
        return False

    def remember_run(self, keys: list[str], partition: int, base: int, now_ms: int) -> None:
        """Remember ``keys`` at consecutive offsets from ``base``: one batch's append."""
        start = _pack(now_ms, partition, base)
        self._new.keys.update(zip(keys, range(start, start + len(keys)), strict=True))

    def remember_each(
        self, keys: list[str], partition: int, offsets: Sequence[int], now_ms: int
    ) -> None:
        """Remember ``keys`` at their ``offsets``: an append the storage deduplicated."""
        where = _pack(now_ms, partition, 0)
        self._new.keys.update(zip(keys, [where | o for o in offsets], strict=True))

    def remember_new(
        self, topic: str, event_ids: list[str], partition: int, base: int, now_ms: int
    ) -> None:
        """:meth:`remember_run` for ids the hub made for one batch, kept as one run.

        They are sorted, as :func:`tidings.events.batch.new_event_ids` makes them, and
        after every run held for the topic but in a rare race; ids that are not are
        remembered one by one.
        """
        gen = self._new
        packed = _pack(now_ms, partition, base)
        ordered = all(map(lt, event_ids, islice(event_ids, 1, None)))
        runs = gen.runs.get(topic)
        if runs is None:
            runs = gen.runs[topic] = _Runs()
        if ordered and runs.add(event_ids, packed):
            gen.size += len(event_ids)
            return
        self.remember_run(
            [dedupe_key(topic, eid) for eid in event_ids], partition, base, now_ms
        )

    def expire(self, now_ms: int) -> None:
        if self._rotated_ms is None:
            self._rotated_ms = now_ms
        elif (
            now_ms - self._rotated_ms >= self.window_ms
            or len(self._new.keys) + self._new.size > self.max_entries // 2
        ):
            self._old, self._new = self._new, _Generation()
            self._rotated_ms = now_ms

    def drop_topic(self, topic: str) -> None:
        prefix = f"{topic}\0"
        for gen in (self._new, self._old):
            for key in [k for k in gen.keys if k.startswith(prefix)]:
                del gen.keys[key]
            runs = gen.runs.pop(topic, None)
            if runs is not None:
                gen.size -= sum(len(ids) for ids, _ in runs.runs)


def _pack(now_ms: int, partition: int, offset: int) -> int:
    return (now_ms << _TS_SHIFT) | (partition << _OFFSET_BITS) | offset
