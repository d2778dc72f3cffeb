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


def hub_url(value: str) -> str:
    """The ``--url`` as given, with ``http://`` put in front of a node that names no
    scheme; several nodes of one hub, comma-separated, are checked one by one."""
    from tidings.client.nodes import parse_hub_urls

    nodes = [n.strip() for n in value.split(",")]
    given = ["http://" + n if n and "://" not in n else n for n in nodes]
    try:
        return ",".join(parse_hub_urls(given))
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not a hub address: {exc}; give HOST:PORT or "
            "http(s)://HOST:PORT, several nodes separated by commas"
        ) from None


Url = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="TIDINGS_URL",
        callback=hub_url,
        help="The hub's address (http://HOST:PORT, or HOST:PORT); several nodes of "
        "one hub separated by commas, used in turn when one fails",
    ),
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", envvar="TIDINGS_TOKEN", help="Bearer token")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
DEFAULT_URL = "http://127.0.0.1:8700"


def run_async(coro: Coroutine[Any, Any, int | None], uvloop: bool = False) -> None:
    """Run ``coro`` and exit with its code; on uvloop for what runs long (as the hub does)."""
    try:
        if uvloop:
            import uvloop as _uvloop

            code = _uvloop.run(coro)
        else:
            code = asyncio.run(coro)
    except TidingsError as exc:
        fail(exc.detail)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(code or 0)


def call_hub(url: str, token: str | None, method: str, *args: Any, **kwargs: Any) -> Any:
    """Run one ``AsyncClient`` call; the answer, or a clean error exit."""
    from tidings.client import AsyncClient

    answer: list[Any] = []

    async def go() -> int:
        async with AsyncClient(url, token=token) as hub:
            answer.append(await getattr(hub, method)(*args, **kwargs))
        return 0

    try:
        run_async(go())
    except typer.Exit as exc:
        if exc.exit_code:
            raise
    return answer[0]


def print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def console(stderr: bool = False) -> Any:
    """A rich console; piped, it writes each line whole (no wrapping at 80 columns)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr, highlight=False)
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=10_000)


def local_time(ms: int | None) -> str:
    """Epoch milliseconds as a local time, 24-hour clock; ``-`` for none."""
    from datetime import datetime

    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")


# Fields of the hub's answers that hold epoch milliseconds.
TIME_FIELDS = frozenset(
    {"created", "last_success", "failing_since", "time", "expires", "previous_valid_until"}
)


def human(value: Any, key: str = "") -> str:
    """One value of an answer as a person reads it: no reprs, times as local times."""
    if key in TIME_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return local_time(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(human(v) for v in value) if value else "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={human(v, k)}" for k, v in value.items()) if value else "-"
    return str(value)


def show_fields(obj: dict[str, Any]) -> None:
    """An answer as ``key: value`` lines; a nested object as indented lines of its own."""
    from rich.markup import escape

    out = console()
    for key, value in obj.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            out.print(f"[bold]{escape(key)}[/bold]:")
            for name, inner in value.items():
                out.print(f"  {escape(str(name))}: {escape(human(inner))}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out.print(f"[bold]{escape(key)}[/bold]:")
            for inner in value:
                out.print(f"  - {escape(human(inner))}")
        else:
            out.print(f"[bold]{escape(key)}[/bold]: {escape(human(value, key))}")
