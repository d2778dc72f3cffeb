"""The anchor of the streams benchmark: the same tumbling count per key, through Bytewax.

Run as a process of its own (``python -m tidings.benchmarks.streams_bytewax
EVENTS.jsonl OUT.json --size-ms --grace-ms``) so that its peak memory is its
own. The dataflow, one worker (``bytewax.testing.run_main``)::

    FileSource(EVENTS.jsonl, batch_size=1000)     lines, in batches of 1000
    map: orjson.loads                             the CloudEvent as a dict
    count_window(key=partitionkey,
                 EventClock(time, wait_for_system_duration=grace,
                            now_getter=<a constant>, to_system_utc=<None>),
                 TumblingWindower(size, align_to=the epoch))

The clock: Bytewax's ``EventClock`` watermark is the largest event time seen
(per key: the window operator keeps a clock for each key), minus
``wait_for_system_duration``, PLUS the system time passed since that event was
seen; its default ``now_getter`` is the wall clock, so how fast the dataflow
runs moves the watermark and the results. With ``now_getter`` a constant that
term is always zero and the watermark is ``max event time - grace``: the same
results on every run. ``to_system_utc`` answering None keeps the runtime from
waking on the wall clock to close windows; they close on later items and at the
end of the input (where Bytewax closes every window).

An item is late in Bytewax when its time is below that watermark (``late``
stream); windows close once the watermark reaches their end.

It writes one JSON object to OUT.json: ``events``, ``seconds`` (from the
dataflow's start to its end, the input read and decoded inside it),
``peak_rss_kib`` (the process's resident-set high-water mark, ``VmHWM``),
``windows`` (``[[key, start_ms, count], ...]``), ``late`` and ``bytewax`` (its
version).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from bytewax import operators as op
from bytewax.connectors.files import FileSource
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import EventClock, TumblingWindower, count_window
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from tidings.benchmarks.processes import peak_rss_kib

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STILL = datetime(2000, 1, 1, tzinfo=UTC)  # the constant "system time" of the clock


class _Partition(StatelessSinkPartition[Any]):
    def __init__(self, write: Callable[[list[Any]], None]) -> None:
        self._write = write

    def write_batch(self, items: list[Any]) -> None:
        self._write(items)


class _Collect(DynamicSink[Any]):
    """Hands each batch of output items to ``write`` (one worker: no locking)."""

    def __init__(self, write: Callable[[list[Any]], None]) -> None:
        self._write = write

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self._write)


def _still() -> datetime:
    return _STILL


def _no_wake_up(_: datetime) -> datetime | None:
    return None


def _event_time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["time"])


def _key(event: dict[str, Any]) -> str:
    key: str = event["partitionkey"]
    return key


def run(path: Path, size_ms: int, grace_ms: int, wall_clock: bool = False) -> dict[str, Any]:
    """The dataflow of the module's docstring over ``path``; the figures and results.

    ``wall_clock``: Bytewax's default clock instead (``now_getter`` the system time,
    windows woken on it), to show what it does to the results."""
    size = timedelta(milliseconds=size_ms)
    windows: list[list[Any]] = []
    late = [0]

    def results(items: list[Any]) -> None:
        for key, (window_id, count) in items:
            windows.append([key, window_id * size_ms, count])

    def lates(items: list[Any]) -> None:
        late[0] += len(items)

    flow = Dataflow("tidings_bench_streams")
    lines = op.input("read", flow, FileSource(path, batch_size=1000))
    events = op.map("decode", lines, orjson.loads)
    wait = timedelta(milliseconds=grace_ms)
    clock: EventClock[dict[str, Any]] = (
        EventClock(_event_time, wait_for_system_duration=wait)
        if wall_clock
        else EventClock(
            _event_time, wait_for_system_duration=wait, now_getter=_still, to_system_utc=_no_wake_up
        )
    )
    out = count_window("count", events, clock, TumblingWindower(length=size, align_to=_EPOCH), _key)
    op.output("results", out.down, _Collect(results))
    op.output("late", out.late, _Collect(lates))
    start, cpu = time.perf_counter(), time.process_time()
    run_main(flow)  # type: ignore[no-untyped-call]  # its stub has no annotations
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "events": sum(c for _, _, c in windows) + late[0],
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_kib": peak_rss_kib(),
        "windows": windows,
        "late": late[0],
        "bytewax": importlib.metadata.version("bytewax"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("events", type=Path, help="the events, one JSON object a line")
    p.add_argument("out", type=Path, help="where the JSON result is written")
    p.add_argument("--size-ms", type=int, required=True, help="the tumbling window's size")
    p.add_argument("--grace-ms", type=int, required=True, help="the grace for late events")
    p.add_argument(
        "--wall-clock",
        action="store_true",
        help="Bytewax's default event clock (not deterministic)",
    )
    opts = p.parse_args(argv)
    if opts.size_ms < 1 or opts.grace_ms < 0:
        p.error("--size-ms must be at least 1 and --grace-ms at least 0")
    if not opts.events.is_file():
        p.error(f"no events file at {opts.events}")
    result = run(opts.events, opts.size_ms, opts.grace_ms, opts.wall_clock)
    opts.out.write_bytes(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
