"""The dedupe window: a repeated event ``id`` within the window appends nothing.

Entries expire in insertion order, so the map itself (a dict keeps insertion
order) is the expiry queue: the oldest entry is always first.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Position:
    partition: int
    offset: int


class DedupeWindow:
    """Remembers ``(topic, id) -> position`` for ``window_ms``, up to ``max_entries``."""

    def __init__(self, window_ms: int = 120_000, max_entries: int = 2_000_000) -> None:
        self.window_ms = window_ms
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[int, int, int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, topic: str, event_id: str, now_ms: int) -> Position | None:
        hit = self._entries.get((topic, event_id))
        if hit is None or hit[0] <= now_ms - self.window_ms:
            return None
        return Position(hit[1], hit[2])

    def put(self, topic: str, event_id: str, partition: int, offset: int, now_ms: int) -> None:
        self._entries[(topic, event_id)] = (now_ms, partition, offset)

    def forget(self, topic: str, event_id: str) -> None:
        self._entries.pop((topic, event_id), None)

    def expire(self, now_ms: int) -> None:
        entries = self._entries
        limit = now_ms - self.window_ms
        while entries:
            key = next(iter(entries))
            if entries[key][0] > limit and len(entries) <= self.max_entries:
                break
            del entries[key]

    def drop_topic(self, topic: str) -> None:
        for key in [k for k in self._entries if k[0] == topic]:
            del self._entries[key]
