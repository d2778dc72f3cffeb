"""What the live channels (WebSocket and SSE) share: their options, credentials, Origin rule."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from tidings.server.auth import Action, Auth, Token

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """Settings of ``/v1/ws`` and ``/v1/topics/{topic}/sse``.

    ``allowed_origins``: browser origins (``"https://shop.example"``) that may open
    a WebSocket; ``("*",)`` allows any. Left None, a handshake is accepted without
    an ``Origin`` (not a browser), from the hub's own origin, or from a loopback
    origin (``http://localhost:3000``): a page on some other site must not read
    a hub on the user's machine (cross-site WebSocket hijacking; WebSockets have
    no CORS).

    ``send_buffer_bytes`` bounds the frames waiting for one connection's socket;
    a connection whose buffer stays full for ``slow_after_s`` is closed with 4008.
    """

    allowed_origins: tuple[str, ...] | None = None
    send_buffer_bytes: int = 1 << 20
    slow_after_s: float = 10.0
    read_batch: int = 100
    max_in_flight: int = 100  # leases a group subscription holds before it waits for acks
    max_publishes_in_flight: int = 64
    sse_heartbeat_s: float = 15.0
    sse_retry_ms: int = 2000


def authorization(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The bearer credentials: the header, else ``?token=`` (browsers cannot set headers)."""
    header = headers.get("authorization")
    if header:
        return header
    token = query.get("token")
    return f"Bearer {token}" if token else None


def caller(auth: Auth, headers: Mapping[str, str], query: Mapping[str, str]) -> Token | None:
    """The token of a live request (Unauthorized if missing or unknown); None on an open hub."""
    if not auth.enabled:
        return None
    return auth.token(authorization(headers, query))


def allows(token: Token | None, action: Action, topic: str) -> bool:
    return token is None or token.allows(action, topic)


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...] | None) -> bool:
    if origin is None:
        return True
    if allowed is not None:
        return "*" in allowed or origin.rstrip("/") in allowed
    parts = urlsplit(origin)
    if host is not None and parts.netloc == host:
        return True
    return (parts.hostname or "") in _LOOPBACK_HOSTS or parts.netloc in _LOOPBACK_HOSTS
