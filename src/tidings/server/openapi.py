"""The OpenAPI 3.1 description of the HTTP API, and the pages that show it.

Written by hand, beside the routes in :mod:`.app`: the API is small. Tests check
that every route is described, that the document is valid OpenAPI, and (with
schemathesis, against a real hub) that the server answers as it says: request
schemas as strict as the handlers, every 4xx listed, answers of the stated shape.
"""

from __future__ import annotations

import html
from functools import cache
from importlib.metadata import version
from typing import Any

from tidings.core.history import FAMILIES, LABEL_FILTERS
from tidings.events.envelope import ABSOLUTE_URI_PATTERN, MEDIA_TYPE_PATTERN, URI_REFERENCE_PATTERN

_PROBLEM = {"$ref": "#/components/schemas/Problem"}

# What each status means, for every operation that can answer it: one table, so a
# new status is documented once and named where it applies.
PROBLEM_TEXT = {
    400: "Malformed request: a field, parameter or name the hub refuses (the problem names it)",
    401: "Missing or unknown bearer token",
    403: "The token's scopes do not allow this, or the request's Host or Origin is not one the hub allows (the problem's header names which)",
    404: "Unknown topic, group, webhook, schema, view or view key",
    409: "Conflict, a stale lease, the hub's topic limit (--max-topics) reached, a schema incompatible with the registry (each breaking change by path), or a view commit that lost its compare-and-set (next_offset and generation say where the view is)",
    413: "Event or request too large",
    415: "Unsupported content type",
    422: "Invalid event, or event data that fails its type's schema (the path of the failing field)",
    429: "Too many requests",
    503: "Storage unavailable (a full disk: nothing was changed; try again after Retry-After), shutting down, busy: request bodies past the hub's budget (Retry-After), or a view that does not reflect min_position within the wait (Retry-After)",
}
AUTH = (401, 403)  # any operation behind a token
BODY = (400, 413)  # any operation that reads a request body
NAMED = (400, 404)  # any operation on a path that names a topic, group or webhook


def _problems(*codes: int) -> dict[str, Any]:
    return {
        str(c): {"description": PROBLEM_TEXT[c], "content": {"application/problem+json": {"schema": _PROBLEM}}}
        for c in sorted(set(codes))
    }


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema, "description": description}


