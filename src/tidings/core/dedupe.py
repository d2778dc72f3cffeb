"""The dedupe window: a repeated event ``id`` within the window appends nothing.

Entries expire in the order they were added: a deque of keys is the expiry
queue, a dict the lookup (popping a dict's first key over and over is not O(1)).
"""

from __future__ import annotations

from collections import deque
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
        self._order: deque[tuple[int, tuple[str, str]]] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, topic: str, event_id: str, now_ms: int) -> Position | None:
        hit = self._entries.get((topic, event_id))
        if hit is None or hit[0] <= now_ms - self.window_ms:
            return None
        return Position(hit[1], hit[2])

    def put(self, topic: str, event_id: str, partition: int, offset: int, now_ms: int) -> None:
        key = (topic, event_id)
        self._entries[key] = (now_ms, partition, offset)
        self._order.append((now_ms, key))

    def forget(self, topic: str, event_id: str) -> None:
        self._entries.pop((topic, event_id), None)

    def expire(self, now_ms: int) -> None:
        entries, order = self._entries, self._order
        limit = now_ms - self.window_ms
        while order and (order[0][0] <= limit or len(order) > self.max_entries):
            ts, key = order.popleft()
            hit = entries.get(key)
            if hit is not None and hit[0] == ts:
                del entries[key]

    def drop_topic(self, topic: str) -> None:
        for key in [k for k in self._entries if k[0] == topic]:
            del self._entries[key]
        self._order = deque(item for item in self._order if item[1][0] != topic)
