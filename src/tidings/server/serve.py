"""``tidings serve``: the hub on the embedded log or a NATS JetStream cluster, under uvicorn
with uvloop and httptools."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import resource
import socket
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

import uvicorn

from tidings.backends.embedded.history import SqliteHistoryStore
from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.backends.embedded.webhooks import SqliteWebhookStore
from tidings.backends.nats.connection import NatsSettings
from tidings.backends.nats.grouprouter import NatsGroupRouter
from tidings.backends.nats.leases import DEFAULT_LEASE_S
from tidings.backends.nats.storage import NatsStorage, read_hub_id
from tidings.backends.nats.webhookowners import NatsEndpointOwners
from tidings.backends.nats.webhooks import NatsWebhookStore
from tidings.core.hub import MAX_PARTITIONS, MAX_TOPICS, Hub, HubOptions
from tidings.core.patterns import MAX_TYPE_PATTERNS
from tidings.core.positions import parse_duration_ms
from tidings.core.storage import Storage
from tidings.core.webhooks.config import WebhookPolicy, parse_schedule
from tidings.core.webhooks.schedule import DEFAULT_DISABLE_AFTER_MS, RetrySchedule
from tidings.core.webhooks.store import WebhookStore
from tidings.core.webhooks.targets import parse_networks
from tidings.errors import BadRequest
from tidings.log.config import FsyncPolicy, LogConfig
from tidings.log.files import DEFAULT_MAX_OPEN_FILES, OpenFiles
from tidings.server.app import MAX_BODY_BYTES_IN_FLIGHT, ServerOptions, create_app
from tidings.server.auth import Auth
from tidings.server.guard import LOOPBACK_HOSTS
from tidings.server.history import HistoryOptions
from tidings.server.live import LiveOptions
from tidings.server.protocol import HttpLimits, HubHttpProtocol
from tidings.server.redact import log_config
from tidings.server.webhooks.service import WebhookService
from tidings.server.wsprotocol import HubWebSocketProtocol

logger = logging.getLogger("tidings.serve")


@dataclass(frozen=True, slots=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8700
    data_dir: Path = Path("./tidings-data")
    fsync: FsyncPolicy = field(default_factory=FsyncPolicy)
    auth_file: str | None = None
    tokens_json: str | None = None
    auto_create: bool = True
    insecure: bool = False
    segment_bytes: int = 64 * 1024 * 1024
    allowed_origins: tuple[str, ...] | None = None
    allowed_hosts: tuple[str, ...] = ()  # beside loopback names and the bound address
    ws_send_buffer: int = 1 << 20
    webhook_allow_nets: tuple[str, ...] = ()
    webhook_retry_schedule: str | None = None  # seconds before each attempt, "0,5,300"
    webhook_timeout_s: float = 15.0
    webhook_disable_after: str | None = None  # a duration: "5d", "12h", seconds
    log_level: str = "info"
    max_topics: int = MAX_TOPICS
    max_partitions: int = MAX_PARTITIONS  # per topic
    max_open_files: int = DEFAULT_MAX_OPEN_FILES  # segment and index files the log keeps open
    compaction_interval_s: float = 5.0  # between rounds of compaction of topics by key
    max_type_patterns: int = MAX_TYPE_PATTERNS
    http: HttpLimits = field(default_factory=HttpLimits)  # per connection, before the app
    keep_alive_timeout_s: int = 5  # an idle connection between requests is closed
    max_body_bytes_in_flight: int = MAX_BODY_BYTES_IN_FLIGHT
    ws_max_message_bytes: int = 4 << 20  # a WebSocket message past it is closed with 1009
    history: HistoryOptions = field(default_factory=HistoryOptions)  # metrics over time
    backend: tuple[str, ...] = ()  # NATS server URLs; empty: the embedded log
    replicas: int = 1  # of each stream and bucket, on NATS
    lease_s: float = DEFAULT_LEASE_S  # on NATS: a node's lease on a group or an endpoint


def parse_backend(given: str) -> tuple[str, ...]:
    """``embedded`` (empty), or the URLs of ``nats://HOST:PORT[,nats://HOST:PORT...]``."""
    given = given.strip()
    if given == "embedded":
        return ()
    urls = tuple(u.strip() for u in given.split(","))
    for url in urls:
        scheme, sep, rest = url.partition("://")
        hostpart, _, port = rest.rpartition(":")
        if scheme not in ("nats", "tls") or not sep or not hostpart or not port.isdigit():
            raise BadRequest(
                f"--backend {given!r}: {url!r} is not nats://HOST:PORT "
                "(the backend is embedded, or NATS URLs separated by commas)",
                field="backend",
            )
    return urls


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def served_hosts(config: ServeConfig) -> tuple[str, ...]:
    """The Host names the hub answers: loopback, the bound address, and --allowed-host."""
    bound = config.host.lower()
    if ":" in bound and not bound.startswith("["):
        bound = f"[{bound}]"  # an IPv6 address, as a Host header brackets it
    given = tuple(h.strip().lower().rstrip(".") for h in config.allowed_hosts if h.strip())
    return tuple(dict.fromkeys((*LOOPBACK_HOSTS, bound, *given)))


