"""The OpenAPI 3.1 description of the HTTP API, and the pages that show it.

Written by hand, beside the routes in :mod:`.app`: the API is small, and a test
checks that every route is described and that the document is valid OpenAPI.
"""

from __future__ import annotations

import html
from functools import cache
from importlib.metadata import version
from typing import Any

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problems(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request or bad position",
        401: "Missing or unknown bearer token",
        403: "The token's scopes do not allow this, or the request's Host or Origin is not one the hub allows (the problem's header names which)",
        404: "Unknown topic or group",
        409: "Conflict, a stale lease, or the hub's topic limit (--max-topics) reached",
        413: "Event or request too large",
        415: "Unsupported content type",
        422: "Invalid event",
        429: "Too many requests",
        503: "Storage unavailable (a full disk: nothing was changed; try again after Retry-After) or shutting down",
    }
    return {
        str(c): {"description": text[c], "content": {"application/problem+json": {"schema": _PROBLEM}}}
        for c in codes
    }


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema, "description": description}


_TOPIC = _param("topic", "path", {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"}, "Topic name")
_GROUP = _param("group", "path", {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"}, "Consumer group name")
# What a token needs on a group route; every group route answers 403 for the hub's own groups.
_OWN_GROUPS = " Groups named webhook.*, redrive.* or tidings.* are the hub's own: 403 whatever the token, also on an open hub."
_CONSUME = "Token scope: subscribe on the topic." + _OWN_GROUPS
_MANAGE = "Token scope: manage on the topic." + _OWN_GROUPS


def _body(schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


@cache
def spec() -> dict[str, Any]:
    leases: dict[str, Any] = {"type": "object", "required": ["leases"], "properties": {"leases": {"type": "array", "items": {"type": "string"}}}}
    group_ops = {
        "fetch": ("Lease records", _body({"type": "object", "properties": {"max": {"type": "integer", "minimum": 1, "maximum": 10000}, "wait": {"type": ["number", "string"]}, "types": {"type": "array", "items": {"type": "string"}}}}), _json(_ref("Deliveries"))),
        "ack": ("Acknowledge leases (all or none)", _body(leases, True), _json({"type": "object", "properties": {"acked": {"type": "integer"}}})),
        "nack": ("Give leases back, to be redelivered after delay", _body({**leases, "properties": {**leases["properties"], "delay": {"type": ["number", "string"]}}}, True), _json({"type": "object", "properties": {"nacked": {"type": "integer"}}})),
        "seek": ("Move the group's position", _body({"type": "object", "required": ["to"], "properties": {"to": {}}}, True), _json({"type": "object", "properties": {"positions": {"type": "string"}}})),
        "redrive": ("Publish the group's dead letters again on its topic (same ids, dlq attributes removed), each once: a group on the dead-letter topic keeps the place (redrive.{group}, or redrive.{topic}.{group} on a dead_letter_topic of the group's own)", _body({"type": "object"}), _json({"type": "object", "properties": {"dead_letter_topic": {"type": "string"}, "redriven": {"type": "integer"}, "skipped": {"type": "integer", "description": "dead letters of other groups passed over"}}})),
    }
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Liveness", "operationId": "healthz", "responses": {"200": _json({"type": "object"})}}},
        "/readyz": {"get": {"summary": "Readiness: 503 while shutting down or while a partition refuses appends (a full disk)", "operationId": "readyz", "responses": {"200": _json({"type": "object"}), **_problems(503)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics", "responses": {"200": {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This OpenAPI document", "operationId": "openapi", "responses": {"200": _json({"type": "object"})}}},
        "/asyncapi.json": {"get": {"summary": "An AsyncAPI 3.0 document: each topic and the event types it has carried", "operationId": "asyncapi", "responses": {"200": _json({"type": "object"}), **_problems(401, 403)}}},
        "/docs": {"get": {"summary": "The API reference as an HTML page", "operationId": "docs", "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        "/": {"get": {"summary": "The dashboard", "operationId": "dashboard", "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        "/v1/topics": {"get": {"summary": "List topics", "operationId": "listTopics", "responses": {"200": _json({"type": "object", "properties": {"topics": {"type": "array", "items": _ref("Topic")}}}), **_problems(401, 403)}}},
        "/v1/topics/{topic}": {
            "parameters": [_TOPIC],
            "put": {"summary": "Create or configure a topic", "operationId": "putTopic", "requestBody": _body(_ref("TopicConfig")), "responses": {"200": _json(_ref("Topic")), "201": _json(_ref("Topic"), "Created"), **_problems(400, 401, 403, 409, 503)}},
            "get": {"summary": "Describe a topic", "operationId": "getTopic", "responses": {"200": _json(_ref("Topic")), **_problems(401, 403, 404)}},
            "delete": {"summary": "Delete a topic and its groups", "operationId": "deleteTopic", "responses": {"204": {"description": "Deleted"}, **_problems(401, 403, 404)}},
        },
        "/v1/topics/{topic}/sse": {
            "parameters": [_TOPIC],
            "get": {"summary": "Follow a topic as Server-Sent Events: each id is a resume token; Last-Event-ID resumes with no gap (the WebSocket gateway is GET /v1/ws, subprotocol tidings.v1)", "operationId": "sse", "parameters": [_param("from", "query", {"type": "string"}, "earliest, latest (default), a resume token like 0:15,1:7, or a time"), _param("types", "query", {"type": "string"}, "Comma-separated type patterns"), _param("ticket", "query", {"type": "string"}, "A ticket from POST /v1/ws/ticket, for EventSource, which cannot set headers"), {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}, "description": "Resume token; wins over from"}], "responses": {"200": {"description": "retry, then messages: id = resume token, data = the record", "content": {"text/event-stream": {"schema": {"type": "string"}}}}, **_problems(400, 401, 403, 404)}},
        },
        "/v1/topics/{topic}/events": {
            "parameters": [_TOPIC],
            "post": {
                "summary": "Publish events (CloudEvents structured, batch or binary mode)",
                "operationId": "publish",
                "requestBody": {"required": True, "description": "One event (structured), a JSON array of events (batch), or binary mode: attributes in ce-* headers, the body is the data", "content": {"application/cloudevents+json": {"schema": _ref("CloudEvent")}, "application/cloudevents-batch+json": {"schema": {"type": "array", "items": _ref("CloudEvent")}}, "*/*": {"schema": {}}}},
                "responses": {"202": _json(_ref("Published"), "Accepted: durable by the hub's fsync policy"), **_problems(400, 401, 403, 404, 409, 413, 415, 422, 503)},
            },
            "get": {
                "summary": "Read and replay records",
                "operationId": "read",
                "parameters": [
                    _param("partition", "query", {"type": "integer", "minimum": 0}, "Read only this partition"),
                    _param("from", "query", {"type": "string"}, "earliest, latest, an offset, or a position token like 0:15,1:7"),
                    _param("from_time", "query", {"type": "string"}, "RFC 3339 time or ms since the epoch"),
                    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 10000}, "Most records to answer (100)"),
                    _param("wait", "query", {"type": "string"}, "Long-poll up to this many seconds (or 500ms, 10s)"),
                    _param("types", "query", {"type": "string"}, "Comma-separated type patterns: order.* one token, order.> the rest"),
                ],
                "responses": {"200": _json(_ref("Records")), **_problems(400, 401, 403, 404)},
            },
        },
        "/v1/topics/{topic}/groups/{group}": {
            "parameters": [_TOPIC, _GROUP],
            "put": {"summary": "Create or configure a consumer group", "description": _MANAGE + " Creating the topic too needs publish on it, and an explicit dead_letter_topic needs publish on that topic; the default {topic}.dlq is written by the hub on the group's behalf.", "operationId": "putGroup", "requestBody": _body(_ref("GroupConfig")), "responses": {"200": _json(_ref("Group")), "201": _json(_ref("Group"), "Created"), **_problems(400, 401, 403, 404, 409, 503)}},
            "get": {"summary": "Describe a group: lag, pending, redelivered, dead-lettered", "description": _CONSUME, "operationId": "getGroup", "responses": {"200": _json(_ref("Group")), **_problems(401, 403, 404)}},
            "delete": {"summary": "Delete a group", "description": _MANAGE, "operationId": "deleteGroup", "responses": {"204": {"description": "Deleted"}, **_problems(401, 403, 404)}},
        },
        "/v1/ws/ticket": {"post": {"summary": "A ticket that acts for the bearer token once, within 30 s, as ?ticket= on GET /v1/ws or an SSE stream: for browsers, which cannot set headers there", "operationId": "wsTicket", "requestBody": _body({"type": "object"}), "responses": {"200": _json({"type": "object", "properties": {"ticket": {"type": "string"}, "expires_in": {"type": "number"}}}), **_problems(400, 401, 429)}}},
        "/v1/groups": {"get": {"summary": "List consumer groups", "description": "The groups of the topics the token may subscribe to, the hub's own among them marked internal (read-only).", "operationId": "listGroups", "responses": {"200": _json({"type": "object", "properties": {"groups": {"type": "array", "items": _ref("Group")}}}), **_problems(401, 403)}}},
    }
    for op, (summary, body, ok) in group_ops.items():
        paths[f"/v1/topics/{{topic}}/groups/{{group}}/{op}"] = {
            "parameters": [_TOPIC, _GROUP],
            "post": {"summary": summary, "description": _MANAGE + (" Re-driving publishes on the topic: it needs publish there too." if op == "redrive" else "") if op in ("seek", "redrive") else _CONSUME, "operationId": op, "requestBody": body, "responses": {"200": ok, **_problems(400, 401, 403, 404, 409, 503)}},
        }
    paths.update(_webhook_paths())
    _browser_refusals(paths)
    record_props = {"topic": {"type": "string"}, "partition": {"type": "integer"}, "offset": {"type": "integer"}, "event": _ref("CloudEvent")}
    schemas = {
        "Problem": {"type": "object", "description": "RFC 9457 problem details", "required": ["type", "title", "status", "detail"], "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}, "instance": {"type": "string"}, "attribute": {"type": "string"}, "field": {"type": "string"}, "index": {"type": "integer"}}},
        "CloudEvent": {"type": "object", "description": "CloudEvents 1.0 JSON format; the hub fills id, source, time and specversion", "required": ["type"], "properties": {"specversion": {"const": "1.0"}, "id": {"type": "string"}, "source": {"type": "string"}, "type": {"type": "string", "minLength": 1}, "subject": {"type": "string"}, "time": {"type": "string", "format": "date-time"}, "datacontenttype": {"type": "string"}, "dataschema": {"type": "string"}, "data": {}, "data_base64": {"type": "string"}, "partitionkey": {"type": "string"}, "correlationid": {"type": "string"}, "causationid": {"type": "string"}, "traceparent": {"type": "string"}}},
        "Published": {"type": "object", "properties": {"events": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}, "partition": {"type": "integer"}, "offset": {"type": "integer"}, "duplicate": {"type": "boolean"}}}}}},
        "Records": {"type": "object", "properties": {"records": {"type": "array", "items": {"type": "object", "properties": record_props}}, "next": {"type": "string", "description": "position token to pass back as from"}, "skipped": {"type": "array", "description": "only when this read stepped over offsets lost to damage on disk", "items": _ref("Skipped")}}},
        "Deliveries": {"type": "object", "properties": {"records": {"type": "array", "items": {"type": "object", "properties": {**record_props, "lease": {"type": "string"}, "deliveries": {"type": "integer"}}}}, "skipped": {"type": "array", "description": "only when this fetch moved the group past offsets lost to damage on disk", "items": _ref("Skipped")}}},
        "TopicConfig": {"type": "object", "properties": {"partitions": {"type": "integer", "minimum": 1, "maximum": 1024}, "retention": {"type": "object", "properties": {"max_age": {"type": ["number", "string"]}, "max_bytes": {"type": "integer", "minimum": 1}}}}},
        "Topic": {"type": "object", "properties": {"name": {"type": "string"}, "partitions": {"type": "array", "items": {"type": "object", "properties": {"partition": {"type": "integer"}, "first_offset": {"type": "integer"}, "next_offset": {"type": "integer"}, "events": {"type": "integer"}, "bytes": {"type": "integer"}, "damage": {"type": "array", "description": "ranges lost to damage on disk", "items": _ref("Damage")}}}}, "retention": {"type": "object"}, "events": {"type": "integer"}, "bytes": {"type": "integer"}}},
        "GroupConfig": {"type": "object", "properties": {"start": {"enum": ["earliest", "latest"]}, "ack_wait": {"type": ["number", "string"]}, "max_deliver": {"type": "integer", "minimum": 1}, "dead_letter_topic": {"type": "string"}, "ordering": {"enum": ["none", "key"]}, "types": {"type": "array", "items": {"type": "string"}}}},
        "Group": {"type": "object", "properties": {"topic": {"type": "string"}, "name": {"type": "string"}, "config": _ref("GroupConfig"), "partitions": {"type": "array", "items": {"type": "object"}}, "lag": {"type": "integer"}, "pending": {"type": "integer"}, "delivered": {"type": "integer"}, "redelivered": {"type": "integer"}, "dead_lettered": {"type": "integer"}, "internal": {"type": "boolean", "description": "one of the hub's own groups (webhook.*, redrive.*, tidings.*): listed read-only, refused by every group route and WebSocket join"}, "skipped_events": {"type": "integer", "description": "offsets lost to damage that the group stepped over"}, "skipped": {"type": "array", "description": "the latest 100 ranges the group stepped over", "items": _ref("Skipped")}}},
        "Skipped": {"type": "object", "description": "offsets from (inclusive) to to (exclusive) of a partition, lost to damage on disk", "properties": {"partition": {"type": "integer"}, "from": {"type": "integer"}, "to": {"type": "integer"}, "why": {"type": "string"}}},
        "Damage": {"type": "object", "description": "a bad byte range of a segment and the offsets it cost", "properties": {"from": {"type": "integer"}, "to": {"type": "integer"}, "events": {"type": "integer"}, "segment": {"type": "string"}, "position": {"type": "integer"}, "bytes": {"type": "integer"}, "why": {"type": "string"}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "tidings", "version": version("tidings"), "description": "An event hub: durable event log, pub/sub with consumer groups, CloudEvents over HTTP."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "With tokens configured: each token's scopes are topic patterns for publish, subscribe and manage (consumer groups), or admin (everything)."}}},
        "security": [{}, {"bearer": []}],
    }


