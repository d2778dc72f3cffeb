"""Log append benchmark: the embedded log beside bare ``os.write`` loops on the same disk.

Every figure is printed next to its ceiling, measured in the same run, in a
fresh directory on the same file system, with the same 256-byte
``order.placed`` CloudEvents (JSON, structured mode)::

    batched appends, one producer, for each policy (interval:5, never, always)
      ours      await log.append(batch) in a loop
      ceiling   os.write per event, with the policy's fsync cadence
      ceiling   os.write per batch (the events joined), same cadence (stricter)
    group commit, policy always, --producers tasks each awaiting one-event appends
      ours      events acknowledged per second, all producers together
      ceiling   os.write + os.fdatasync per event (fsync per record)

Fsync cadence: ``always`` is one fdatasync per batch (per event in the group
commit ceiling), ``interval:5`` is an fdatasync every 5 ms off the write path
(a task here, a thread in the ceilings), ``never`` is none. Rates count
acknowledged payload bytes (MB = 10^6 bytes), not framing.

Run it with ``tidings bench log`` or ``python bench/log_append.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import uuid_utils
import uvloop
from rich import box
from rich.console import Console
from rich.table import Table

from tidings.benchmarks.processes import scratch_dir
from tidings.errors import TidingsError
from tidings.log.config import FsyncPolicy, LogConfig
from tidings.log.partition import PartitionLog

EVENT_BYTES = 256
POLICIES = ("interval:5", "never", "always")

# Bounds on every measurement besides --seconds: the bytes one may write (which
# also bounds the disk it uses) and how long past its deadline it may take.
_MAX_BYTES = 8 << 30
_MAX_EVENTS = _MAX_BYTES // EVENT_BYTES
_GRACE_S = 60.0

_now = time.perf_counter


# -- the events -------------------------------------------------------------------------


def build_events(count: int, seed: int = 7) -> list[bytes]:
    """``count`` distinct ``order.placed`` CloudEvents, each serialized to exactly 256 bytes.

    The data is trimmed (fewer items) or padded (a longer customer id) to fit.
    See https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/formats/json-format.md
    """
    rng = random.Random(seed)
    alphabet = "abcdefghijkmnopqrstuvwxyz23456789"
    out: list[bytes] = []
    for n in range(count):
        items: list[dict[str, Any]] = [
            {"sku": f"SKU-{rng.randrange(1000, 9999)}", "qty": rng.randrange(1, 5)}
            for _ in range(rng.randrange(1, 4))
        ]
        total = f"{sum(item['qty'] for item in items) * rng.randrange(500, 5000) / 100:.2f}"
        customer = "cus_"
        event = _order_placed(n, customer, items, total)
        while len(event) > EVENT_BYTES and len(items) > 1:
            items.pop()
            event = _order_placed(n, customer, items, total)
        short = EVENT_BYTES - len(event)
        if short < 0:
            raise ValueError(f"an order.placed event is {len(event)} bytes, over {EVENT_BYTES}")
        customer += "".join(rng.choice(alphabet) for _ in range(short))
        event = _order_placed(n, customer, items, total)
        if len(event) != EVENT_BYTES:
            raise ValueError(f"an order.placed event is {len(event)} bytes, not {EVENT_BYTES}")
        out.append(event)
    return out


def _order_placed(n: int, customer: str, items: list[dict[str, Any]], total: str) -> bytes:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid_utils.uuid7()),
            "source": "/shop/orders",
            "type": "order.placed",
            "time": now,
            "data": {
                "order_id": f"ord_{n:08d}",
                "customer": customer,
                "items": items,
                "total": total,
            },
        }
    )


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rate:
    """Events acknowledged (or written, for a ceiling) over wall-clock seconds."""

    events: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.per_s * EVENT_BYTES / 1e6

    @property
    def capped(self) -> bool:
        """Stopped on the byte bound before its deadline."""
        return self.events >= _MAX_EVENTS


@dataclass(frozen=True, slots=True)
class Ceiling:
    name: str
    rate: Rate


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    policy: str
    ours: Rate
    ceilings: tuple[Ceiling, ...]


@dataclass(frozen=True, slots=True)
class Options:
    seconds: float
    batch: int
    producers: int
    json: bool
    data_dir: Path | None


# -- ours: the partition log ------------------------------------------------------------


class _IntervalFlusher:
    """What the hub does under ``interval:<ms>``: fsync a dirty log every interval."""

    def __init__(self, log: PartitionLog, interval_s: float) -> None:
        self._log = log
        self._interval_s = interval_s
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._interval_s)
            if self._log.dirty:
                await self._log.sync_in_thread()

    async def stop(self) -> None:
        # Let a running fsync finish rather than cancel it: the log closes its files next.
        self._stopping = True
        await self._task


async def _ours_batched(
    directory: Path, policy: FsyncPolicy, batch: Sequence[bytes], seconds: float
) -> Rate:
    log = PartitionLog.open(directory, LogConfig(), policy)
    flusher = (
        _IntervalFlusher(log, policy.interval_ms / 1000) if policy.mode == "interval" else None
    )
    events = 0
    try:
        start = _now()
        deadline = start + seconds
        while events < _MAX_EVENTS and _now() < deadline:
            await log.append(batch)
            events += len(batch)
        elapsed = _now() - start
    finally:
        if flusher is not None:
            await flusher.stop()
        await log.close()
    return Rate(events, elapsed)


async def _ours_group_commit(
    directory: Path, pool: Sequence[bytes], producers: int, seconds: float
) -> Rate:
    log = PartitionLog.open(directory, LogConfig(), FsyncPolicy("always"))
    events = 0

    async def produce(payloads: list[bytes]) -> None:
        nonlocal events
        while events < _MAX_EVENTS and _now() < deadline:
            await log.append(payloads)
            events += 1

    start = _now()
    deadline = start + seconds
    try:
        await asyncio.gather(*(produce([pool[i % len(pool)]]) for i in range(producers)))
        elapsed = _now() - start
    finally:
        await log.close()
    return Rate(events, elapsed)


# -- ceilings: bare loops of os.write ---------------------------------------------------


class _ThreadFlusher:
    """An fdatasync every interval, off the write path, as the log's flusher does."""

    def __init__(self, fd: int, interval_s: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fd, interval_s), daemon=True)
        self._thread.start()

    def _run(self, fd: int, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            os.fdatasync(fd)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def _open_like_segment(path: Path, policy: FsyncPolicy) -> Iterator[int]:
    """A file opened as a segment's ``.log`` is, with the policy's interval flusher if any."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    flusher = _ThreadFlusher(fd, policy.interval_ms / 1000) if policy.mode == "interval" else None
    try:
        yield fd
    finally:
        if flusher is not None:
            flusher.stop()
        # Outside the timing, as the log's close is: the next measurement starts clean.
        os.fdatasync(fd)
        os.close(fd)


def _ceiling_per_event(
    path: Path, policy: FsyncPolicy, batch: Sequence[bytes], seconds: float
) -> Rate:
    """One os.write per event; under ``always`` an fdatasync after each --batch events."""
    write, fdatasync = os.write, os.fdatasync
    always = policy.mode == "always"
    events = 0
    with _open_like_segment(path, policy) as fd:
        start = _now()
        deadline = start + seconds
        while events < _MAX_EVENTS and _now() < deadline:
            for event in batch:
                write(fd, event)
            if always:
                fdatasync(fd)
            events += len(batch)
        elapsed = _now() - start
    return Rate(events, elapsed)


def _ceiling_per_batch(
    path: Path, policy: FsyncPolicy, batch: Sequence[bytes], seconds: float
) -> Rate:
    """The events of a batch joined (as any log must) and written in one os.write."""
    write, fdatasync, join = os.write, os.fdatasync, b"".join
    always = policy.mode == "always"
    events = 0
    with _open_like_segment(path, policy) as fd:
        start = _now()
        deadline = start + seconds
        while events < _MAX_EVENTS and _now() < deadline:
            write(fd, join(batch))
            if always:
                fdatasync(fd)
            events += len(batch)
        elapsed = _now() - start
    return Rate(events, elapsed)


def _ceiling_fsync_per_event(path: Path, event: bytes, seconds: float) -> Rate:
    """What an append acknowledged after its own fsync can do: the group commit baseline."""
    write, fdatasync = os.write, os.fdatasync
    events = 0
    with _open_like_segment(path, FsyncPolicy("always")) as fd:
        start = _now()
        deadline = start + seconds
        while events < _MAX_EVENTS and _now() < deadline:
            write(fd, event)
            fdatasync(fd)
            events += 1
        elapsed = _now() - start
    return Rate(events, elapsed)


# -- the run ----------------------------------------------------------------------------


@contextmanager
def _scratch(root: Path, name: str) -> Iterator[Path]:
    """A fresh directory for one measurement, removed after it."""
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _bounded(measurement: Coroutine[Any, Any, Rate], seconds: float) -> Rate:
    async with asyncio.timeout(seconds + _GRACE_S):
        return await measurement


async def run_cases(opts: Options, root: Path, progress: Console) -> list[Case]:
    """Measure every case in order, each beside its ceilings; ``root`` must exist."""
    pool = build_events(max(opts.batch, opts.producers))
    batch = pool[: opts.batch]
    secs = opts.seconds
    cases: list[Case] = []

    for text in POLICIES:
        policy = FsyncPolicy.parse(text)
        name = f"{text}, batch {opts.batch}"
        progress.log(f"{name}: ours")
        with _scratch(root, "log") as d:
            ours = await _bounded(_ours_batched(d, policy, batch, secs), secs)
        progress.log(f"{name}: ceiling, os.write per event")
        with _scratch(root, "ceiling") as d:
            per_event = _ceiling_per_event(d / "bare.log", policy, batch, secs)
        progress.log(f"{name}: ceiling, os.write per batch")
        with _scratch(root, "ceiling") as d:
            per_batch = _ceiling_per_batch(d / "bare.log", policy, batch, secs)
        ceilings = (Ceiling("write/event", per_event), Ceiling("write/batch", per_batch))
        cases.append(Case(name, text, ours, ceilings))

    name = f"always, {opts.producers} producers"
    progress.log(f"{name}: ours")
    with _scratch(root, "log") as d:
        ours = await _bounded(_ours_group_commit(d, pool, opts.producers, secs), secs)
    progress.log(f"{name}: ceiling, os.write + fdatasync per event")
    with _scratch(root, "ceiling") as d:
        fsync_each = _ceiling_fsync_per_event(d / "bare.log", pool[0], secs)
    cases.append(Case(name, "always", ours, (Ceiling("write+fsync", fsync_each),)))
    return cases


# -- output -----------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    return {
        "cpus": _cpus(),
        "python": sys.version.split()[0],
        "loop": f"uvloop {metadata.version('uvloop')}",
    }


def _cpus() -> int | None:
    """The CPUs this process may run on, as ``nproc`` counts them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def to_json(opts: Options, cases: Sequence[Case]) -> dict[str, Any]:
    return {
        "benchmark": "log_append",
        "event_bytes": EVENT_BYTES,
        "seconds": opts.seconds,
        "batch": opts.batch,
        "producers": opts.producers,
        "machine": _machine(),
        "cases": [
            {
                "case": c.name,
                "policy": c.policy,
                "ours": _rate_json(c.ours),
                "ceilings": [
                    {"ceiling": x.name, **_rate_json(x.rate), "ratio": _ratio(c.ours, x.rate)}
                    for x in c.ceilings
                ],
            }
            for c in cases
        ],
    }


def _rate_json(rate: Rate) -> dict[str, Any]:
    return {
        "events": rate.events,
        "seconds": round(rate.seconds, 4),
        "events_per_s": round(rate.per_s, 1),
        "mb_per_s": round(rate.mb_per_s, 2),
        "capped": rate.capped,
    }


def _ratio(ours: Rate, ceiling: Rate) -> float:
    return round(ours.per_s / ceiling.per_s, 3) if ceiling.per_s > 0 else 0.0


def to_table(opts: Options, cases: Sequence[Case]) -> Table:
    m = _machine()
    table = Table(
        title=(
            f"log append: {EVENT_BYTES}-byte order.placed CloudEvents, {opts.seconds:g} s per "
            f"figure, {m['cpus']} CPUs, {m['loop']}, Python {m['python']}"
        ),
        caption=(
            f"batch N: one producer awaiting appends of N events. {opts.producers} producers: "
            "each awaits its own 1-event appends (group commit). Ceilings: bare os.write loops "
            "on the same disk, right after ours, with the case's fsync cadence (always: an "
            "fdatasync per batch, and per event for write+fsync; interval:5: an fdatasync every "
            "5 ms in a thread; never: none). ratio = ours / ceiling. MB = 10^6 payload bytes."
        ),
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("case")
    table.add_column("ours ev/s", justify="right", no_wrap=True)
    table.add_column("MB/s", justify="right", no_wrap=True)
    table.add_column("ceiling")
    table.add_column("ceiling ev/s", justify="right", no_wrap=True)
    table.add_column("ratio", justify="right", no_wrap=True)
    for c in cases:
        for i, x in enumerate(c.ceilings):
            first = i == 0
            table.add_row(
                c.name if first else "",
                _events_per_s(c.ours) if first else "",
                f"{c.ours.mb_per_s:,.1f}" if first else "",
                x.name,
                _events_per_s(x.rate),
                f"{_ratio(c.ours, x.rate):.2f}x",
            )
        table.add_section()
    if any(c.ours.capped or any(x.rate.capped for x in c.ceilings) for c in cases):
        table.caption = f"{table.caption} *: stopped at the {_MAX_BYTES >> 30} GiB bound."
    return table


def _events_per_s(rate: Rate) -> str:
    return f"{rate.per_s:,.0f}{'*' if rate.capped else ''}"


# -- command line -----------------------------------------------------------------------


def _positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not above 0")
        return value

    return parse


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="tidings bench log",
        description="Append throughput of the event log, beside bare os.write ceilings "
        "measured in the same run on the same disk.",
    )
    parser.add_argument(
        "--seconds",
        type=_positive(float),
        default=3.0,
        help="length of each measurement (default 3)",
    )
    parser.add_argument(
        "--batch",
        type=_positive(int),
        default=1000,
        help="events per append in the batched cases (default 1000)",
    )
    parser.add_argument(
        "--producers",
        type=_positive(int),
        default=100,
        help="concurrent one-event appenders for group commit (default 100)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where to write: a fresh directory is made inside it and removed "
        "after (default: one in the system temp dir)",
    )
    ns = parser.parse_args(argv)
    return Options(ns.seconds, ns.batch, ns.producers, ns.json, ns.data_dir)


def main(argv: list[str] | None = None) -> int:
    """Run the log append benchmark; returns the process exit status."""
    try:
        opts = parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else 2
    err = Console(stderr=True, log_path=False)
    try:
        root = scratch_dir("tidings-bench-", opts.data_dir)
    except OSError as exc:
        err.print(f"cannot make a data directory: {exc}")
        return 1
    try:
        err.log(f"writing in {root}")
        cases = uvloop.run(run_cases(opts, root, err))
    except (OSError, TidingsError, TimeoutError) as exc:
        err.print(f"log append benchmark failed: {exc!r}")
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if opts.json:
        sys.stdout.write(orjson.dumps(to_json(opts, cases), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        Console().print(to_table(opts, cases))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
