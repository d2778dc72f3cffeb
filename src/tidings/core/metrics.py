"""Counters the hub keeps, rendered as Prometheus text by the server."""

from __future__ import annotations

from collections import defaultdict


class Metrics:
    def __init__(self) -> None:
        self.events_in: defaultdict[str, int] = defaultdict(int)
        self.bytes_in: defaultdict[str, int] = defaultdict(int)
        self.events_out: defaultdict[str, int] = defaultdict(int)
        self.dead_letters: defaultdict[str, int] = defaultdict(int)
        self.skipped_events: defaultdict[str, int] = defaultdict(int)

    def published(self, topic: str, events: int, nbytes: int) -> None:
        self.events_in[topic] += events
        self.bytes_in[topic] += nbytes

    def delivered(self, topic: str, events: int) -> None:
        if events:
            self.events_out[topic] += events

    def dead_lettered(self, topic: str, events: int) -> None:
        self.dead_letters[topic] += events

    def skipped(self, topic: str, events: int) -> None:
        """Offsets lost to damage that a read or a group stepped over."""
        if events:
            self.skipped_events[topic] += events
