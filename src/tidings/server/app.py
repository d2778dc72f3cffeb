"""The HTTP API under ``/v1``: a thin ASGI layer over :class:`~tidings.core.hub.Hub`.

Handlers parse and check the request, call the hub, and write JSON; errors are
raised as :mod:`tidings.errors` and become problem+json in :mod:`.problems`.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from tidings.core.groups import Delivery, GroupConfig, check_client_group
from tidings.core.history import (
    LABEL_FILTERS,
    HistoryStore,
    MetricsHistory,
    parse_families,
    parse_since,
)
from tidings.core.hub import Hub
from tidings.core.patterns import TypeFilter
from tidings.core.positions import (
    check_client_topic,
    format_token,
    is_decimal,
    parse_duration_ms,
)
from tidings.core.storage import Retention
from tidings.core.viewrecords import view_of
from tidings.errors import BadRequest, StorageUnavailable, TidingsError
from tidings.log.config import COMPACTION_MODES
from tidings.server import asyncapi, openapi
from tidings.server.auth import Action, Auth
from tidings.server.budget import BodyBudget, BodyBudgetMiddleware
from tidings.server.guard import LOOPBACK_HOSTS, BrowserGuard, BrowserRules
from tidings.server.history import HistoryOptions, HistorySampler
from tidings.server.live import LiveOptions
from tidings.server.lookup import LookupRoutes
from tidings.server.metrics import render_metrics
from tidings.server.problems import http_error, tidings_error, unexpected_error
from tidings.server.publish import HubApp, PublishEndpoint, read_body
from tidings.server.routing import one_route_per_path
from tidings.server.schemas import SchemaRoutes
from tidings.server.sse import SseEndpoint
from tidings.server.tickets import Tickets
from tidings.server.views import ViewRoutes, authorize_view
from tidings.server.webhooks.routes import WebhookRoutes
from tidings.server.webhooks.service import WebhookService
from tidings.server.ws import WebSocketEndpoint

MAX_REQUEST_BYTES = 16 << 20
MAX_BODY_BYTES_IN_FLIGHT = 64 << 20
STATIC_DIR = Path(__file__).parent / "static"
# The dashboard runs only its own scripts and talks only to this hub.
DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass(frozen=True, slots=True)
class ServerOptions:
    max_request_bytes: int = MAX_REQUEST_BYTES
    # Request body bytes read or parsed at once, across requests; past it 503 (Retry-After).
    max_body_bytes_in_flight: int = MAX_BODY_BYTES_IN_FLIGHT
    live: LiveOptions = field(default_factory=LiveOptions)  # WebSocket and SSE
    # Host names the hub answers (see .guard); allowed origins are live.allowed_origins.
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    history: HistoryOptions = field(default_factory=HistoryOptions)  # /v1/metrics/history


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _records_body(topic: str, records: list[tuple[int, int, bytes]], extra: bytes) -> bytes:
    """``{"records": [...]...}`` with each stored event spliced in as it is, unparsed."""
    head = b'{"topic":' + orjson.dumps(topic) + b',"partition":'
    parts = [
        head + b"%d,\"offset\":%d,\"event\":" % (p, o) + payload + b"}"
        for p, o, payload in records
    ]
    return b'{"records":[' + b",".join(parts) + b"]" + extra + b"}"


def _timed_body(topic: str, records: list[tuple[int, int, int, bytes]], extra: bytes) -> bytes:
    """:func:`_records_body` with each record's append time (``"appended"``, ms)."""
    head = b'{"topic":' + orjson.dumps(topic) + b',"partition":'
    parts = [
        head + b"%d,\"offset\":%d,\"appended\":%d,\"event\":" % (p, o, t) + payload + b"}"
        for p, o, t, payload in records
    ]
    return b'{"records":[' + b",".join(parts) + b"]" + extra + b"}"


def _deliveries_body(topic: str, deliveries: list[Delivery]) -> bytes:
    head = b'{"topic":' + orjson.dumps(topic) + b',"partition":'
    parts = [
        head
        + b'%d,"offset":%d,"lease":"%s","deliveries":%d,"event":'
        % (d.partition, d.offset, d.lease.encode(), d.deliveries)
        + d.payload
        + b"}"
        for d in deliveries
    ]
    return b'{"records":[' + b",".join(parts) + b"]}"


