"""The event as a key function, a fold or an aggregation sees it.

:class:`EventView` wraps the CloudEvent dict the hub stored, without copying it or
checking it again (the hub checked it at publish): ``e.data``, ``e.type``,
``e.get("partitionkey")``, and ``e.event`` for a full :class:`~tidings.Event`.
Made once per record, so it holds two slots and reads the rest when asked; the
fixed-window operators go further and fill one view again for each record, so a
view's functions may read it during the call but must not keep it (what they
keep goes into the changelog as JSON anyway).
"""

from __future__ import annotations

from typing import Any

from tidings.events import Event


class EventView:
    """A CloudEvent dict read through attributes: ``e.data["sku"]``, ``e.type``."""

    __slots__ = ("attributes", "data")

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.attributes = attributes
        self.data: Any = attributes.get("data")

    @property
    def type(self) -> str:
        return str(self.attributes.get("type", ""))

    @property
    def id(self) -> str:
        return str(self.attributes.get("id", ""))

    @property
    def source(self) -> str:
        return str(self.attributes.get("source", ""))

    @property
    def time(self) -> str | None:
        t = self.attributes.get("time")
        return None if t is None else str(t)

    @property
    def subject(self) -> str | None:
        s = self.attributes.get("subject")
        return None if s is None else str(s)

    @property
    def event(self) -> Event:
        """The same event as an :class:`~tidings.Event` (made on each call)."""
        return Event.from_dict(self.attributes)

    def get(self, name: str, default: Any = None) -> Any:
        """An attribute or extension by name, ``default`` if absent."""
        return self.attributes.get(name, default)

    def __repr__(self) -> str:
        return f"EventView({self.attributes!r})"
