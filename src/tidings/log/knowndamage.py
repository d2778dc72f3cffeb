"""The damage a partition knows of, kept in step with its segments and its record.

Reads find damage (see :mod:`tidings.log.damage`) and report it here; what is
known is kept in ``damage.json`` beside the segments, for operators and the API
(never an input to reads). A segment that goes (retention), is cut (a torn
linked batch) or is rewritten (compaction) takes its entries with it, or has
them replaced. A record that cannot be written (a full disk) is logged: reads
find the damage anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from pathlib import Path

from tidings.log import damage as damage_record
from tidings.log.damage import Damage
from tidings.log.segment import Segment

logger = logging.getLogger("tidings.log")


class KnownDamage:
    """The known bad ranges of one partition's segments, in offset order."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ranges: list[Damage] = []

    def track(self, segments: Sequence[Segment]) -> None:
        """Merge the damage recovery found with the record on disk; hear of new damage.

        Recovery scanned the active segment whole, so what it found there replaces
        the record's entries for it (a bad last batch is now a torn tail, cut).
        Sealed segments keep their entries: reads find their damage again.
        """
        recorded = damage_record.load(self.directory)
        sealed = {seg.path.name for seg in segments[:-1]}
        known = [d for d in recorded if d.segment in sealed]
        found = [d for seg in segments for d in seg.damage.values()]
        self.ranges = damage_record.merge(known, found)
        if self.ranges != recorded:
            self._save()
        for seg in segments:
            seg.on_damage = self.found

    def found(self, damage: Damage) -> None:
        """A read stepped over damage: name it, log it and keep the record."""
        logger.error(
            "damage in %s at byte %d (%s): offsets %d to %d skipped",
            self.directory / damage.segment, damage.position, damage.why,
            damage.first_offset, damage.end_offset - 1,
        )
        merged = damage_record.merge(self.ranges, [damage])
        if merged != self.ranges:  # known damage, found again, is not written again
            self.ranges = merged
            self._save()

    def keep_segments(self, names: Collection[str]) -> None:
        """Only the segments named are left (retention removed the others): the
        damage of the others goes with them."""
        self._keep([d for d in self.ranges if d.segment in names])

    def rewritten(self, segment: str, damage: Sequence[Damage]) -> None:
        """``segment`` was rewritten (compacted): its damage is now ``damage``."""
        kept = [d for d in self.ranges if d.segment != segment]
        self._keep(damage_record.merge(kept, damage))

    def cut(self, segment: str, position: int, names: Collection[str]) -> None:
        """``segment`` was cut at byte ``position`` and only the segments named are
        left: damage in what was cut went with it (the bytes are in the side files)."""
        self._keep(
            [
                d
                for d in self.ranges
                if d.segment in names and (d.segment != segment or d.position < position)
            ]
        )

    def _keep(self, ranges: list[Damage]) -> None:
        if ranges != self.ranges:
            self.ranges = ranges
            self._save()

    def _save(self) -> None:
        """Write the record; a failure (a full disk) is logged: reads find damage anyway."""
        try:
            damage_record.save(self.directory, self.ranges)
        except OSError:
            logger.exception("could not record the damage in %s", self.directory)
