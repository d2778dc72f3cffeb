"""The commands on handler apps: run, asyncapi, and the shop demo."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

from tidings.cli.support import fail as _fail
from tidings.cli.support import run_async as _run


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
    # handlers wait on the network: uvloop's loop is cheaper
    _run(run_all(apps, own_process=True), uvloop=True)


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
