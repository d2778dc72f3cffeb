"""The HTTP ingest benchmark's figures: what a run measured, as JSON or a table."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from tidings.benchmarks.anchors import Anchor
from tidings.benchmarks.http_load import Load

EVENT_BYTES = 256
GOALS = {"single": 0.60, "batch": 0.40, "validate": 0.70}

@dataclass(frozen=True, slots=True)
class Case:
    name: str
    connections: int
    ours: Load
    ceiling: Load
    # Events the hub stored while ours was measured (warm-up excluded), and of
    # them those of requests wrk cut at its stop (stored, never answered).
    stored: int = 0
    cut: int = 0

    @property
    def ratio(self) -> float:
        c = self.ceiling.events_per_s
        return self.ours.events_per_s / c if c > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Options:
    seconds: int
    warmup: int
    connections: int
    batch_connections: int
    threads: int
    batch: int
    load: str
    nats_url: str
    redis_url: str
    anchors: bool
    json: bool
    data_dir: Path | None
    schemas: bool = False


@dataclass(frozen=True, slots=True)
class Run:
    options: Options
    load_tool: str
    cases: list[Case]
    anchors: list[Anchor]
    stored: int
    notes: list[str]


def _machine() -> dict[str, Any]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {p: metadata.version(p) for p in ("uvicorn", "uvloop", "httptools", "starlette")}
    return {"cpus": cpus, "python": sys.version.split()[0], **versions}


def _load_json(load: Load) -> dict[str, Any]:
    return {
        "requests": load.ok,
        "errors": load.errors,
        "seconds": round(load.seconds, 3),
        "req_per_s": round(load.req_per_s, 1),
        "events_per_s": round(load.events_per_s, 1),
        "p50_ms": round(load.p50_ms, 3),
        "p99_ms": round(load.p99_ms, 3),
    }


def _goal(case: Case) -> float:
    if case.name.endswith("schemas validate"):
        return GOALS["validate"]
    return GOALS["single" if case.ours.events_per_request == 1 else "batch"]


def to_json(run: Run) -> dict[str, Any]:
    opts = run.options
    ours_batch = _plain_batch(run)
    return {
        "benchmark": "http_ingest",
        "date": datetime.now(UTC).date().isoformat(),
        "event_bytes": EVENT_BYTES,
        "seconds": opts.seconds,
        "warmup": opts.warmup,
        "load": run.load_tool,
        "machine": _machine(),
        "cases": [
            {
                "case": c.name,
                "events_per_request": c.ours.events_per_request,
                "connections": c.connections,
                "ours": _load_json(c.ours),
                "ceiling": _load_json(c.ceiling),
                "ratio": round(c.ratio, 3),
                "hub_stored": c.stored,
                "hub_stored_of_cut_requests": c.cut,
                "goal": _goal(c),
                "met": c.ratio >= _goal(c),
            }
            for c in run.cases
        ],
        "hub_stored_events": run.stored,
        "anchors": [
            {
                "anchor": a.name,
                "skipped": a.skipped,
                "detail": a.detail,
                "events": a.events,
                "seconds": round(a.seconds, 3),
                "events_per_s": round(a.events_per_s, 1),
                "ours_batch_ratio": round(ours_batch / a.events_per_s, 3)
                if a.events_per_s
                else None,
            }
            for a in run.anchors
        ],
        "notes": run.notes,
    }


def _plain_batch(run: Run) -> float:
    """Ours on unkeyed batches without schemas: the anchors send the same events."""
    plain = [c for c in run.cases if c.name.startswith("batch ") and "validate" not in c.name]
    return plain[0].ours.events_per_s if plain else 0.0


def to_table(run: Run) -> Table:
    opts, m = run.options, _machine()
    notes = [
        "ours: tidings serve --fsync interval:5. ceiling: a bare ASGI route with the hub's "
        "collector tuning that reads the body, parses it with orjson and answers 202 with each "
        "event's id, partition and offset, same server settings, right after ours. "
        "Only 2xx answers count; the hub stored exactly their events (plus those of requests "
        "cut at wrk's stop). "
        "ratio: ours / ceiling in events/s, beside its goal. Anchors: one client of another "
        "store sending the same events; ratio: ours (batch) / anchor."
        + (" schemas validate: ours on a topic that checks each event's data against "
           "order.placed's registered schema; its ceiling column is ours without schemas "
           "from the same run." if opts.schemas else ""),
        *(f"{a.name}: {a.detail or 'skipped: ' + str(a.skipped)}" for a in run.anchors),
        *run.notes,
    ]
    table = Table(
        title=(
            f"HTTP ingest: {EVENT_BYTES}-byte order.placed CloudEvents, {opts.seconds} s per "
            f"figure, load {run.load_tool}, {m['cpus']} CPUs, Python {m['python']}, "
            f"uvicorn {m['uvicorn']}, uvloop, httptools"
        ),
        caption="\n".join(notes),
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("case")
    table.add_column("ours", justify="right", no_wrap=True)
    table.add_column("ceiling", justify="right", no_wrap=True)
    table.add_column("ratio", justify="right", no_wrap=True)
    for c in run.cases:
        goal = _goal(c)
        met = f"[green]>= {goal:.2f}[/green]" if c.ratio >= goal else f"[red]< {goal:.2f}[/red]"
        unit = "req/s" if c.ours.events_per_request == 1 else "events/s"
        table.add_row(
            f"{c.name}, c{c.connections}, {unit}",
            f"{c.ours.events_per_s:,.0f}",
            f"{c.ceiling.events_per_s:,.0f}",
            f"{c.ratio:.2f}x {met}",
        )
        for label in ("p50", "p99"):
            ours, ceiling = getattr(c.ours, f"{label}_ms"), getattr(c.ceiling, f"{label}_ms")
            table.add_row(f"  {label}, ms", f"{ours:,.2f}", f"{ceiling:,.2f}", "")
        table.add_section()
    ours_batch = _plain_batch(run)
    for a in run.anchors:
        if a.skipped is None and a.events_per_s > 0:
            ratio = f"{ours_batch / a.events_per_s:.2f}x"
            table.add_row(f"{a.name}", f"{ours_batch:,.0f}", f"{a.events_per_s:,.0f}", ratio)
        else:
            table.add_row(f"{a.name}", "", "skipped", "")
    return table
