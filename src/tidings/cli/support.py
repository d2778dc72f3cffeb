"""What the commands of ``tidings`` share: options, running a coroutine, output."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Annotated, Any, NoReturn

import orjson
import typer

from tidings.errors import TidingsError


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


Url = Annotated[
    str, typer.Option("--url", envvar="TIDINGS_URL", help="The hub's address")
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", envvar="TIDINGS_TOKEN", help="Bearer token")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
DEFAULT_URL = "http://127.0.0.1:8700"


def run_async(coro: Coroutine[Any, Any, int | None]) -> None:
    try:
        code = asyncio.run(coro)
    except TidingsError as exc:
        fail(exc.detail)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(code or 0)


def print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)