def build(config: ServeConfig) -> tuple[uvicorn.Config, Hub]:
    """The app and server settings, after checking that the config is safe to serve."""
    auth = Auth.load(config.auth_file, config.tokens_json)
    if not is_loopback(config.host) and not auth.enabled and not config.insecure:
        raise BadRequest(
            f"refusing to serve {config.host} without tokens: configure --auth-file, "
            "or pass --insecure to serve an open hub beyond loopback"
        )
    schedule = (
        parse_schedule(config.webhook_retry_schedule)
        if config.webhook_retry_schedule
        else RetrySchedule()
    )
    policy = WebhookPolicy(
        schedule=schedule,
        allow_nets=parse_networks(config.webhook_allow_nets),
        timeout_s=config.webhook_timeout_s,
        disable_after_ms=(
            parse_duration_ms(config.webhook_disable_after, "webhook_disable_after")
            if config.webhook_disable_after
            else DEFAULT_DISABLE_AFTER_MS
        ),
        # A failing endpoint is probed no less often than its retries come.
        probe_max_ms=max(1, min(60_000, max(schedule.delays_ms[1:], default=60_000))),
    )
    storage: Storage
    store: WebhookStore
    owners: NatsEndpointOwners | None = None
    router: NatsGroupRouter | None = None
    if config.backend:
        if config.replicas not in (1, 3, 5):
            raise BadRequest(f"--replicas must be 1, 3 or 5, not {config.replicas}")
        if not 0.1 <= config.lease_s <= 3600:
            raise BadRequest(f"--lease-time must be 0.1 to 3600 seconds, not {config.lease_s:g}")
        # the hub id is on every answer from the start: read before the server's loop
        hub_id = read_hub_id(config.backend, config.replicas)
        settings = NatsSettings(servers=config.backend)
        nats = NatsStorage(settings, replicas=config.replicas, hub_id=hub_id)
        storage = nats
        router = NatsGroupRouter(nats, lease_s=config.lease_s)
        config.data_dir.mkdir(parents=True, exist_ok=True)  # the metrics history: node-local
        store = NatsWebhookStore(
            nats,
            attempts_kept=policy.attempts_kept,
            attempts_max_age_ms=policy.attempts_max_age_ms,
        )
        owners = NatsEndpointOwners(store, lease_s=config.lease_s)
    else:
        storage = EmbeddedStorage(
            config.data_dir,
            config.fsync,
            LogConfig(segment_bytes=config.segment_bytes),
            files=OpenFiles(log_files_limit(config.max_open_files)),
        )
        store = SqliteWebhookStore(
            config.data_dir / "webhooks.sqlite3",
            "FULL" if config.fsync.mode == "always" else "NORMAL",
        )
    hub = Hub(
        storage,
        HubOptions(
            auto_create=config.auto_create,
            max_topics=config.max_topics,
            max_partitions=config.max_partitions,
            max_type_patterns=config.max_type_patterns,
            compaction_check_s=config.compaction_interval_s,
        ),
        group_router=router,
    )
    # An event's dataschema is an absolute URI (CloudEvents): the version's path here.
    host = f"[{config.host}]" if ":" in config.host else config.host
    hub.schemas.base_uri = f"http://{host}:{config.port}"
    live = LiveOptions(
        allowed_origins=config.allowed_origins, send_buffer_bytes=config.ws_send_buffer
    )
    webhooks = WebhookService(hub, store, policy, owners=owners)
    options = ServerOptions(
        live=live,
        allowed_hosts=served_hosts(config),
        max_body_bytes_in_flight=config.max_body_bytes_in_flight,
        history=config.history,
    )
    app = create_app(
        hub, auth, options, webhooks=webhooks, history_store=open_history(config.data_dir)
    )
    uv = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http=HubHttpProtocol.under(_within_descriptors(config.http)),
        timeout_keep_alive=config.keep_alive_timeout_s,
        ws=HubWebSocketProtocol,
        ws_max_size=config.ws_max_message_bytes,
        lifespan="on",
        log_level=config.log_level,
        log_config=log_config(),  # uvicorn's, with secrets in URLs redacted
        access_log=False,
        timeout_graceful_shutdown=10,
        # RFC 6455 pings from uvicorn's websockets protocol: one every 20 s, and a peer
        # that has not answered 20 s later is closed (1011).
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
    )
    return uv, hub