def _object(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    """A JSON object of exactly these fields: the hub refuses any other."""
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        out["required"] = list(required)
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
_NAME = {"type": "string", "pattern": NAME_PATTERN}
# A type pattern: dot-separated names, * for one token, > for the rest (last only).
# A name has no dot, * or > and no white space (Python's, spelled out).
_SPACE = r"\t\n\u000b\u000c\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def _type_pattern(name: str) -> str:
    return rf"((\*|{name})\.)*(\*|>|{name})"


_TYPE_PATTERN = {"type": "string", "pattern": rf"^({_type_pattern(rf'[^.*>{_SPACE}]+')})?$"}
_TYPES = {"type": "array", "maxItems": 100, "items": _TYPE_PATTERN}  # --max-type-patterns
# In a query, comma-separated; white space around each is ignored, and so is an empty one.
_QUERY_TYPE = rf"[{_SPACE}]*({_type_pattern(rf'[^.*>,{_SPACE}]+')})?[{_SPACE}]*"
_TYPES_QUERY = {"type": "string", "pattern": rf"^{_QUERY_TYPE}(,{_QUERY_TYPE})*$"}
_INT64 = {"type": "integer", "minimum": -(1 << 63), "maximum": (1 << 63) - 1}
_COUNT = {"type": "integer", "minimum": 0, "maximum": (1 << 63) - 1}
_MAX_SECONDS = 100 * 365 * 86_400
# Seconds as a number, or a number and a unit; at most 9999 of a unit keeps it under 100 years.
_DURATION_TEXT = {"type": "string", "pattern": r"^(0|[1-9][0-9]{0,3})(\.[0-9]{1,3})?(ms|s|m|h|d)?$"}
_DURATION = {"anyOf": [{"type": "number", "minimum": 0, "maximum": _MAX_SECONDS}, _DURATION_TEXT]}
_POSITIVE_DURATION = {"anyOf": [{"type": "number", "minimum": 0.001, "maximum": _MAX_SECONDS}, {"type": "string", "pattern": r"^[1-9][0-9]{0,3}(\.[0-9]{1,3})?(ms|s|m|h|d)?$"}]}
_TOKEN_PATTERN = r"^[0-9]+:[0-9]+(,[0-9]+:[0-9]+)*$"
_MS_TEXT = {"type": "string", "pattern": r"^-?[0-9]{1,15}$", "description": "ms since the epoch"}
_TIME = {"anyOf": [{"type": "string", "format": "date-time"}, _MS_TEXT]}
_AGO = r"^(0|[1-9][0-9]{0,3})(\.[0-9]{1,3})?(ms|s|m|h|d)$"
_HISTORY_SERIES = rf"^({'|'.join(FAMILIES)})(,({'|'.join(FAMILIES)}))*$"
_TOPIC = _param("topic", "path", _NAME, "Topic name")
_GROUP = _param("group", "path", _NAME, "Consumer group name")
# What a token needs on a group route; every group route answers 403 for the hub's own groups.
_OWN_GROUPS = " Groups named webhook.*, redrive.* or tidings.* are the hub's own: 403 whatever the token, also on an open hub."
_CONSUME = "Token scope: subscribe on the topic." + _OWN_GROUPS
_MANAGE = "Token scope: manage on the topic." + _OWN_GROUPS


_LOOKUP_KEY = {"type": "string", "minLength": 1, "maxLength": 1000}
_CURSOR = "^[0-9]{1,18}-[0-9]{1,18}$"
_FOUND = "Through the hub's event index. A token sees only records of topics it may subscribe to; the others are passed over as if absent. An event acknowledged before the request is found; 503 (Retry-After) while the index trails a publish load too far to say."


def _body(schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


@cache
def spec() -> dict[str, Any]:
    leases = {"type": "array", "minItems": 1, "items": {"type": "string"}}
    group_ops = {
        "fetch": ("Lease records", _body(_object({"max": {"type": "integer", "minimum": 1, "maximum": 10000}, "wait": _DURATION, "types": _TYPES})), _json(_ref("Deliveries"))),
        "ack": ("Acknowledge leases (all or none)", _body(_object({"leases": leases}, "leases"), True), _json(_object({"acked": {"type": "integer"}}, "acked"))),
        "nack": ("Give leases back, to be redelivered after delay", _body(_object({"leases": leases, "delay": _DURATION}, "leases"), True), _json(_object({"nacked": {"type": "integer"}}, "nacked"))),
        "seek": ("Move the group's position", _body(_object({"to": _ref("SeekTarget")}, "to"), True), _json(_object({"positions": {"type": "string"}}, "positions"))),
        "redrive": ("Publish the group's dead letters again on its topic (same ids, dlq attributes removed), each once: a group on the dead-letter topic keeps the place (redrive.{group}, or redrive.{topic}.{group} on a dead_letter_topic of the group's own)", _body(_object({})), _json(_object({"dead_letter_topic": {"type": "string"}, "redriven": {"type": "integer"}, "skipped": {"type": "integer", "description": "dead letters of other groups passed over"}}, "dead_letter_topic", "redriven", "skipped"))),
    }
    status = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
    html_page = {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Liveness, and the hub's id: made once for its data, the same after a restart and on every node of one hub (also the Tidings-Hub-Id header of every answer)", "operationId": "healthz", "responses": {"200": _json({"type": "object", "required": ["status", "hub_id"], "properties": {"status": {"type": "string"}, "hub_id": {"type": "string"}}})}}},
        "/readyz": {"get": {"summary": "Readiness: 503 while shutting down or while a partition refuses appends (a full disk)", "operationId": "readyz", "responses": {"200": _json(status), **_problems(503)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (admin)", "operationId": "metrics", "responses": {"200": {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}}, **_problems(*AUTH)}}},
        "/openapi.json": {"get": {"summary": "This OpenAPI document", "operationId": "openapi", "responses": {"200": _json({"type": "object"})}}},
        "/asyncapi.json": {"get": {"summary": "An AsyncAPI 3.0 document: each topic and the event types it has carried", "operationId": "asyncapi", "responses": {"200": _json({"type": "object"}), **_problems(*AUTH)}}},
        "/docs": {"get": {"summary": "The API reference as an HTML page", "operationId": "docs", "responses": {"200": html_page}}},
        "/": {"get": {"summary": "The dashboard", "operationId": "dashboard", "responses": {"200": html_page}}},
        "/v1/topics": {"get": {"summary": "List the topics the token may read", "operationId": "listTopics", "responses": {"200": _json(_object({"topics": {"type": "array", "items": _ref("Topic")}}, "topics")), **_problems(401)}}},
        "/v1/topics/{topic}": {
            "parameters": [_TOPIC],
            "put": {"summary": "Create or configure a topic (admin)", "operationId": "putTopic", "requestBody": _body(_ref("TopicConfig")), "responses": {"200": _json(_ref("Topic")), "201": _json(_ref("Topic"), "Created"), **_problems(*BODY, *AUTH, 409, 503)}},
            "get": {"summary": "Describe a topic", "operationId": "getTopic", "responses": {"200": _json(_ref("Topic")), **_problems(*NAMED, *AUTH)}},
            "delete": {"summary": "Delete a topic and its groups (admin)", "operationId": "deleteTopic", "responses": {"204": {"description": "Deleted"}, **_problems(*NAMED, *AUTH, 409)}},
        },
        "/v1/topics/{topic}/sse": {
            "parameters": [_TOPIC],
            "get": {"summary": "Follow a topic as Server-Sent Events: each id is a resume token; Last-Event-ID resumes with no gap (the WebSocket gateway is GET /v1/ws, subprotocol tidings.v1)", "operationId": "sse", "parameters": [_param("from", "query", {"anyOf": [{"enum": ["earliest", "latest"]}, {"type": "string", "pattern": _TOKEN_PATTERN}, *_TIME["anyOf"]]}, "earliest, latest (default), a resume token like 0:15,1:7, or a time"), _param("types", "query", _TYPES_QUERY, "Comma-separated type patterns"), _param("ticket", "query", {"type": "string"}, "A ticket from POST /v1/ws/ticket, for EventSource, which cannot set headers"), {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string", "pattern": r"^([0-9]+:[0-9]+(,[0-9]+:[0-9]+)*)?$"}, "description": "Resume token; wins over from (empty: none)"}], "responses": {"200": {"description": "retry, then messages: id = resume token, data = the record", "content": {"text/event-stream": {"schema": {"type": "object", "description": "one message", "properties": {"retry": {"type": "integer"}, "id": {"type": "string", "pattern": _TOKEN_PATTERN}, "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": _ref("Record")}}}}}}, **_problems(*NAMED, *AUTH)}},
        },
        "/v1/topics/{topic}/events": {
            "parameters": [_TOPIC],
            "post": {
                "summary": "Publish events (CloudEvents structured, batch or binary mode)",
                "operationId": "publish",
                "requestBody": {"required": True, "description": "One event (structured), a JSON array of events (batch), or binary mode: attributes in ce-* headers, the body is the data", "content": {"application/cloudevents+json": {"schema": _ref("CloudEvent")}, "application/cloudevents-batch+json": {"schema": {"type": "array", "items": _ref("CloudEvent"), "description": "may be empty (JSON format 4.3): answered 202 with no events, writing nothing"}}}},
                "responses": {"202": _json(_ref("Published"), "Accepted: durable by the hub's fsync policy"), **_problems(*NAMED, *AUTH, *BODY, 409, 415, 422, 503)},
            },
            "get": {
                "summary": "Read and replay records",
                "operationId": "read",
                "parameters": [
                    _param("partition", "query", {"type": "integer", "minimum": 0, "maximum": 1023}, "Read only this partition"),
                    _param("from", "query", {"anyOf": [{"enum": ["earliest", "latest"]}, {"type": "string", "pattern": "^[0-9]+$"}, {"type": "string", "pattern": _TOKEN_PATTERN}]}, "earliest, latest, an offset, or a position token like 0:15,1:7"),
                    _param("from_time", "query", _TIME, "RFC 3339 time or ms since the epoch"),
                    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 10000}, "Most records to answer (100)"),
                    _param("wait", "query", _DURATION_TEXT, "Long-poll up to this many seconds (or 500ms, 10s); at most 60 s"),
                    _param("types", "query", _TYPES_QUERY, "Comma-separated type patterns: order.* one token, order.> the rest"),
                    _param("appended", "query", {"enum": ["true", "false"]}, "true: each record with its append time (appended, ms) and the answer with the read's horizon: every record of the partitions read not received yet was appended at or after it (stream processing's merge by append time)"),
                ],
                "description": "Token scope: subscribe on the topic. A view's changelog (__view.{name}) is read with the view's read scope: subscribe on every input of the view.",
                "responses": {"200": _json(_ref("Records")), **_problems(*NAMED, *AUTH)},
            },
        },
        "/v1/topics/{topic}/groups/{group}": {
            "parameters": [_TOPIC, _GROUP],
            "put": {"summary": "Create or configure a consumer group", "description": _MANAGE + " Creating the topic too needs publish on it, and an explicit dead_letter_topic needs publish on that topic; the default {topic}.dlq is written by the hub on the group's behalf.", "operationId": "putGroup", "requestBody": _body(_ref("GroupConfig")), "responses": {"200": _json(_ref("Group")), "201": _json(_ref("Group"), "Created"), **_problems(*NAMED, *AUTH, *BODY, 409, 503)}},
            "get": {"summary": "Describe a group: lag, pending, redelivered, dead-lettered", "description": _CONSUME, "operationId": "getGroup", "responses": {"200": _json(_ref("Group")), **_problems(*NAMED, *AUTH)}},
            "delete": {"summary": "Delete a group", "description": _MANAGE, "operationId": "deleteGroup", "responses": {"204": {"description": "Deleted"}, **_problems(*NAMED, *AUTH)}},
        },
        "/v1/ws/ticket": {"post": {"summary": "A ticket that acts for the bearer token once, within 30 s, as ?ticket= on GET /v1/ws or an SSE stream: for browsers, which cannot set headers there", "operationId": "wsTicket", "requestBody": _body(_object({})), "responses": {"200": _json(_object({"ticket": {"type": "string"}, "expires_in": {"type": "number"}}, "ticket", "expires_in")), **_problems(*BODY, 401, 429)}}},
        "/v1/metrics/history": {"get": {"summary": "The hub's metrics over the last day (admin): one point per interval (10 s), kept in memory and on disk, so a restarted hub still has them", "description": "Counters become rates over each interval (per second); gauges are the value sampled. The first point after a start has gauges only. A series appears if it has a value in the range; values are null where it had none.", "operationId": "metricsHistory", "parameters": [_param("series", "query", {"type": "string", "pattern": _HISTORY_SERIES}, "Comma-separated families (default all): " + ", ".join(f"{n} ({f.unit}{', by ' + ' and '.join(f.labels) if f.labels else ''}): {f.text}" for n, f in FAMILIES.items())), _param("since", "query", {"anyOf": [*_TIME["anyOf"], {"type": "string", "pattern": _AGO}]}, "Points from this time on: RFC 3339, ms since the epoch, or a duration back from now (15m, 6h, 1d); default all that is kept"), *(_param(label, "query", {"type": "string"}, f"Only series whose {label} label is this") for label in LABEL_FILTERS)], "responses": {"200": _json(_ref("MetricsHistory")), **_problems(400, *AUTH)}}},
        "/v1/events": {"get": {"summary": "The records of one correlationid (an order's trace), across topics, in publish order, a page at a time", "description": _FOUND, "operationId": "eventsByCorrelation", "parameters": [_param("correlationid", "query", _LOOKUP_KEY, "The correlationid extension attribute", True), _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}, "Most records to answer (100)"), _param("after", "query", {"type": "string", "pattern": _CURSOR}, "The next of the previous page")], "responses": {"200": _json(_object({"records": {"type": "array", "items": _ref("Record")}, "next": {"anyOf": [{"type": "string", "pattern": _CURSOR}, {"type": "null"}], "description": "pass as after for the next page; null: no more"}}, "records", "next")), **_problems(400, *AUTH, 503)}}},
        "/v1/events/{event_id}": {"parameters": [_param("event_id", "path", _LOOKUP_KEY, "The event's id")], "get": {"summary": "The record of an event, found by its id in any topic (the first published, if the id was used again: a dead letter keeps its id)", "description": _FOUND, "operationId": "getEvent", "responses": {"200": _json(_ref("Record")), **_problems(400, 404, *AUTH, 503)}}},
        "/v1/groups": {"get": {"summary": "List consumer groups", "description": "The groups of the topics the token may subscribe to, the hub's own among them marked internal (read-only).", "operationId": "listGroups", "responses": {"200": _json(_object({"groups": {"type": "array", "items": _ref("Group")}}, "groups")), **_problems(401)}}},
    }
    for op, (summary, body, ok) in group_ops.items():
        paths[f"/v1/topics/{{topic}}/groups/{{group}}/{op}"] = {
            "parameters": [_TOPIC, _GROUP],
            "post": {"summary": summary, "description": _MANAGE + (" Re-driving publishes on the topic: it needs publish there too." if op == "redrive" else "") if op in ("seek", "redrive") else _CONSUME, "operationId": op, "requestBody": body, "responses": {"200": ok, **_problems(*NAMED, *AUTH, *BODY, 409, 503)}},
        }
    paths.update(_webhook_paths())
    paths.update(_schema_paths())
    paths.update(_view_paths())
    _browser_refusals(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "tidings", "version": version("tidings"), "description": "An event hub: durable event log, pub/sub with consumer groups, CloudEvents over HTTP. Before a request reaches its operation the hub may answer 431 (request line and headers over max_header_bytes or max_headers), 408 (head or body slower than header_timeout or body_timeout) or 503 with Retry-After (max_connections open, or request bodies past max_body_bytes_in_flight), each as problem+json."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": _schemas(), "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "With tokens configured: each token's scopes are topic patterns for publish, subscribe and manage (consumer groups), or admin (everything)."}}},
        "security": [{}, {"bearer": []}],
    }


# Text the hub takes in an event attribute: no control characters, surrogates or
# non-characters (CloudEvents "Type System", String).
_TEXT_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f\ufdd0-\ufdef\ufffe\uffff]*$"
_NONEMPTY_TEXT = {"type": "string", "minLength": 1, "pattern": _TEXT_PATTERN}
_URI_REFERENCE = {"type": "string", "minLength": 1, "pattern": f"^{URI_REFERENCE_PATTERN}$", "description": "RFC 3986 URI-reference"}


