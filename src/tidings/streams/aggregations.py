"""Aggregations: what a window keeps of its events, as a JSON value.

An aggregation has an ``initial`` state, ``lift`` (the part of an event it needs),
``add`` (fold one lifted event into the state), ``merge`` (two states of adjacent
sessions, earlier first) and ``result`` (the value served and published). States
are JSON values: they go into the view's changelog as they are.

Events reach ``lift`` as the view's functions see them (an
:class:`~tidings.streams.eventview.EventView` by default).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

__all__ = ["Aggregate", "Aggregation", "Count", "Max", "Mean", "Min", "Sum"]

Number = int | float


def _number(value: Any, what: str) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must give a number, not {type(value).__name__} {value!r}")
    return value


def _callable(f: object, what: str) -> Callable[..., Any]:
    if not callable(f):
        raise ValueError(f"{what} needs a function of the event, not {f!r}")
    return f


class Aggregation:
    """The base of every aggregation; see the module docstring for the methods."""

    # Whether ``lift`` needs the whole event (so stored events are kept whole).
    needs_event = False

    def initial(self) -> Any:
        raise NotImplementedError

    def lift(self, event: Any) -> Any:
        raise NotImplementedError

    def add(self, state: Any, x: Any) -> Any:
        raise NotImplementedError

    def merge(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def result(self, state: Any) -> Any:
        return state

    def describe(self) -> str:
        return type(self).__name__.lower()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Count(Aggregation):
    """How many events: ``Count()``."""

    def initial(self) -> int:
        return 0

    def lift(self, event: Any) -> None:
        return None

    def add(self, state: int, x: Any) -> int:
        return state + 1

    def merge(self, a: int, b: int) -> int:
        return a + b


class _OfNumbers(Aggregation):
    def __init__(self, f: Callable[[Any], Any]) -> None:
        self.f = _callable(f, type(self).__name__)

    def lift(self, event: Any) -> Number:
        return _number(self.f(event), f"the function of {type(self).__name__}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self.f, '__name__', self.f)!s})"


class Sum(_OfNumbers):
    """The sum of ``f(event)``: ``Sum(lambda e: e.data["total"])``; 0 when empty."""

    def initial(self) -> Number:
        return 0

    def add(self, state: Number, x: Number) -> Number:
        return state + x

    def merge(self, a: Number, b: Number) -> Number:
        return a + b


class Min(_OfNumbers):
    """The least ``f(event)``; None when empty."""

    def initial(self) -> Number | None:
        return None

    def add(self, state: Number | None, x: Number) -> Number:
        return x if state is None or x < state else state

    def merge(self, a: Number | None, b: Number | None) -> Number | None:
        return b if a is None else a if b is None or a <= b else b


class Max(_OfNumbers):
    """The greatest ``f(event)``; None when empty."""

    def initial(self) -> Number | None:
        return None

    def add(self, state: Number | None, x: Number) -> Number:
        return x if state is None or x > state else state

    def merge(self, a: Number | None, b: Number | None) -> Number | None:
        return b if a is None else a if b is None or a >= b else b


class Mean(_OfNumbers):
    """The mean of ``f(event)``; state ``[sum, count]``; None when empty."""

    def initial(self) -> list[Number]:
        return [0, 0]

    def add(self, state: list[Number], x: Number) -> list[Number]:
        return [state[0] + x, state[1] + 1]

    def merge(self, a: list[Number], b: list[Number]) -> list[Number]:
        return [a[0] + b[0], a[1] + b[1]]

    def result(self, state: list[Number]) -> float | None:
        return state[0] / state[1] if state[1] else None


class Aggregate(Aggregation):
    """A custom fold: ``Aggregate(init, step)`` with ``step(state, event) -> state``.

    ``init`` is a JSON value (copied for each window) or a function giving one.
    ``result(state)`` makes the published value (default: the state). Session
    windows also need ``merge(earlier, later) -> state`` to join two sessions an
    event bridges.
    """

    needs_event = True

    def __init__(
        self,
        init: Any,
        step: Callable[[Any, Any], Any],
        *,
        result: Callable[[Any], Any] | None = None,
        merge: Callable[[Any, Any], Any] | None = None,
    ) -> None:
        self.init = init
        self.step = _callable(step, "Aggregate step")
        self.finish = None if result is None else _callable(result, "Aggregate result")
        self.merger = None if merge is None else _callable(merge, "Aggregate merge")

    def initial(self) -> Any:
        return self.init() if callable(self.init) else copy.deepcopy(self.init)

    def lift(self, event: Any) -> Any:
        return event

    def add(self, state: Any, x: Any) -> Any:
        return self.step(state, x)

    def merge(self, a: Any, b: Any) -> Any:
        if self.merger is None:
            raise ValueError("Session windows need Aggregate(..., merge=f) to join sessions")
        return self.merger(a, b)

    def result(self, state: Any) -> Any:
        return state if self.finish is None else self.finish(state)

    def __repr__(self) -> str:
        return f"Aggregate({self.init!r}, {getattr(self.step, '__name__', self.step)!s})"
