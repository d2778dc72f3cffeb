"""``tidings views``: the views stream processors keep in the hub: list, read, rebuild."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tidings.cli.support import (
    DEFAULT_URL,
    JsonOpt,
    TokenOpt,
    Url,
    call_hub,
    console,
    local_time,
    print_json,
)

views_app = typer.Typer(
    help="Views: what stream processors compute, kept and served by the hub.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The view's name")]


def _value(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


@views_app.command("list")
def list_views(url: Url = DEFAULT_URL, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Every view the token may read: kind, inputs, keys, lag, last commit."""
    got = call_hub(url, token, "views")
    if json_out:
        print_json(got)
        return
    from rich.table import Table

    table = Table()
    for col in ("view", "kind", "app", "inputs", "keys", "lag", "generation", "last commit"):
        table.add_column(col, no_wrap=col in ("view", "last commit"))
    for v in got:
        lag = sum(n for n in v["lag"].values() if n is not None)
        table.add_row(
            v["name"], v["kind"], v["app"] or "-", ", ".join(v["inputs"]), str(v["keys"]),
            str(lag), str(v["generation"]), local_time(v["last_commit"]),
        )  # fmt: skip
    console().print(table)


@views_app.command()
def get(
    name: NameArg,
    key: Annotated[str, typer.Argument(help="The key")],
    min_position: Annotated[
        str | None,
        typer.Option(
            "--min-position",
            help="Wait until the view reflects this position of its input (0:15,1:7) or latest",
        ),
    ] = None,
    topic: Annotated[
        str | None, typer.Option("--topic", help="The input --min-position is about")
    ] = None,
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One key's value (JSON) and the changelog position holding it."""
    got = call_hub(url, token, "view_get", name, key, min_position, topic=topic)
    if json_out:
        print_json(got)
        return
    typer.echo(_value(got["value"]))


@views_app.command()
def keys(
    name: NameArg,
    prefix: Annotated[str, typer.Option("--prefix", help="Only keys that start with this")] = "",
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most this many keys (default all)")
    ] = None,
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The view's keys in order, with their values; every page, or the first --limit keys."""
    entries: list[dict[str, Any]] = []
    after: str | None = None
    while limit is None or len(entries) < limit:
        page_size = 1000 if limit is None else min(1000, limit - len(entries))
        page = call_hub(url, token, "view_keys", name, prefix, after, page_size)
        entries += page["keys"]
        after = page["next"]
        if after is None:
            break
    if json_out:
        print_json(entries)
        return
    from rich.markup import escape

    out = console()
    for e in entries:
        out.print(f"{escape(e['key'])}  {escape(_value(e['value']))}")


@views_app.command()
def rebuild(
    name: NameArg,
    partitioned: Annotated[
        bool | None,
        typer.Option(
            "--partitioned/--no-partitioned",
            help="Lay the view out anew: one task per input partition, or one task "
            "(default: as it is)",
        ),
    ] = None,
    repartition: Annotated[
        int | None,
        typer.Option(
            "--repartition",
            min=1,
            help="Lay the view out anew, routed by key over this many partitions of "
            "__view.NAME.by-key",
        ),
    ] = None,
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Start the view over: its processor replays its inputs from earliest, then goes on live."""
    got = call_hub(url, token, "rebuild_view", name, partitioned, repartition)
    if json_out:
        print_json(got)
        return
    typer.echo(
        f"view {got['name']} emptied, generation {got['generation']}: its processor "
        "replays its inputs from earliest"
    )
