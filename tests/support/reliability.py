"""The reliability suite: kill loops, a full disk, flipped bits, power loss and a soak.

``make reliability`` (or ``python tests/support/reliability.py``) runs every
campaign below one after another against real hub processes on loopback, each
bounded by a count and a time budget, and prints a summary table: per campaign
the SIGKILLs (or power cuts), the events acknowledged, and how many of them were
lost, stored twice, out of order or in a torn batch, whether dead letters went
out exactly once, and how long it took. It exits non-zero if any campaign lost,
duplicated, reordered or tore anything, or found another problem (each named).

``RELIABILITY_SCALE`` (or ``--scale``) multiplies every count and budget: 1 is
the full suite (1,030 kills, 500 power cuts, a ten-minute soak); 0.1 is a quick
look. Campaigns run two at a time (``--jobs``), each in a process of its own.
``--only`` runs some campaigns; ``--json`` writes the rows.
``tests/server/test_reliability.py`` runs a small version of each in ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson
from campaign import Result


@dataclass(frozen=True)
class Plan:
    """One campaign at scale 1: how many kills (rounds, cuts, seconds) and its time budget."""

    name: str
    count: int
    seconds: float


PLANS = (  # in the order they start: the longest first, so that jobs share the time
    Plan("publishing", 500, 1500),
    Plan("soak", 600, 720),  # its count is its length in seconds
    Plan("groups", 250, 1000),
    Plan("webhooks", 150, 700),
    Plan("bit-flips", 100, 360),
    Plan("disk-full", 15, 240),  # rounds of two kills each
    Plan("power-loss", 500, 600),  # power cuts
)
NAMES = tuple(p.name for p in PLANS)


def run_campaign(name: str, count: int, seconds: float, seed: int, root: Path) -> Result:
    """Run one campaign; one that breaks off is a row naming why."""
    started = time.monotonic()
    try:
        return _run(name, count, seconds, seed, root)
    except Exception as exc:
        res = Result(name, seconds=time.monotonic() - started)
        res.problem(f"the campaign broke off: {type(exc).__name__}: {str(exc)[:1500]}")
        return res


def _run(name: str, count: int, seconds: float, seed: int, root: Path) -> Result:
    """Run one campaign (a fresh event loop for the asynchronous ones)."""
    import faults
    import killloops

    root.mkdir(parents=True, exist_ok=True)
    if name == "power-loss":
        return faults.power_loss(count, seconds, seed)
    if name == "soak":
        return asyncio.run(faults.soak(root, float(count)))
    runs: dict[str, Callable[..., object]] = {
        "publishing": killloops.publishing,
        "groups": killloops.groups,
        "webhooks": killloops.webhooks,
        "disk-full": faults.disk_full,
        "bit-flips": faults.bit_flips,
    }
    result = asyncio.run(runs[name](root, count, seconds, seed))  # type: ignore[arg-type]
    assert isinstance(result, Result)
    return result


def scaled(plan: Plan, scale: float) -> tuple[int, float]:
    return max(1, round(plan.count * scale)), max(10.0, plan.seconds * scale)


def table(results: list[Result]) -> str:
    """The summary table, in Markdown."""
    head = (
        "| campaign | kills | acknowledged | lost | duplicated | out of order | torn "
        "| dead-lettered once | duration |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in results:
        if not r.ran:
            lines.append(f"| {r.campaign} | did not run | | | | | | | |")
            continue
        kills = f"{r.cuts} power cuts" if r.cuts else str(r.kills)
        once = {None: "-", True: "yes", False: "NO"}[r.dead_lettered_once]
        lines.append(
            f"| {r.campaign} | {kills} | {r.acknowledged:,} | {r.lost} | {r.duplicated} "
            f"| {r.out_of_order} | {r.torn} | {once} | {minutes(r.seconds)} |"
        )
    ran = [r for r in results if r.ran]
    lines.append(
        f"| **total** | {sum(r.kills for r in ran)} | {sum(r.acknowledged for r in ran):,} "
        f"| {sum(r.lost for r in ran)} | {sum(r.duplicated for r in ran)} "
        f"| {sum(r.out_of_order for r in ran)} | {sum(r.torn for r in ran)} "
        f"| {'NO' if any(r.dead_lettered_once is False for r in ran) else 'yes'} "
        f"| {minutes(sum(r.seconds for r in results))} |"
    )
    return "\n".join(lines)


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def details(results: list[Result]) -> str:
    out = []
    for r in results:
        figures = ", ".join(f"{k} {v:,}" for k, v in sorted(r.counts.items()))
        out.append(f"{r.campaign}: " + "; ".join([*r.notes, figures] if figures else r.notes))
        out.extend(f"  PROBLEM: {p}" for p in r.problems)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", type=float, default=float(os.environ.get("RELIABILITY_SCALE", "1")),
        help="multiplies every count and time budget (default: $RELIABILITY_SCALE or 1)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    parser.add_argument("--only", default=",".join(NAMES), help="campaigns, comma-separated")
    parser.add_argument("--json", type=Path, help="write the rows here as JSON")
    parser.add_argument(
        "--jobs", type=int, default=int(os.environ.get("RELIABILITY_JOBS", "2")),
        help="campaigns run at once, each in a process of its own (default 2)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(only) - set(NAMES))
    if unknown:
        parser.error(f"unknown campaign(s) {', '.join(unknown)}; known: {', '.join(NAMES)}")
    if args.scale <= 0:
        parser.error(f"--scale must be above 0, not {args.scale}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    print(
        f"reliability suite: scale {args.scale}, seed {args.seed}, {args.jobs} at a time",
        file=sys.stderr,
    )
    started = time.monotonic()
    plans = [p for p in PLANS if p.name in only]
    with (
        tempfile.TemporaryDirectory(prefix="tidings-reliability-") as tmp,
        ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool,
    ):
        futures = []
        for plan in plans:
            count, seconds = scaled(plan, args.scale)
            print(f"-- {plan.name}: up to {count} within {seconds:.0f} s", file=sys.stderr)
            root = Path(tmp) / plan.name
            futures.append(pool.submit(run_campaign, plan.name, count, seconds, args.seed, root))
        results: list[Result] = []
        for future in futures:
            result = future.result()
            results.append(result)
            print(f"   {result.to_dict()}", file=sys.stderr, flush=True)
    took = time.monotonic() - started
    print(table(results))
    print()
    print(details(results))
    print(
        f"\nseed {args.seed}, scale {args.scale}, {args.jobs} at a time, {minutes(took)} in all"
    )
    if args.json is not None:
        args.json.write_bytes(
            orjson.dumps(
                {"seed": args.seed, "scale": args.scale, "seconds": round(took, 1),
                 "campaigns": [r.to_dict() for r in results]},
                option=orjson.OPT_INDENT_2,
            )
        )  # fmt: skip
    return 0 if all(r.clean for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
