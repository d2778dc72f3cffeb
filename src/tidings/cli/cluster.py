"""``tidings cluster``: a local NATS JetStream cluster with hub nodes on it, for trying
the NATS backend on one machine (see README, "Running a cluster")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def cluster(
    data_dir: Annotated[
        Path, typer.Option(help="Where the servers' stores and the hubs' data live (kept)")
    ] = Path("./cluster-data"),
    nodes: Annotated[
        int,
        typer.Option(help="nats-servers and hub nodes (1, 3 or 5); streams of as many replicas"),
    ] = 3,
    port: Annotated[
        int,
        typer.Option(
            min=0, max=65000, help="The first hub node's port (the next on +1...); 0: free ports"
        ),
    ] = 8701,
    nats_port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65000,
            help="The first nats-server's client port (routes 100 above, monitoring 200 "
            "above); 0: free ports",
        ),
    ] = 4301,
    topic: Annotated[
        list[str] | None,
        typer.Option(
            help="A topic made (NAME or NAME:PARTITIONS) on the first node before the others "
            "start, so that every node knows it (repeatable); default orders:3",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1, max=600, help="Seconds to wait for everything to start")
    ] = 60.0,
) -> None:
    """Start nats-servers (JetStream, sync_interval: always) and hub nodes on loopback,
    print where they are, and stop them all on Ctrl-C."""
    from tidings.cluster.launcher import ClusterFailed, LocalCluster, run

    try:
        topics = [_topic(t) for t in topic or ["orders:3"]]
        local = LocalCluster(
            data_dir.resolve(), size=nodes, port=port, nats_port=nats_port, topics=topics
        )
    except (ClusterFailed, RuntimeError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run(local, timeout))


def _topic(given: str) -> tuple[str, int]:
    name, sep, partitions = given.partition(":")
    if not name or (sep and not (partitions.isdigit() and 1 <= int(partitions) <= 64)):
        raise ValueError(f"--topic {given!r}: give NAME or NAME:PARTITIONS (1 to 64)")
    return name, int(partitions) if sep else 1
