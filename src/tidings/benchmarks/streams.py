"""Streams benchmark: a 1-minute tumbling count per key, ours beside Bytewax, same events.

One run::

    1. events     --events CloudEvents (default 1,000,000) from a seeded generator
                  (tidings.benchmarks.streams_events): 1000 keys, event times rising,
                  2% out of order inside the grace, 0.1% beyond it (late), written to
                  a JSON-lines file in the scratch directory
    2. publish    for each of --hubs, the events published to a new data directory,
                  1000 a batch, to a topic of one partition:
                  embedded   through the hub's core in this process
                  serve      to a `tidings serve` process, stopped afterwards
    3. ceiling    the plain-Python reference over the file (decode, count): what a
                  loop with no framework, no I/O and no checkpoints does
    4. anchor     Bytewax over the same file, 1000 lines a batch, its event-time
                  tumbling window on a constant-now clock (deterministic; see
                  tidings.benchmarks.streams_bytewax)
    5. settle     wait until --settle seconds (default 125) have passed since the
                  publishes: past the hub's dedupe window, which a restarted hub
                  would otherwise refill from the log (a restart's cost, not a replay's)
    6. ours       for each of --hubs, the events read from earliest and windowed
                  (see tidings.benchmarks.streams_ours for what runs and what is
                  timed): embedded:DIR in the measuring process, or a `tidings serve`
                  process started anew on the directory, the App in another process
    7. anchor     Bytewax once more: ours is judged against its two runs together,
                  on either side of ours (the machine's load moves meanwhile)

Each engine runs in a process of its own that times itself and reports its
resident-set high-water mark (``VmHWM`` from /proc/self/status; for the serve
case also the hub process's, read from /proc/PID/status). Each engine's windows are
checked against the reference: Bytewax closes every window at the end of its
input, so all of them; ours closes a window when the watermark passes its end
plus the grace, so the closed ones (every window but the last event's, which
the pause after the stream may close too, then judged as well). The
late events are counted against the reference's too.

Run it with ``tidings bench streams`` or ``python -m tidings.benchmarks.streams``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvloop
from rich import box
from rich.console import Console
from rich.table import Table

from tidings.benchmarks import streams_ours
from tidings.benchmarks.processes import (
    BenchmarkFailed,
    free_port,
    peak_rss_kib,
    run_process,
    scratch_dir,
    server_process,
)
from tidings.benchmarks.streams_events import (
    Generated,
    Reference,
    Verdict,
    Workload,
    compare,
    windows_from_json,
    write_jsonl,
)
from tidings.core.hub import HubOptions
from tidings.errors import TidingsError

HUBS = ("embedded", "serve")
DEDUPE_S = HubOptions().dedupe_window_ms / 1000
_RUN_S = 1800.0  # no engine may take longer over the events


@dataclass(slots=True)
class Case:
    """One engine's run over the events, and how its results compare with the reference."""

    name: str
    kind: str  # "ceiling", "anchor" or "ours"
    events: int = 0
    seconds: float = 0.0
    peak_rss_kib: int = 0
    other_rss: dict[str, int] = field(default_factory=dict)  # other processes it needs
    cpu_seconds: float = 0.0  # of its process (every thread) over the timed part
    other_cpu: dict[str, float] = field(default_factory=dict)  # other processes, meanwhile
    late: int = 0
    against: str = ""  # which of the reference's windows it is compared with
    verdict: Verdict | None = None
    late_ok: bool | None = None
    detail: str = ""
    skipped: str | None = None

    @property
    def per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_total(self) -> float:
        """CPU seconds of every process it took."""
        return self.cpu_seconds + sum(self.other_cpu.values())


def _child(name: str, module: str, args: list[str], root: Path) -> dict[str, Any]:
    """Run ``python -m module args... OUT`` and read the JSON it writes to OUT."""
    out = root / f"{name}.json"
    run_process(name, [sys.executable, "-m", module, *args, str(out)], root, _RUN_S)
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    return result


