"""A plain-Python reference for window views, and a driver for the engine's operators.

The reference recomputes every window from the list of events it holds (no
incremental state, no caches) with the rules of docs/architecture.md "Windows and
watermarks" (the watermark: the greatest event time, moved on by the horizon only
across a gap of more than ``idle`` since the last record): it is slow and obvious
on purpose. A script is a list of steps:
``("rec", InputRecord)`` or ``("adv", horizon_ms)``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tidings.streams import DELETED

Step = tuple[str, Any]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = 1_796_464_800_000  # 2026-12-05T10:00:00Z


def ms_of(text: str) -> int:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (dt - EPOCH) // timedelta(milliseconds=1)


def text_of(ms: int) -> str:
    dt = EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def wid(view: str, key: str, start: str, rev: int) -> str:
    h = hashlib.blake2b(f"{view}\0{key}\0{start}\0{rev}".encode(), digest_size=16)
    return "w-" + h.hexdigest()


def lid(view: str, topic: str, partition: int, offset: int) -> str:
    h = hashlib.blake2b(f"{view}\0{topic}\0{partition}\0{offset}".encode(), digest_size=16)
    return "l-" + h.hexdigest()


# -- events ---------------------------------------------------------------------------------


def time_text(ms: int, rnd: random.Random) -> str:
    """``ms`` written the ways the hub lets through: fractions of 0-9 digits, offsets."""
    style = rnd.random()
    if style < 0.6:
        return text_of(ms)[:-1] + f"{rnd.randint(0, 999):03d}Z"  # microseconds, as the hub fills
    if style < 0.75:
        return text_of(ms)
    if style < 0.85:
        dt = EPOCH + timedelta(milliseconds=ms) + timedelta(hours=2)
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}+02:00"
    if ms % 1000 == 0:
        return text_of(ms)[:19] + "Z"
    if ms % 100 == 0:
        return text_of(ms)[:21] + "Z"
    return text_of(ms)[:23] + "9Z"  # four digits: truncated to the ms


def make_script(
    n: int, *, seed: int, keys: int = 3, spread: int = 5_000, late_every: int = 12,
    gap: int = 1_500, with_advances: bool = True, no_time: float = 0.05,
) -> list[Step]:
    """``n`` records appended ``0..gap`` ms apart; event times near the append time,
    some out of order by up to ``spread``, some far behind (late), some without ``time``,
    and ``adv`` steps between records with horizons no later than the next record."""
    rnd = random.Random(seed)
    steps: list[Step] = []
    appended = T0 + rnd.randint(0, 59_999)
    for offset in range(n):
        appended += rnd.choice((0, 0, rnd.randint(1, gap)))
        if with_advances and steps and rnd.random() < 0.25:
            last = steps[-1][1][3] if steps[-1][0] == "rec" else steps[-1][1]
            steps.append(("adv", rnd.randint(min(last, appended), appended)))
        r = rnd.random()
        if r < no_time:
            t_ms = None
        elif offset % late_every == late_every - 1:
            t_ms = appended - rnd.randint(spread, 8 * spread)
        elif r < 0.3:
            t_ms = appended - rnd.randint(0, spread)
        else:
            t_ms = appended - rnd.randint(0, 30)
        ev: dict[str, Any] = {
            "specversion": "1.0", "id": f"e{offset}", "source": "/test", "type": "t",
            "data": {"k": f"k{rnd.randrange(keys)}", "v": rnd.randint(-5, 20)},
        }
        if t_ms is not None:
            ev["time"] = time_text(t_ms, rnd)
        steps.append(("rec", (0, 0, offset, appended, ev)))
    if with_advances:
        steps.append(("adv", appended + 10 * spread))
    return steps


# -- the reference --------------------------------------------------------------------------

Fold = Callable[[list[dict[str, Any]]], Any]


def fold_of(name: str) -> Fold:
    """The reference's aggregation over a window's events (event dicts, in merged order)."""
    vs: Callable[[list[dict[str, Any]]], list[int]] = lambda evs: [e["data"]["v"] for e in evs]  # noqa: E731
    return {
        "count": lambda evs: len(evs),
        "sum": lambda evs: sum(vs(evs)),
        "min": lambda evs: min(vs(evs)) if evs else None,
        "max": lambda evs: max(vs(evs)) if evs else None,
        "mean": lambda evs: sum(vs(evs)) / len(evs) if evs else None,
        "list": lambda evs: sorted(vs(evs)),
    }[name]


@dataclass
class Expected:
    results: list[tuple[str, str, str, str, Any, bool]] = field(default_factory=list)
    late: list[tuple[str, int, str | None]] = field(default_factory=list)  # id, offset, event_time
    values: dict[str, Any] = field(default_factory=dict)


def reference(
    script: Sequence[Step], *, view: str, kind: str, size: int = 0, every: int = 0,
    gap: int = 0, grace: int, idle: int, fold: Fold, emit: str = "final",
) -> Expected:
    """What a window view must give for ``script``, recomputed from scratch."""
    out = Expected()
    wm = -(10**18)
    stream_time: int | None = None  # the greatest event time seen
    last: int | None = None  # the append time of the last record with an event time

    def quiet(horizon: int) -> None:
        """Across a gap of more than ``idle`` since the last record, event time goes on."""
        nonlocal wm
        if last is not None and stream_time is not None and horizon - last > idle:
            wm = max(wm, stream_time + (horizon - last - idle))
    held: list[tuple[int, str, dict[str, Any], int]] = []  # accepted: (t, key, event, order)
    placed: dict[int, list[int]] = {}  # order -> the fixed windows (starts) open when it came
    closed: set[tuple[str, int]] = set()  # (key, start) of windows that closed
    order = 0

    def windows_now() -> list[tuple[str, int, int, list[dict[str, Any]]]]:
        """Every window that holds an accepted event: (key, start, end, events in order)."""
        found: dict[tuple[str, int], tuple[int, list[tuple[int, dict[str, Any]]]]] = {}
        if kind in ("tumbling", "hopping"):
            for _, k, ev, o in held:
                for s in placed[o]:
                    found.setdefault((k, s), (s + size, []))[1].append((o, ev))
        elif kind == "sliding":
            for t, k, _, _ in held:
                found.setdefault((k, t - size + 1), (t + 1, []))
            for (k, s), (_, evs) in found.items():
                evs.extend((o, ev) for t2, k2, ev, o in held if k2 == k and s <= t2 < s + size)
        else:  # session
            for k in sorted({h[1] for h in held}):
                mine = sorted((t, o, ev) for t, k2, ev, o in held if k2 == k)
                group: list[tuple[int, int, dict[str, Any]]] = []
                for item in mine:
                    if group and item[0] - group[-1][0] >= gap:
                        found[(k, group[0][0])] = (group[-1][0] + gap, [g[1:] for g in group])
                        group = []
                    group.append(item)
                if group:
                    found[(k, group[0][0])] = (group[-1][0] + gap, [g[1:] for g in group])
        return [
            (k, s, end, [ev for _, ev in sorted(evs, key=lambda p: p[0])])
            for (k, s), (end, evs) in found.items()
        ]

    def result(k: str, s: int, end: int, evs: list[dict[str, Any]], rev: int) -> None:
        start = text_of(s)
        end_s, value = text_of(end), fold(evs)
        data = {"key": k, "start": start, "end": end_s, "value": value, "final": rev == 0}
        out.results.append((wid(view, k, start, rev), k, start, end_s, value, rev == 0))
        out.values[f"{k}@{start}"] = data

    def close() -> None:
        nonlocal held
        done = sorted(
            (end, s, k, evs) for k, s, end, evs in windows_now()
            if (k, s) not in closed and end + grace <= wm
        )
        for end, s, k, evs in done:
            result(k, s, end, evs, 0)
            closed.add((k, s))
        if kind == "session":  # a closed session's events leave; they join no later one
            gone = {id(ev) for _, _, _, evs in done for ev in evs}
            held = [h for h in held if id(h[2]) not in gone]

    for step, arg in script:
        if step == "adv":
            quiet(arg)
            close()
            continue
        _, partition, offset, appended, ev = arg
        quiet(appended)
        close()
        k = ev["data"]["k"]
        t = ms_of(ev["time"]) if "time" in ev else appended
        last = appended
        stream_time = t if stream_time is None else max(stream_time, t)
        wm = max(wm, stream_time)
        close()
        before = {(kk, s): (end, evs) for kk, s, end, evs in windows_now() if (kk, s) not in closed}
        if kind in ("tumbling", "hopping"):
            starts = [s for s in range(t - t % every, t - size, -every)]
            ok = any(s + size + grace > wm for s in starts)
        elif kind == "sliding":
            ok = t + 1 + grace > wm
        else:
            touches = any(
                kk == k and s - gap < t < end for (kk, s), (end, _) in before.items()
            )
            ok = touches or t + gap + grace > wm
        if not ok:
            out.late.append((lid(view, "in", partition, offset), offset, text_of(t)))
            continue
        held.append((t, k, ev, order))
        if kind in ("tumbling", "hopping"):
            placed[order] = [s for s in starts if s + size + grace > wm]
        order += 1
        if emit == "updates":
            now = {
                (kk, s): (end, evs) for kk, s, end, evs in windows_now() if (kk, s) not in closed
            }
            mine = sorted(
                (s, end, evs) for (kk, s), (end, evs) in now.items()
                if kk == k and any(e is ev for e in evs)
            )
            for s, end, evs in mine:
                result(k, s, end, evs, len(evs))
            if kind == "session":
                new_start = mine[0][0]
                for (kk, s) in before:
                    if kk == k and (kk, s) not in now and s != new_start:
                        out.values[f"{k}@{text_of(s)}"] = DELETED
    return out


# -- the engine, run whole or cut and restored ---------------------------------------------


@dataclass
class Run:
    results: list[dict[str, Any]] = field(default_factory=list)
    late: list[dict[str, Any]] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    clock: dict[str, Any] = field(default_factory=dict)

    def take(self, out: Any) -> None:
        # What the runtime does: serialize, publish, commit. JSON round trips stand in
        # for the changelog, so a restored operator gets copies, as it would.
        self.results += json.loads(json.dumps(out.results))
        self.late += json.loads(json.dumps(out.late))
        for target, changes in ((self.values, out.values), (self.state, out.state)):
            for k, v in changes.items():
                if v is DELETED:
                    target.pop(k, None)
                else:
                    target[k] = json.loads(json.dumps(v))
        self.clock = copy.deepcopy(out.clock)


def run(
    make: Callable[[], Any], script: Sequence[Step], *, cuts: Sequence[int] = (),
    drains: Sequence[int] = (), batch: bool = False,
) -> Run:
    """Feed ``script`` to operators from ``make``: at each index in ``cuts`` the operator
    is drained and thrown away, and a new one is restored from what was drained (a
    crash after a commit); at each index in ``drains`` it is only drained (a commit)."""
    got = Run()
    op = make()
    op.restore({}, {}, {})
    pending: list[Any] = []

    def flush() -> None:
        if pending:
            op.process_all(list(pending))
            pending.clear()

    for i, (step, arg) in enumerate(script):
        if i in cuts or i in drains:
            flush()
            got.take(op.drain())
            if i in cuts:
                op = make()
                op.restore(copy.deepcopy(got.values), copy.deepcopy(got.state), dict(got.clock))
        if step == "rec":
            if batch:
                pending.append(arg)
            else:
                op.process(arg)
        else:
            flush()
            op.advance(arg)
    flush()
    got.take(op.drain())
    return got


def folded(values: dict[str, Any]) -> dict[str, Any]:
    """Served values without the entries the run deleted (the reference marks them)."""
    return {k: v for k, v in values.items() if v is not DELETED}


def agg_for(name: str) -> Any:
    from tidings.streams import Aggregate, Count, Max, Mean, Min, Sum

    v: Callable[[Any], Any] = lambda e: e.data["v"]  # noqa: E731
    return {
        "count": lambda: Count(),
        "sum": lambda: Sum(v),
        "min": lambda: Min(v),
        "max": lambda: Max(v),
        "mean": lambda: Mean(v),
        "list": lambda: Aggregate(
            [], lambda s, e: [*s, e.data["v"]], result=sorted,
            merge=lambda a, b: a + b,
        ),
    }[name]()


def reduce_list(evs: list[dict[str, Any]]) -> list[int]:
    return sorted(functools.reduce(lambda s, e: [*s, e["data"]["v"]], evs, []))
