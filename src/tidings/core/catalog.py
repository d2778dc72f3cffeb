"""The event catalogue: which event types each topic has carried.

The hub notes the types of every publish (a set per topic, no count, so the
publish path pays one set update per request). A topic published to before the
hub's last start is filled, once, from the last records of each partition.
``/asyncapi.json`` is written from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from tidings.core.storage import PartitionStore
from tidings.errors import TidingsError

__all__ = ["Catalog"]

# Records read from the end of each partition to fill a topic not seen since start.
SAMPLE = 1000


class Catalog:
    def __init__(self) -> None:
        self._types: dict[str, set[str]] = {}
        # Topics whose log was sampled: what a publish since start adds does not stand
        # for what the topic carried before it.
        self._sampled: set[str] = set()

    def saw(self, topic: str, events: Sequence[Mapping[str, Any]]) -> None:
        known = self._types.get(topic)
        if known is None:
            known = self._types[topic] = set()
        if len(events) == 1:
            known.add(events[0]["type"])
        else:
            known.update([ev["type"] for ev in events])

    def drop(self, topic: str) -> None:
        self._types.pop(topic, None)
        self._sampled.discard(topic)

    def types(self, topic: str, partitions: Sequence[PartitionStore]) -> list[str]:
        """The types ``topic`` has carried, sorted; sampled from its log the first time."""
        known = self._types.setdefault(topic, set())
        if topic not in self._sampled:
            self._sampled.add(topic)
            for part in partitions:
                start = max(part.start_offset, part.end_offset - SAMPLE)
                try:
                    records = part.read(start, SAMPLE, 16 << 20) if start < part.end_offset else []
                except TidingsError:  # a damaged tail: the catalogue makes do without it
                    continue
                for _, _, payload in records:
                    etype = orjson.loads(payload).get("type")
                    if isinstance(etype, str):
                        known.add(etype)
        return sorted(known)
