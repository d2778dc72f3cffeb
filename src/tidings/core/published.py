"""What a publish answers: where each event landed (see :mod:`tidings.core.publishing`)."""

from __future__ import annotations

from itertools import repeat
from typing import Any, NamedTuple

from tidings.core.storage import Deduplicated

__all__ = ["Published", "Run", "Spread"]


class Published(NamedTuple):
    """Where a published event landed (a tuple: made once per event on the hot path)."""

    id: str
    partition: int
    offset: int
    duplicate: bool = False

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "partition": self.partition, "offset": self.offset}
        if self.duplicate:
            d["duplicate"] = True
        return d


class Run(NamedTuple):
    """A batch that landed whole in one partition: event ``i`` at offset ``base + i``.

    What a batch of new ids usually gets: one object, not a :class:`Published` per event.
    """

    ids: list[str]
    partition: int
    base: int

    def published(self) -> list[Published]:
        make = tuple.__new__  # skips NamedTuple's Python-level __new__: one per event
        p, base = self.partition, self.base
        return [make(Published, (eid, p, base + k, False)) for k, eid in enumerate(self.ids)]


class Spread(NamedTuple):
    """A batch of new events spread over partitions by their keys: event ``i`` at
    ``partitions[i]``, ``offsets[i]`` (one object, not a :class:`Published` per event)."""

    ids: list[str]
    partitions: list[int]
    offsets: list[int]

    def published(self) -> list[Published]:
        make = tuple.__new__  # skips NamedTuple's Python-level __new__: one per event
        rows = zip(self.ids, self.partitions, self.offsets, repeat(False))
        return list(map(make, repeat(Published), rows))


def answer_deduplicated(ids: list[str], partition: int, base: Deduplicated) -> list[Published]:
    """What a batch got when the storage found some of it stored before."""
    return [
        Published(eid, partition, off, rep)
        for eid, off, rep in zip(ids, base.offsets, base.repeated, strict=True)
    ]