def _schemas() -> dict[str, Any]:
    record_props = {"topic": {"type": "string"}, "partition": {"type": "integer"}, "offset": {"type": "integer"}, "event": _ref("CloudEvent")}
    record = {"type": "object", "required": list(record_props), "properties": record_props}
    timed_props = {**record_props, "appended": {**_INT64, "description": "append time, ms since the epoch (only with appended=true)"}}
    extension = {"anyOf": [{"type": "string", "pattern": _TEXT_PATTERN}, {"type": "boolean"}, {"type": "integer", "minimum": -(1 << 31), "maximum": (1 << 31) - 1}, {"type": "null"}]}
    return {
        "Problem": {"type": "object", "description": "RFC 9457 problem details", "required": ["type", "title", "status", "detail"], "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}, "instance": {"type": "string"}, "attribute": {"type": "string"}, "field": {"type": "string"}, "index": {"type": "integer"}}},
        "CloudEvent": {
            "type": "object",
            "description": "CloudEvents 1.0 JSON format. Where the contract differs from the specification, which requires id, source and specversion: the hub fills a missing id (a UUIDv7), source (/topics/{topic}), specversion (1.0) and time (when it accepts the event). Other members are extension attributes, named with lower-case letters and digits; a null attribute is left out",
            "required": ["type"],
            "properties": {
                "specversion": _nullable({"const": "1.0"}), "id": _nullable(_NONEMPTY_TEXT), "source": _nullable(_URI_REFERENCE), "type": _NONEMPTY_TEXT,
                "subject": _nullable(_NONEMPTY_TEXT),
                "time": _nullable({"type": "string", "pattern": r"^(?!0000)[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$", "description": "RFC 3339"}),
                "datacontenttype": _nullable({"type": "string", "pattern": f"^{MEDIA_TYPE_PATTERN}$", "description": "RFC 2046 media type"}),
                "dataschema": _nullable({"type": "string", "pattern": f"^{ABSOLUTE_URI_PATTERN}$", "description": "RFC 3986 absolute URI (no fragment)"}),
                "data": {}, "data_base64": _nullable({"type": "string", "pattern": "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"}),
                "partitionkey": _nullable({"type": "string", "pattern": _TEXT_PATTERN}), "correlationid": _nullable({"type": "string", "pattern": _TEXT_PATTERN}), "causationid": _nullable({"type": "string", "pattern": _TEXT_PATTERN}), "tracestate": _nullable({"type": "string", "pattern": _TEXT_PATTERN}),
                "traceparent": _nullable({"type": "string", "pattern": "^(0[0-9a-f]|[1-9a-e][0-9a-f]|f[0-9a-e])-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$"}),
            },
            "propertyNames": {"anyOf": [{"pattern": "^[a-z0-9]+$"}, {"enum": ["data_base64"]}]},
            "additionalProperties": extension,
            "not": {"required": ["data", "data_base64"], "properties": {"data_base64": {"type": "string"}}},
            # data of a media type that is not JSON (not */json nor */*+json) is text
            "if": {"required": ["datacontenttype", "data"], "properties": {"datacontenttype": {"type": "string", "not": {"pattern": r"^[^;]*(/|\+)[Jj][Ss][Oo][Nn][ \t]*(;.*)?$"}}}},
            "then": {"properties": {"data": {"type": "string"}}},
        },
        "Published": _object({"events": {"type": "array", "items": {"type": "object", "required": ["id", "partition", "offset"], "properties": {"id": {"type": "string"}, "partition": {"type": "integer"}, "offset": {"type": "integer"}, "duplicate": {"type": "boolean"}}}}}, "events"),
        "Record": record,
        "Records": _object({"records": {"type": "array", "items": {**record, "properties": timed_props}}, "next": {"type": "string", "description": "position token to pass back as from"}, "horizon": {**_INT64, "description": "only with appended=true: every record of the partitions read that this read did not answer was appended at or after this time (ms)"}, "skipped": {"type": "array", "description": "only when this read stepped over offsets lost to damage on disk", "items": _ref("Skipped")}}, "records", "next"),
        "Deliveries": _object({"records": {"type": "array", "items": {**record, "required": [*record["required"], "lease", "deliveries"], "properties": {**record_props, "lease": {"type": "string"}, "deliveries": {"type": "integer"}}}}, "skipped": {"type": "array", "description": "only when this fetch moved the group past offsets lost to damage on disk", "items": _ref("Skipped")}}, "records"),
        "Retention": _nullable(_object({"max_age": _nullable(_DURATION), "max_bytes": _nullable({**_COUNT, "minimum": 1})})),
        "TopicConfig": _object({"partitions": {"type": "integer", "minimum": 1, "maximum": 1024}, "retention": _ref("Retention"), "schemas": {"enum": ["off", "validate", "required"], "description": "checks of event data at publish against the registered schema of each event's type: validate checks types that have one, required also refuses types that have none"}, "compaction": {"enum": ["none", "key"], "description": "key: only the latest record of each partitionkey is kept (records without one are all kept); the others are removed in the background, their offsets left as gaps that reads step over (default none)"}, "delete_retention": {**_DURATION, "description": "on a topic compacted by key, how long a tombstone (an event without data) is kept after its append before it goes too: seconds, or a string like 10m (default 24h)"}}),
        "Topic": {"type": "object", "required": ["name", "partitions", "retention"], "properties": {"name": {"type": "string"}, "partitions": {"type": "array", "items": {"type": "object", "properties": {"partition": {"type": "integer"}, "first_offset": {"type": "integer"}, "next_offset": {"type": "integer"}, "events": {"type": "integer"}, "bytes": {"type": "integer"}, "damage": {"type": "array", "description": "ranges lost to damage on disk", "items": _ref("Damage")}}}}, "retention": {"type": "object", "properties": {"max_age": {"type": ["number", "null"], "description": "seconds"}, "max_bytes": {"type": ["integer", "null"]}}}, "events": {"type": "integer", "description": "offsets from the first kept to the next: on a compacted topic, more than the records kept"}, "bytes": {"type": "integer"}, "schemas": {"enum": ["off", "validate", "required"]}, "compaction": {"enum": ["none", "key"]}, "delete_retention": {"type": "number", "description": "seconds"}}},
        "GroupConfig": _object({"start": {"enum": ["earliest", "latest"]}, "ack_wait": _POSITIVE_DURATION, "max_deliver": {"type": "integer", "minimum": 1, "maximum": (1 << 63) - 1}, "dead_letter_topic": _nullable(_NAME), "ordering": {"enum": ["none", "key"]}, "types": _TYPES}),
        "Group": {"type": "object", "required": ["topic", "name", "config"], "properties": {"topic": {"type": "string"}, "name": {"type": "string"}, "config": {"type": "object", "properties": {"start": {"enum": ["earliest", "latest"]}, "ack_wait": {"type": "number", "description": "seconds"}, "max_deliver": {"type": "integer"}, "dead_letter_topic": {"type": ["string", "null"]}, "ordering": {"enum": ["none", "key"]}, "types": {"type": "array", "items": {"type": "string"}}}}, "partitions": {"type": "array", "items": {"type": "object"}}, "lag": {"type": "integer"}, "pending": {"type": "integer"}, "delivered": {"type": "integer", "description": "leases handed out, redeliveries included; like every counter here, kept across restarts"}, "redelivered": {"type": "integer"}, "acked": {"type": "integer"}, "dead_lettered": {"type": "integer"}, "internal": {"type": "boolean", "description": "one of the hub's own groups (webhook.*, redrive.*, tidings.*): listed read-only, refused by every group route and WebSocket join"}, "skipped_events": {"type": "integer", "description": "offsets lost to damage that the group stepped over"}, "skipped": {"type": "array", "description": "the latest 100 ranges the group stepped over", "items": _ref("Skipped")}}},
        "MetricsHistory": _object({"interval": {"type": "number", "description": "seconds between points"}, "times": {"type": "array", "description": "each point's time, ms since the epoch, oldest first", "items": _INT64}, "series": {"type": "array", "items": _object({"name": {"enum": list(FAMILIES)}, "labels": {"type": "object", "additionalProperties": {"type": "string"}}, "unit": {"type": "string"}, "values": {"type": "array", "description": "one per time", "items": {"type": ["number", "null"]}}}, "name", "labels", "unit", "values")}}, "interval", "times", "series"),
        "Skipped": {"type": "object", "description": "offsets from (inclusive) to to (exclusive) of a partition, lost to damage on disk", "required": ["partition", "from", "to", "why"], "properties": {"partition": {"type": "integer"}, "from": {"type": "integer"}, "to": {"type": "integer"}, "why": {"type": "string"}}},
        "Damage": {"type": "object", "description": "a bad byte range of a segment and the offsets it cost", "properties": {"from": {"type": "integer"}, "to": {"type": "integer"}, "events": {"type": "integer"}, "segment": {"type": "string"}, "position": {"type": "integer"}, "bytes": {"type": "integer"}, "why": {"type": "string"}}},
        "JsonSchema": _json_schema_component(),
        "SeekTarget": {"anyOf": [{"enum": ["earliest", "latest"]}, {"type": "string", "pattern": _TOKEN_PATTERN, "description": "position token"}, *_TIME["anyOf"], {**_INT64, "description": "ms since the epoch"}, _object({"partition": _COUNT, "offset": _COUNT}, "partition", "offset"), _object({"time": _TIME}, "time")]},
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
            if method == "post" and "requestBody" in op:
                # A POST needs a JSON content type even with nothing to say: send {}.
                op["requestBody"] = {**op["requestBody"], "required": True}


_WEBHOOK = _param("id", "path", {"type": "string"}, "Webhook id (wh_...)")
_WEBHOOK_FIELDS: dict[str, Any] = {"url": {"type": "string", "format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^@#]+$", "maxLength": 2048, "description": "http or https; its host must resolve to public addresses unless the hub allows the network"}, "topics": {"type": "array", "items": _NAME, "minItems": 1}, "types": _TYPES, "description": {"type": "string", "maxLength": 1000}, "rate_limit": {"type": ["number", "null"], "minimum": 0.001, "maximum": 100000, "description": "deliveries per second"}, "ordering": {"enum": ["none", "key"]}, "concurrency": {"type": "integer", "minimum": 1, "maximum": 1000}}
_WEBHOOK_VIEW: dict[str, Any] = {"type": "object", "required": ["id", "url", "topics", "enabled", "state"], "properties": {**_WEBHOOK_FIELDS, "topics": {"type": "array", "items": {"type": "string"}}, "types": {"type": "array", "items": {"type": "string"}}, "id": {"type": "string"}, "enabled": {"type": "boolean"}, "state": {"enum": ["healthy", "failing", "disabled"]}, "disabled_reason": {"type": ["string", "null"]}, "failing_since": {"type": ["integer", "null"]}, "last_success": {"type": ["integer", "null"]}, "created": {"type": "integer"}, "lag": {"type": "object", "additionalProperties": {"type": "integer"}}, "in_flight": {"type": "integer"}, "retrying": {"type": "integer"}, "secret": {"type": "string", "description": "only when created: whsec_ + base64"}}}


def _webhook_paths() -> dict[str, Any]:
    """``/v1/webhooks``: Standard Webhooks signatures, retries, attempts, dead letters, replay."""
    view = _json(_WEBHOOK_VIEW)
    page: dict[str, Any] = {"type": "object", "properties": {"next": {"type": ["integer", "null"], "description": "pass as before for the next page"}}}
    paging = [_param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}, "Most items (100)"), _param("before", "query", _COUNT, "Items older than this id")]
    named = (*AUTH, 404)
    changes = (*named, *BODY)
    grace = {"anyOf": [{"type": "number", "minimum": 0, "maximum": 30 * 86_400}, {"type": "string", "pattern": r"^(0|[1-9][0-9]{0,5})(\.[0-9]{1,3})?(ms|s)?$"}]}
    return {
        "/v1/webhooks": {
            "post": {"summary": "Register an endpoint (admin); the answer holds its secret", "operationId": "createWebhook", "requestBody": _body(_object(_WEBHOOK_FIELDS, "url", "topics"), True), "responses": {"201": _json(_WEBHOOK_VIEW, "Created"), **_problems(*AUTH, *BODY)}},
            "get": {"summary": "List endpoints (admin)", "operationId": "listWebhooks", "responses": {"200": _json(_object({"webhooks": {"type": "array", "items": _WEBHOOK_VIEW}}, "webhooks")), **_problems(*AUTH)}},
        },
        "/v1/webhooks/{id}": {
            "parameters": [_WEBHOOK],
            "get": {"summary": "Describe an endpoint: state, lag per topic", "operationId": "getWebhook", "responses": {"200": view, **_problems(*named)}},
            "patch": {"summary": "Change an endpoint; enabled: true brings a disabled one back and drains what it missed, in order", "operationId": "patchWebhook", "requestBody": _body(_object({**_WEBHOOK_FIELDS, "enabled": {"type": "boolean"}}), True), "responses": {"200": view, **_problems(*changes)}},
            "delete": {"summary": "Delete an endpoint, its attempts and dead letters", "operationId": "deleteWebhook", "responses": {"204": {"description": "Deleted"}, **_problems(*named)}},
        },
        "/v1/webhooks/{id}/rotate-secret": {"parameters": [_WEBHOOK], "post": {"summary": "A new secret; older ones keep signing beside it for grace (default 24 h, at most 30 days)", "operationId": "rotateWebhookSecret", "requestBody": _body(_object({"grace": grace})), "responses": {"200": _json(_object({"id": {"type": "string"}, "secret": {"type": "string"}, "previous_valid_until": {"type": "integer"}}, "id", "secret", "previous_valid_until")), **_problems(*changes)}}},
        "/v1/webhooks/{id}/attempts": {"parameters": [_WEBHOOK], "get": {"summary": "The attempts log, newest first", "operationId": "webhookAttempts", "parameters": [_param("status", "query", {"enum": ["succeeded", "failed", "success", "gone", "throttled"]}, "Only these"), *paging], "responses": {"200": _json({**page, "required": ["attempts", "next"], "properties": {**page["properties"], "attempts": {"type": "array", "items": {"type": "object"}}}}), **_problems(*named, 400)}}},
        "/v1/webhooks/{id}/replay": {"parameters": [_WEBHOOK], "post": {"summary": "Deliver again every matching event since a time, or (with topic) a position token", "operationId": "replayWebhook", "requestBody": _body(_object({"since": {"anyOf": [{"type": "string", "pattern": _TOKEN_PATTERN}, *_TIME["anyOf"], _INT64]}, "topic": _NAME}, "since"), True), "responses": {"202": _json(_object({"id": {"type": "string"}, "topics": {"type": "object", "additionalProperties": {"type": "string"}}}, "id", "topics"), "Accepted"), **_problems(*changes)}}},
        "/v1/webhooks/{id}/test": {"parameters": [_WEBHOOK], "post": {"summary": "Send one tidings.webhook.test event now; answers the attempt", "operationId": "testWebhook", "requestBody": _body(_object({})), "responses": {"200": _json(_object({"id": {"type": "string"}, "event": _ref("CloudEvent"), "attempt": {"type": "object"}}, "id", "event", "attempt")), **_problems(*changes)}}},
        "/v1/webhooks/{id}/dead-letters": {"parameters": [_WEBHOOK], "get": {"summary": "Events whose attempts were all spent", "operationId": "webhookDeadLetters", "parameters": paging, "responses": {"200": _json({**page, "required": ["dead_letters", "next"], "properties": {**page["properties"], "dead_letters": {"type": "array", "items": {"type": "object"}}}}), **_problems(*named, 400)}}},
        "/v1/webhooks/{id}/dead-letters/replay": {"parameters": [_WEBHOOK], "post": {"summary": "Send dead letters again: all, or those of ids", "operationId": "replayWebhookDeadLetters", "requestBody": _body(_object({"ids": {"type": "array", "items": _COUNT}})), "responses": {"202": _json(_object({"id": {"type": "string"}, "replaying": {"type": "integer"}}, "id", "replaying"), "Accepted"), **_problems(*changes)}}},
    }


