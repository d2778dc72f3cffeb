"""Registering views and windows on an App: the checks, and what the processor runs.

::

    @app.view("stock", topics=["inventory"], key=lambda e: e.data["sku"])
    def stock(current: int | None, event: EventView) -> int | None:
        ...  # the key's new value; None deletes the key

    app.window("sales_per_minute", topic="orders", types=["order.placed"],
               window=Tumbling("1m", grace="10s"), key=lambda e: e.data["sku"],
               agg=Sum(lambda e: e.data["total"]), emit="final")

A fold is a plain ``def`` (it runs inline, in the merged order of the inputs); a
window needs no function of its own, its ``key``, ``window`` and ``agg`` say what
it computes. Joins (``@app.join``: two streams within a time; ``@app.enrich``: a
stream with the latest value per key of a second input) decorate the function
that makes a result's data from what was matched. Bad arguments raise
:class:`ValueError` naming the argument. What runs them is
:mod:`tidings.app.processor`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tidings.app.handlers import check_name
from tidings.app.processor import StreamSpec
from tidings.streams import (
    Aggregation,
    EnrichOperator,
    FoldOperator,
    Join,
    StreamJoin,
    Window,
    window_operator,
)

__all__ = ["enrich_spec", "join_spec", "view_spec", "window_spec"]

DEFAULT_COMMIT_INTERVAL = 0.1
DEFAULT_COMMIT_RECORDS = 20_000
EMITS = ("final", "updates")


def _check_topics(topics: object) -> tuple[str, ...]:
    if isinstance(topics, str) or not isinstance(topics, Sequence | set | frozenset):
        raise ValueError(f"topics must be a list of topic names, such as [{topics!r}], "
                         f"not {topics!r}")
    out = tuple(check_name("topic", t) for t in topics)
    if not out:
        raise ValueError("topics must name at least one topic")
    if len(set(out)) != len(out):
        raise ValueError(f"topics {list(out)} name a topic twice")
    return out


def _check_types(types: str | Iterable[str] | None) -> tuple[str, ...]:
    if types is None:
        return ()
    if isinstance(types, str):
        types = [types]
    if not isinstance(types, Iterable):
        raise ValueError(f"types must be a list of event types, not {types!r}")
    out = tuple(types)
    for t in out:
        if not isinstance(t, str) or not t or "," in t:
            raise ValueError(f"types must be event types (patterns such as order.*), not {t!r}")
    return out


def _check_callable(label: str, f: object, args: int) -> Callable[..., Any]:
    if not callable(f):
        raise ValueError(f"{label} must be a function, not {f!r}")
    if inspect.iscoroutinefunction(f):
        raise ValueError(f"{label} must be a plain def (it runs inline, in order), not async")
    try:
        inspect.signature(f).bind(*([None] * args))
    except TypeError as exc:
        raise ValueError(f"{label} must take {args} argument(s): {exc}") from None
    except ValueError:
        pass  # a builtin without a signature: trusted
    return f


def _check_commit(commit_interval: object, commit_records: object) -> tuple[float, int]:
    if (isinstance(commit_interval, bool) or not isinstance(commit_interval, int | float)
            or not 0 < commit_interval <= 60):
        raise ValueError(
            f"commit_interval must be seconds above 0 and at most 60, not {commit_interval!r}"
        )
    if (isinstance(commit_records, bool) or not isinstance(commit_records, int)
            or not 1 <= commit_records <= 1_000_000):
        raise ValueError(
            f"commit_records must be an integer from 1 to 1000000, not {commit_records!r}"
        )
    return float(commit_interval), commit_records


def _check_partitioned(partitioned: object) -> bool:
    if not isinstance(partitioned, bool):
        raise ValueError(f"partitioned must be True or False, not {partitioned!r}")
    return partitioned


def _check_repartition(repartition: object, partitioned: bool) -> bool | int:
    if isinstance(repartition, bool):
        value: bool | int = repartition
    elif isinstance(repartition, int) and 1 <= repartition <= 1000:
        value = repartition
    else:
        raise ValueError(
            "repartition must be True (route by key over as many partitions as the input "
            f"with the most), False, or a number of partitions from 1 to 1000, not "
            f"{repartition!r}"
        )
    if value is not False and partitioned:
        raise ValueError(
            "partitioned=True says the key is already the events' partitionkey; "
            "repartition=... routes events by a key that is not: declare one of them"
        )
    return value


def _stages(
    declaration: dict[str, Any], key_f: Callable[[Any], Any], repartition: bool | int
) -> tuple[Callable[[Any], Any], Callable[[Any], Any] | None]:
    """The key the operator uses, and the routing stage's key (None: no routing). A
    repartitioned view's tasks read copies keyed by its key (a key's copies are in
    one partition by construction) and hand the operator the original events."""
    if repartition is False:
        return key_f, None
    declaration["repartition"] = repartition
    return key_f, key_f


def _owned(name: str, key_f: Callable[[Any], Any], partitioned: bool) -> Callable[[Any], Any]:
    """``key_f``, checked for a partitioned view: a task sees only its partitions, so
    the key must be the event's ``partitionkey`` (which chose the partition)."""
    if not partitioned:
        return key_f

    def key(e: Any) -> Any:
        k = key_f(e)
        pk = e.get("partitionkey")
        if k is not None and str(k) != pk:
            raise ValueError(
                f"view {name!r} is partitioned, so its key must be the event's partitionkey: "
                f"event {e.get('id')!r} has key {k!r} and partitionkey {pk!r}; publish with "
                "partitionkey set to the key, or declare the view without partitioned"
            )
        return k

    return key


