"""The ``tidings`` command line. It imports the layers; nothing imports it."""

import sys
from typing import Annotated

import typer

from tidings.cli import apps, check, cluster, events, lookup, serve
from tidings.cli.bench import bench_app
from tidings.cli.schemas import schemas_app
from tidings.cli.views import views_app
from tidings.cli.webhooks import webhooks_app

app = typer.Typer(
    name="tidings",
    help="An event hub: durable event log, pub/sub, consumer groups, CloudEvents over HTTP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"tidings {version('tidings')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version"),
    ] = None,
) -> None:
    """An event hub: durable event log, pub/sub, consumer groups, CloudEvents over HTTP."""


app.add_typer(bench_app, name="bench")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(schemas_app, name="schemas")
app.add_typer(views_app, name="views")
app.add_typer(lookup.events_app, name="events")

app.command()(serve.serve)
app.command()(cluster.cluster)
app.command()(events.publish)
app.command()(events.tail)
app.command()(events.topics)
app.command()(events.groups)
app.command("run")(apps.run_apps)
app.command("asyncapi")(apps.asyncapi_doc)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
    apps.demo
)
app.command()(events.replay)
app.command()(lookup.trace)
app.command()(check.check)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
