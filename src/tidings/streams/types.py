"""What every operator takes and gives: records in, an :class:`Output` out.

An operator sees records in the merged order of section 1 of the design (append
time, input index, partition, offset); it never reads a clock and never does I/O.
The runtime restores it from the changelog, feeds it records and horizons, and
drains what changed into one commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

# (input_index, partition, offset, appended_ms, event)
InputRecord = tuple[int, int, int, int, dict[str, Any]]


class _Deleted:
    """The marker for an entry removed since the last drain (a tombstone)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DELETED"

    def __reduce__(self) -> str:
        return "DELETED"


DELETED: Final = _Deleted()
"""A value or state entry that was removed: the changelog writes a tombstone for it."""


@dataclass
class Output:
    """What changed since the last drain.

    ``values`` and ``state`` map a key to its new JSON value, or to :data:`DELETED`.
    ``results`` are the CloudEvents to publish to the view's topic, ``late`` the ones
    for ``{view}.late``, both in the order they happened. ``clock`` is the operator's
    time (stream time, watermark) for the checkpoint, given whole at every drain.

    The values are the operator's own objects, not copies: serialize them before the
    next call to ``process`` or ``advance`` (a fold or an aggregation may change its
    state in place).
    """

    values: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    late: list[dict[str, Any]] = field(default_factory=list)
    clock: dict[str, Any] = field(default_factory=dict)


class Operator(Protocol):
    """One per view: restored once, then fed records in merged order."""

    def restore(
        self, values: dict[str, Any], state: dict[str, Any], clock: dict[str, Any]
    ) -> None:
        """Take the state of a checkpoint; only before the first ``process``."""

    def process(self, rec: InputRecord) -> None:
        """One input record, in merged order."""

    def process_all(self, recs: Iterable[InputRecord]) -> None:
        """``process`` each record in turn, in one call (cheaper per record)."""

    def advance(self, horizon_ms: int) -> None:
        """Every record with ``appended_ms`` below ``horizon_ms`` has been processed."""

    def drain(self) -> Output:
        """What changed since the last drain (or since the restore)."""