def view_spec(
    app: str,
    name: str,
    topics: object,
    key: object,
    fold: object,
    *,
    types: str | Iterable[str] | None = None,
    commit_interval: float = DEFAULT_COMMIT_INTERVAL,
    commit_records: int = DEFAULT_COMMIT_RECORDS,
    partitioned: object = False,
    repartition: object = False,
) -> StreamSpec:
    """A fold view: ``fold(current, event)`` per event, into the value of ``key(event)``;
    ``partitioned``: a task per input partition; ``repartition``: events routed by key
    first (see :meth:`tidings.App.view`)."""
    check_name("view name", name)
    inputs = _check_topics(topics)
    split = _check_partitioned(partitioned)
    routed = _check_repartition(repartition, split)
    key_f = _owned(name, _check_callable("key", key, 1), split)
    fold_f = _check_callable(f"view {name!r}: the folding function", fold, 2)
    interval, records = _check_commit(commit_interval, commit_records)
    kinds = _check_types(types)
    declaration: dict[str, Any] = {"kind": "view", "inputs": list(inputs), "app": app,
                                   "window": None, "emit": None}
    if split:
        declaration["partitioned"] = True
    key_f, route_key = _stages(declaration, key_f, routed)
    return StreamSpec(
        name=name,
        kind="view",
        inputs=inputs,
        types=kinds,
        declaration=declaration,
        make_operator=lambda: FoldOperator(name, key_f, fold_f),
        commit_interval=interval,
        commit_records=records,
        partitioned=split,
        route_key=route_key,
    )


def window_spec(
    app: str,
    name: str,
    topic: object,
    window: object,
    key: object,
    agg: object,
    *,
    types: str | Iterable[str] | None = None,
    emit: object = "final",
    commit_interval: float = DEFAULT_COMMIT_INTERVAL,
    commit_records: int = DEFAULT_COMMIT_RECORDS,
    partitioned: object = False,
    repartition: object = False,
) -> StreamSpec:
    """A windowed aggregation of ``topic`` per ``key(event)``, on event time."""
    check_name("window name", name)
    if name.endswith(".late"):
        raise ValueError(f"window name {name!r} must not end in .late (its late topic would be "
                         f"{name}.late)")
    if isinstance(topic, list | tuple):
        raise ValueError(f"topic must be one topic name (a window reads one), not {topic!r}")
    inputs = (check_name("topic", topic),)
    if name in inputs:
        raise ValueError(f"window {name!r} publishes its results to topic {name!r}: it cannot "
                         "also read it")
    if not isinstance(window, Window):
        raise ValueError(
            f"window must be Tumbling(...), Hopping(...), Sliding(...) or Session(...) from "
            f"tidings.streams, not {window!r}"
        )
    if not isinstance(agg, Aggregation):
        raise ValueError(
            "agg must be Count(), Sum(f), Min(f), Max(f), Mean(f) or Aggregate(init, step) "
            f"from tidings.streams, not {agg!r}"
        )
    if emit not in EMITS:
        raise ValueError(f"emit must be 'final' or 'updates', not {emit!r}")
    split = _check_partitioned(partitioned)
    routed = _check_repartition(repartition, split)
    key_f = _owned(name, _check_callable("key", key, 1), split)
    interval, records = _check_commit(commit_interval, commit_records)
    kinds = _check_types(types)
    declaration: dict[str, Any] = {"kind": "window", "inputs": list(inputs), "app": app,
                                   "window": window.describe(), "emit": emit}
    if split:
        declaration["partitioned"] = True
    key_f, route_key = _stages(declaration, key_f, routed)
    emit_s = str(emit)
    win, aggregation = window, agg  # narrowed, for the closure
    return StreamSpec(
        name=name,
        kind="window",
        inputs=inputs,
        types=kinds,
        declaration=declaration,
        make_operator=lambda: window_operator(
            name, inputs, win, key_f, aggregation, emit=emit_s
        ),
        commit_interval=interval,
        commit_records=records,
        partitioned=split,
        route_key=route_key,
    )


