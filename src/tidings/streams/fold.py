"""The fold behind ``@app.view``: a value per key, ``f(current, event) -> new | None``.

For each record (in merged order) the key function names the key (None: the
event is not for this view), and ``f`` gets the key's current value (None if it
has none) and the event; it returns the new value, or None to delete the key.
Served values are the operator's whole state; there is no time in a fold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from tidings.streams.eventview import EventView
from tidings.streams.types import DELETED, InputRecord, Output

__all__ = ["FoldOperator"]


class FoldOperator:
    """An :class:`~tidings.streams.types.Operator` folding events into one value per key."""

    def __init__(
        self,
        name: str,
        key: Callable[[Any], Any],
        fold: Callable[[Any, Any], Any],
        *,
        types: Iterable[str] | None = None,
        decode: Callable[[dict[str, Any]], Any] = EventView,
    ) -> None:
        if not callable(key):
            raise ValueError(f"view {name!r}: key must be a function of the event, not {key!r}")
        if not callable(fold):
            raise ValueError(f"view {name!r}: the fold must be a function, not {fold!r}")
        self.name = name
        self._key = key
        self._fold = fold
        self._types = None if types is None else frozenset(types)
        self._decode = decode
        self._values: dict[str, Any] = {}
        self._changed: dict[str, Any] = {}
        self._horizon: int | None = None

    @property
    def values(self) -> dict[str, Any]:
        """Every key's current value (the operator's own dict: read, do not change)."""
        return self._values

    def restore(
        self, values: dict[str, Any], state: dict[str, Any], clock: dict[str, Any]
    ) -> None:
        self._values = dict(values)
        self._changed = {}
        h = clock.get("horizon")
        self._horizon = h if isinstance(h, int) else None

    def process(self, rec: InputRecord) -> None:
        ev = rec[4]
        if self._types is not None and ev.get("type") not in self._types:
            return
        e = self._decode(ev)
        k = self._key(e)
        if k is None:
            return
        if not isinstance(k, str):
            k = str(k)
        values = self._values
        new = self._fold(values.get(k), e)
        if new is None:
            if k in values:
                del values[k]
                self._changed[k] = DELETED
        else:
            values[k] = self._changed[k] = new

    def process_all(self, recs: Iterable[InputRecord]) -> None:
        """``process`` each record in turn, with the attributes read once."""
        types, decode, key, fold = self._types, self._decode, self._key, self._fold
        values, changed = self._values, self._changed
        for rec in recs:
            ev = rec[4]
            if types is not None and ev.get("type") not in types:
                continue
            e = decode(ev)
            k = key(e)
            if k is None:
                continue
            if k.__class__ is not str:
                k = str(k)
            new = fold(values.get(k), e)
            if new is None:
                if k in values:
                    del values[k]
                    changed[k] = DELETED
            else:
                values[k] = changed[k] = new

    def advance(self, horizon_ms: int) -> None:
        if self._horizon is None or horizon_ms > self._horizon:
            self._horizon = horizon_ms

    def drain(self) -> Output:
        changed, self._changed = self._changed, {}
        clock = {} if self._horizon is None else {"horizon": self._horizon}
        return Output(values=changed, clock=clock)
