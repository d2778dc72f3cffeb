"""The dedupe window: a repeated event ``id`` within the window appends nothing.

The window holds an entry for every event of the last two minutes, possibly
millions, so it is built to stay out of the garbage collector's way: keys are
``str`` and values packed ``int``, and a dict of only those is never tracked
by the cyclic collector (walking millions of tuples on every full collection
cost the hub half its publish throughput). Expiry rotates two generations:
entries move to ``old`` when ``new`` is ``window_ms`` old, and are dropped
one rotation later, so an entry is remembered for at least the window and at
most twice it; :meth:`get` checks the time, so nothing past the window counts.
"""

from __future__ import annotations

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


class DedupeWindow:
    """Remembers ``(topic, id) -> position`` for ``window_ms``, up to ``max_entries``."""

    def __init__(self, window_ms: int = 120_000, max_entries: int = 2_000_000) -> None:
        self.window_ms = window_ms
        self.max_entries = max_entries
        self._new: dict[str, int] = {}
        self._old: dict[str, int] = {}
        self._rotated_ms: int | None = None

    def __len__(self) -> int:
        return len(self._new) + len(self._old)

    def get(self, topic: str, event_id: str, now_ms: int) -> Position | None:
        return self.lookup(dedupe_key(topic, event_id), now_ms)

    def lookup(self, key: str, now_ms: int) -> Position | None:
        """:meth:`get` by a key made with :func:`dedupe_key`."""
        packed = self._new.get(key)
        if packed is None:
            if not self._old:
                return None
            packed = self._old.get(key)
            if packed is None:
                return None
        if (packed >> _TS_SHIFT) <= now_ms - self.window_ms:
            return None
        return Position((packed >> _OFFSET_BITS) & _PARTITION_MASK, packed & _OFFSET_MASK)

    def put(self, topic: str, event_id: str, partition: int, offset: int, now_ms: int) -> None:
        self.remember(dedupe_key(topic, event_id), partition, offset, now_ms)

    def knows_any(self, keys: list[str]) -> bool:
        """Whether any of ``keys`` is held (perhaps expired): a batch's quick check."""
        # isdisjoint walks ``keys`` and stops at the first one held; it builds nothing.
        return not self._new.keys().isdisjoint(keys) or (
            bool(self._old) and not self._old.keys().isdisjoint(keys)
        )

    def remember(self, key: str, partition: int, offset: int, now_ms: int) -> None:
        """:meth:`put` by a key made with :func:`dedupe_key`."""
        self._new[key] = (now_ms << _TS_SHIFT) | (partition << _OFFSET_BITS) | offset

    def remember_run(self, keys: list[str], partition: int, base: int, now_ms: int) -> None:
        """Remember ``keys`` at consecutive offsets from ``base``: one batch's append."""
        start = (now_ms << _TS_SHIFT) | (partition << _OFFSET_BITS) | base
        self._new.update(zip(keys, range(start, start + len(keys)), strict=True))

    def expire(self, now_ms: int) -> None:
        if self._rotated_ms is None:
            self._rotated_ms = now_ms
        elif now_ms - self._rotated_ms >= self.window_ms or len(self._new) > self.max_entries // 2:
            self._old, self._new = self._new, {}
            self._rotated_ms = now_ms

    def drop_topic(self, topic: str) -> None:
        prefix = f"{topic}\0"
        for gen in (self._new, self._old):
            for key in [k for k in gen if k.startswith(prefix)]:
                del gen[key]