def _judge(case: Case, result: dict[str, Any], want: dict[Any, int], ref: Reference) -> Case:
    case.events = int(result["events"])
    case.seconds = float(result["seconds"])
    case.peak_rss_kib = int(result["peak_rss_kib"])
    case.cpu_seconds = float(result.get("cpu_seconds", 0.0))
    case.late = int(result["late"])
    case.verdict = compare(windows_from_json(result["windows"]), want)
    case.late_ok = case.late == ref.late
    case.detail = str(result.get("detail", ""))
    return case


def _ours_want(result: dict[str, Any], ref: Reference) -> dict[Any, int]:
    """What ours must have published: every window the events close, and any window
    still open at the end of the events that it closed too, with the reference's count.

    Ours also moves event time on by the hub's clock across a pause longer than
    ``idle`` (``docs/architecture.md``, "Windows and watermarks"); the replay runs
    minutes after the publishes, so the last event's window may close as well,
    once the stream has been quiet long enough, and then its count must be right.
    """
    got = windows_from_json(result["windows"])
    want = dict(ref.closed())
    want.update({k: v for k, v in ref.still_open().items() if k in got})
    return want


def _ceiling(events: Path, w: Workload, root: Path) -> tuple[Case, Reference]:
    """The reference, in a process of its own; it is also what the others are judged by."""
    args = [str(events), "--size-ms", str(w.size_ms), "--grace-ms", str(w.grace_ms)]
    result = _child("reference", "tidings.benchmarks.streams_events", args, root)
    ref = Reference(
        counts=windows_from_json(result["windows"]),
        late=int(result["late"]),
        watermark_ms=result["watermark_ms"],
        size_ms=w.size_ms,
        grace_ms=w.grace_ms,
    )
    case = Case("plain Python loop (the reference)", "ceiling", against="itself")
    return _judge(case, result, ref.counts, ref), ref


def _anchor(events: Path, w: Workload, root: Path, ref: Reference, wall: bool = False) -> Case:
    clock = "wall-clock" if wall else "constant-now"
    case = Case(
        f"Bytewax, {clock} event clock", "anchor", against="all windows (it closes all at EOF)"
    )
    if importlib.util.find_spec("bytewax") is None:
        case.skipped = "bytewax is not installed (pip install -e '.[bench]')"
        return case
    args = [str(events), "--size-ms", str(w.size_ms), "--grace-ms", str(w.grace_ms)]
    args += ["--wall-clock"] if wall else []
    result = _child(f"bytewax-{clock}", "tidings.benchmarks.streams_bytewax", args, root)
    case.name = f"Bytewax {result['bytewax']}, {clock} event clock, batches of 1000"
    return _judge(case, result, ref.counts, ref)


def _ours_args(opts: argparse.Namespace, w: Workload, ref: Reference) -> list[str]:
    return [
        "--mode", opts.mode, "--events", str(w.events), "--windows", str(len(ref.closed())),
        "--size-ms", str(w.size_ms), "--grace-ms", str(w.grace_ms),
        "--commit-interval", str(opts.commit_interval),
    ]  # fmt: skip


def _serve_argv(data: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "tidings", "serve", "--port", str(port), "--data-dir", str(data),
            "--fsync", "interval:5", "--log-level", "warning"]  # fmt: skip


async def _publish(hub: str, events: Path, w: Workload, root: Path, err: Console) -> Path:
    """The events into a new data directory, through an embedded hub or a served one."""
    data = root / hub
    t0 = time.perf_counter()
    if hub == "embedded":
        await streams_ours.publish_embedded(data, events)
    else:
        port = free_port()
        with server_process("hub-publish", _serve_argv(data, port), port, root) as (url, _):
            await streams_ours.publish_http(url, events)
    err.log(f"{hub}: published {w.events:,} events in {time.perf_counter() - t0:.1f} s")
    return data