_ETYPE = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"}
_APP = {"type": "string", "pattern": NAME_PATTERN}
_JSON_SCHEMA = _ref("JsonSchema")
_CHANGE = {"type": "object", "required": ["path", "change", "detail"], "properties": {"path": {"type": "string", "description": "JSON path of the value, like $.items[*].qty"}, "change": {"type": "string"}, "detail": {"type": "string"}, "direction": {"enum": ["backward", "forward"]}, "version": {"type": "integer"}}}
_COMPAT = {"enum": ["none", "backward", "forward", "full", "backward_transitive", "forward_transitive", "full_transitive"]}


def _json_schema_component() -> dict[str, Any]:
    """A JSON Schema 2020-12 document, its keywords as its meta-schema checks them;
    other members are allowed, as 2020-12 ignores unknown keywords. What no schema can
    say is checked by compiling it: a pattern must be a regular expression and a $ref
    must resolve inside the document (400 otherwise)."""
    # A subschema is an object or a boolean here; its own keywords are checked as
    # the document's are (the 400 names the schema), not spelled out again.
    sub = {"type": ["object", "boolean"]}
    subs = {"type": "array", "minItems": 1, "items": sub}
    named = {"type": "object", "additionalProperties": sub}
    count = {"type": "integer", "minimum": 0}
    simple = {"enum": ["array", "boolean", "integer", "null", "number", "object", "string"]}
    inside = {"type": "string", "pattern": "^#"}
    keywords: dict[str, Any] = {
        "$schema": {"enum": ["https://json-schema.org/draft/2020-12/schema", "https://json-schema.org/draft/2020-12/schema#"]},
        "$ref": inside, "$dynamicRef": inside, "$comment": {"type": "string"}, "$defs": named,
        "title": {"type": "string"}, "description": {"type": "string"}, "deprecated": {"type": "boolean"},
        "type": {"anyOf": [simple, {"type": "array", "items": simple, "minItems": 1, "uniqueItems": True}]},
        "enum": {"type": "array"},
        "properties": named, "patternProperties": named, "additionalProperties": sub,
        "required": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "dependentRequired": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}},
        "propertyNames": sub, "minProperties": count, "maxProperties": count,
        "items": sub, "prefixItems": subs, "contains": sub, "minItems": count, "maxItems": count, "uniqueItems": {"type": "boolean"},
        "anyOf": subs, "oneOf": subs, "allOf": subs, "if": sub, "then": sub, "else": sub,
        "minimum": {"type": "number"}, "maximum": {"type": "number"}, "exclusiveMinimum": {"type": "number"}, "exclusiveMaximum": {"type": "number"},
        "multipleOf": {"type": "number", "exclusiveMinimum": 0},
        "minLength": count, "maxLength": count, "pattern": {"type": "string", "description": "an ECMA 262 regular expression"}, "format": {"type": "string"},
    }
    return {
        "type": ["object", "boolean"],
        "description": "A JSON Schema 2020-12 document ($schema absent or 2020-12) of at most 256 KiB, nested at most 64 deep; a $ref points inside it (#/...): the hub fetches nothing",
        "properties": keywords,
    }