def _browser_refusals(paths: dict[str, Any]) -> None:
    """What server/guard.py answers before any route: 403 for a Host the hub does not
    serve (or an Origin it does not allow on a state-changing route), and 415 for a
    POST, PUT or PATCH body that is not JSON or CloudEvents."""
    for item in paths.values():
        for method, op in item.items():
            if method != "parameters":
                codes = (403, 415) if method in ("post", "put", "patch") else (403,)
                for code in codes:
                    op["responses"].setdefault(str(code), _problems(code)[str(code)])


_WEBHOOK = _param("id", "path", {"type": "string"}, "Webhook id (wh_...)")
_WEBHOOK_CONFIG: dict[str, Any] = {"type": "object", "properties": {"url": {"type": "string", "format": "uri", "description": "http or https; its host must resolve to public addresses unless the hub allows the network"}, "topics": {"type": "array", "items": {"type": "string"}, "minItems": 1}, "types": {"type": "array", "items": {"type": "string"}}, "description": {"type": "string", "maxLength": 1000}, "rate_limit": {"type": ["number", "null"], "minimum": 0.001, "maximum": 100000, "description": "deliveries per second"}, "ordering": {"enum": ["none", "key"]}, "concurrency": {"type": "integer", "minimum": 1, "maximum": 1000}}}
_WEBHOOK_VIEW: dict[str, Any] = {"type": "object", "properties": {**_WEBHOOK_CONFIG["properties"], "id": {"type": "string"}, "enabled": {"type": "boolean"}, "state": {"enum": ["healthy", "failing", "disabled"]}, "disabled_reason": {"type": ["string", "null"]}, "failing_since": {"type": ["integer", "null"]}, "last_success": {"type": ["integer", "null"]}, "created": {"type": "integer"}, "lag": {"type": "object", "additionalProperties": {"type": "integer"}}, "secret": {"type": "string", "description": "only when created: whsec_ + base64"}}}


