"""What an app emits and consumes, as JSON Schemas for the hub's schema registry.

Each handler's payload model is a *consumer* contract for the types it reads
(the model's ``event_type``, else the handler's exact types; patterns with ``*``
or ``>`` name no type), and each model with an ``event_type`` in its return
annotation a *producer* contract. The schema is pydantic's JSON Schema of the
model (validation mode for what a consumer reads, serialization mode for what a
producer writes), declared as 2020-12.

At start an app registers them (:func:`register`): a producer's schema becomes a
version of its type, a consumer's reading schema is recorded; the hub refuses
either with a 409 naming each breaking change, and the app does not start.
:func:`check` asks the same questions without changing anything (``tidings
schemas check``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from tidings.app.handlers import is_model
from tidings.core.schemas.compat import covers
from tidings.errors import Conflict, Forbidden, NotFound

if TYPE_CHECKING:
    from tidings.app.app import App
    from tidings.app.transport import Transport

__all__ = ["Contract", "check", "contracts", "register"]

logger = logging.getLogger("tidings.app")

DRAFT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True, slots=True)
class Contract:
    app: str
    etype: str
    role: Literal["producer", "consumer"]
    model: str
    schema: dict[str, Any]


def _schema(model: Any, mode: Literal["validation", "serialization"]) -> dict[str, Any]:
    schema: dict[str, Any] = {"$schema": DRAFT, **model.model_json_schema(mode=mode)}
    return schema


def _exact(types: Iterable[str]) -> list[str]:
    return [t for t in types if "*" not in t and ">" not in t and t]


def contracts(app: App) -> list[Contract]:
    """The app's contracts, one per (type, role), in handler order."""
    found: dict[tuple[str, str], Contract] = {}
    for spec in app.handlers:
        models = [m for m in get_args(spec.payload_type) if is_model(m)]
        for model in models or [spec.payload_type]:
            if not is_model(model):
                continue
            own = getattr(model, "event_type", None)
            if isinstance(own, str):
                types = [own]
            elif len(models) > 1:  # a union of models without types: which reads which?
                continue
            else:
                types = _exact(spec.types)
            for etype in types:
                found.setdefault(
                    (etype, "consumer"),
                    Contract(
                        app.name, etype, "consumer", model.__name__, _schema(model, "validation")
                    ),
                )
        for emitted in spec.emits:
            made = getattr(emitted, "event_type", None)
            if isinstance(made, str) and is_model(emitted):
                etype = made
                found.setdefault(
                    (etype, "producer"),
                    Contract(
                        app.name,
                        etype,
                        "producer",
                        emitted.__name__,
                        _schema(emitted, "serialization"),
                    ),
                )
    return list(found.values())


async def register(app: App, transport: Transport) -> None:
    """Register the app's contracts with the hub; Conflict (the app must not start)
    naming the model, the type and each breaking change when the hub refuses one.

    A token without the ``schemas`` scope for a type, or a hub from before the
    registry (404), registers nothing for it: the app logs a warning and starts."""
    for c in contracts(app):
        try:
            if c.role == "producer":
                await transport.put_schema(c.etype, c.schema, c.app)
            else:
                await transport.put_schema_consumer(c.etype, c.app, c.schema)
        except Forbidden as exc:
            logger.warning(
                "app %s did not register its %s schema of %s: %s (give its token the "
                "schemas scope for the type)", app.name, c.role, c.etype, exc.detail,
                extra={"app": app.name},
            )
        except NotFound as exc:  # a hub from before the schema registry
            logger.warning(
                "app %s did not register its %s schema of %s: the hub has no schema "
                "registry (%s)", app.name, c.role, c.etype, exc.detail,
                extra={"app": app.name},
            )
        except Conflict as exc:
            raise Conflict(
                f"app {app.name!r} cannot start: its {c.role} model {c.model} for type "
                f"{c.etype!r} does not fit the schema registry: {exc.detail}",
                **exc.fields,
            ) from None


async def check(apps: Sequence[App], transport: Transport) -> list[dict[str, Any]]:
    """For each contract of ``apps``: what the hub says of it, changing nothing.

    A producer's schema is checked as a new version would be (the mode's breaks and
    the consumers that could not read it); a consumer's, against the latest version.
    """
    out = []
    for app in apps:
        for c in contracts(app):
            if c.role == "producer":
                result = await transport.check_schema(c.etype, c.schema, c.app)
            else:
                result = await _check_consumer(c, transport)
            out.append({"app": c.app, "type": c.etype, "role": c.role, "model": c.model, **result})
    return out


async def _check_consumer(c: Contract, transport: Transport) -> dict[str, Any]:
    latest = await transport.latest_schema(c.etype)
    if latest is None:
        return {"compatible": True, "version": None, "changes": [], "consumers": []}
    version, schema = latest
    found = covers(c.schema, schema, new_is_wide=False)
    return {
        "compatible": not found,
        "version": version,
        "changes": [{"path": b.path, "change": b.change, "detail": b.detail} for b in found],
        "consumers": [],
    }
