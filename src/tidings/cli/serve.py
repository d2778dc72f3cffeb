"""``tidings serve``: the hub's settings as flags and ``TIDINGS_*`` variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from tidings.cli.support import fail as _fail
from tidings.errors import TidingsError


def _env(name: str) -> str | None:
    return os.environ.get(f"TIDINGS_{name}")


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
        int,
        typer.Option(
            envvar="TIDINGS_SEGMENT_BYTES", min=4096, help="Roll segments at this size (bytes)"
        ),
    ] = 64 * 1024 * 1024,
    allowed_origin: Annotated[
        list[str] | None,
        typer.Option(
            envvar="TIDINGS_ALLOWED_ORIGINS",
            help="Browser origin allowed to open a WebSocket and to change the hub "
            "(repeatable; '*' for any). Default: loopback origins and the hub's own",
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            envvar="TIDINGS_ALLOWED_HOSTS",
            help="Host name clients reach the hub by, e.g. behind a proxy (repeatable; "
            "'.example.com' for a domain and its subdomains, '*' for any). "
            "Always served: localhost, 127.0.0.1, [::1] and the --host address",
        ),
    ] = None,
    ws_send_buffer: Annotated[
        int,
        typer.Option(
            envvar="TIDINGS_WS_SEND_BUFFER",
            min=4096,
            help="Bytes queued for one WebSocket before it is a slow consumer (4008)",
        ),
    ] = 1 << 20,
    webhook_allow_net: Annotated[
        list[str] | None,
        typer.Option(
            envvar="TIDINGS_WEBHOOK_ALLOW_NET",
            help="Let webhooks reach this network, in CIDR notation (repeatable), "
            "e.g. 127.0.0.0/8; otherwise only public addresses",
        ),
    ] = None,
    webhook_retry_schedule: Annotated[
        str | None,
        typer.Option(
            envvar="TIDINGS_WEBHOOK_RETRY_SCHEDULE",
            help="Seconds to wait before each webhook attempt, comma-separated "
            "(default 0,5,300,1800,7200,18000,36000,36000)",
        ),
    ] = None,
    webhook_timeout: Annotated[
        float,
        typer.Option(
            envvar="TIDINGS_WEBHOOK_TIMEOUT",
            min=0.001,
            max=300,
            help="Seconds a webhook endpoint has to answer an attempt",
        ),
    ] = 15.0,
    webhook_disable_after: Annotated[
        str | None,
        typer.Option(
            envvar="TIDINGS_WEBHOOK_DISABLE_AFTER",
            help="Disable a webhook endpoint after this long without a success "
            "(seconds, or 30m, 12h, 5d; default 5d)",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(envvar="TIDINGS_LOG_LEVEL")] = "info",
    max_topics: Annotated[
        int,
        typer.Option(
            envvar="TIDINGS_MAX_TOPICS",
            min=1,
            help="Topics the hub holds; past it a new topic is refused (409), except "
            "a group's dead-letter topic, which the hub makes on the group's behalf",
        ),
    ] = 10_000,
    max_partitions: Annotated[
        int,
        typer.Option(envvar="TIDINGS_MAX_PARTITIONS", min=1, help="Partitions one topic may have"),
    ] = 1024,
    max_open_files: Annotated[
        int,
        typer.Option(
            envvar="TIDINGS_MAX_OPEN_FILES",
            min=4,
            help="Segment and index files the log keeps open at once; the least recently "
            "used are closed (at most half of ulimit -n)",
        ),
    ] = 256,
    compaction_interval: Annotated[
        float,
        typer.Option(
            envvar="TIDINGS_COMPACTION_INTERVAL",
            min=0.01,
            help="Seconds between rounds of compaction of the topics compacted by key",
        ),
    ] = 5.0,
    max_type_patterns: Annotated[
        int,
        typer.Option(
            envvar="TIDINGS_MAX_TYPE_PATTERNS",
            min=1,
            help="Type patterns one read, fetch, group, subscription or webhook may name",
        ),
    ] = 100,
    max_header_bytes: Annotated[
        int,
        typer.Option(
            envvar="TIDINGS_MAX_HEADER_BYTES",
            min=1024,
            help="Bytes of a request's line and header fields; more is a 431",
        ),
    ] = 64 * 1024,
    max_headers: Annotated[
        int,
        typer.Option(
            envvar="TIDINGS_MAX_HEADERS", min=8, help="Header fields of a request; more is a 431"
        ),
    ] = 100,
    header_timeout: Annotated[
        float,
        typer.Option(
            envvar="TIDINGS_HEADER_TIMEOUT",
            min=0.1,
            help="Seconds a request's line and headers may take to arrive; then 408 and close",
        ),
    ] = 10.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            envvar="TIDINGS_BODY_TIMEOUT",
            min=0.1,
            help="Seconds a request's body may take to arrive after its head; then 408 and close",
        ),
    ] = 60.0,
    keep_alive_timeout: Annotated[
        int,
        typer.Option(
            envvar="TIDINGS_KEEP_ALIVE_TIMEOUT",
            min=1,
            help="Seconds an idle connection is kept open between requests",
        ),
    ] = 5,
    max_connections: Annotated[
        int,
        typer.Option(
            envvar="TIDINGS_MAX_CONNECTIONS",
            min=1,
            help="Open connections (HTTP, WebSocket, SSE); more are answered 503 "
            "(lowered to leave 128 of the process's open-file limit)",
        ),
    ] = 1024,
    max_body_bytes_in_flight: Annotated[
        int,
        typer.Option(
            envvar="TIDINGS_MAX_BODY_BYTES_IN_FLIGHT",
            min=16 << 20,
            help="Request body bytes the hub reads at once, across requests; "
            "a body past it is a 503 with Retry-After",
        ),
    ] = 64 << 20,
    ws_max_message_bytes: Annotated[
        int,
        typer.Option(
            envvar="TIDINGS_WS_MAX_MESSAGE_BYTES",
            min=64 * 1024,
            help="Bytes of one WebSocket message from a client; more closes it with 1009",
        ),
    ] = 4 << 20,
    history_interval: Annotated[
        float,
        typer.Option(
            envvar="TIDINGS_HISTORY_INTERVAL",
            min=0.1,
            max=3600,
            help="Seconds between points of the metrics history (GET /v1/metrics/history); "
            "it keeps the last 8640 points, 24 h at the default",
        ),
    ] = 10.0,
    backend: Annotated[
        str,
        typer.Option(
            envvar="TIDINGS_BACKEND",
            help="Where the log lives: embedded (in --data-dir), or a NATS JetStream "
            "cluster, nats://HOST:PORT[,nats://HOST:PORT...], shared by every node "
            "given the same cluster",
        ),
    ] = "embedded",
    replicas: Annotated[
        int,
        typer.Option(
            envvar="TIDINGS_REPLICAS",
            help="With a NATS backend: copies of each stream and bucket (1, 3 or 5)",
        ),
    ] = 1,
    lease_time: Annotated[
        float,
        typer.Option(
            envvar="TIDINGS_LEASE_TIME",
            help="With a NATS backend: seconds a node's lease on a consumer group or a "
            "webhook endpoint lasts unrenewed; another node takes it over after about that",
        ),
    ] = 10.0,
) -> None:
    """Serve the hub on the embedded log, or on a NATS JetStream cluster."""
    from tidings.log.config import FsyncPolicy
    from tidings.server.history import HistoryOptions
    from tidings.server.protocol import HttpLimits
    from tidings.server.serve import ServeConfig, parse_backend
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
            allowed_origins=_origins(allowed_origin),
            allowed_hosts=_split(allowed_host),
            ws_send_buffer=ws_send_buffer,
            webhook_allow_nets=_split(webhook_allow_net),
            webhook_retry_schedule=webhook_retry_schedule,
            webhook_timeout_s=webhook_timeout,
            webhook_disable_after=webhook_disable_after,
            log_level=log_level,
            max_topics=max_topics,
            max_partitions=max_partitions,
            max_open_files=max_open_files,
            compaction_interval_s=compaction_interval,
            max_type_patterns=max_type_patterns,
            http=HttpLimits(
                max_header_bytes=max_header_bytes,
                max_headers=max_headers,
                header_timeout_s=header_timeout,
                body_timeout_s=body_timeout,
                max_connections=max_connections,
            ),
            keep_alive_timeout_s=keep_alive_timeout,
            max_body_bytes_in_flight=max_body_bytes_in_flight,
            ws_max_message_bytes=ws_max_message_bytes,
            history=HistoryOptions(interval_ms=max(1, round(history_interval * 1000))),
            backend=parse_backend(backend),
            replicas=replicas,
            lease_s=lease_time,
        )
        run(config)
    except TidingsError as exc:
        _fail(exc.detail)


def _split(given: list[str] | None) -> tuple[str, ...]:
    """Values of a repeatable option; its variable may hold several, comma-separated."""
    return tuple(v.strip() for item in given or () for v in item.split(",") if v.strip())


def _origins(given: list[str] | None) -> tuple[str, ...] | None:
    """Origins from flags or TIDINGS_ALLOWED_ORIGINS (comma- or space-separated)."""
    if not given:
        return None
    origins = tuple(o.strip().rstrip("/") for g in given for o in g.replace(",", " ").split())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            _fail(f"--allowed-origin {origin!r} is not '*' nor an http(s) origin")
    return origins