def _schema_paths() -> dict[str, Any]:
    """``/v1/schemas``: the schema registry."""
    etype = _param("type", "path", _ETYPE, "Event type")
    reads = "Token: any valid one."
    writes = "Token scope: admin, or schemas on a pattern matching the type."
    changed = (*AUTH, *BODY, 409, 503)
    summary = {"type": "object", "required": ["type", "latest", "versions", "compatibility", "producers", "consumers", "failures"], "properties": {"type": {"type": "string"}, "latest": {"type": ["integer", "null"]}, "versions": {"type": "integer"}, "compatibility": _COMPAT, "producers": {"type": "array", "items": {"type": "string"}}, "consumers": {"type": "array", "items": {"type": "string"}}, "failures": {"type": "integer"}}}
    party = {"type": "object", "required": ["name", "via"], "properties": {"name": {"type": "string"}, "via": {"enum": ["app", "traffic", "group"]}, "version": {"type": "integer"}, "events": {"type": "integer"}, "topic": {"type": "string"}}}
    described = _object({"type": {"type": "string"}, "compatibility": _COMPAT, "latest": {"type": ["integer", "null"]}, "versions": {"type": "array", "items": _object({"version": {"type": "integer"}, "uri": {"type": "string"}}, "version", "uri")}, "producers": {"type": "array", "items": party}, "consumers": {"type": "array", "items": party}, "topics": {"type": "array", "items": {"type": "string"}}, "failures": _object({"count": {"type": "integer"}, "last": {"type": ["string", "null"]}}, "count", "last")}, "type", "compatibility", "latest", "versions", "producers", "consumers", "topics", "failures")
    registered = _object({"type": {"type": "string"}, "version": {"type": "integer"}, "uri": {"type": "string"}, "created": {"type": "boolean"}}, "type", "version", "uri", "created")
    checked = _object({"type": {"type": "string"}, "compatible": {"type": "boolean"}, "compatibility": _COMPAT, "version": {"type": ["integer", "null"], "description": "the version this schema already is, if any"}, "changes": {"type": "array", "items": _CHANGE}, "consumers": {"type": "array", "items": _object({"name": {"type": "string"}, "changes": {"type": "array", "items": _CHANGE}}, "name", "changes")}}, "type", "compatible", "compatibility", "version", "changes", "consumers")
    proposal = _body(_object({"schema": _JSON_SCHEMA, "producer": _APP}, "schema"), True)
    return {
        "/v1/schemas": {"get": {"summary": "List the registered schemas, and the types seen in traffic that have none", "description": reads, "operationId": "listSchemas", "responses": {"200": _json(_object({"schemas": {"type": "array", "items": summary}, "unregistered": {"type": "array", "items": {"type": "string"}}}, "schemas", "unregistered")), **_problems(401)}}},
        "/v1/schemas/{type}": {
            "parameters": [etype],
            "put": {"summary": "Register a schema for the type's data: a new version if it is compatible (409 names each breaking change by path, and the consumers that would break), the same version if it is one already", "description": writes + " producer names the app that emits it.", "operationId": "putSchema", "requestBody": proposal, "responses": {"200": _json(registered), "201": _json(registered, "Created"), **_problems(*changed)}},
            "get": {"summary": "A type's versions, compatibility mode, producers and consumers (registered apps, sources and groups seen in recent traffic) and failures at publish", "description": reads, "operationId": "getSchema", "responses": {"200": _json(described), **_problems(*NAMED, 401)}},
        },
        "/v1/schemas/{type}/versions/{version}": {"parameters": [etype, _param("version", "path", {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 999999999}, {"const": "latest"}]}, "Version number or latest")], "get": {"summary": "One version of a type's schema", "description": reads, "operationId": "getSchemaVersion", "responses": {"200": _json(_object({"type": {"type": "string"}, "version": {"type": "integer"}, "uri": {"type": "string"}, "schema": _JSON_SCHEMA}, "type", "version", "uri", "schema")), **_problems(*NAMED, 401)}}},
        "/v1/schemas/{type}/config": {"parameters": [etype], "put": {"summary": "Set the type's compatibility mode (default backward)", "description": writes, "operationId": "putSchemaConfig", "requestBody": _body(_object({"compatibility": _COMPAT}, "compatibility"), True), "responses": {"200": _json(_object({"type": {"type": "string"}, "compatibility": _COMPAT}, "type", "compatibility")), **_problems(*AUTH, *BODY, 409, 503)}}},
        "/v1/schemas/{type}/check": {"parameters": [etype], "post": {"summary": "Whether a schema would be accepted, without registering it: the breaking changes and the consumers that would break", "description": reads, "operationId": "checkSchema", "requestBody": proposal, "responses": {"200": _json(checked), **_problems(*BODY, 401)}}},
        "/v1/schemas/{type}/consumers/{name}": {"parameters": [etype, _param("name", "path", _APP, "App name")], "put": {"summary": "Record that an app reads the type with this schema; 409 when it cannot read what the latest version allows", "description": writes, "operationId": "putSchemaConsumer", "requestBody": _body(_object({"schema": _JSON_SCHEMA}, "schema"), True), "responses": {"200": _json(_object({"type": {"type": "string"}, "consumer": {"type": "string"}}, "type", "consumer")), **_problems(*changed)}}},
        "/v1/schemas/{type}/inferred": {"parameters": [etype], "get": {"summary": "A schema inferred from the type's recent events (their data), to review and adopt", "description": writes, "operationId": "inferredSchema", "responses": {"200": _json(_object({"type": {"type": "string"}, "events": {"type": "integer"}, "topics": {"type": "array", "items": {"type": "string"}}, "sources": {"type": "array", "items": {"type": "string"}}, "registered": {"type": "boolean"}, "schema": _JSON_SCHEMA}, "type", "events", "topics", "sources", "registered", "schema")), **_problems(*NAMED, *AUTH)}}},
    }


