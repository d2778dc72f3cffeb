"""Layer 2, no sockets, no clock: stream processing as pure operators.

Windows (``windows``: :class:`Tumbling`, :class:`Hopping`, :class:`Sliding`,
:class:`Session`), aggregations (``aggregations``: :class:`Count`, :class:`Sum`,
:class:`Min`, :class:`Max`, :class:`Mean`, :class:`Aggregate`), the operators that
apply them (``windowed``, ``sessions``, ``sliding``; ``fold`` for ``@app.view``;
``joins``: a stream enriched by a table, two streams within :class:`Join`),
event time (``eventtime``), and the :class:`Merger` that puts a view's inputs in one
order (``merger``). An operator gets records and horizons as arguments and hands
back an :class:`Output`; the runtime in ``app`` reads, commits and keeps time.

Imports ``events``, ``core`` (duration parsing) and ``errors``. Imported by ``app``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tidings.streams.aggregations import Aggregate, Aggregation, Count, Max, Mean, Min, Sum
from tidings.streams.eventview import EventView
from tidings.streams.fold import FoldOperator
from tidings.streams.joins import EnrichOperator, Join, StreamJoin
from tidings.streams.merger import Merger
from tidings.streams.sessions import SessionWindows
from tidings.streams.sliding import SlidingWindows
from tidings.streams.types import DELETED, InputRecord, Operator, Output
from tidings.streams.windowed import FixedWindows, WindowOperator
from tidings.streams.windows import Hopping, Session, Sliding, Tumbling, Window

__all__ = [
    "DELETED",
    "Aggregate",
    "Aggregation",
    "Count",
    "EnrichOperator",
    "EventView",
    "FoldOperator",
    "Hopping",
    "InputRecord",
    "Join",
    "Max",
    "Mean",
    "Merger",
    "Min",
    "Operator",
    "Output",
    "Session",
    "Sliding",
    "StreamJoin",
    "Sum",
    "Tumbling",
    "Window",
    "WindowOperator",
    "window_operator",
]


def window_operator(
    name: str,
    inputs: Sequence[str],
    window: Window,
    key: Callable[[Any], Any],
    agg: Aggregation,
    *,
    emit: str = "final",
    types: Iterable[str] | None = None,
    decode: Callable[[dict[str, Any]], Any] = EventView,
) -> WindowOperator:
    """The operator of one ``@app.window`` view.

    ``inputs`` are the input topics in the view's order (a record's ``input_index``
    points into it); ``types`` keeps only events of those types; ``key(e)`` names
    the key (None: the event is skipped); ``decode`` makes what ``key`` and the
    aggregation's functions get from the event dict (an :class:`EventView`).
    """
    if isinstance(window, Tumbling | Hopping):
        cls: type[WindowOperator] = FixedWindows
    elif isinstance(window, Sliding):
        cls = SlidingWindows
    elif isinstance(window, Session):
        cls = SessionWindows
    else:
        raise ValueError(
            f"view {name!r}: window must be Tumbling(...), Hopping(...), Sliding(...) or "
            f"Session(...), not {window!r}"
        )
    return cls(name, inputs, window, key, agg, emit=emit, types=types, decode=decode)
