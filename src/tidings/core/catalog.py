"""The event catalogue: which event types each topic has carried.

The hub notes the types of every publish once it is stored (a set per topic, no
count, so the publish path pays one set update per request). A topic published to before the
hub's last start is filled, once, from the last records of each partition.
``/asyncapi.json`` is written from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from tidings.core.storage import PartitionStore
from tidings.errors import TidingsError

__all__ = ["Catalog", "ComponentIds"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


class ComponentIds:
    """Keys for one kind of AsyncAPI component (``^[\\w\\d.\\-_]+$``): one per name,
    never shared, so "a/b" and "a_b" do not become one message."""

    def __init__(self) -> None:
        self._by_name: dict[str, str] = {}
        self._taken: set[str] = set()

    def __call__(self, name: str) -> str:
        got = self._by_name.get(name)
        if got is None:
            base = got = _UNSAFE.sub("_", name) or "_"
            n = 1
            while got in self._taken:
                n += 1
                got = f"{base}_{n}"
            self._by_name[name] = got
            self._taken.add(got)
        return got

# Records read from the end of each partition to fill a topic not seen since start.
SAMPLE = 1000


class Catalog:
    def __init__(self) -> None:
        self._types: dict[str, set[str]] = {}
        # Topics whose log was sampled: what a publish since start adds does not stand
        # for what the topic carried before it.
        self._sampled: set[str] = set()

    def saw(self, topic: str, events: Sequence[Mapping[str, Any]]) -> None:
        """Note the types of ``events``, once they are stored."""
        self.note(topic, [ev["type"] for ev in events])

    def note(self, topic: str, types: Iterable[str]) -> None:
        """Note ``types`` on ``topic``: called once a publish is stored, never before,
        so a publish that is refused or fails leaves no type behind."""
        known = self._types.get(topic)
        if known is None:
            known = self._types[topic] = set()
        known.update(types)

    def drop(self, topic: str) -> None:
        self._types.pop(topic, None)
        self._sampled.discard(topic)

    async def types(self, topic: str, partitions: Sequence[PartitionStore]) -> list[str]:
        """The types ``topic`` has carried, sorted; sampled from its log the first time."""
        known = self._types.setdefault(topic, set())
        if topic not in self._sampled:
            found: set[str] = set()
            for part in list(partitions):
                start = max(part.start_offset, part.end_offset - SAMPLE)
                try:
                    records = (
                        await part.read(start, SAMPLE, 16 << 20) if start < part.end_offset else []
                    )
                except TidingsError:  # a damaged tail: the catalogue makes do without it
                    continue
                for _, _, payload in records:
                    etype = orjson.loads(payload).get("type")
                    if isinstance(etype, str):
                        found.add(etype)
            # Kept only if the topic was not dropped while the reads were awaited.
            if self._types.get(topic) is known:
                known.update(found)
                self._sampled.add(topic)
        return sorted(known)
