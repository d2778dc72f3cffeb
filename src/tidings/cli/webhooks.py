"""``tidings webhooks``: register endpoints, read their attempts, replay what they missed."""

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
    show_fields,
)

webhooks_app = typer.Typer(
    help="Webhook endpoints: signed POSTs of every matching event, retried until a 2xx.",
    no_args_is_help=True,
)

IdArg = Annotated[str, typer.Argument(help="The webhook's id (wh_…)")]


def _show(obj: Any, json_out: bool) -> None:
    if json_out:
        print_json(obj)
    else:
        show_fields(obj)


def _table(*columns: str) -> Any:
    """A table whose first column (the id one copies) is never cut or wrapped."""
    from rich.table import Table

    table = Table()
    for i, name in enumerate(columns):
        if i == 0:
            table.add_column(name, no_wrap=True, overflow="ignore")
        else:
            table.add_column(name, overflow="fold")
    return table


def _one_line(text: str | None, width: int = 40) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@webhooks_app.command("list")
def list_(url: Url = DEFAULT_URL, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """List endpoints with their state."""
    items = call_hub(url, token, "webhooks")
    if json_out:
        print_json(items)
        return
    table = _table("id", "url", "topics", "state", "last success")
    for w in items:
        table.add_row(
            w["id"], w["url"], ", ".join(w["topics"]), w["state"], local_time(w["last_success"])
        )
    console().print(table)


@webhooks_app.command()
def create(
    endpoint: Annotated[str, typer.Argument(help="The URL that receives the POSTs")],
    topic: Annotated[list[str], typer.Option("--topic", help="A topic to follow (repeatable)")],
    type_: Annotated[
        list[str] | None, typer.Option("--type", help="Event type pattern (repeatable)")
    ] = None,
    description: Annotated[str | None, typer.Option(help="What the endpoint is")] = None,
    rate_limit: Annotated[float | None, typer.Option(help="Deliveries per second at most")] = None,
    ordering: Annotated[str | None, typer.Option(help="none | key")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Attempts in flight at most")] = None,
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register an endpoint; prints its id and its signing secret."""
    answer = call_hub(
        url, token, "create_webhook", endpoint, topic, types=type_, description=description,
        rate_limit=rate_limit, ordering=ordering, concurrency=concurrency,
    )  # fmt: skip
    _show(answer, json_out)


@webhooks_app.command()
def show(
    id: IdArg, url: Url = DEFAULT_URL, token: TokenOpt = None, json_out: JsonOpt = False
) -> None:
    """One endpoint: config, state, lag per topic."""
    _show(call_hub(url, token, "webhook", id), json_out)


@webhooks_app.command()
def update(
    id: IdArg,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="A new URL")] = None,
    topic: Annotated[list[str] | None, typer.Option("--topic", help="Topics (replaces)")] = None,
    type_: Annotated[list[str] | None, typer.Option("--type", help="Types (replaces)")] = None,
    enable: Annotated[
        bool | None, typer.Option("--enable/--disable", help="Enable (drains what it missed)")
    ] = None,
    rate_limit: Annotated[float | None, typer.Option(help="Deliveries per second at most")] = None,
    ordering: Annotated[str | None, typer.Option(help="none | key")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Attempts in flight at most")] = None,
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Change an endpoint; --enable brings a disabled one back."""
    changes: dict[str, Any] = {}
    for key, value in (
        ("url", endpoint), ("topics", topic), ("types", type_), ("enabled", enable),
        ("rate_limit", rate_limit), ("ordering", ordering), ("concurrency", concurrency),
    ):  # fmt: skip
        if value is not None:
            changes[key] = value
    _show(call_hub(url, token, "update_webhook", id, **changes), json_out)


@webhooks_app.command()
def delete(
    id: IdArg, url: Url = DEFAULT_URL, token: TokenOpt = None, json_out: JsonOpt = False
) -> None:
    """Delete an endpoint, its attempts log and its dead letters."""
    call_hub(url, token, "delete_webhook", id)
    if json_out:
        print_json({"id": id, "deleted": True})
    else:
        console().print(f"deleted {id}")


@webhooks_app.command("rotate-secret")
def rotate_secret(
    id: IdArg,
    grace: Annotated[str | None, typer.Option(help="How long the old secret still signs")] = None,
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A new signing secret; the old one signs beside it for the grace period."""
    _show(call_hub(url, token, "rotate_webhook_secret", id, grace), json_out)


@webhooks_app.command()
def attempts(
    id: IdArg,
    status: Annotated[str | None, typer.Option(help="succeeded | failed")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The attempts log, newest first, with the start of each answer."""
    page = call_hub(url, token, "webhook_attempts", id, status, limit)
    if json_out:
        print_json(page)
        return
    table = _table("event", "time", "position", "try", "outcome", "status", "ms", "answer")
    for a in page["attempts"]:
        where = "-" if a["topic"] is None else f"{a['topic']}/{a['partition']}@{a['offset']}"
        table.add_row(
            a["msg_id"], local_time(a["time"]), where, str(a["attempt"]), a["outcome"],
            str(a["status"] or "-"), f"{a['latency_ms']:.1f}",
            _one_line(a["error"] or a["response"]),
        )  # fmt: skip
    console().print(table)


@webhooks_app.command()
def replay(
    id: IdArg,
    since: Annotated[
        str, typer.Option("--since", help="A time (RFC 3339 or ms) or, with --topic, a position")
    ],
    topic: Annotated[str | None, typer.Option(help="Only this topic")] = None,
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Deliver again every matching event since a time or a position."""
    _show(call_hub(url, token, "replay_webhook", id, since, topic), json_out)


@webhooks_app.command()
def test(
    id: IdArg, url: Url = DEFAULT_URL, token: TokenOpt = None, json_out: JsonOpt = False
) -> None:
    """Send one test event now and show how the endpoint answered."""
    answer = call_hub(url, token, "test_webhook", id)
    _show(answer if json_out else answer["attempt"], json_out)


@webhooks_app.command("dead-letters")
def dead_letters(
    id: IdArg,
    replay: Annotated[bool, typer.Option("--replay", help="Send them again")] = False,
    only: Annotated[
        list[int] | None, typer.Option("--id", help="With --replay: only these (repeatable)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    url: Url = DEFAULT_URL,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Events whose attempts were all spent; --replay sends them again."""
    if replay:
        _show(call_hub(url, token, "replay_webhook_dead_letters", id, only), json_out)
        return
    page = call_hub(url, token, "webhook_dead_letters", id, limit)
    if json_out:
        print_json(page)
        return
    table = _table("id", "time", "event", "position", "attempts", "reason", "replaying")
    for d in page["dead_letters"]:
        table.add_row(
            str(d["id"]), local_time(d["time"]), d["msg_id"],
            f"{d['topic']}/{d['partition']}@{d['offset']}", str(d["attempts"]), d["reason"],
            "yes" if d["replaying"] else "",
        )  # fmt: skip
    console().print(table)
