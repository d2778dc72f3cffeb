"""The ``tidings`` command line. It imports the layers; nothing imports it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from tidings.cli.support import (
    DEFAULT_URL,
    JsonOpt,
    TokenOpt,
    Url,
)
from tidings.cli.support import console as _console
from tidings.cli.support import fail as _fail
from tidings.cli.support import print_json as _print_json
from tidings.cli.support import run_async as _run
from tidings.cli.webhooks import webhooks_app
from tidings.errors import TidingsError

app = typer.Typer(
    name="tidings",
    help="An event hub: durable event log, pub/sub, consumer groups, CloudEvents over HTTP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that print ours beside the ceiling, from the same run.")
app.add_typer(bench_app, name="bench")
app.add_typer(webhooks_app, name="webhooks")


def _env(name: str) -> str | None:
    return os.environ.get(f"TIDINGS_{name}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="TIDINGS_HOST", help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TIDINGS_PORT", help="Port to bind")] = 8700,
    data_dir: Annotated[
        Path, typer.Option(envvar="TIDINGS_DATA_DIR", help="Where the log and metadata live")
    ] = Path("./tidings-data"),
    fsync: Annotated[
        str,
        typer.Option(
            envvar="TIDINGS_FSYNC",
            help="always | interval:MS | never: when a publish is acknowledged",
        ),
    ] = "interval:50",
    auth_file: Annotated[
        str | None, typer.Option(envvar="TIDINGS_AUTH_FILE", help="JSON file of bearer tokens")
    ] = None,
    no_auto_create: Annotated[
        bool,
        typer.Option(
            "--no-auto-create", envvar="TIDINGS_NO_AUTO_CREATE", help="Refuse unknown topics"
        ),
    ] = False,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure", envvar="TIDINGS_INSECURE", help="Allow a non-loopback bind without tokens"
        ),
    ] = False,
    segment_bytes: Annotated[
        int,
        typer.Option(
            envvar="TIDINGS_SEGMENT_BYTES", min=4096, help="Roll segments at this size (bytes)"
        ),
    ] = 64 * 1024 * 1024,
    allowed_origin: Annotated[
        list[str] | None,
        typer.Option(
            envvar="TIDINGS_ALLOWED_ORIGINS",
            help="Browser origin allowed to open a WebSocket (repeatable; '*' for any). "
            "Default: loopback origins and the hub's own",
        ),
    ] = None,
    ws_send_buffer: Annotated[
        int,
        typer.Option(
            envvar="TIDINGS_WS_SEND_BUFFER",
            min=4096,
            help="Bytes queued for one WebSocket before it is a slow consumer (4008)",
        ),
    ] = 1 << 20,
    webhook_allow_net: Annotated[
        list[str] | None,
        typer.Option(
            envvar="TIDINGS_WEBHOOK_ALLOW_NET",
            help="Let webhooks reach this network, in CIDR notation (repeatable), "
            "e.g. 127.0.0.0/8; otherwise only public addresses",
        ),
    ] = None,
    webhook_retry_schedule: Annotated[
        str | None,
        typer.Option(
            envvar="TIDINGS_WEBHOOK_RETRY_SCHEDULE",
            help="Seconds to wait before each webhook attempt, comma-separated "
            "(default 0,5,300,1800,7200,18000,36000,36000)",
        ),
    ] = None,
    webhook_timeout: Annotated[
        float,
        typer.Option(
            envvar="TIDINGS_WEBHOOK_TIMEOUT",
            min=0.001,
            max=300,
            help="Seconds a webhook endpoint has to answer an attempt",
        ),
    ] = 15.0,
    webhook_disable_after: Annotated[
        str | None,
        typer.Option(
            envvar="TIDINGS_WEBHOOK_DISABLE_AFTER",
            help="Disable a webhook endpoint after this long without a success "
            "(seconds, or 30m, 12h, 5d; default 5d)",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(envvar="TIDINGS_LOG_LEVEL")] = "info",
) -> None:
    """Serve the hub on the embedded log."""
    from tidings.log.partition import FsyncPolicy
    from tidings.server.serve import ServeConfig
    from tidings.server.serve import serve as run

    try:
        config = ServeConfig(
            host=host,
            port=port,
            data_dir=data_dir,
            fsync=FsyncPolicy.parse(fsync),
            auth_file=auth_file,
            tokens_json=_env("TOKENS"),
            auto_create=not no_auto_create,
            insecure=insecure,
            segment_bytes=segment_bytes,
            allowed_origins=_origins(allowed_origin),
            ws_send_buffer=ws_send_buffer,
            webhook_allow_nets=_split(webhook_allow_net),
            webhook_retry_schedule=webhook_retry_schedule,
            webhook_timeout_s=webhook_timeout,
            webhook_disable_after=webhook_disable_after,
            log_level=log_level,
        )
        run(config)
    except TidingsError as exc:
        _fail(exc.detail)

@app.command()
def publish(
    topic: Annotated[str, typer.Argument(help="Topic to publish to")],
    type_: Annotated[
        str | None,
        typer.Option("--type", "-t", help="Event type; without it, JSON lines are read from stdin"),
    ] = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="JSON data")] = None,
    key: Annotated[str | None, typer.Option("--key", "-k", help="Partition key")] = None,
    subject: Annotated[str | None, typer.Option(help="CloudEvents subject")] = None,
    batch: Annotated[int, typer.Option(help="Events per request when reading stdin")] = 500,
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Publish one event from flags, or CloudEvents as JSON lines from stdin."""
    from tidings.client import AsyncClient

    async def one() -> int:
        try:
            payload = None if data is None else orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            _fail(f"--data is not JSON: {exc}")
        async with AsyncClient(url, token=token) as hub:
            result = await hub.publish(topic, type_, payload, key=key, subject=subject)
        if json_out:
            _print_json(result)
        else:
            dup = " (duplicate)" if result.get("duplicate") else ""
            typer.echo(f"{topic}/{result['partition']}@{result['offset']} {result['id']}{dup}")
        return 0

    async def many() -> int:
        from rich.progress import Progress, SpinnerColumn, TextColumn

        count = 0
        async with AsyncClient(url, token=token) as hub:
            pending: list[dict[str, Any]] = []
            with Progress(
                SpinnerColumn(), TextColumn("{task.description}"), disable=json_out,
                transient=True, console=_console(stderr=True),
            ) as progress:
                task = progress.add_task("publishing", total=None)
                for lineno, line in enumerate(sys.stdin, 1):
                    if not line.strip():
                        continue
                    try:
                        event = orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        _fail(f"stdin line {lineno} is not JSON: {exc}")
                    if not isinstance(event, dict):
                        _fail(f"stdin line {lineno} is not a JSON object")
                    pending.append(event)
                    if len(pending) >= batch:
                        count += len(await hub.publish_many(topic, pending))
                        pending = []
                        progress.update(task, description=f"published {count}")
                if pending:
                    count += len(await hub.publish_many(topic, pending))
        if json_out:
            _print_json({"topic": topic, "published": count})
        else:
            typer.echo(f"published {count} event(s) to {topic}")
        return 0

    _run(one() if type_ is not None else many())