async def _replay(
    hub: str, data: Path, opts: argparse.Namespace, w: Workload, root: Path, ref: Reference
) -> Case:
    case = Case(streams_ours.describe(opts.mode, hub), "ours", against="closed windows")
    args = _ours_args(opts, w, ref)
    if hub == "embedded":
        result = _child("ours-embedded", "tidings.benchmarks.streams_ours",
                        ["--hub", f"embedded:{data}", *args], root)  # fmt: skip
        return _judge(case, result, _ours_want(result, ref), ref)
    port = free_port()
    # A hub started anew: its high-water mark is the replay's, not the publish's.
    with server_process("hub-replay", _serve_argv(data, port), port, root) as (url, pid):
        await streams_ours.ready(url)
        ready_kib = peak_rss_kib(pid)
        hub_cpu = cpu_seconds(pid)
        result = _child(
            "ours-serve", "tidings.benchmarks.streams_ours", ["--hub", url, *args], root
        )
        # From the App's start to its end and beyond (reading the results back): an
        # upper bound of the hub's part in the replay.
        case.other_cpu["hub process"] = cpu_seconds(pid) - hub_cpu
        case.other_rss["hub process"] = peak_rss_kib(pid)
    case = _judge(case, result, _ours_want(result, ref), ref)
    case.detail += f"; the hub process's high-water mark once ready: {ready_kib / 1024:,.0f} MB"
    return case


async def run(opts: argparse.Namespace, root: Path, err: Console) -> dict[str, Any]:
    w = opts.workload
    events = root / "events.jsonl"
    t0 = time.perf_counter()
    counts: Generated = write_jsonl(w, events)
    err.log(
        f"generated {counts.events:,} events ({counts.out_of_order:,} out of order, "
        f"{counts.late:,} late) in {time.perf_counter() - t0:.1f} s"
    )
    ours: list[tuple[str, Path | None, str | None]] = []  # hub, data dir, why skipped
    for hub in opts.hubs:
        why = streams_ours.missing(opts.mode, http=hub == "serve")
        ours.append((hub, None if why else await _publish(hub, events, w, root, err), why))
    published = time.perf_counter()
    ceiling, ref = _ceiling(events, w, root)
    err.log(f"reference: {ceiling.per_s:,.0f} events/s, {len(ref.counts):,} windows")
    cases = [ceiling]
    if opts.anchor:
        cases.append(_anchor(events, w, root, ref))
        err.log(f"anchor: {cases[-1].per_s:,.0f} events/s")
        if opts.wall_clock:
            cases.append(_anchor(events, w, root, ref, wall=True))
            err.log(f"anchor, wall clock: {cases[-1].per_s:,.0f} events/s")
    # A hub remembers the ids of the last DEDUPE_S of publishes, and a restarted one
    # reads them back from the log: wait them out, so that the replay's figures are
    # the replay's, not those of a restart right after a burst of publishes.
    rest = published + opts.settle - time.perf_counter()
    if rest > 0 and any(data for _, data, _ in ours):
        err.log(f"waiting {rest:.0f} s for the published ids to leave the dedupe window")
        await asyncio.sleep(rest)
    for hub, data, why in ours:
        if data is None:
            case = Case(streams_ours.describe(opts.mode, hub), "ours", skipped=why)
        else:
            case = await _replay(hub, data, opts, w, root, ref)
        err.log(f"{case.name}: {case.skipped or f'{case.per_s:,.0f} events/s'}")
        cases.append(case)
    if opts.anchor and any(data for _, data, _ in ours):
        # Again after ours: a shared machine's load moves from minute to minute, and
        # ours is judged against the anchor's runs on either side of it.
        again = _anchor(events, w, root, ref)
        again.name += ", again after ours"
        cases.append(again)
        err.log(f"anchor, again: {again.per_s:,.0f} events/s")
    return {
        "workload": asdict(w),
        "generated": asdict(counts),
        "windows": len(ref.counts),
        "closed_windows": len(ref.closed()),
        "late": ref.late,
        "settle_s": opts.settle,
        "anchor_per_s": _anchor_per_s(cases),
        "anchor_cpu_us_per_event": _us(_anchor_cpu_per_event(cases)),
        "cases": [_case_json(c) for c in cases],
    }


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system, every thread) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # after the command's ")": state is field 3; utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _anchor_cpu_per_event(cases: list[Case]) -> float | None:
    """Bytewax's CPU seconds per event over its deterministic runs together."""
    runs = [c for c in cases if c.kind == "anchor" and not c.skipped and "constant" in c.name]
    events = sum(c.events for c in runs)
    return sum(c.cpu_total for c in runs) / events if events and all(
        c.cpu_seconds for c in runs
    ) else None