def _webhook_paths() -> dict[str, Any]:
    """``/v1/webhooks``: Standard Webhooks signatures, retries, attempts, dead letters, replay."""
    view = _json(_WEBHOOK_VIEW)
    page: dict[str, Any] = {"type": "object", "properties": {"next": {"type": ["integer", "null"], "description": "pass as before for the next page"}}}
    paging = [_param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}, "Most items (100)"), _param("before", "query", {"type": "integer"}, "Items older than this id")]
    return {
        "/v1/webhooks": {
            "post": {"summary": "Register an endpoint (admin); the answer holds its secret", "operationId": "createWebhook", "requestBody": _body({**_WEBHOOK_CONFIG, "required": ["url", "topics"]}, True), "responses": {"201": _json(_WEBHOOK_VIEW, "Created"), **_problems(400, 401, 403)}},
            "get": {"summary": "List endpoints (admin)", "operationId": "listWebhooks", "responses": {"200": _json({"type": "object", "properties": {"webhooks": {"type": "array", "items": _WEBHOOK_VIEW}}}), **_problems(401, 403)}},
        },
        "/v1/webhooks/{id}": {
            "parameters": [_WEBHOOK],
            "get": {"summary": "Describe an endpoint: state, lag per topic", "operationId": "getWebhook", "responses": {"200": view, **_problems(401, 403, 404)}},
            "patch": {"summary": "Change an endpoint; enabled: true brings a disabled one back and drains what it missed, in order", "operationId": "patchWebhook", "requestBody": _body({**_WEBHOOK_CONFIG, "properties": {**_WEBHOOK_CONFIG["properties"], "enabled": {"type": "boolean"}}}, True), "responses": {"200": view, **_problems(400, 401, 403, 404)}},
            "delete": {"summary": "Delete an endpoint, its attempts and dead letters", "operationId": "deleteWebhook", "responses": {"204": {"description": "Deleted"}, **_problems(401, 403, 404)}},
        },
        "/v1/webhooks/{id}/rotate-secret": {"parameters": [_WEBHOOK], "post": {"summary": "A new secret; older ones keep signing beside it for grace (default 24 h)", "operationId": "rotateWebhookSecret", "requestBody": _body({"type": "object", "properties": {"grace": {"type": ["number", "string"]}}}), "responses": {"200": _json({"type": "object", "properties": {"secret": {"type": "string"}, "previous_valid_until": {"type": "integer"}}}), **_problems(400, 401, 403, 404)}}},
        "/v1/webhooks/{id}/attempts": {"parameters": [_WEBHOOK], "get": {"summary": "The attempts log, newest first", "operationId": "webhookAttempts", "parameters": [_param("status", "query", {"enum": ["succeeded", "failed", "success", "gone", "throttled"]}, "Only these"), *paging], "responses": {"200": _json({**page, "properties": {**page["properties"], "attempts": {"type": "array", "items": {"type": "object"}}}}), **_problems(400, 401, 403, 404)}}},
        "/v1/webhooks/{id}/replay": {"parameters": [_WEBHOOK], "post": {"summary": "Deliver again every matching event since a time, or (with topic) a position token", "operationId": "replayWebhook", "requestBody": _body({"type": "object", "required": ["since"], "properties": {"since": {"type": ["string", "integer"]}, "topic": {"type": "string"}}}, True), "responses": {"202": _json({"type": "object", "properties": {"topics": {"type": "object", "additionalProperties": {"type": "string"}}}}, "Accepted"), **_problems(400, 401, 403, 404)}}},
        "/v1/webhooks/{id}/test": {"parameters": [_WEBHOOK], "post": {"summary": "Send one tidings.webhook.test event now; answers the attempt", "operationId": "testWebhook", "responses": {"200": _json({"type": "object", "properties": {"event": _ref("CloudEvent"), "attempt": {"type": "object"}}}), **_problems(401, 403, 404)}}},
        "/v1/webhooks/{id}/dead-letters": {"parameters": [_WEBHOOK], "get": {"summary": "Events whose attempts were all spent", "operationId": "webhookDeadLetters", "parameters": paging, "responses": {"200": _json({**page, "properties": {**page["properties"], "dead_letters": {"type": "array", "items": {"type": "object"}}}}), **_problems(400, 401, 403, 404)}}},
        "/v1/webhooks/{id}/dead-letters/replay": {"parameters": [_WEBHOOK], "post": {"summary": "Send dead letters again: all, or those of ids", "operationId": "replayWebhookDeadLetters", "requestBody": _body({"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "integer"}}}}), "responses": {"202": _json({"type": "object", "properties": {"replaying": {"type": "integer"}}}, "Accepted"), **_problems(400, 401, 403, 404)}}},
    }


def docs_html() -> str:
    """A self-contained page listing every operation (no script from elsewhere)."""
    rows = []
    for path, item in spec()["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            codes = ", ".join(op["responses"])
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op['summary'])}</td><td>{codes}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>tidings API</title>"
        "<style>body{font:15px system-ui;margin:2em}td{padding:4px 12px;border-bottom:1px solid #ddd}</style>"
        "</head><body><h1>tidings HTTP API</h1><p>Machine-readable: <a href=/openapi.json>/openapi.json</a>.</p>"
        f"<table><tr><th>method</th><th>path</th><th>what</th><th>answers</th></tr>{''.join(rows)}</table></body></html>"
    )

