"""Finding events: ``tidings events get ID`` and ``tidings trace CORRELATIONID``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from tidings.cli.support import DEFAULT_URL, JsonOpt, TokenOpt, Url
from tidings.cli.support import console as _console
from tidings.cli.support import print_json as _print_json
from tidings.cli.support import run_async as _run

if TYPE_CHECKING:
    from tidings.events.envelope import Record

events_app = typer.Typer(help="Find events by id, across topics.", no_args_is_help=True)


def _event_time(record: Record) -> str:
    """The event's own time as a local 24-hour time; as given when it cannot be read."""
    from datetime import datetime

    raw = record.event.time
    if raw is None:
        return "-"
    try:
        return datetime.fromisoformat(raw).astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except ValueError:
        return raw


@events_app.command("get")
def get(
    event_id: Annotated[str, typer.Argument(metavar="ID", help="The event's id")],
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the record of one event, found by its id in any topic."""
    from rich.markup import escape

    from tidings.client import AsyncClient

    async def go() -> int:
        async with AsyncClient(url, token=token) as hub:
            record = await hub.get_event(event_id)
        if json_out:
            _print_json(record.to_dict())
            return 0
        out = _console()
        out.print(f"[bold]{escape(record.topic)}[/bold]/{record.partition}@{record.offset}")
        out.print(escape(orjson.dumps(record.event.to_dict(), option=orjson.OPT_INDENT_2).decode()))
        return 0

    _run(go())


def trace(
    correlation_id: Annotated[
        str, typer.Argument(metavar="CORRELATIONID", help="The correlationid, e.g. an order id")
    ],
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Every event of one correlationid (an order's story), across topics, in publish order."""
    from rich.table import Table

    from tidings.client import AsyncClient

    async def go() -> int:
        async with AsyncClient(url, token=token) as hub:
            records = await hub.trace(correlation_id)
        if json_out:
            _print_json([r.to_dict() for r in records])
            return 0
        if not records:
            _console(stderr=True).print(f"no events with correlationid {correlation_id!r}")
            return 1
        table = Table("time", "topic", "type", "source", "position", "id")
        for r in records:
            table.add_row(
                _event_time(r), r.topic, r.event.type, r.event.source or "-",
                f"{r.partition}@{r.offset}", r.event.id or "-",
            )  # fmt: skip
        _console().print(table)
        return 0

    _run(go())
