"""``/asyncapi.json``: an AsyncAPI 3.0 document of the event types the hub has carried.

One channel per topic (its address is the topic name) and one message per event
type seen on it (see :mod:`tidings.core.catalog`). The hub knows the types, not
the shape of their data, so each message's payload schema is open; the apps'
own document (``tidings asyncapi module:app``) has the schemas of their models.
Specification: https://www.asyncapi.com/docs/reference/specification/v3.0.0
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from tidings.core.catalog import ComponentIds
from tidings.core.hub import Hub


def _version() -> str:
    try:
        return version("tidings")
    except PackageNotFoundError:
        return "0.0.0"


def document(hub: Hub) -> dict[str, Any]:
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    message_id, channel_id = ComponentIds(), ComponentIds()
    for name in sorted(hub.topics):
        topic = hub.topics[name]
        refs: dict[str, Any] = {}
        for etype in hub.catalog.types(name, topic.partitions):
            mid = message_id(etype)
            messages.setdefault(
                mid,
                {
                    "name": etype,
                    "title": etype,
                    "contentType": "application/cloudevents+json",
                    "payload": {"type": "object", "description": f"a CloudEvent of type {etype}"},
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
        "components": {"messages": messages},
    }