class Api:
    """Route handlers bound to one hub."""

    def __init__(
        self,
        hub: Hub,
        auth: Auth,
        options: ServerOptions,
        webhooks: WebhookService | None = None,
    ) -> None:
        self.hub = hub
        self.auth = auth
        self.options = options
        self.webhooks = webhooks
        self.tickets = Tickets()  # stand-ins for a token on /v1/ws and SSE URLs
        # Open live connections per channel, for /metrics; create_app fills it in.
        self.connections: Callable[[], dict[str, int]] | None = None
        self.history: MetricsHistory | None = None  # create_app fills it in

    def _authorize(self, request: Request, action: Action, topic: str | None = None) -> None:
        if self.auth.enabled:
            self.auth.check(request.headers.get("authorization"), action, topic)

    def _group(self, request: Request) -> tuple[str, str]:
        """The topic and group a group route names; Forbidden for the hub's own groups,
        whatever the token (after it is known to be a token at all)."""
        topic, name = request.path_params["topic"], request.path_params["group"]
        if self.auth.enabled:
            self.auth.token(request.headers.get("authorization"))
        check_client_group(name)
        check_client_topic(topic)
        return topic, name

    async def _body(self, request: Request) -> bytes:
        return await read_body(
            request.receive, request.headers.get("content-length"), self.options.max_request_bytes
        )

    async def _json_body(self, request: Request, allow_empty: bool = True) -> dict[str, Any]:
        body = await self._body(request)
        if not body.strip():
            if allow_empty:
                return {}
            raise BadRequest("request body must be a JSON object")
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"malformed JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise BadRequest("request body must be a JSON object")
        return _whole_numbers(obj)  # type: ignore[no-any-return]

    # -- operations ------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        # The hub's id: the same on every node of one hub (see .hubid).
        return _json({"status": "ok", "hub_id": self.hub.id})

    async def readyz(self, request: Request) -> Response:
        if self.hub.closing:
            raise StorageUnavailable("the hub is shutting down")
        if not self.hub.ready:
            raise StorageUnavailable("the hub is refilling its dedupe window from the log")
        failed = self.hub.failed_partitions()
        if failed:
            topic, p, why = failed[0]
            raise StorageUnavailable(
                f"{len(failed)} partition(s) refuse appends until they heal; "
                f"{topic}/{p}: {why}",
                failed=[{"topic": t, "partition": i} for t, i, _ in failed[:100]],
            )
        return _json({"status": "ready", "topics": len(self.hub.topics)})

    async def metrics(self, request: Request) -> Response:
        self._authorize(request, "admin")  # names every topic and group
        return Response(
            render_metrics(
                self.hub, self.webhooks, self.connections() if self.connections else None
            ),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    async def metrics_history(self, request: Request) -> Response:
        self._authorize(request, "admin")  # names every topic, group and webhook
        q = request.query_params
        _only(q, {"series", "since", *LABEL_FILTERS})
        for name in ("series", "since", *LABEL_FILTERS):
            if len(q.getlist(name)) > 1:
                raise BadRequest(f"{name} is given more than once", field=name)
        families = parse_families(q.get("series"))
        since = parse_since(q.get("since"), self.hub.clock.time_ms())
        labels = {k: q[k] for k in LABEL_FILTERS if k in q}
        assert self.history is not None  # create_app sets it
        return _json(self.history.query(families, since, labels))

    async def openapi_json(self, request: Request) -> Response:
        return _json(openapi.spec())

    async def asyncapi_json(self, request: Request) -> Response:
        # Names topics and event types: open only where listing topics is.
        if self.auth.enabled:
            self._authorize(request, "admin")
        return _json(await asyncapi.document(self.hub))

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(openapi.docs_html())

    async def index(self, request: Request) -> Response:
        # The dashboard: a static page that reads everything through the API with the
        # token the user gives it, so the page itself names nothing.
        return HTMLResponse(
            (STATIC_DIR / "dashboard" / "index.html").read_bytes(),
            headers={"content-security-policy": DASHBOARD_CSP},
        )

    async def ws_ticket(self, request: Request) -> Response:
        # A ticket acts for the token that asked for it, once, on one live URL (.tickets).
        token = self.auth.token(request.headers.get("authorization")) if self.auth.enabled else None
        _only(await self._json_body(request), set())
        ticket = self.tickets.issue(token)
        return _json({"ticket": ticket, "expires_in": self.tickets.ttl_s})

    # -- topics ------------------------------------------------------------------------

    async def list_topics(self, request: Request) -> Response:
        shown = self.auth.visible(request.headers.get("authorization"), self.hub.topics)
        topics = sorted(self.hub.topics.items())
        return _json({"topics": [t.info() for n, t in topics if n in shown]})

    async def put_topic(self, request: Request) -> Response:
        name = request.path_params["topic"]
        self._authorize(request, "admin")
        check_client_topic(name)
        body = await self._json_body(request)
        _only(body, {"partitions", "retention", "schemas", "compaction", "delete_retention"})
        existing = self.hub.topics.get(name)
        retention = None
        if "retention" in body:
            retention = _parse_retention(
                body["retention"], existing.retention if existing else Retention()
            )
        if "compaction" in body or "delete_retention" in body:
            retention = _parse_compaction(
                body, retention or (existing.retention if existing else Retention())
            )
        topic, created = await self.hub.create_topic(
            name, body.get("partitions"), retention, body.get("schemas")
        )
        return _json(topic.info(), 201 if created else 200)

    async def get_topic(self, request: Request) -> Response:
        name = request.path_params["topic"]
        self._authorize(request, "subscribe", name)
        return _json(self.hub.topic(name).info())

    async def delete_topic(self, request: Request) -> Response:
        name = request.path_params["topic"]
        self._authorize(request, "admin")
        check_client_topic(name)
        await self.hub.delete_topic(name)
        return Response(status_code=204)

    # -- publish and read -----------------------------------------------------------------

    async def read(self, request: Request) -> Response:
        name = request.path_params["topic"]
        view = view_of(name)
        if view is not None and view in self.hub.views.views:
            await self.hub.views.ready()  # its scope is known once the changelogs are read
            authorize_view(self, request, view, "subscribe")  # a changelog: the view's scope
        else:
            self._authorize(request, "subscribe", name)
        q = request.query_params
        _only(q, {"partition", "from", "from_time", "limit", "wait", "types", "appended"})
        appended = q.get("appended", "false")
        if appended not in ("true", "false"):
            raise BadRequest(f"appended must be true or false, not {appended!r}", field="appended")
        topic = self.hub.topic(name)
        partition = _opt_int(q.get("partition"), "partition")
        positions = await self.hub.positions(topic, partition, q.get("from"), q.get("from_time"))
        limit = 100 if (n := _opt_int(q.get("limit"), "limit")) is None else n
        wait = _opt_seconds(q.get("wait"), "wait")
        types = TypeFilter.parse(q.get("types"), limit=self.hub.options.max_type_patterns)
        if appended == "true":
            timed = await self.hub.read(name, positions, limit, wait, types, appended=True)
            extra = b',"next":%s,"horizon":%d' % (
                orjson.dumps(format_token(timed.next)), timed.horizon
            )
            if timed.skipped:
                extra += b',"skipped":' + orjson.dumps([s.to_dict() for s in timed.skipped])
            return Response(_timed_body(name, timed.records, extra), media_type="application/json")
        result = await self.hub.read(name, positions, limit, wait, types)
        extra = b',"next":' + orjson.dumps(format_token(result.next))
        if result.skipped:  # offsets lost to damage on disk that this read stepped over
            extra += b',"skipped":' + orjson.dumps([s.to_dict() for s in result.skipped])
        return Response(_records_body(name, result.records, extra), media_type="application/json")

    # -- consumer groups -----------------------------------------------------------------

    async def put_group(self, request: Request) -> Response:
        topic, name = self._group(request)
        self._authorize(request, "manage", topic)
        if topic not in self.hub.topics:
            self._authorize(request, "publish", topic)  # it creates the topic
        body = await self._json_body(request)
        config = _parse_group_config(body, self.hub.options.max_type_patterns)
        if config.dead_letter_topic is not None:
            # A topic the token names is one it must be able to publish to: dead
            # letters are published there. The default {topic}.dlq is the hub's.
            self._authorize(request, "publish", config.dead_letter_topic)
        info, created = await self.hub.configure_group(topic, name, config)
        return _json(info, 201 if created else 200)

    async def get_group(self, request: Request) -> Response:
        topic, name = self._group(request)
        self._authorize(request, "subscribe", topic)
        return _json(await self.hub.describe_group(topic, name))

    async def delete_group(self, request: Request) -> Response:
        topic, name = self._group(request)
        self._authorize(request, "manage", topic)
        await self.hub.delete_group(topic, name)
        return Response(status_code=204)

    async def list_groups(self, request: Request) -> Response:
        groups = await self.hub.describe_groups()
        auth = request.headers.get("authorization")
        shown = self.auth.visible(auth, {g["topic"] for g in groups})
        return _json({"groups": [g for g in groups if g["topic"] in shown]})

    async def fetch(self, request: Request) -> Response:
        topic, name = self._group(request)
        self._authorize(request, "subscribe", topic)
        body = await self._json_body(request)
        _only(body, {"max", "wait", "types"})
        types = body.get("types")
        if types is not None and not (
            isinstance(types, list) and all(isinstance(t, str) for t in types)
        ):
            raise BadRequest("types must be a list of type patterns", field="types")
        deliveries, skipped = await self.hub.fetch_reporting(
            topic,
            name,
            max_records=body.get("max", 10),
            wait_s=parse_duration_ms(body.get("wait", 0), "wait") / 1000,
            types=TypeFilter(types, limit=self.hub.options.max_type_patterns) if types else None,
        )
        body_bytes = _deliveries_body(topic, deliveries)
        if skipped:  # offsets lost to damage on disk that this fetch moved the group past
            extra = b',"skipped":' + orjson.dumps([s.to_dict() for s in skipped])
            body_bytes = body_bytes[:-1] + extra + b"}"
        return Response(body_bytes, media_type="application/json")

    async def ack(self, request: Request) -> Response:
        topic, name = self._group(request)
        self._authorize(request, "subscribe", topic)
        body = await self._json_body(request, allow_empty=False)
        _only(body, {"leases"})
        n = await self.hub.ack(topic, name, body.get("leases"))  # type: ignore[arg-type]
        return _json({"acked": n})

    async def nack(self, request: Request) -> Response:
        topic, name = self._group(request)
        self._authorize(request, "subscribe", topic)
        body = await self._json_body(request, allow_empty=False)
        _only(body, {"leases", "delay"})
        delay = parse_duration_ms(body.get("delay", 0), "delay")
        n = await self.hub.nack(topic, name, body.get("leases"), delay)  # type: ignore[arg-type]
        return _json({"nacked": n})

    async def seek(self, request: Request) -> Response:
        topic, name = self._group(request)
        self._authorize(request, "manage", topic)
        body = await self._json_body(request, allow_empty=False)
        _only(body, {"to"})
        if "to" not in body:
            raise BadRequest("seek needs 'to'", field="to")
        positions = await self.hub.seek(topic, name, body["to"])
        return _json({"positions": format_token(positions)})

    async def redrive(self, request: Request) -> Response:
        topic, name = self._group(request)
        self._authorize(request, "manage", topic)
        self._authorize(request, "publish", topic)  # the events go back on the topic
        _only(await self._json_body(request), set())
        return _json(await self.hub.redrive(topic, name))


# -- request parsing helpers ------------------------------------------------------------


def _whole_numbers(value: Any) -> Any:
    """``3.0`` as ``3``: JSON has one number type and JSON Schema counts both as integers."""
    if type(value) is float and value.is_integer() and -(2**63) <= value < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def _only(obj: Any, allowed: set[str]) -> None:
    unknown = sorted(set(obj.keys()) - allowed)
    if unknown:
        raise BadRequest(
            f"unknown field {unknown[0]!r}; expected one of {sorted(allowed)}", field=unknown[0]
        )


def _opt_int(raw: str | None, field: str) -> int | None:
    if raw is None:
        return None
    if not is_decimal(raw):
        raise BadRequest(f"{field} must be a non-negative integer, not {raw!r}", field=field)
    return int(raw)


def _opt_seconds(raw: str | None, field: str) -> float:
    if raw is None:
        return 0.0
    return parse_duration_ms(raw, field) / 1000


def _parse_retention(raw: object, current: Retention) -> Retention:
    """The retention a PUT asks for: fields it names replace ``current`` (null clears)."""
    if raw is None:
        return replace(current, max_age_ms=None, max_bytes=None)
    if not isinstance(raw, dict):
        raise BadRequest(
            "retention must be an object with max_age and max_bytes", field="retention"
        )
    _only(raw, {"max_age", "max_bytes"})
    age = raw.get("max_age") if "max_age" in raw else _UNSET
    size = raw.get("max_bytes", current.max_bytes)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise BadRequest(
            "retention.max_bytes must be a positive integer", field="retention.max_bytes"
        )
    if age is _UNSET:
        age_ms = current.max_age_ms
    else:
        age_ms = None if age is None else parse_duration_ms(age, "retention.max_age")
    return replace(current, max_age_ms=age_ms, max_bytes=size)


def _parse_compaction(body: dict[str, Any], current: Retention) -> Retention:
    """The compaction a PUT asks for: ``compaction`` ("none" or "key") and
    ``delete_retention`` (how long a tombstone stays), each kept if left out."""
    mode = body.get("compaction", current.compaction)
    if mode not in COMPACTION_MODES:
        raise BadRequest(
            f"compaction must be one of {', '.join(map(repr, COMPACTION_MODES))}, "
            f"not {mode!r}",
            field="compaction",
        )
    dr = current.delete_retention_ms
    if "delete_retention" in body:
        dr = parse_duration_ms(body["delete_retention"], "delete_retention")
    return replace(current, compaction=mode, delete_retention_ms=dr)


_UNSET = object()


def _parse_group_config(body: dict[str, Any], max_type_patterns: int) -> GroupConfig:
    _only(body, {"start", "ack_wait", "max_deliver", "dead_letter_topic", "ordering", "types"})
    start = body.get("start", "earliest")
    if start not in ("earliest", "latest"):
        raise BadRequest("start must be 'earliest' or 'latest'", field="start")
    ordering = body.get("ordering", "none")
    if ordering not in ("none", "key"):
        raise BadRequest("ordering must be 'none' or 'key'", field="ordering")
    max_deliver = body.get("max_deliver", 5)
    if isinstance(max_deliver, bool) or not isinstance(max_deliver, int) or max_deliver < 1:
        raise BadRequest("max_deliver must be a positive integer", field="max_deliver")
    ack_wait = parse_duration_ms(body.get("ack_wait", 30), "ack_wait")
    if ack_wait < 1:
        raise BadRequest("ack_wait must be more than 0", field="ack_wait")
    dlq = body.get("dead_letter_topic")
    if dlq is not None and not isinstance(dlq, str):
        raise BadRequest("dead_letter_topic must be a topic name", field="dead_letter_topic")
    types = body.get("types", [])
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise BadRequest("types must be a list of type patterns", field="types")
    TypeFilter(types, limit=max_type_patterns)  # checks the patterns
    return GroupConfig(
        start=start,
        ack_wait_ms=ack_wait,
        max_deliver=max_deliver,
        dead_letter_topic=dlq,
        ordering=ordering,
        types=tuple(types),
    )


def create_app(
    hub: Hub,
    auth: Auth | None = None,
    options: ServerOptions | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    webhooks: WebhookService | None = None,
    history_store: HistoryStore | None = None,
) -> HubApp:
    """The ASGI app; its lifespan starts the hub and closes it (flushing the log) at the end.

    ``history_store`` keeps the metrics history across restarts; without it the
    history is in memory only."""
    api = Api(hub, auth or Auth([]), options or ServerOptions(), webhooks)
    ws = WebSocketEndpoint(hub, api.auth, api.options.live, api.tickets)
    sse = SseEndpoint(hub, api.auth, api.options.live, api.tickets)
    views = ViewRoutes(api)
    api.connections = lambda: {
        "websocket": len(ws.connections), "sse": sse.streams + views.streams
    }
    history = HistoryOptions() if options is None else options.history
    api.history = MetricsHistory(history.interval_ms, history.points, history_store)
    sampler = HistorySampler(hub, api.history, webhooks, api.connections)
    T = "/v1/topics/{topic}"
    G = T + "/groups/{group}"
    publish = PublishEndpoint(api)
    routes = [
        # The hot path first: Starlette tries routes in order. (HubApp takes a
        # publish before the router; the route serves one under a root_path.)
        Route(T + "/events", publish, methods=["POST"]),
        WebSocketRoute("/v1/ws", ws.handle),
        Route("/v1/ws/ticket", api.ws_ticket, methods=["POST"]),
        Route(T + "/sse", sse.handle, methods=["GET"]),
        Route("/", api.index, methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/v1/metrics/history", api.metrics_history, methods=["GET"]),
        Route("/openapi.json", api.openapi_json, methods=["GET"]),
        Route("/asyncapi.json", api.asyncapi_json, methods=["GET"]),
        Route("/docs", api.docs, methods=["GET"]),
        Route("/v1/topics", api.list_topics, methods=["GET"]),
        Route(T, api.put_topic, methods=["PUT"]),
        Route(T, api.get_topic, methods=["GET"]),
        Route(T, api.delete_topic, methods=["DELETE"]),
        Route(T + "/events", api.read, methods=["GET"]),
        Route(G, api.put_group, methods=["PUT"]),
        Route(G, api.get_group, methods=["GET"]),
        Route(G, api.delete_group, methods=["DELETE"]),
        Route(G + "/fetch", api.fetch, methods=["POST"]),
        Route(G + "/ack", api.ack, methods=["POST"]),
        Route(G + "/nack", api.nack, methods=["POST"]),
        Route(G + "/seek", api.seek, methods=["POST"]),
        Route(G + "/redrive", api.redrive, methods=["POST"]),
        Route("/v1/groups", api.list_groups, methods=["GET"]),
        *SchemaRoutes(api).routes(),
        *LookupRoutes(api).routes(),
        *views.routes(),
        *(WebhookRoutes(api, webhooks).routes() if webhooks is not None else []),
        # The browser client, /static/tidings.js: an ES module, no build step. Pages
        # of any origin may import it (a module script is fetched with CORS).
        Mount("/static", CORSMiddleware(StaticFiles(directory=STATIC_DIR), allow_origins=["*"])),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # /healthz answers while the dedupe window refills; /readyz once it is done.
        await hub.start(wait_ready=False)
        if webhooks is not None:
            await webhooks.start()
        sampler.start()
        # Everything made so far lives as long as the process: keep it out of the
        # cyclic collector's walks. Requests allocate thousands of short-lived dicts
        # (a batch of events) that reference counting frees; collecting every 700
        # of them (the default) cost more than a third of batch publish throughput.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        try:
            yield
        finally:
            hub.closing = True
            await sampler.close()
            if on_shutdown is not None:
                await on_shutdown()
            if webhooks is not None:
                await webhooks.close()
            await hub.close()

    rules = BrowserRules(api.options.allowed_hosts, api.options.live.allowed_origins)
    budget = BodyBudget(max(api.options.max_body_bytes_in_flight, api.options.max_request_bytes))
    app = HubApp(
        routes=one_route_per_path(routes),  # a 405's Allow names all of a path's methods
        lifespan=lifespan,
        # First the guard: a request a foreign page forged reaches nothing, the body
        # budget included; then the budget, before any route reads. (The hub's id
        # goes on every answer from outside all of it: HubApp.hub_id.)
        middleware=[
            Middleware(BrowserGuard, rules=rules),
            Middleware(BodyBudgetMiddleware, budget=budget),
        ],
        exception_handlers={
            TidingsError: tidings_error,
            HTTPException: http_error,
            Exception: unexpected_error,
        },
    )
    app.hub_id = hub.id
    app.take_publish(publish)  # under the middleware above, as the stack runs it
    app.state.hub = hub
    app.state.body_budget = budget
    app.state.webhooks = webhooks
    app.state.history = sampler
    return app


__all__ = ["ServerOptions", "create_app"]
