"""The events of the streams benchmark, and the plain-Python reference they are judged by.

The generator is deterministic: the same ``Workload`` gives the same events,
byte for byte. Event ``i`` (of ``events``) has the stream time ``base_ms + i *
step_ms``; its ``partitionkey`` is one of ``keys`` keys, drawn from a
``random.Random(seed)``, and most events carry exactly that time (rising). The
rest, drawn from the same generator:

- out of order (``out_of_order``, 2% by default): up to ``grace - 1`` ms before
  the stream time, so inside the grace: never late;
- late (``late``, 0.1% by default): ``grace + size`` to ``grace + 2 * size`` ms
  before the time of the last in-order event, so its window closed before that
  event came. It takes that event's key too: it is late whether the watermark
  is kept over the whole stream (the design's) or per key (Bytewax's), so both
  engines must agree on it. No event is late before the stream has run
  ``grace + 2 * size`` ms.
- the last event: ``size + grace`` ms after the one before it, so that its stream
  time closes every other window; its own window stays open.

The reference (:func:`reference`) is a tumbling count per key in the design's
semantics (streams spec, section 2): the watermark is the largest event time
seen so far, a window ``[start, end)`` closes once the watermark reaches ``end +
grace``, and an event whose window has closed is late: counted as late, not in
the window. Its results are ``{(key, window_start_ms): count}``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

TOPIC = "bench.sales"
EVENT_TYPE = "sale.recorded"
SOURCE = "/bench/shop"
BATCH = 1000

WindowKey = tuple[str, int]  # (key, window start in ms since the epoch)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Workload:
    """What to generate: every field takes part in the events' bytes."""

    events: int = 1_000_000
    keys: int = 1000
    seed: int = 16
    base_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z: in the past, as a backfill
    step_ms: int = 1
    size_ms: int = 60_000
    grace_ms: int = 10_000
    out_of_order: float = 0.02
    late: float = 0.001

    def __post_init__(self) -> None:
        if not 2 <= self.events <= 100_000_000:
            raise ValueError(f"events must be from 2 to 100000000, not {self.events}")
        if not 1 <= self.keys <= 1_000_000:
            raise ValueError(f"keys must be from 1 to 1000000, not {self.keys}")
        if self.base_ms % self.size_ms:
            raise ValueError("base_ms must be a multiple of size_ms (windows align to the epoch)")
        if self.step_ms < 1 or self.size_ms < 1:
            raise ValueError("step_ms and size_ms must be at least 1")
        if not 2 <= self.grace_ms < self.size_ms:
            raise ValueError("grace_ms must be from 2 ms to less than size_ms")
        if min(self.out_of_order, self.late) < 0 or self.out_of_order + self.late > 0.5:
            raise ValueError("out_of_order and late are fractions, together at most 0.5")

    def key(self, i: int) -> str:
        return f"sku-{i:04d}"


@dataclass(slots=True)
class Generated:
    """How many events of each kind a generation made (it counts as it goes)."""

    events: int = 0
    out_of_order: int = 0
    late: int = 0
    first_ms: int = 0
    last_ms: int = 0


def rfc3339_ms(ms: int) -> str:
    """``ms`` since the epoch as RFC 3339 UTC with milliseconds: ``2026-01-01T00:00:00.000Z``."""
    seconds, milli = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{milli:03d}Z"


