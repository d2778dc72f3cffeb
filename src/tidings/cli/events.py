"""The commands on events, topics and groups: publish, tail, topics, groups, replay."""

from __future__ import annotations

import sys
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


# How long a command waits for the hub to answer its first request.
CONNECT_S = 10.0


def _event_time(value: str | None) -> str:
    """An event's RFC 3339 ``time`` as a local time on the 24-hour clock, to the millisecond."""
    from datetime import datetime

    if not value:
        return "-"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return value  # a time the hub kept as given: shown as it is
    if when.tzinfo is None:
        return value
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _format_record(record: Any) -> str:
    """One line of rich markup: time, where, type, data (shortened)."""
    from rich.markup import escape

    ev = record.event
    data = ev.data if ev.data is not None else ev.data_base64
    shown = "" if data is None else orjson.dumps(data).decode()
    if len(shown) > 200:
        shown = shown[:197] + "..."
    return (
        f"[dim]{escape(_event_time(ev.time))}[/dim] "
        f"[cyan]{escape(record.topic)}/{record.partition}@{record.offset}[/cyan] "
        f"[bold]{escape(ev.type)}[/bold] {escape(shown)}"
    )


def tail(
    topic: Annotated[str, typer.Argument(help="Topic to follow")],
    start: Annotated[
        str,
        typer.Option(
            "--from",
            help="earliest, latest, a position token (0:15,1:7), or an offset with "
            "--partition (a topic of one partition needs none)",
        ),
    ] = "latest",
    partition: Annotated[
        int | None, typer.Option(min=0, help="Follow this partition only")
    ] = None,
    types: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Type pattern (repeatable)")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many records")] = None,
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Follow a topic and print each record as it arrives."""
    from tidings.client import AsyncClient

    async def go() -> int:
        console = _console()
        seen = 0
        async with AsyncClient(url, token=token, timeout=CONNECT_S) as hub:
            # Fail within seconds when the hub cannot be reached or the topic is not
            # there, rather than reconnecting in silence.
            info = await hub.topic(topic)
            first: str | int = start
            only = partition
            if start.isdecimal():
                if only is None and len(info["partitions"]) != 1:
                    _fail(
                        f"--from {start} is an offset: name its partition with --partition "
                        f"({topic} has {len(info['partitions'])}), or give a position token"
                    )
                first, only = int(start), only or 0
            sub = hub.subscribe(topic, types=types, start=first, partition=only)
            try:
                async for record in sub:
                    if json_out:
                        _print_json(record.to_dict())
                    else:
                        console.print(_format_record(record))
                    seen += 1
                    if limit is not None and seen >= limit:
                        break
            finally:
                await sub.aclose()
        return 0

    _run(go())


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
