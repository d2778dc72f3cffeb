"""Schemas inferred from traffic, for types that have none (as EventBridge discovers them).

Nothing is done on the publish path: when asked, the hub reads the most recent
records of the topics whose catalogue names the type (at most ``SAMPLE`` per
partition, ``MAX_EVENTS`` in all) and folds their ``data`` into one JSON Schema
with ``genson`` (a property every sample carries is required; several types
become an ``anyOf``). The same sample names the ``source`` of the events: the
producers seen in the traffic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from genson import SchemaBuilder  # type: ignore[import-untyped]

from tidings.core.storage import PartitionStore
from tidings.errors import TidingsError

__all__ = ["Sample", "infer_schema", "sample_type"]

SAMPLE = 500  # records read from the end of each partition
MAX_EVENTS = 1000  # events of the type folded into the schema
DRAFT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(slots=True)
class Sample:
    events: int = 0
    data: list[Any] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)  # source -> events seen
    topics: list[str] = field(default_factory=list)


async def sample_type(etype: str, topics: Iterable[tuple[str, Sequence[PartitionStore]]]) -> Sample:
    """The recent events of ``etype`` on ``topics``: their data and sources."""
    got = Sample()
    needle = orjson.dumps(etype)
    for name, partitions in topics:
        found = False
        for part in list(partitions):
            start = max(part.start_offset, part.end_offset - SAMPLE)
            if start >= part.end_offset:
                continue
            try:
                records = await part.read(start, SAMPLE, 16 << 20)
            except TidingsError:  # damage: the sample makes do without it
                continue
            for _, _, payload in reversed(records):
                if needle not in payload:  # cheap: most records are of other types
                    continue
                ev = orjson.loads(payload)
                if ev.get("type") != etype:
                    continue
                found = True
                got.events += 1
                src = ev.get("source")
                if isinstance(src, str):
                    got.sources[src] = got.sources.get(src, 0) + 1
                if "data" in ev and len(got.data) < MAX_EVENTS:
                    got.data.append(ev["data"])
        if found:
            got.topics.append(name)
    return got


def infer_schema(samples: Sequence[Any]) -> dict[str, Any]:
    """One JSON Schema 2020-12 that every sample fits."""
    builder = SchemaBuilder(schema_uri=DRAFT)
    for data in samples:
        builder.add_object(data)
    schema: dict[str, Any] = builder.to_schema()
    schema["$schema"] = DRAFT
    return schema
