"""Webhook endpoints: their configuration, secrets and health, checked and serialized.

An endpoint is a durable cursor over the log: one consumer group per topic it
follows, named ``webhook.{id}``, so an endpoint that is down, disabled, or
behind a restarting hub misses nothing, and a replay is a seek of its groups.
The delivery itself is in :mod:`tidings.server.webhooks.dispatch` (workers) and
:mod:`tidings.server.webhooks.sender` (the network);
when to try again is in :mod:`tidings.core.webhooks.schedule`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import uuid_utils

from tidings.core.patterns import MAX_TYPE_PATTERNS, TypeFilter
from tidings.core.positions import check_name, parse_duration_ms
from tidings.core.webhooks.schedule import (
    DEFAULT_DISABLE_AFTER_MS,
    EndpointHealth,
    RetrySchedule,
    State,
)
from tidings.core.webhooks.signing import SigningKey, new_secret, secret_key
from tidings.core.webhooks.targets import IPNetwork, check_url
from tidings.errors import BadRequest

MAX_CONCURRENCY = 1000
# Deliveries per second an endpoint may be limited to: at the floor, one every
# 1000 s; anything slower would make the wait before a send overflow (or never end).
MIN_RATE_LIMIT = 0.001
MAX_RATE_LIMIT = 100_000
DEFAULT_ROTATION_GRACE_MS = 86_400_000
MAX_ROTATION_GRACE_MS = 30 * 86_400_000
Ordering = Literal["none", "key"]


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    """The hub-wide rules of webhook delivery."""

    schedule: RetrySchedule = field(default_factory=RetrySchedule)
    timeout_s: float = 15.0
    disable_after_ms: int = DEFAULT_DISABLE_AFTER_MS
    allow_nets: tuple[IPNetwork, ...] = ()
    probe_max_ms: int = 60_000
    max_response_bytes: int = 64 * 1024  # read at most this much of an answer
    attempts_kept: int = 100_000  # per endpoint
    attempts_max_age_ms: int = 30 * 86_400_000


def parse_schedule(text: str) -> RetrySchedule:
    """``"0,5,300"``: the seconds to wait before each attempt."""
    delays = []
    for part in text.split(","):
        try:
            seconds = float(part)
        except ValueError:
            raise BadRequest(
                f"retry schedule {text!r}: {part!r} is not a number of seconds",
                field="webhook_retry_schedule",
            ) from None
        if not (0 <= seconds <= 7 * 86_400) or math.isnan(seconds):
            raise BadRequest(
                f"retry schedule {text!r}: each delay is 0 to 604800 seconds",
                field="webhook_retry_schedule",
            )
        delays.append(round(seconds * 1000))
    if not delays or len(delays) > 50:
        raise BadRequest("a retry schedule has 1 to 50 attempts", field="webhook_retry_schedule")
    return RetrySchedule(tuple(delays))


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    url: str
    topics: tuple[str, ...]
    types: tuple[str, ...] = ()
    description: str = ""
    rate_limit: float | None = None  # deliveries per second
    ordering: Ordering = "none"
    concurrency: int = 10
    enabled: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "topics": list(self.topics),
            "types": list(self.types),
            "description": self.description,
            "rate_limit": self.rate_limit,
            "ordering": self.ordering,
            "concurrency": self.concurrency,
            "enabled": self.enabled,
        }


_FIELDS = {"url", "topics", "types", "description", "rate_limit", "ordering", "concurrency"}


def parse_config(
    body: Mapping[str, Any],
    base: EndpointConfig | None = None,
    max_type_patterns: int = MAX_TYPE_PATTERNS,
) -> EndpointConfig:
    """A new config from a create body (``base`` None) or a patch of ``base``."""
    allowed = _FIELDS | ({"enabled"} if base is not None else set())
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}", field=unknown[0])
    if base is None and "url" not in body:
        raise BadRequest("url is required", field="url")
    if base is None and "topics" not in body:
        raise BadRequest(
            "topics is required: the topics whose events go to the URL", field="topics"
        )
    changes: dict[str, Any] = {}
    if "url" in body:
        check_url(body["url"])
        changes["url"] = body["url"]
    if "topics" in body:
        topics = body["topics"]
        if not (isinstance(topics, list) and topics and all(isinstance(t, str) for t in topics)):
            raise BadRequest("topics must be a non-empty list of topic names", field="topics")
        for t in topics:
            check_name("topic", t)
        changes["topics"] = tuple(dict.fromkeys(topics))
    if "types" in body:
        types = body["types"]
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise BadRequest("types must be a list of type patterns", field="types")
        TypeFilter(types, limit=max_type_patterns)
        changes["types"] = tuple(types)
    if "description" in body:
        desc = body["description"]
        if not isinstance(desc, str) or len(desc) > 1000:
            raise BadRequest("description must be a string of at most 1000 characters",
                             field="description")
        changes["description"] = desc
    if "rate_limit" in body:
        rate = body["rate_limit"]
        if rate is not None and (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not MIN_RATE_LIMIT <= rate <= MAX_RATE_LIMIT
        ):
            raise BadRequest(
                f"rate_limit must be null or deliveries per second, from {MIN_RATE_LIMIT:g} "
                f"to {MAX_RATE_LIMIT}; got {rate!r}",
                field="rate_limit",
                minimum=MIN_RATE_LIMIT,
                maximum=MAX_RATE_LIMIT,
            )
        changes["rate_limit"] = None if rate is None else float(rate)
    if "ordering" in body:
        if body["ordering"] not in ("none", "key"):
            raise BadRequest("ordering must be 'none' or 'key'", field="ordering")
        changes["ordering"] = body["ordering"]
    if "concurrency" in body:
        c = body["concurrency"]
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_CONCURRENCY:
            raise BadRequest(f"concurrency must be an integer from 1 to {MAX_CONCURRENCY}",
                             field="concurrency")
        changes["concurrency"] = c
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise BadRequest("enabled must be true or false", field="enabled")
        changes["enabled"] = body["enabled"]
    if base is None:
        return EndpointConfig(**changes)
    return replace(base, **changes)


def parse_grace_ms(body: Mapping[str, Any]) -> int:
    unknown = sorted(set(body) - {"grace"})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}", field=unknown[0])
    if "grace" not in body:
        return DEFAULT_ROTATION_GRACE_MS
    raw = body["grace"]
    grace = parse_duration_ms(raw, "grace")
    # A number is checked before it is cut to whole ms: 2592000.0001 s is over the limit.
    if grace > MAX_ROTATION_GRACE_MS or (
        isinstance(raw, float) and raw * 1000 > MAX_ROTATION_GRACE_MS
    ):
        raise BadRequest("grace must be at most 30 days", field="grace")
    return grace


@dataclass(slots=True)
class Secret:
    value: str
    expires_ms: int | None = None  # an old secret, still signing until then
    # Its HMAC key, decoded and set up once: every delivery signs with it.
    key: SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.key = SigningKey(secret_key(self.value))


@dataclass(slots=True)
class Endpoint:
    id: str
    config: EndpointConfig
    secrets: list[Secret]
    health: EndpointHealth
    created_ms: int

    @staticmethod
    def new(config: EndpointConfig, health: EndpointHealth, now_ms: int) -> Endpoint:
        ep = Endpoint(
            "wh_" + uuid_utils.uuid7().hex, config, [Secret(new_secret())], health, now_ms
        )
        if not config.enabled:
            health.disable()
        return ep

    @property
    def group(self) -> str:
        """The consumer group, on each of its topics, that is this endpoint's cursor."""
        return f"webhook.{self.id}"

    def signing_keys(self, now_ms: int) -> list[SigningKey]:
        """The current secret's key, then those of rotated secrets still in their grace."""
        return [s.key for s in self.secrets if s.expires_ms is None or s.expires_ms > now_ms]

    def rotate(self, now_ms: int, grace_ms: int) -> str:
        """A new current secret; every older one signs beside it for ``grace_ms`` at most."""
        until = now_ms + grace_ms
        for s in self.secrets:
            s.expires_ms = until if s.expires_ms is None else min(s.expires_ms, until)
        fresh = Secret(new_secret())
        self.secrets = [fresh] + [
            s for s in self.secrets if s.expires_ms is not None and s.expires_ms > now_ms
        ]
        return fresh.value

    def set_enabled(self, enabled: bool) -> None:
        self.config = replace(self.config, enabled=enabled)
        if enabled and self.health.state is State.DISABLED:
            self.health.enable()
        elif not enabled:
            self.health.disable()

    def view(self) -> dict[str, Any]:
        """What the API shows: never a secret."""
        h = self.health
        return {
            "id": self.id,
            **self.config.to_dict(),
            "enabled": h.state is not State.DISABLED,
            "state": h.state.value,
            "disabled_reason": h.disabled_reason,
            "failing_since": h.failing_since_ms,
            "last_success": h.last_success_ms,
            "created": self.created_ms,
        }

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "config": self.config.to_dict(),
            "secrets": [{"secret": s.value, "expires": s.expires_ms} for s in self.secrets],
            "health": self.health.to_dict(),
            "created": self.created_ms,
        }

    @staticmethod
    def from_row(row: Mapping[str, Any], health: EndpointHealth) -> Endpoint:
        c = row["config"]
        config = EndpointConfig(
            url=c["url"],
            topics=tuple(c["topics"]),
            types=tuple(c.get("types", ())),
            description=c.get("description", ""),
            rate_limit=c.get("rate_limit"),
            ordering=c.get("ordering", "none"),
            concurrency=int(c.get("concurrency", 10)),
            enabled=bool(c.get("enabled", True)),
        )
        health.restore(row.get("health", {}))
        secrets = [Secret(s["secret"], s.get("expires")) for s in row["secrets"]]
        return Endpoint(row["id"], config, secrets, health, int(row.get("created", 0)))
