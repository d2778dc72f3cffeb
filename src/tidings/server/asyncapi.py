"""``/asyncapi.json``: an AsyncAPI 3.0 document of the event types the hub has carried.

One channel per topic (its address is the topic name) and one message per event
type seen on it (see :mod:`tidings.core.catalog`). A type with a registered
schema (see :mod:`tidings.core.schemas`) has its latest version as the schema of
the payload's ``data``, under ``components.schemas``; every registered version's
schema is there, keyed ``{type}.v{n}``. Other payloads are open.
Specification: https://www.asyncapi.com/docs/reference/specification/v3.0.0
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import orjson

from tidings.core.catalog import ComponentIds
from tidings.core.hub import Hub


def _version() -> str:
    try:
        return version("tidings")
    except PackageNotFoundError:
        return "0.0.0"


def _relocated(schema: Any, at: str) -> Any:
    """``schema`` placed at ``at`` in the document: its own ``#/...`` references
    point into it there."""
    text = orjson.dumps(schema).decode().replace('"$ref":"#', f'"$ref":"{at}')
    return orjson.loads(text.replace('"$dynamicRef":"#', f'"$dynamicRef":"{at}'))


async def document(hub: Hub) -> dict[str, Any]:
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    message_id, channel_id, schema_id = ComponentIds(), ComponentIds(), ComponentIds()
    schemas: dict[str, Any] = {}
    latest: dict[str, str] = {}
    for etype, ts in sorted(hub.schemas.types.items()):
        for v in ts.versions:
            sid = schema_id(f"{etype}.v{v.number}")
            schemas[sid] = _relocated(v.schema, f"#/components/schemas/{sid}")
            latest[etype] = sid
    for name in sorted(hub.topics):
        topic = hub.topics.get(name)
        if topic is None:  # deleted while an earlier one was read
            continue
        refs: dict[str, Any] = {}
        for etype in await hub.catalog.types(name, topic.partitions):
            mid = message_id(etype)
            payload: dict[str, Any] = {
                "type": "object",
                "description": f"a CloudEvent of type {etype}",
            }
            data_id = latest.get(etype)
            if data_id is not None:
                ts = hub.schemas.types[etype]
                payload["properties"] = {
                    "dataschema": {"type": "string", "description": "the version's URI"},
                    "data": {"$ref": f"#/components/schemas/{data_id}"},
                }
                payload["description"] += f", data as {ts.versions[-1].uri}"
            messages.setdefault(
                mid,
                {
                    "name": etype,
                    "title": etype,
                    "contentType": "application/cloudevents+json",
                    "payload": payload,
                },
            )
            refs[mid] = {"$ref": f"#/components/messages/{mid}"}
        channels[channel_id(name)] = {"address": name, "messages": refs}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "tidings hub",
            "version": _version(),
            "description": "The topics of this hub and the event types each has carried.",
        },
        "defaultContentType": "application/cloudevents+json",
        "channels": channels,
        "components": {"messages": messages, "schemas": schemas},
    }