def _anchor_per_s(cases: list[Case]) -> int | None:
    """Bytewax's events/s over its deterministic runs together (before and after ours)."""
    runs = [c for c in cases if c.kind == "anchor" and not c.skipped and "constant" in c.name]
    seconds = sum(c.seconds for c in runs)
    return round(sum(c.events for c in runs) / seconds) if seconds > 0 else None


def _case_json(c: Case) -> dict[str, Any]:
    out: dict[str, Any] = {"name": c.name, "kind": c.kind}
    if c.skipped:
        return out | {"skipped": c.skipped}
    out |= {
        "events": c.events,
        "seconds": round(c.seconds, 3),
        "per_s": round(c.per_s),
        "peak_rss_mb": round(c.peak_rss_kib / 1024, 1),
        "other_rss_mb": {k: round(v / 1024, 1) for k, v in c.other_rss.items()},
        "cpu_seconds": round(c.cpu_seconds, 3),
        "other_cpu_seconds": {k: round(v, 3) for k, v in c.other_cpu.items()},
        "cpu_us_per_event": _us(c.cpu_total / c.events if c.events else None),
        "against": c.against,
        "equal": c.verdict.equal if c.verdict else None,
        "windows": c.verdict.windows if c.verdict else 0,
        "compared": c.verdict.detail if c.verdict else "",
        "late": c.late,
        "late_equal": c.late_ok,
    }
    if c.detail:
        out["detail"] = c.detail
    return out


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e6, 2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000, help="events generated")
    p.add_argument("--keys", type=int, default=1000, help="distinct keys (partitionkey)")
    p.add_argument("--seed", type=int, default=16, help="the generator's seed")
    p.add_argument(
        "--step-ms",
        type=int,
        help="event time between events (default: 1 ms from 1,000,000 events up, more "
        "below, so that the stream spans at least 1000 s and has late events)",
    )
    p.add_argument("--grace", type=float, default=10.0, help="the grace, in seconds")
    p.add_argument(
        "--hubs", default=",".join(HUBS), help="ours on: embedded, serve, comma-separated"
    )
    p.add_argument(
        "--mode",
        choices=streams_ours.MODES,
        default="app",
        help="ours: app (an App window view, checkpoints on) or engine (the window "
        "operator driven directly over the hub's records, no runtime, no checkpoints)",
    )
    p.add_argument(
        "--commit-interval", type=float, default=0.1, help="ours: seconds between checkpoints"
    )
    p.add_argument("--no-anchor", dest="anchor", action="store_false", help="skip Bytewax")
    p.add_argument(
        "--settle",
        type=float,
        default=DEDUPE_S + 5,
        help="seconds from the end of the publishes to the replays (default: past the "
        "hub's 2-minute dedupe window, which a restarted hub refills from the log)",
    )
    p.add_argument(
        "--wall-clock",
        action="store_true",
        help="also run Bytewax on its default event clock (the watermark follows the wall "
        "clock): not deterministic, shown for its results",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data-dir", type=Path, help="where the scratch directory is made")
    opts = p.parse_args(argv)
    if not 2_000 <= opts.events <= 10_000_000:
        p.error("--events must be from 2000 to 10000000")
    if not 0.002 <= opts.grace < 60:
        p.error("--grace must be from 0.002 to under 60 seconds (the windows are 1 minute)")
    if not 0 <= opts.settle <= 3600:
        p.error("--settle must be from 0 to 3600 seconds")
    if not 0.001 <= opts.commit_interval <= 60:
        p.error("--commit-interval must be from 0.001 to 60 seconds")
    hubs = [h.strip() for h in opts.hubs.split(",") if h.strip()]
    if not hubs or any(h not in HUBS for h in hubs) or len(set(hubs)) != len(hubs):
        p.error(f"--hubs takes one or more of {', '.join(HUBS)}, each once")
    opts.hubs = hubs
    try:
        opts.workload = Workload(
            events=opts.events,
            keys=opts.keys,
            seed=opts.seed,
            step_ms=opts.step_ms or max(1, 1_000_000 // opts.events),
            grace_ms=round(opts.grace * 1000),
        )
    except ValueError as exc:
        p.error(str(exc))
    return opts


def _mb(kib: int) -> str:
    return f"{kib / 1024:,.0f}"


def print_table(result: dict[str, Any], opts: argparse.Namespace) -> None:
    w = opts.workload
    g = result["generated"]
    title = (
        f"tumbling count per key, {w.size_ms // 1000} s windows, grace {w.grace_ms / 1000:g} s: "
        f"{g['events']:,} events ({g['out_of_order']:,} out of order, {g['late']:,} late), "
        f"{w.keys:,} keys, {result['windows']:,} windows"
    )
    table = Table(box=box.SIMPLE_HEAD, title=title)
    numbers = ("events/s", "seconds", "CPU µs/event")
    for col in ("", "engine", *numbers, "peak RSS, MB", "= reference"):
        table.add_column(col, justify="right" if col in numbers else "left")
    notes = []
    for c in result["cases"]:
        if "skipped" in c:
            table.add_row(c["kind"], c["name"], "-", "-", "-", "-", "skipped")
            notes.append(f"{c['kind']}, {c['name']}: skipped: {c['skipped']}")
            continue
        rss = f"{c['peak_rss_mb']:,.0f}" + "".join(
            f" + {name} {mb:,.0f}" for name, mb in c["other_rss_mb"].items()
        )
        same = "yes" if c["equal"] and c["late_equal"] else "NO"
        cpu = "-" if c["cpu_us_per_event"] is None else f"{c['cpu_us_per_event']:.2f}"
        table.add_row(
            c["kind"], c["name"], f"{c['per_s']:,}", f"{c['seconds']:.2f}", cpu, rss, same
        )
        late = f"{c['late']:,} late" + (
            " (as the reference)" if c["late_equal"] else f" (the reference: {result['late']:,})"
        )
        detail = f"; {c['detail']}" if c.get("detail") else ""
        notes.append(f"{c['kind']}, {c['name']}: {c['against']}: {c['compared']}; {late}{detail}")
    console = Console(width=max(120, Console().width))
    console.print(table)
    for note in notes:
        console.print(f"- {note}", highlight=False)
    for c in result["cases"]:
        if c["kind"] == "ours" and "per_s" in c and result.get("anchor_per_s"):
            ratio = c["per_s"] / result["anchor_per_s"]
            verdict = "met" if ratio >= 1 and c["equal"] and c["late_equal"] else "NOT met"
            console.print(
                f"goal: {c['name']} at least Bytewax's events/s (its deterministic runs "
                f"together: {result['anchor_per_s']:,}) with results equal to the reference: "
                f"{verdict} ({ratio:.2f}x)"
            )
            anchor_cpu, cpu = result.get("anchor_cpu_us_per_event"), c.get("cpu_us_per_event")
            if anchor_cpu and cpu:
                console.print(
                    f"  CPU time per event (every process it took): {cpu:.2f} µs, Bytewax's "
                    f"{anchor_cpu:.2f} µs: Bytewax took {anchor_cpu / cpu:.2f}x as much"
                )


def main(argv: list[str] | None = None) -> int:
    """Run the streams benchmark; returns the process exit status."""
    try:
        opts = parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    err = Console(stderr=True, log_path=False)
    root = scratch_dir("tidings-bench-streams-", opts.data_dir)
    try:
        result = uvloop.run(run(opts, root, err))
    except (OSError, TidingsError, TimeoutError, BenchmarkFailed) as exc:
        err.print(f"streams benchmark failed: {exc!r}")
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if opts.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_table(result, opts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