_VIEW_NAME = _param("view", "path", _NAME, "View name")
_VIEW_READ = "Token scope: subscribe on every input topic of the view."
_VIEW_WRITE = "Token scope: manage on every input topic of the view (the processor's token)."
_VIEW_INPUTS = {"type": "array", "minItems": 1, "maxItems": 100, "uniqueItems": True, "items": _NAME}
_MS = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
_MS_POSITIVE = {**_MS, "minimum": 1}
_VIEW_WINDOW = {"description": "the window (durations in ms), as tidings.streams windows describe themselves; a hopping window's every is at most its size", "oneOf": [
    _object({"kind": {"enum": ["tumbling", "sliding"]}, "size": _MS_POSITIVE, "grace": _MS, "idle": _MS}, "kind", "size", "grace", "idle"),
    _object({"kind": {"const": "hopping"}, "size": _MS_POSITIVE, "every": _MS_POSITIVE, "grace": _MS, "idle": _MS}, "kind", "size", "every", "grace", "idle"),
    _object({"kind": {"const": "session"}, "gap": _MS_POSITIVE, "grace": _MS, "idle": _MS}, "kind", "gap", "grace", "idle"),
    _object({"kind": {"const": "join"}, "within": _MS, "grace": _MS, "idle": _MS}, "kind", "within", "grace", "idle"),
]}
_VIEW_PARTITIONED = {"type": "boolean", "description": "true: one task per input partition (the view's key is its events' partitionkey; the inputs must have the same number of partitions, else 400), its changelog one partition per task, the tasks shared by the processes that heartbeat on /members; false (default): one task. Declared again with another layout (partitioned or not, or another number of tasks): 409, the view unchanged; POST .../rebuild with partitioned changes it"}
_VIEW_REPARTITION = {"description": "true, or a number of partitions: the view's key is not its events' partitionkey, so its events are routed by key first. One routing task per input partition publishes a copy of each event keyed by the view's key to the hub's topic __view.{name}.by-key (that many partitions; true: as many as the input with the most), and one task per partition of that topic computes the view; tasks 0..N-1 are the view's, N.. the routing ones, all shared through /members. Not with partitioned (400). Declared again with another layout: 409, the view unchanged; POST .../rebuild with repartition changes it", "oneOf": [{"type": "boolean"}, {"type": "integer", "minimum": 1, "maximum": 1000}]}
_NOT_BOTH = {"required": ["partitioned", "repartition"], "properties": {"partitioned": {"const": True}, "repartition": {"not": {"const": False}}}}
_VIEW_SPEC = {"anyOf": [
    {**_object({"kind": {"const": "view"}, "inputs": _VIEW_INPUTS, "app": _nullable(_NAME), "window": {"type": "null"}, "emit": {"type": "null"}, "partitioned": _VIEW_PARTITIONED, "repartition": _VIEW_REPARTITION}, "kind", "inputs"), "not": _NOT_BOTH},
    {**_object({"kind": {"const": "window"}, "inputs": _VIEW_INPUTS, "app": _nullable(_NAME), "window": _VIEW_WINDOW, "emit": _nullable({"enum": ["final", "updates"]}), "partitioned": _VIEW_PARTITIONED, "repartition": _VIEW_REPARTITION}, "kind", "inputs", "window"), "not": _NOT_BOTH},
]}  # fmt: skip
_VIEW_STAGES = _object({"topic": {"type": "string", "description": "__view.{name}.by-key"}, "partitions": {"type": "integer", "minimum": 1, "description": "N: tasks 0..N-1 compute the view over the topic's partitions"}, "routers": {"type": "array", "description": "the input partition [topic, partition] that task N+i routes", "items": {"type": "array", "items": {"type": ["string", "integer"]}, "minItems": 2, "maxItems": 2}}}, "topic", "partitions", "routers")
_VIEW_POSITION = {"type": "string", "pattern": "^[0-9]+:[0-9]+$", "description": "a position in the view's changelog, partition:offset (the partition of the task that owns the key)"}
_VIEW_RESUME_PATTERN = "([0-9]+@)?[0-9]+:[0-9]+(,[0-9]+:[0-9]+)*"
_VIEW_RESUME = {"type": "string", "pattern": f"^{_VIEW_RESUME_PATTERN}$", "description": "a resume token G@0:N,1:M: the next offset of each changelog partition of generation G (a bare 0:N, another generation, or one that does not name exactly the changelog's partitions starts with a snapshot; one that does not parse: 400)"}
_VIEW_ENTRY = _object({"key": {"type": "string"}, "value": {}, "position": _VIEW_POSITION}, "key", "value", "position")
_VIEW_MEMBERS = {"type": "object", "description": "the live processes heartbeating on the view (a partitioned view's), each with the tasks it runs", "additionalProperties": {"type": "array", "items": _COUNT}}
_VIEW_INFO = {"type": "object", "required": ["name", "kind", "inputs", "generation", "keys", "positions", "lag", "last_commit", "checkpoint", "changelog"], "properties": {
    "name": {"type": "string"}, "kind": {"enum": ["view", "window"]}, "inputs": {"type": "array", "items": {"type": "string"}}, "app": {"type": ["string", "null"]},
    "window": {"type": ["object", "null"]}, "emit": {"type": ["string", "null"]}, "generation": _COUNT, "keys": _COUNT,
    "positions": {"type": "object", "description": "per input, the position token of the next events the view reads (its last checkpoint)", "additionalProperties": {"type": ["string", "null"]}},
    "lag": {"type": "object", "description": "per input, events appended that the view does not reflect yet (null: the topic does not exist); for a repartitioned view, per input the events not routed yet, and under __view.{name}.by-key the copies routed and not processed yet: the sum is what both stages have still to do", "additionalProperties": {"type": ["integer", "null"]}},
    "repartition": {**_VIEW_STAGES, "description": "a repartitioned view's stages (absent otherwise)"},
    "last_commit": {"type": ["integer", "null"], "description": "append time of the last checkpoint, ms since the epoch"},
    "partitioned": {"type": "boolean"}, "tasks": {"type": "integer", "minimum": 1, "description": "tasks, and partitions of the changelog: one, or one per input partition"},
    "checkpoint": {"type": ["object", "null"], "description": "the latest commit's checkpoint (of any task)"},
    "checkpoints": {"type": "array", "description": "each task's last checkpoint", "items": _object({"task": _COUNT, "position": _VIEW_POSITION, "seq": {"type": ["integer", "null"]}, "owner": {"type": ["string", "null"]}, "horizon": {"type": ["integer", "null"]}, "last_commit": {"type": ["integer", "null"]}}, "task", "position")},
    "members": _VIEW_MEMBERS,
    "changelog": {"type": "object", "properties": {"topic": {"type": "string"}, "next_offset": {**_COUNT, "description": "the sum of the partitions' next offsets"}, "next": {"type": "string", "description": "the next offset of each partition, 0:N,1:M"}}},
    "failed": {"type": "string", "description": "only in a listing, for a view whose changelog could not be read when the hub started: why (its other routes answer 503)"},
}}  # fmt: skip
_CHECKPOINT_DATA = {"type": "object", "required": ["generation", "inputs"], "properties": {"generation": _COUNT, "inputs": {"type": "object", "description": "per input topic, the next offset to read per partition", "additionalProperties": {"type": "object", "propertyNames": {"pattern": "^(0|[1-9][0-9]{0,5})$", "description": "a partition of that input, without leading zeros"}, "additionalProperties": _COUNT}}}}
_CHANGELOG_EVENT = {"allOf": [_ref("CloudEvent"), {
    "required": ["type", "partitionkey"],
    "properties": {"partitionkey": {"type": "string", "pattern": "^(v:|s:|c$)", "description": "v:KEY a served value, s:NAME operator state, c the checkpoint"}},
    "if": {"properties": {"partitionkey": {"const": "c"}}},
    "then": {"required": ["data"], "properties": {"type": {"const": "tidings.view.checkpoint"}, "data": _CHECKPOINT_DATA}},
    "else": {"properties": {"type": {"const": "tidings.view.value"}, "data": {"anyOf": [{"type": "null"}, _object({"value": {}}, "value")], "description": "absent or null: the key is deleted"}}},
}]}  # fmt: skip
_MIN_POSITION = [
    _param("min_position", "query", {"anyOf": [{"const": "latest"}, {"type": "string", "pattern": _TOKEN_PATTERN}]}, "Wait until the view reflects every event at or before these offsets (partition:offset) of the input topic, or (latest) every event of every input appended before the request"),
    _param("topic", "query", _NAME, "The input min_position is about; required when the view has several"),
    _param("wait", "query", _DURATION_TEXT, "How long min_position may wait (10 s; at most 60); not reached: 503 with Retry-After"),
]  # fmt: skip


