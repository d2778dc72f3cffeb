"""An AsyncAPI 3.0 document of what apps consume and emit.

Channels are topics; messages are event types, with the JSON Schema of their
data taken from the pydantic models of the handlers' annotations (a handler's
payload type, and the models with an ``event_type`` in its return annotation).
Each handler is a ``receive`` operation; what it emits, a ``send`` operation.
Specification: https://www.asyncapi.com/docs/reference/specification/v3.0.0
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from tidings.app.app import App
from tidings.app.handlers import HandlerSpec, is_model
from tidings.core.catalog import ComponentIds

__all__ = ["asyncapi_document"]

_REF = "#/components/schemas/{model}"


class _Builder:
    def __init__(self) -> None:
        self.channels: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, Any] = {}
        self.message_id, self.channel_id, self.operation_id = (
            ComponentIds(), ComponentIds(), ComponentIds()
        )

    def schema_of(self, tp: Any) -> dict[str, Any]:
        if is_model(tp):
            schema = tp.model_json_schema(ref_template=_REF)
            self.schemas.update(schema.pop("$defs", {}))
            self.schemas[tp.__name__] = schema
            return {"$ref": _REF.format(model=tp.__name__)}
        if tp in (Any, inspect.Parameter.empty, dict, object) or tp is None:
            return {"type": "object"}
        try:
            from pydantic import TypeAdapter

            schema = TypeAdapter(tp).json_schema(ref_template=_REF)
        except Exception:
            return {}
        self.schemas.update(schema.pop("$defs", {}))
        return dict(schema)

    def message(self, topic: str, etype: str, payload: dict[str, Any], summary: str) -> str:
        """Add ``etype`` to the channel of ``topic``; answer the message's reference."""
        mid = self.message_id(etype)
        message = self.messages.setdefault(
            mid,
            {
                "name": etype,
                "title": etype,
                "contentType": "application/json",
                "payload": payload,
            },
        )
        if summary and "summary" not in message:
            message["summary"] = summary
        cid = self.channel_id(topic)
        channel = self.channels.setdefault(cid, {"address": topic, "messages": {}})
        channel["messages"][mid] = {"$ref": f"#/components/messages/{mid}"}
        return f"#/channels/{cid}/messages/{mid}"

    def operation(self, oid: str, action: str, topic: str, refs: list[str], doc: str) -> None:
        op: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{self.channel_id(topic)}"},
            "messages": [{"$ref": r} for r in dict.fromkeys(refs)],
        }
        if doc:
            op["summary"] = doc
        self.operations[self.operation_id(oid)] = op

    def handler(self, app: App, spec: HandlerSpec) -> None:
        doc = (inspect.getdoc(spec.func) or "").split("\n", 1)[0]
        payload = self.schema_of(spec.payload_type)
        refs = [self.message(spec.topic, t, payload, doc) for t in spec.types or ("*",)]
        name = getattr(spec.func, "__name__", "handler")
        self.operation(f"{app.name}.{name}", "receive", spec.topic, refs, doc)
        sent: dict[str, list[str]] = {}
        for model in spec.emits:
            topic = getattr(model, "event_topic", None) or spec.topic
            ref = self.message(topic, model.event_type, self.schema_of(model), "")
            sent.setdefault(topic, []).append(ref)
        for topic, refs in sent.items():
            self.operation(f"{app.name}.{name}.emits.{topic}", "send", topic, refs, "")


def asyncapi_document(apps: Sequence[App], title: str | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``apps`` as a dict, ready for JSON."""
    b = _Builder()
    for app in apps:
        for spec in app.handlers:
            b.handler(app, spec)
    names = ", ".join(a.name for a in apps)
    doc: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": title or names or "tidings apps",
            "version": "1.0.0",
            "description": f"What the tidings app(s) {names} consume and emit. "
            "Every message travels as a CloudEvent; the payload is its data.",
        },
        "defaultContentType": "application/json",
        "channels": b.channels,
        "operations": b.operations,
        "components": {"messages": b.messages},
    }
    if b.schemas:
        doc["components"]["schemas"] = b.schemas
    return doc
