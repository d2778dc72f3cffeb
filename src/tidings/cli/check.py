"""``tidings check DATA_DIR``: verify a data directory's event log offline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tidings.cli.support import JsonOpt, console, fail, print_json


def check(
    data_dir: Annotated[Path, typer.Argument(help="The hub's data directory (--data-dir)")],
    json_out: JsonOpt = False,
) -> None:
    """Check every batch of every partition, changing nothing; exit 1 if anything is damaged.

    Prints each damaged range (segment, bytes, offsets lost, why) and each torn
    tail (an unfinished last write, which the hub cuts at its next start). A torn
    tail alone is not damage: the exit status is 0. With ``--json``, one object
    with the totals, ``damage`` and ``torn`` lists.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tidings.log.check import check_partition

    topics = data_dir / "topics"
    if not topics.is_dir():
        fail(f"{data_dir} is not a tidings data directory: it has no topics/ directory")
    partitions = sorted(
        (p for t in topics.iterdir() if t.is_dir() for p in t.iterdir() if p.is_dir()),
        key=lambda p: (p.parent.name, int(p.name) if p.name.isdigit() else -1, p.name),
    )
    damage: list[dict[str, Any]] = []
    torn: list[dict[str, Any]] = []
    segments = batches = nbytes = 0
    # Shown only when stderr is a terminal, and only once the scan has taken a second.
    with Progress(
        TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TextColumn("partitions"),
        console=console(stderr=True), transient=True,
        disable=json_out or not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("check", total=len(partitions), visible=False)
        started = progress.get_time()
        for directory in partitions:
            found = check_partition(directory)
            where = f"{directory.parent.name}/{directory.name}"
            segments += found.segments
            batches += found.batches
            nbytes += found.bytes
            for d in found.damage:
                damage.append({
                    "partition": where, "segment": d.segment, "position": d.position,
                    "length": d.length, "first_offset": d.first_offset,
                    "end_offset": d.end_offset, "events": d.records, "why": d.why,
                })
            if found.torn is not None:
                segment, position, length, why = found.torn
                torn.append({
                    "partition": where, "segment": segment, "position": position,
                    "length": length, "why": why,
                })
            visible = progress.get_time() - started > 1.0
            progress.update(task, advance=1, visible=visible)
    lost = sum(bad["events"] for bad in damage)
    if json_out:
        print_json({
            "partitions": len(partitions), "segments": segments, "batches": batches,
            "bytes": nbytes, "damaged": len(damage), "lost": lost,
            "damage": damage, "torn": torn,
        })
        if damage:
            raise typer.Exit(1)
        return
    for bad in damage:
        typer.echo(
            f"DAMAGED {bad['partition']} {bad['segment']} byte {bad['position']} "
            f"({bad['length']} bytes): offsets {bad['first_offset']} to {bad['end_offset'] - 1} "
            f"lost ({bad['events']} events): {bad['why']}"
        )
    for t in torn:
        typer.echo(
            f"torn tail {t['partition']} {t['segment']} byte {t['position']} "
            f"({t['length']} bytes): {t['why']}; the hub cuts it at its next start"
        )
    summary = (
        f"checked {len(partitions)} partitions, {segments} segments, {batches} batches, "
        f"{nbytes} bytes: "
    )
    if damage:
        typer.echo(summary + f"{len(damage)} damaged ranges, {lost} events lost")
        raise typer.Exit(1)
    typer.echo(summary + "no damage")