def _format_record(record: Any) -> str:
    """One line of rich markup: time, where, type, data (shortened)."""
    from rich.markup import escape

    ev = record.event
    data = ev.data if ev.data is not None else ev.data_base64
    shown = "" if data is None else orjson.dumps(data).decode()
    if len(shown) > 200:
        shown = shown[:197] + "..."
    return (
        f"[dim]{escape(ev.time or '')}[/dim] "
        f"[cyan]{escape(record.topic)}/{record.partition}@{record.offset}[/cyan] "
        f"[bold]{escape(ev.type)}[/bold] {escape(shown)}"
    )


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="Topic to follow")],
    start: Annotated[
        str, typer.Option("--from", help="earliest, latest, an offset or a position token")
    ] = "latest",
    types: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Type pattern (repeatable)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many records")] = None,
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Follow a topic and print each record as it arrives."""
    from tidings.client import AsyncClient

    async def go() -> int:
        console = _console()
        seen = 0
        async with AsyncClient(url, token=token) as hub:
            async for record in hub.subscribe(topic, types=types, start=start):
                if json_out:
                    _print_json(record.to_dict())
                else:
                    console.print(_format_record(record))
                seen += 1
                if limit is not None and seen >= limit:
                    break
        return 0

    _run(go())


@app.command()
def topics(url: Url = DEFAULT_URL, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """List topics with their partitions, events and bytes."""
    from rich.table import Table

    from tidings.client import AsyncClient

    async def go() -> int:
        async with AsyncClient(url, token=token) as hub:
            items = await hub.topics()
        if json_out:
            _print_json(items)
            return 0
        table = Table("topic", "partitions", "events", "bytes", "offsets")
        for t in items:
            offsets = " ".join(
                f"{p['partition']}:{p['first_offset']}-{p['next_offset']}" for p in t["partitions"]
            )
            table.add_row(
                t["name"], str(len(t["partitions"])), str(t["events"]), str(t["bytes"]), offsets
            )
        _console().print(table)
        return 0

    _run(go())


@app.command()
def groups(url: Url = DEFAULT_URL, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """List consumer groups with their lag and pending leases."""
    from rich.table import Table

    from tidings.client import AsyncClient

    async def go() -> int:
        async with AsyncClient(url, token=token) as hub:
            items = await hub.groups()
        if json_out:
            _print_json(items)
            return 0
        table = Table("topic", "group", "lag", "pending", "redelivered", "dead-lettered")
        for g in items:
            table.add_row(
                g["topic"], g["name"], str(g["lag"]), str(g["pending"]),
                str(g["redelivered"]), str(g["dead_lettered"]),
            )
        _console().print(table)
        return 0

    _run(go())


@app.command("run")
def run_apps(
    paths: Annotated[
        list[str], typer.Argument(help="Apps as module:attribute (several allowed)")
    ],
    log_format: Annotated[
        str, typer.Option(envvar="TIDINGS_LOG_FORMAT", help="json (one object a line) or text")
    ] = "json",
    log_level: Annotated[str, typer.Option(envvar="TIDINGS_LOG_LEVEL")] = "info",
) -> None:
    """Run handler apps until SIGINT or SIGTERM, then stop them gracefully."""
    import logging

    from tidings.app.app import run_apps as run_all
    from tidings.app.loading import AppNotFound, JsonLogFormatter, load_apps

    if log_format not in ("json", "text"):
        _fail(f"--log-format must be json or text, not {log_format!r}")
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        _fail(f"--log-level {log_level!r} is not a logging level")
    try:
        apps = load_apps(paths)
    except AppNotFound as exc:
        _fail(str(exc))
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    _run(run_all(apps))


@app.command("asyncapi")
def asyncapi_doc(
    paths: Annotated[list[str], typer.Argument(help="Apps as module:attribute")],
    title: Annotated[str | None, typer.Option(help="The document's title")] = None,
) -> None:
    """Print an AsyncAPI 3.0 document of what the apps consume and emit."""
    from tidings.app.asyncapi import asyncapi_document
    from tidings.app.loading import AppNotFound, load_apps

    try:
        apps = load_apps(paths)
    except AppNotFound as exc:
        _fail(str(exc))
    sys.stdout.write(
        orjson.dumps(asyncapi_document(apps, title), option=orjson.OPT_INDENT_2).decode() + "\n"
    )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def demo(ctx: typer.Context) -> None:
    """Run the shop example: hub, services, orders API, page and partner (from the repo root).

    Options go to the demo: --port, --data-dir, --orders N (place N orders under load,
    then stop), --concurrency, --kill SERVICE (kill -9 and restart it halfway through
    the orders); `python -m examples.shop.demo --help` describes them.
    """
    import importlib

    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        shop_demo = importlib.import_module("examples.shop.demo")
    except ModuleNotFoundError:
        _fail("the shop example is not here: run tidings demo from the root of the repository")
    raise typer.Exit(shop_demo.main(list(ctx.args)))


@app.command()
def replay(
    source: Annotated[str, typer.Argument(help="Topic to read")],
    to: Annotated[str, typer.Option("--to", help="Topic to publish to")],
    start: Annotated[
        str, typer.Option("--from", help="earliest, an offset or a position token")
    ] = "earliest",
    from_time: Annotated[
        str | None, typer.Option(help="Start at this RFC 3339 time instead")
    ] = None,
    types: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Type pattern (repeatable)")
    ] = None,
    new_ids: Annotated[
        bool, typer.Option("--new-ids", help="Give the copies new ids instead of the originals")
    ] = False,
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Re-publish a range of one topic to another, up to the end as it is now."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tidings.client import AsyncClient

    async def go() -> int:
        copied = 0
        async with AsyncClient(url, token=token) as hub:
            info = await hub.topic(source)
            end = {p["partition"]: p["next_offset"] for p in info["partitions"]}
            total = sum(p["events"] for p in info["partitions"])
            position: str | int = start
            first_time = from_time
            with Progress(
                TextColumn("replaying"), BarColumn(), MofNCompleteColumn(),
                disable=json_out, console=_console(stderr=True), transient=True,
            ) as progress:
                task = progress.add_task("replay", total=total)
                while True:
                    records, nxt = await hub.read(
                        source, start=position, from_time=first_time, limit=1000, types=types
                    )
                    first_time = None
                    moved, position = nxt != position, nxt
                    batch = [
                        r.event.to_dict() for r in records if r.offset < end.get(r.partition, 0)
                    ]
                    if new_ids:
                        for ev in batch:
                            ev.pop("id", None)
                    if batch:
                        await hub.publish_many(to, batch)
                        copied += len(batch)
                        progress.update(task, advance=len(batch))
                    done = all(
                        int(o) >= end.get(int(p), 0)
                        for p, o in (x.split(":") for x in nxt.split(","))
                    )
                    if done or not moved:
                        break
        if json_out:
            _print_json({"from": source, "to": to, "copied": copied})
        else:
            typer.echo(f"copied {copied} event(s) from {source} to {to}")
        return 0

    _run(go())



def _split(given: list[str] | None) -> tuple[str, ...]:
    """Values of a repeatable option; its variable may hold several, comma-separated."""
    return tuple(v.strip() for item in given or () for v in item.split(",") if v.strip())


def _origins(given: list[str] | None) -> tuple[str, ...] | None:
    """Origins from flags or TIDINGS_ALLOWED_ORIGINS (comma- or space-separated)."""
    if not given:
        return None
    origins = tuple(o.strip().rstrip("/") for g in given for o in g.replace(",", " ").split())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            _fail(f"--allowed-origin {origin!r} is not '*' nor an http(s) origin")
    return origins


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
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """A no-op handler app beside the bare group fetch/ack loop, over HTTP and embedded."""
    from tidings.benchmarks.handlers import main as bench_main

    argv = ["--events", str(events), "--rounds", str(rounds)]
    raise typer.Exit(bench_main(argv + (["--json"] if json_out else [])))


@bench_app.command("http")
def bench_http(
    seconds: Annotated[int, typer.Option(min=1, help="Seconds per measurement")] = 8,
    anchors: Annotated[
        bool, typer.Option(help="Also measure NATS JetStream and Redis Streams where they run")
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Publish throughput over HTTP, beside a bare Starlette ceiling from the same run."""
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
