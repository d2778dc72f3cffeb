"""The ``tidings`` command line. It imports the layers; nothing imports it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

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


def _env(name: str) -> str | None:
    return os.environ.get(f"TIDINGS_{name}")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


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
        int, typer.Option(envvar="TIDINGS_SEGMENT_BYTES", help="Roll segments at this size")
    ] = 64 * 1024 * 1024,
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
            log_level=log_level,
        )
        run(config)
    except TidingsError as exc:
        _fail(exc.detail)


@bench_app.command("log")
def bench_log(
    seconds: Annotated[float, typer.Option(help="Seconds per measurement")] = 3.0,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Append throughput of the log under each fsync policy, beside bare os.write."""
    from tidings.benchmarks.log_append import main as bench_main

    argv = ["--seconds", str(seconds)] + (["--json"] if json_out else [])
    raise typer.Exit(bench_main(argv))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