def _view_paths() -> dict[str, Any]:
    """``/v1/views``: stream processing results kept and served by the hub."""
    info = _json(_VIEW_INFO)
    reads = (*NAMED, *AUTH)
    return {
        "/v1/views": {"get": {"summary": "List the views the token may read, each with its lag per input", "description": _VIEW_READ, "operationId": "listViews", "responses": {"200": _json(_object({"views": {"type": "array", "items": _VIEW_INFO}}, "views")), **_problems(401, 503)}}},
        "/v1/views/{view}": {
            "parameters": [_VIEW_NAME],
            "put": {"summary": "Declare a view: its kind, input topics and app; the hub makes its changelog __view.{view} (and for a window the topics {view} and {view}.late). The same declaration again keeps the view's state; other inputs, another kind or another layout (partitioned): 409", "description": _VIEW_WRITE, "operationId": "putView", "requestBody": _body(_VIEW_SPEC, True), "responses": {"200": info, "201": _json(_VIEW_INFO, "Created"), **_problems(*BODY, *AUTH, 409, 503)}},
            "get": {"summary": "Describe a view: kind, inputs, generation, keys, positions and lag per input, last commit", "description": _VIEW_READ, "operationId": "getView", "responses": {"200": info, **_problems(*reads, 503)}},
        },
        "/v1/views/{view}/commit": {"parameters": [_VIEW_NAME], "post": {"summary": "Append one commit of a task to its partition of the view's changelog (its changes, then its one checkpoint, written last) as one append, if that partition ends at expect and the view is at generation; else 409 naming next_offset and generation. A partitioned view's task names only its own partition of each input in its checkpoint", "description": _VIEW_WRITE, "operationId": "commitView", "requestBody": _body(_object({"generation": _COUNT, "expect": _COUNT, "partition": {**_COUNT, "description": "the changelog partition of the task committing (0 by default; a view has as many as tasks)"}, "events": {"type": "array", "minItems": 1, "maxItems": 100_000, "items": _CHANGELOG_EVENT, "contains": {"required": ["partitionkey"], "properties": {"partitionkey": {"const": "c"}}}, "minContains": 1, "maxContains": 1}, "route": {"type": "array", "maxItems": 100_000, "description": "only from a routing task of a repartitioned view (whose events are then its checkpoint alone): copies of the events it read, each keyed (partitionkey) by the view's key, with an id derived from where it was read; the hub publishes them to __view.{name}.by-key (a repeated id is stored once) before it appends the checkpoint", "items": {"allOf": [_ref("CloudEvent"), {"required": ["id", "partitionkey"]}]}}}, "generation", "expect", "events"), True), "responses": {"200": _json(_object({"offset": _COUNT, "next": _COUNT}, "offset", "next")), **_problems(*reads, *BODY, 409, 422, 503)}}},
        "/v1/views/{view}/members": {"parameters": [_VIEW_NAME], "post": {"summary": "Join, heartbeat on, or leave (leave: true) the processes running a partitioned view: the answer names the tasks this member runs now. The hub spreads the tasks evenly over the live members; a member silent for session_timeout_ms is dropped and its tasks given to others; a task taken from a live member is given once that member has heartbeated without it", "description": _VIEW_WRITE, "operationId": "viewMembers", "requestBody": _body(_object({"member": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^\\x00-\\x1f\\x7f]+$", "description": "the process's id, such as app@host:pid"}, "leave": {"type": "boolean"}}, "member"), True), "responses": {"200": _json(_object({"member": {"type": "string"}, "tasks": {"type": "array", "items": _COUNT}, "generation": _COUNT, "task_count": {"type": "integer", "minimum": 1}, "heartbeat_ms": _COUNT, "session_timeout_ms": _COUNT, "member_count": {"type": "integer", "minimum": 0, "description": "the live members (who runs what: GET /v1/views/{view})"}, "repartition": _VIEW_STAGES}, "member", "tasks", "task_count", "member_count")), **_problems(*reads, *BODY, 409, 503)}}},
        "/v1/views/{view}/rebuild": {"parameters": [_VIEW_NAME], "post": {"summary": "Start the view over: its changelog is emptied under the next generation; its processor's next commit gets 409, and it replays its inputs from earliest", "description": _VIEW_WRITE, "operationId": "rebuildView", "requestBody": _body({**_object({"partitioned": {"type": "boolean", "description": "Lay the view out anew: one task per input partition (true) or one task (false); absent (and no repartition): as it is"}, "repartition": {**_VIEW_REPARTITION, "description": "Lay the view out anew, routed by key: true or a number of partitions of __view.{view}.by-key (not with partitioned true)"}}), "not": _NOT_BOTH}), "responses": {"200": info, **_problems(*reads, *BODY, 409, 503)}}},
        "/v1/views/{view}/keys": {"parameters": [_VIEW_NAME], "get": {"summary": "The view's keys in order, a page at a time", "description": _VIEW_READ, "operationId": "viewKeys", "parameters": [_param("prefix", "query", {"type": "string"}, "Only keys that start with this"), _param("after", "query", {"type": "string"}, "The next of the previous page"), _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}, "Most keys to answer (100)"), *_MIN_POSITION], "responses": {"200": _json(_object({"keys": {"type": "array", "items": _VIEW_ENTRY}, "next": {"type": ["string", "null"], "description": "pass as after for the next page; null: no more"}}, "keys", "next")), **_problems(*reads, 503)}}},
        "/v1/views/{view}/keys/{key}": {"parameters": [_VIEW_NAME, _param("key", "path", {"type": "string", "minLength": 1}, "The key, percent-encoded (a slash as %2F)")], "get": {"summary": "One key's value and the changelog position of the record holding it", "description": _VIEW_READ, "operationId": "getViewKey", "parameters": _MIN_POSITION, "responses": {"200": _json(_VIEW_ENTRY), **_problems(*reads, 503)}}},
        "/v1/views/{view}/sse": {"parameters": [_VIEW_NAME], "get": {"summary": "Follow a view as Server-Sent Events: a snapshot of every key (event: snapshot, in chunks, first to last), then each change (event: change); each id is the resume token G@0:N,1:M (per changelog partition) to go on from (Last-Event-ID); a rebuild, meanwhile or since the token, gives a new snapshot. The WebSocket's subscribe with view gives the same", "description": _VIEW_READ, "operationId": "viewSse", "parameters": [_param("from", "query", _VIEW_RESUME, "Resume after this token, with no snapshot if it is of the current generation"), _param("ticket", "query", {"type": "string"}, "A ticket from POST /v1/ws/ticket, for EventSource, which cannot set headers"), {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string", "pattern": f"^({_VIEW_RESUME_PATTERN})?$"}, "description": "Resume token; wins over from (empty: none)"}], "responses": {"200": {"description": "retry, then messages", "content": {"text/event-stream": {"schema": {"type": "object", "description": "one message", "properties": {"retry": {"type": "integer"}, "event": {"enum": ["snapshot", "change"]}, "id": _VIEW_RESUME, "data": {"type": "string", "contentMediaType": "application/json"}}}}}}, **_problems(*reads, 503)}}},
    }  # fmt: skip


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