def open_history(data_dir: Path) -> SqliteHistoryStore | None:
    """The metrics history's file; one SQLite cannot open is moved aside and made anew
    (it holds metrics, nothing acknowledged), and if that fails too, none (memory only)."""
    path = data_dir / "history.sqlite3"
    try:
        return SqliteHistoryStore(path)
    except sqlite3.OperationalError as exc:  # locked, a full disk: the file may be fine
        logger.error("%s: %s; the metrics history is kept in memory only", path, exc)
        return None
    except sqlite3.DatabaseError as exc:
        logger.error("%s cannot be read (%s): moved aside, the history starts empty", path, exc)
    try:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").replace(Path(f"{path}{suffix}.damaged"))
        return SqliteHistoryStore(path)
    except (OSError, sqlite3.DatabaseError) as exc:
        logger.error("%s: %s; the metrics history is kept in memory only", path, exc)
        return None


# Descriptors kept for what the hub opens besides connections: segments, indexes, SQLite.
RESERVED_DESCRIPTORS = 128


def _within_descriptors(limits: HttpLimits) -> HttpLimits:
    """``limits`` within the open-file limit, leaving the process descriptors of its own.

    The soft limit is raised toward the hard one as far as max_connections needs;
    if that is not enough, max_connections is lowered. (The log's pool of open
    files gives its own back when the process runs out: see tidings.log.files.)
    """
    need = limits.max_connections + RESERVED_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        want = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return limits
    cap = max(1, soft - RESERVED_DESCRIPTORS)
    logger.warning(
        "max_connections %d is over what %d open files allow; taking %d",
        limits.max_connections, soft, cap,
    )
    return replace(limits, max_connections=cap)


class HubServer(uvicorn.Server):
    """uvicorn, telling the hub as soon as a signal asks it to stop.

    uvicorn waits for open requests before the app's shutdown runs; long polls
    would hold it for their whole wait. The hub answers them at once instead.
    """

    def __init__(self, config: uvicorn.Config, hub: Hub) -> None:
        super().__init__(config)
        self.hub = hub

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        loop = self.hub.loop
        if loop is not None:
            loop.call_soon_threadsafe(self.hub.begin_shutdown)
        super().handle_exit(sig, frame)


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            logger.warning("could not raise ulimit -n from %d to %d: %s", soft, hard, exc)
    return soft


def log_files_limit(wanted: int) -> int:
    """``wanted`` files for the log, or half the process's descriptors if that is less:
    the other half is for sockets and the databases."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and wanted > soft // 2:
        logger.warning(
            "--max-open-files %d is more than half of ulimit -n %d: the log keeps %d open",
            wanted, soft, max(4, soft // 2),
        )
        return max(4, soft // 2)
    return wanted


def serve(config: ServeConfig) -> None:
    raise_open_files_limit()
    uv, hub = build(config)
    logger.info(
        "tidings on http://%s:%d, data in %s, fsync %s",
        config.host, config.port, config.data_dir, config.fsync,
    )
    HubServer(uv, hub).run()
