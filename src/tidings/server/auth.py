"""Bearer tokens with scopes, from a JSON file or the environment.

The file (``--auth-file`` / ``TIDINGS_AUTH_FILE``) is::

    {"tokens": [
      {"name": "shop", "token": "s3cret", "publish": ["orders", "cart.*"], "subscribe": ["*"]},
      {"name": "payments", "token": "p4y", "publish": ["orders", "orders.dlq"],
       "subscribe": ["orders"], "manage": ["orders"]},
      {"name": "ops", "token": "t0ken", "admin": true}
    ]}

Each scope is a list of topic patterns, shell-style (``fnmatch``: ``*`` matches
any run of characters); it allows, on a topic it matches:

- ``publish``: publishing (HTTP, WebSocket ``publish``).
- ``subscribe``: reading (``GET .../events``, SSE, WebSocket ``subscribe``), the
  topic's description, and consuming in a consumer group that exists: ``fetch``,
  ``ack``, ``nack``, ``GET`` of the group, a WebSocket join of the group. A listing
  (``GET /v1/topics``, ``GET /v1/groups``) shows the topics a token may subscribe to.
- ``manage``: running the topic's consumer groups: creating one or changing its
  config (``PUT``), ``seek``, ``DELETE``, ``redrive``, and a WebSocket join that
  creates the group. Where this writes to a topic, the token needs ``publish``
  there as well: ``redrive`` publishes on the group's topic, a ``PUT`` that creates
  the topic publishes to it, and an explicit ``dead_letter_topic`` is a topic the
  group's dead letters are published to. The default ``{topic}.dlq`` is written by
  the hub on the group's behalf and needs no scope.
- ``schemas``: a list of event-type patterns (not topics): registering schemas
  of those types (``PUT /v1/schemas/{type}``, its ``config`` and ``consumers``)
  and reading a type's inferred schema. Reading the registry needs any valid token.
- ``admin: true``: everything, the scopes above on every topic, and what has no
  topic: creating, changing and deleting topics, webhooks, ``/metrics``,
  ``/asyncapi.json``.

No token reaches the hub's own groups (``webhook.*``, ``redrive.*``, ``tidings.*``;
see :data:`tidings.core.groups.INTERNAL_GROUP_PREFIXES`), admin included: a
webhook's cursor is moved by the admin-only webhook routes (replay). With no
tokens configured the hub is open, and those groups are still out of reach.
``TIDINGS_TOKENS`` may hold the same JSON.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

from tidings.errors import BadRequest, Forbidden, Unauthorized

Action = Literal["publish", "subscribe", "manage", "schemas", "admin"]
_SCOPES = ("publish", "subscribe", "manage", "schemas")


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    secret: str
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    manage: tuple[str, ...] = ()
    schemas: tuple[str, ...] = ()  # event-type patterns whose schemas it may register
    admin: bool = False

    def allows(self, action: Action, topic: str | None) -> bool:
        if self.admin:
            return True
        if action == "admin" or topic is None:
            return False
        scopes = {
            "publish": self.publish, "subscribe": self.subscribe, "manage": self.manage,
            "schemas": self.schemas,
        }
        return any(fnmatchcase(topic, p) for p in scopes[action])


class Auth:
    """Checks ``Authorization: Bearer …`` (RFC 6750); open when no tokens are configured."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)

    @classmethod
    def from_json(cls, text: str, where: str) -> Auth:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"{where}: not JSON: {exc}") from None
        items = raw.get("tokens") if isinstance(raw, dict) else None
        if not isinstance(items, list):
            raise BadRequest(f'{where}: expected {{"tokens": [...]}}')
        tokens = []
        for i, item in enumerate(items):
            secret = item.get("token") if isinstance(item, dict) else None
            if not isinstance(secret, str) or not secret:
                raise BadRequest(f"{where}: tokens[{i}] needs a non-empty string 'token'")
            for key in _SCOPES:
                patterns = item.get(key, [])
                if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                    raise BadRequest(f"{where}: tokens[{i}].{key} must be a list of topic patterns")
            tokens.append(
                Token(
                    name=str(item.get("name", f"token-{i}")),
                    secret=item["token"],
                    publish=tuple(item.get("publish", [])),
                    subscribe=tuple(item.get("subscribe", [])),
                    manage=tuple(item.get("manage", [])),
                    schemas=tuple(item.get("schemas", [])),
                    admin=bool(item.get("admin", False)),
                )
            )
        return cls(tokens)

    @classmethod
    def load(cls, path: str | None, env_json: str | None) -> Auth:
        if path:
            return cls.from_json(Path(path).read_text(), path)
        if env_json:
            return cls.from_json(env_json, "TIDINGS_TOKENS")
        return cls([])

    def token(self, authorization: str | None) -> Token:
        """The token a request presents; Unauthorized if none or unknown.

        The scheme is case-insensitive (RFC 9110 section 11.1): ``bearer`` and
        ``BEARER`` name the same scheme as ``Bearer``.
        """
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        given = credentials.strip().encode()
        if scheme.lower() != "bearer" or not given:
            raise Unauthorized("this hub needs 'Authorization: Bearer <token>'")
        for token in self.tokens:
            if hmac.compare_digest(token.secret.encode(), given):
                return token
        raise Unauthorized("unknown bearer token")

    def check(self, authorization: str | None, action: Action, topic: str | None) -> None:
        if not self.tokens:
            return
        token = self.token(authorization)
        if not token.allows(action, topic):
            if action == "schemas":
                raise Forbidden(f"token {token.name!r} may not register schemas of type {topic!r}")
            verb = "manage groups" if action == "manage" else action
            what = f"{verb} on topic {topic!r}" if topic else action
            raise Forbidden(f"token {token.name!r} may not {what}")

    def visible(self, authorization: str | None, topics: Iterable[str]) -> set[str]:
        """The topics a listing shows this request: any valid token may list what it may read."""
        if not self.tokens:
            return set(topics)
        token = self.token(authorization)
        return {t for t in topics if token.allows("subscribe", t)}
