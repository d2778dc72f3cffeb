"""``tidings bench``: benchmarks that print ours beside the ceiling, from the same run."""

from __future__ import annotations

from typing import Annotated

import typer

bench_app = typer.Typer(help="Benchmarks that print ours beside the ceiling, from the same run.")


@bench_app.command("log")
def bench_log(
    seconds: Annotated[float, typer.Option(help="Seconds per measurement")] = 3.0,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Append throughput of the log under each fsync policy, beside bare os.write."""
    from tidings.benchmarks.log_append import main as bench_main

    argv = ["--seconds", str(seconds)] + (["--json"] if json_out else [])
    raise typer.Exit(bench_main(argv))


@bench_app.command("handlers")
def bench_handlers(
    events: Annotated[int, typer.Option(min=1000, help="Events per measurement")] = 200_000,
    rounds: Annotated[int, typer.Option(min=1, max=10, help="Rounds per case")] = 4,
    concurrency: Annotated[
        str,
        typer.Option(
            help="The handlers' concurrency, comma-separated: each measured beside its own ceiling"
        ),
    ] = "1,8",
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """No-op handler apps (the README's shape with a model and ctx, and a bare dict) beside
    the bare group fetch/ack loop, over HTTP and embedded."""
    from tidings.benchmarks.handlers import main as bench_main

    argv = ["--events", str(events), "--rounds", str(rounds), "--concurrency", concurrency]
    raise typer.Exit(bench_main(argv + (["--json"] if json_out else [])))


@bench_app.command("lookup")
def bench_lookup(
    events: Annotated[
        int, typer.Option(min=1000, help="Other events published after the order")
    ] = 1_000_000,
    lookups: Annotated[int, typer.Option(min=10, help="Timed lookups of each kind")] = 500,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """An order's trace and an event by id over HTTP, a million events later."""
    from tidings.benchmarks.event_lookup import main as bench_main

    argv = ["--events", str(events), "--lookups", str(lookups)]
    raise typer.Exit(bench_main(argv + (["--json"] if json_out else [])))


@bench_app.command("http")
def bench_http(
    seconds: Annotated[int, typer.Option(min=1, help="Seconds per measurement")] = 8,
    anchors: Annotated[
        bool, typer.Option(help="Also measure NATS JetStream and Redis Streams where they run")
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Publish throughput over HTTP, beside a bare ASGI ceiling from the same run."""
    from tidings.benchmarks.http_ingest import main as bench_main

    argv = ["--seconds", str(seconds)] + ([] if anchors else ["--no-anchors"])
    raise typer.Exit(bench_main(argv + (["--json"] if json_out else [])))


@bench_app.command("ws")
def bench_ws(
    clients: Annotated[int, typer.Option(min=1, help="WebSocket subscribers")] = 1000,
    client_procs: Annotated[
        int, typer.Option(min=1, help="Processes the subscribers are spread over")
    ] = 2,
    seconds: Annotated[float, typer.Option(min=0.5, help="Seconds per rate step")] = 5.0,
    rates: Annotated[
        str, typer.Option(help="Events/s per step, comma-separated; the first is the latency goal")
    ] = "10,50,100,200",
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Fan-out to many WebSocket subscribers, beside a bare websockets broadcast (same run)."""
    from tidings.benchmarks.ws_fanout import main as bench_main

    argv = ["--clients", str(clients), "--client-procs", str(client_procs)]
    argv += ["--seconds", str(seconds), "--rates", rates]
    raise typer.Exit(bench_main(argv + (["--json"] if json_out else [])))


@bench_app.command("webhooks")
def bench_webhooks(
    concurrency: Annotated[int, typer.Option(min=1, help="POSTs in flight")] = 50,
    events: Annotated[int, typer.Option(min=1000, help="Backlog the hub drains")] = 40_000,
    rounds: Annotated[int, typer.Option(min=1, help="Ceiling then ours, this many times")] = 2,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Webhook deliveries per second, beside a bare aiohttp posting loop (same run)."""
    from tidings.benchmarks.webhooks import main as bench_main

    argv = ["--concurrency", str(concurrency), "--events", str(events), "--rounds", str(rounds)]
    raise typer.Exit(bench_main(argv + (["--json"] if json_out else [])))


@bench_app.command("shop")
def bench_shop(
    rates: Annotated[
        str, typer.Option(help="Orders/s of each step, comma-separated, rising")
    ] = "10,25,50,100,150,200,300,400",
    seconds: Annotated[float, typer.Option(min=1, max=600, help="Seconds per rate")] = 60.0,
    drain: Annotated[
        float, typer.Option(min=1, max=300, help="Seconds to wait for the rest after a step")
    ] = 30.0,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """The shop's order chain under a rising order rate, beside the hub's publish capacity.

    Run it from the root of the repository (it starts examples/shop)."""
    from tidings.benchmarks.shop import main as bench_main

    argv = ["--rates", rates, "--seconds", str(seconds), "--drain", str(drain)]
    raise typer.Exit(bench_main(argv + (["--json"] if json_out else [])))


@bench_app.command("streams")
def bench_streams(
    events: Annotated[int, typer.Option(min=2000, help="Events generated")] = 1_000_000,
    keys: Annotated[int, typer.Option(min=1, help="Distinct keys")] = 1000,
    hubs: Annotated[
        str, typer.Option(help="Ours on: embedded, serve (comma-separated)")
    ] = "embedded,serve",
    mode: Annotated[
        str, typer.Option(help="Ours: app (an App window view) or engine (the operator alone)")
    ] = "app",
    anchor: Annotated[bool, typer.Option(help="Also run Bytewax, the anchor")] = True,
    wall_clock: Annotated[
        bool, typer.Option(help="Also run Bytewax on its default (wall-clock) event clock")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """A 1-minute tumbling count per key over 1000 keys: ours replayed from earliest with
    checkpoints, beside Bytewax and a plain-Python loop on the same events (same run)."""
    from tidings.benchmarks.streams import main as bench_main

    argv = ["--events", str(events), "--keys", str(keys), "--hubs", hubs, "--mode", mode]
    argv += ([] if anchor else ["--no-anchor"]) + (["--wall-clock"] if wall_clock else [])
    argv += ["--json"] if json_out else []
    raise typer.Exit(bench_main(argv))


@bench_app.command("nats")
def bench_nats(
    replicas: Annotated[str, typer.Option(help="1, 3 or 1,3: one nats-server, or three")] = "1,3",
    seconds: Annotated[int, typer.Option(min=1, help="Seconds per publish measurement")] = 5,
    records: Annotated[
        int, typer.Option(min=1000, help="Records each consumer fetches and acks")
    ] = 20_000,
    rounds: Annotated[int, typer.Option(min=1, max=10, help="Rounds of every case")] = 2,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """The hub on NATS JetStream (publish single and batch over HTTP, group fetch/ack)
    beside bare nats-py doing the same on the same servers, R1 and R3 (same run)."""
    from tidings.benchmarks.nats_hub import main as bench_main

    argv = ["--replicas", replicas, "--seconds", str(seconds), "--records", str(records)]
    argv += ["--rounds", str(rounds)] + (["--json"] if json_out else [])
    raise typer.Exit(bench_main(argv))