def _two_topics(name: str, first: object, second: object, what: str) -> tuple[str, str]:
    a, b = check_name("topic", first), check_name("topic", second)
    if a == b:
        raise ValueError(f"{what} of {name!r} must be two topics, not {a!r} twice")
    if name in (a, b):
        raise ValueError(f"{name!r} publishes its results to topic {name!r}: it cannot also "
                         "read it")
    return a, b


def join_spec(
    app: str,
    name: str,
    left: object,
    right: object,
    within: object,
    key: object,
    join: object,
    *,
    right_key: object = None,
    grace: object = "0s",
    idle: object = None,
    commit_interval: float = DEFAULT_COMMIT_INTERVAL,
    commit_records: int = DEFAULT_COMMIT_RECORDS,
    partitioned: object = False,
) -> StreamSpec:
    """Two streams matched by key within ``within`` of event time: ``join(l, r)`` per pair."""
    check_name("join name", name)
    inputs = _two_topics(name, left, right, "the left and right")
    window = Join(within, grace=grace, idle=idle)
    split = _check_partitioned(partitioned)
    key_f = _owned(name, _check_callable("key", key, 1), split)
    right_f = key_f if right_key is None else _owned(
        name, _check_callable("right_key", right_key, 1), split
    )
    join_f = _check_callable(f"join {name!r}: the joining function", join, 2)
    interval, records = _check_commit(commit_interval, commit_records)
    declaration: dict[str, Any] = {"kind": "window", "inputs": list(inputs), "app": app,
                                   "window": window.describe(), "emit": "final"}
    if split:
        declaration["partitioned"] = True
    return StreamSpec(
        name=name,
        kind="window",
        inputs=inputs,
        types=(),
        declaration=declaration,
        make_operator=lambda: StreamJoin(name, inputs, window, key_f, right_f, join_f),
        commit_interval=interval,
        commit_records=records,
        partitioned=split,
    )


def _latest_data(current: Any, event: Any) -> Any:
    return event.data


def enrich_spec(
    app: str,
    name: str,
    stream: object,
    table: object,
    key: object,
    table_key: object,
    join: object,
    *,
    table_fold: object = None,
    commit_interval: float = DEFAULT_COMMIT_INTERVAL,
    commit_records: int = DEFAULT_COMMIT_RECORDS,
    partitioned: object = False,
) -> StreamSpec:
    """``stream``'s events joined with ``table``'s value for their key: ``join(e, value)``."""
    check_name("enrich name", name)
    inputs = _two_topics(name, stream, table, "the stream and table")
    split = _check_partitioned(partitioned)
    key_f = _owned(name, _check_callable("key", key, 1), split)
    table_key_f = _owned(name, _check_callable("table_key", table_key, 1), split)
    fold_f = _latest_data if table_fold is None else _check_callable("table_fold", table_fold, 2)
    join_f = _check_callable(f"enrich {name!r}: the joining function", join, 2)
    interval, records = _check_commit(commit_interval, commit_records)
    declaration: dict[str, Any] = {"kind": "view", "inputs": list(inputs), "app": app,
                                   "window": None, "emit": None}
    if split:
        declaration["partitioned"] = True
    return StreamSpec(
        name=name,
        kind="view",
        inputs=inputs,
        types=(),
        declaration=declaration,
        make_operator=lambda: EnrichOperator(name, inputs, key_f, table_key_f, fold_f, join_f),
        commit_interval=interval,
        commit_records=records,
        partitioned=split,
    )
