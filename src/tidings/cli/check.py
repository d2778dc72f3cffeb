"""``tidings check DATA_DIR``: verify a data directory's event log offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tidings.cli.support import fail


def check(
    data_dir: Annotated[Path, typer.Argument(help="The hub's data directory (--data-dir)")],
) -> None:
    """Check every batch of every partition, changing nothing; exit 1 if anything is damaged.

    Prints each damaged range (segment, bytes, offsets lost, why) and each torn
    tail (an unfinished last write, which the hub cuts at its next start). A torn
    tail alone is not damage: the exit status is 0.
    """
    from tidings.log.check import check_partition

    topics = data_dir / "topics"
    if not topics.is_dir():
        fail(f"{data_dir} is not a tidings data directory: it has no topics/ directory")
    partitions = sorted(
        (p for t in topics.iterdir() if t.is_dir() for p in t.iterdir() if p.is_dir()),
        key=lambda p: (p.parent.name, int(p.name) if p.name.isdigit() else -1, p.name),
    )
    damaged = lost = segments = batches = nbytes = 0
    for directory in partitions:
        found = check_partition(directory)
        where = f"{directory.parent.name}/{directory.name}"
        segments += found.segments
        batches += found.batches
        nbytes += found.bytes
        for d in found.damage:
            damaged += 1
            lost += d.records
            typer.echo(
                f"DAMAGED {where} {d.segment} byte {d.position} ({d.length} bytes): "
                f"offsets {d.first_offset} to {d.end_offset - 1} lost ({d.records} events): "
                f"{d.why}"
            )
        if found.torn is not None:
            segment, position, length, why = found.torn
            typer.echo(
                f"torn tail {where} {segment} byte {position} ({length} bytes): {why}; "
                "the hub cuts it at its next start"
            )
    summary = (
        f"checked {len(partitions)} partitions, {segments} segments, {batches} batches, "
        f"{nbytes} bytes: "
    )
    if damaged:
        typer.echo(summary + f"{damaged} damaged ranges, {lost} events lost")
        raise typer.Exit(1)
    typer.echo(summary + "no damage")
