"""Window kinds: which windows an event falls in, and how long they wait for it.

Every window is ``[start, end)`` in event time (ms). It closes, giving its final
result, once the watermark ``W >= end + grace``; ``idle`` is how long a stream may
pause before the hub's clock moves event time on (default ``grace``; see
``windowed``).
Durations are ``"1m"``, ``"10s"``, ``"500ms"`` or seconds as a number.

- :class:`Tumbling`: ``[n*size, (n+1)*size)``, aligned on the epoch, one per event.
- :class:`Hopping`: windows of ``size`` starting every ``every`` (aligned on the
  epoch); an event falls in each one that covers it.
- :class:`Sliding`: for each distinct event time ``t`` of a key, the window
  ``(t - size, t]``, i.e. ``[t - size + 1, t + 1)``: the ``size`` up to and including
  each event (Kafka Streams' sliding windows without the windows that start after
  an event, and ``size`` long rather than ``size + 1``).
- :class:`Session`: a key's events closer than ``gap`` to each other form one
  session ``[first, last + gap)``; an event that bridges two sessions merges them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tidings.core.positions import parse_duration_ms
from tidings.errors import BadRequest

__all__ = ["Hopping", "Session", "Sliding", "Tumbling", "Window", "duration_ms"]


def duration_ms(value: object, what: str, *, positive: bool = False) -> int:
    """A duration as ms; ``ValueError`` naming ``what`` if it is not one."""
    try:
        ms = parse_duration_ms(value, what)
    except BadRequest as exc:
        raise ValueError(str(exc)) from None
    if positive and ms <= 0:
        raise ValueError(f"{what} must be longer than 0 ms, not {value!r}")
    return ms


class Window:
    """The base of the window kinds; each has ``grace`` and ``idle`` (ms) and ``describe()``."""

    grace: int
    idle: int

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


def _grace_idle(kind: str, grace: object, idle: object) -> tuple[int, int]:
    g = duration_ms(grace, f"{kind} grace")
    i = g if idle is None else duration_ms(idle, f"{kind} idle")
    return g, i


@dataclass(frozen=True, init=False)
class Tumbling(Window):
    """Back-to-back windows of ``size``: ``Tumbling("1m", grace="10s")``."""

    size: int
    grace: int
    idle: int

    def __init__(self, size: object, grace: object = "0s", idle: object = None) -> None:
        object.__setattr__(self, "size", duration_ms(size, "Tumbling size", positive=True))
        g, i = _grace_idle("Tumbling", grace, idle)
        object.__setattr__(self, "grace", g)
        object.__setattr__(self, "idle", i)

    def describe(self) -> dict[str, Any]:
        """The window as the view's declaration holds it (ms)."""
        return {"kind": "tumbling", "size": self.size, "grace": self.grace, "idle": self.idle}


@dataclass(frozen=True, init=False)
class Hopping(Window):
    """Windows of ``size`` starting every ``every``: ``Hopping("5m", every="1m")``."""

    size: int
    every: int
    grace: int
    idle: int

    def __init__(
        self, size: object, every: object, grace: object = "0s", idle: object = None
    ) -> None:
        s = duration_ms(size, "Hopping size", positive=True)
        e = duration_ms(every, "Hopping every", positive=True)
        if e > s:
            raise ValueError(
                f"Hopping every ({e} ms) must not be longer than size ({s} ms): "
                "events between the windows would fall in none"
            )
        object.__setattr__(self, "size", s)
        object.__setattr__(self, "every", e)
        g, i = _grace_idle("Hopping", grace, idle)
        object.__setattr__(self, "grace", g)
        object.__setattr__(self, "idle", i)

    def describe(self) -> dict[str, Any]:
        """The window as the view's declaration holds it (ms)."""
        return {
            "kind": "hopping", "size": self.size, "every": self.every,
            "grace": self.grace, "idle": self.idle,
        }


@dataclass(frozen=True, init=False)
class Sliding(Window):
    """The ``size`` up to and including each event of a key: ``Sliding("5m")``."""

    size: int
    grace: int
    idle: int

    def __init__(self, size: object, grace: object = "0s", idle: object = None) -> None:
        object.__setattr__(self, "size", duration_ms(size, "Sliding size", positive=True))
        g, i = _grace_idle("Sliding", grace, idle)
        object.__setattr__(self, "grace", g)
        object.__setattr__(self, "idle", i)

    def describe(self) -> dict[str, Any]:
        """The window as the view's declaration holds it (ms)."""
        return {"kind": "sliding", "size": self.size, "grace": self.grace, "idle": self.idle}


@dataclass(frozen=True, init=False)
class Session(Window):
    """A key's bursts of events, split where they pause ``gap`` or longer."""

    gap: int
    grace: int
    idle: int

    def __init__(self, gap: object, grace: object = "0s", idle: object = None) -> None:
        object.__setattr__(self, "gap", duration_ms(gap, "Session gap", positive=True))
        g, i = _grace_idle("Session", grace, idle)
        object.__setattr__(self, "grace", g)
        object.__setattr__(self, "idle", i)

    def describe(self) -> dict[str, Any]:
        """The window as the view's declaration holds it (ms)."""
        return {"kind": "session", "gap": self.gap, "grace": self.grace, "idle": self.idle}