def parse_ms(value: str) -> int:
    """An RFC 3339 time as whole ms since the epoch (exact: no float on the way)."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"time {value!r} has no offset")
    return (moment - _EPOCH) // _MS


def generate(w: Workload, counts: Generated | None = None) -> Iterator[list[dict[str, Any]]]:
    """The events in batches of :data:`BATCH`, in publish order (see the module's docstring)."""
    rng = random.Random(w.seed)
    late_from = w.base_ms + w.grace_ms + 2 * w.size_ms
    # No event can be late before late_from: the rest are late a little more often,
    # so that ``late`` is the share of all the events.
    eligible = w.events - min(w.events - 1, (late_from - w.base_ms) // w.step_ms)
    p_late = min(w.late * w.events / eligible, 0.5 - w.out_of_order)
    keys = [w.key(i) for i in range(w.keys)]
    last_key, last_ms = keys[0], w.base_ms  # of the last in-order event
    counts = counts if counts is not None else Generated()
    counts.first_ms = w.base_ms
    batch: list[dict[str, Any]] = []
    stream_ms = w.base_ms
    for i in range(w.events):
        if i == w.events - 1:  # the closer: see the module's docstring
            stream_ms += w.size_ms + w.grace_ms
            t, key = stream_ms, keys[0]
        else:
            stream_ms = w.base_ms + i * w.step_ms
            r = rng.random()
            if r < p_late and last_ms >= late_from:
                t = last_ms - w.grace_ms - w.size_ms - rng.randrange(w.size_ms)
                key = last_key
                counts.late += 1
            elif p_late <= r < p_late + w.out_of_order and i > 0:
                t = stream_ms - rng.randrange(1, w.grace_ms)
                key = keys[rng.randrange(w.keys)]
                counts.out_of_order += 1
            else:
                t = last_ms = stream_ms
                key = last_key = keys[rng.randrange(w.keys)]
        batch.append({
            "specversion": "1.0",
            "type": EVENT_TYPE,
            "source": SOURCE,
            "time": rfc3339_ms(t),
            "partitionkey": key,
            "data": {"qty": 1 + i % 5},
        })  # fmt: skip
        counts.events += 1
        if len(batch) == BATCH:
            yield batch
            batch = []
    counts.last_ms = stream_ms
    if batch:
        yield batch


def write_jsonl(w: Workload, path: Path) -> Generated:
    """Write the events to ``path``, one JSON object a line; the counts of each kind."""
    counts = Generated()
    with path.open("wb") as f:
        for batch in generate(w, counts):
            f.write(b"".join(orjson.dumps(e) + b"\n" for e in batch))
    return counts


def read_jsonl(path: Path, batch: int = BATCH) -> Iterator[list[dict[str, Any]]]:
    """The events of a file :func:`write_jsonl` wrote, decoded, in batches."""
    with path.open("rb") as f:
        out: list[dict[str, Any]] = []
        for line in f:
            out.append(orjson.loads(line))
            if len(out) == batch:
                yield out
                out = []
        if out:
            yield out


@dataclass(slots=True)
class Reference:
    """The tumbling count per key: every window's count, which are closed, the late events."""

    counts: dict[WindowKey, int] = field(default_factory=dict)
    late: int = 0
    watermark_ms: int | None = None
    size_ms: int = 60_000
    grace_ms: int = 0

    def closed(self) -> dict[WindowKey, int]:
        """The windows the watermark closed by the end of the stream (final counts)."""
        wm = self.watermark_ms
        if wm is None:
            return {}
        edge = wm - self.grace_ms - self.size_ms  # closed: start + size + grace <= wm
        return {k: v for k, v in self.counts.items() if k[1] <= edge}

    def still_open(self) -> dict[WindowKey, int]:
        closed = self.closed()
        return {k: v for k, v in self.counts.items() if k not in closed}


def reference(batches: Iterable[list[dict[str, Any]]], size_ms: int, grace_ms: int) -> Reference:
    """The tumbling count per ``partitionkey`` on the event ``time`` of ``batches``, in
    the order given (the rules are in the module's docstring)."""
    ref = Reference(size_ms=size_ms, grace_ms=grace_ms)
    counts = ref.counts
    wm: int | None = None
    late = 0
    for batch in batches:
        for event in batch:
            t = parse_ms(event["time"])
            start = t - t % size_ms
            if wm is not None and wm >= start + size_ms + grace_ms:
                late += 1
                continue
            k = (event["partitionkey"], start)
            counts[k] = counts.get(k, 0) + 1
            if wm is None or t > wm:
                wm = t
    ref.watermark_ms = wm
    ref.late = late
    return ref


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an engine's windows equal the reference's, and how they differ if not."""

    equal: bool
    windows: int
    detail: str


def compare(got: dict[WindowKey, int], want: dict[WindowKey, int], examples: int = 3) -> Verdict:
    """``got`` against ``want``: equal, or the missing, extra and differing windows."""
    if got == want:
        return Verdict(True, len(got), f"all {len(want):,} windows equal")
    missing = sorted(want.keys() - got.keys())
    extra = sorted(got.keys() - want.keys())
    differ = sorted(k for k in want.keys() & got.keys() if want[k] != got[k])
    parts = []
    if missing:
        parts.append(f"{len(missing):,} missing (e.g. {_show(missing[:examples], want)})")
    if extra:
        parts.append(f"{len(extra):,} extra (e.g. {_show(extra[:examples], got)})")
    if differ:
        shown = ", ".join(
            f"{k}@{rfc3339_ms(s)}: {got[(k, s)]} not {want[(k, s)]}" for k, s in differ[:examples]
        )
        more = sum(got[k] - want[k] for k in differ)
        parts.append(f"{len(differ):,} with other counts ({more:+,} events in all; e.g. {shown})")
    return Verdict(False, len(got), f"of {len(want):,} windows: " + "; ".join(parts))


def _show(keys: list[WindowKey], counts: dict[WindowKey, int]) -> str:
    return ", ".join(f"{k}@{rfc3339_ms(s)} = {counts[(k, s)]}" for k, s in keys)


def windows_from_json(rows: Iterable[list[Any]]) -> dict[WindowKey, int]:
    """``[[key, start_ms, count], ...]`` (how the runners hand results back) as a dict."""
    out: dict[WindowKey, int] = {}
    for key, start, count in rows:
        k = (str(key), int(start))
        if out.get(k, count) != count:
            raise ValueError(f"window {k} reported twice, as {out[k]} and as {count}")
        out[k] = int(count)
    return out


def windows_to_json(windows: dict[WindowKey, int]) -> list[list[Any]]:
    return [[k, s, c] for (k, s), c in sorted(windows.items())]


def main(argv: list[str] | None = None) -> int:
    """``python -m tidings.benchmarks.streams_events EVENTS.jsonl OUT.json --size-ms --grace-ms``:
    the reference over a file, timed in a process of its own, as the engines are."""
    import argparse

    from tidings.benchmarks.processes import peak_rss_kib

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("events", type=Path, help="the events, one JSON object a line")
    p.add_argument("out", type=Path, help="where the JSON result is written")
    p.add_argument("--size-ms", type=int, required=True, help="the tumbling window's size")
    p.add_argument("--grace-ms", type=int, required=True, help="the grace for late events")
    opts = p.parse_args(argv)
    if opts.size_ms < 1 or opts.grace_ms < 0:
        p.error("--size-ms must be at least 1 and --grace-ms at least 0")
    if not opts.events.is_file():
        p.error(f"no events file at {opts.events}")
    start, cpu = time.perf_counter(), time.process_time()
    ref = reference(read_jsonl(opts.events), opts.size_ms, opts.grace_ms)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    result = {
        "events": sum(ref.counts.values()) + ref.late,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_kib": peak_rss_kib(),
        "windows": windows_to_json(ref.counts),
        "closed": windows_to_json(ref.closed()),
        "late": ref.late,
        "watermark_ms": ref.watermark_ms,
    }
    opts.out.write_bytes(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
