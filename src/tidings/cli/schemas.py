"""``tidings schemas``: the schema registry; ``check`` tells, before a deploy, what would break."""

from __future__ import annotations

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
    call_hub,
    console,
    fail,
    print_json,
    run_async,
)

schemas_app = typer.Typer(
    help="Event types' JSON Schemas: versions, compatibility, producers and consumers.",
    no_args_is_help=True,
)

TypeArg = Annotated[str, typer.Argument(help="The event type, e.g. order.placed")]


@schemas_app.command("list")
def list_schemas(url: Url = DEFAULT_URL, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Every registered type, and the types seen in traffic that have no schema."""
    got = call_hub(url, token, "schemas")
    if json_out:
        print_json(got)
        return
    from rich.table import Table

    table = Table()
    for col in ("type", "latest", "compatibility", "producers", "consumers", "failures"):
        table.add_column(col, no_wrap=col == "type")
    for s in got["schemas"]:
        table.add_row(
            s["type"], str(s["latest"]), s["compatibility"], ", ".join(s["producers"]),
            ", ".join(s["consumers"]), str(s["failures"]),
        )
    for etype in got["unregistered"]:
        table.add_row(etype, "-", "no schema: tidings schemas adopt " + etype, "", "", "")
    console().print(table)


@schemas_app.command()
def show(
    etype: TypeArg,
    version: Annotated[
        str | None, typer.Option("--version", help="Print this version's schema (or latest)")
    ] = None,
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A type: versions, compatibility, producers, consumers; or one version's schema."""
    if version is not None:
        got = call_hub(url, token, "schema_version", etype, version)
        print_json(got if json_out else got["schema"])
        return
    got = call_hub(url, token, "schema", etype)
    if json_out:
        print_json(got)
        return
    out = console()
    out.print(f"[bold]{got['type']}[/bold]  compatibility {got['compatibility']}, "
              f"latest version {got['latest']}")
    for v in got["versions"]:
        out.print(f"  v{v['version']}  {v['uri']}")
    for label in ("producers", "consumers"):
        names = [f"{p['name']} ({p['via']})" for p in got[label]]
        out.print(f"{label}: {', '.join(names) or '-'}")
    failures = got["failures"]
    out.print(f"refused at publish: {failures['count']}"
              + (f" (last: {failures['last']})" if failures["last"] else ""))


def _read_schema(path: str) -> Any:
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        fail(f"{path} is not JSON: {exc}")


@schemas_app.command()
def put(
    etype: TypeArg,
    file: Annotated[str, typer.Argument(help="A JSON Schema 2020-12 file, or - for stdin")],
    producer: Annotated[str | None, typer.Option(help="The app that emits it")] = None,
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a schema: a new version if compatible (else each breaking change, exit 2)."""
    got = call_hub(url, token, "put_schema", etype, _read_schema(file), producer=producer)
    if json_out:
        print_json(got)
    else:
        state = "registered as" if got["created"] else "already is"
        typer.echo(f"{etype}: {state} version {got['version']} ({got['uri']})")


@schemas_app.command()
def config(
    etype: TypeArg,
    compatibility: Annotated[
        str,
        typer.Argument(help="none, backward, forward, full, or *_transitive"),
    ],
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Set a type's compatibility mode (default backward)."""
    got = call_hub(url, token, "configure_schema", etype, compatibility)
    typer.echo(f"{got['type']}: compatibility {got['compatibility']}")


@schemas_app.command()
def adopt(
    etype: TypeArg,
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register the schema the hub inferred from the type's recent events."""
    inferred = call_hub(url, token, "inferred_schema", etype)
    got = call_hub(url, token, "put_schema", etype, inferred["schema"])
    if json_out:
        print_json({**got, "schema": inferred["schema"], "events": inferred["events"]})
    else:
        typer.echo(
            f"{etype}: adopted the schema inferred from {inferred['events']} events "
            f"as version {got['version']} ({got['uri']})"
        )


@schemas_app.command()
def check(
    paths: Annotated[list[str], typer.Argument(help="Apps as module:attribute")],
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check the apps' models against the registry without starting them: exit 1 on a
    breaking change, naming it by path and the consumers that would break."""
    from tidings.app.contracts import check as check_contracts
    from tidings.app.loading import AppNotFound, load_apps
    from tidings.app.transport import HttpTransport

    try:
        apps = load_apps(paths)
    except AppNotFound as exc:
        fail(str(exc))
    results: list[dict[str, Any]] = []

    async def go() -> int:
        transport = HttpTransport(url, token)
        try:
            results.extend(await check_contracts(apps, transport))
        finally:
            await transport.close()
        return 0

    try:
        run_async(go())
    except typer.Exit as exc:
        if exc.exit_code:
            raise
    broken = [r for r in results if not r["compatible"]]
    if json_out:
        print_json({"compatible": not broken, "contracts": results})
    else:
        for r in results:
            mark = "ok  " if r["compatible"] else "FAIL"
            where = f"version {r['version']}" if r.get("version") else "new"
            typer.echo(f"{mark} {r['app']}: {r['role']} of {r['type']} ({r['model']}, {where})")
            for c in r["changes"]:
                typer.echo(f"       {c['path']}: {c['detail']}")
            for consumer in r["consumers"]:
                typer.echo(f"       would break consumer {consumer['name']}:")
                for c in consumer["changes"]:
                    typer.echo(f"         {c['path']}: {c['detail']}")
        if broken:
            typer.echo(f"{len(broken)} breaking change(s) in {len(results)} contract(s)", err=True)
    raise typer.Exit(1 if broken else 0)
