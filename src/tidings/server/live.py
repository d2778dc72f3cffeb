"""What the live channels (WebSocket and SSE) share: their options, credentials, Origin rule."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from tidings.errors import Unauthorized
from tidings.server.auth import Action, Auth, Token
from tidings.server.tickets import Tickets

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """Settings of ``/v1/ws`` and ``/v1/topics/{topic}/sse``.

    ``allowed_origins``: browser origins (``"https://shop.example"``) that may open
    a WebSocket, send state-changing requests and get CORS answers (see
    :mod:`.guard`); ``("*",)`` allows any. Left None, a handshake is accepted without
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


#: A WebSocket subprotocol carrying the bearer token, base64url without padding, for
#: browsers, which can set no header on a handshake: ``tidings.bearer.czNjcmV0``.
#: The hub never selects it; it selects ``tidings.v1``, offered beside it.
BEARER_PROTOCOL = "tidings.bearer."


def authorization(headers: Mapping[str, str], subprotocols: Sequence[str] = ()) -> str | None:
    """The bearer credentials: the header, else a :data:`BEARER_PROTOCOL` subprotocol."""
    header = headers.get("authorization")
    if header:
        return header
    for offered in subprotocols:
        if offered.startswith(BEARER_PROTOCOL):
            encoded = offered.removeprefix(BEARER_PROTOCOL)
            try:
                token = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise Unauthorized(
                    f"the {BEARER_PROTOCOL}… subprotocol must hold the token in base64url"
                ) from None
            return f"Bearer {token}"
    return None


def caller(
    auth: Auth,
    tickets: Tickets,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    subprotocols: Sequence[str] = (),
) -> Token | None:
    """The token of a live request (Unauthorized if missing or unknown); None on an open hub.

    A request shows it in ``Authorization``, in a bearer subprotocol (WebSocket), or
    as a ``?ticket=`` from ``POST /v1/ws/ticket``; never as ``?token=``, which would
    put a long-lived secret in every log line that records the URL.
    """
    if not auth.enabled:
        return None
    if "token" in query:
        raise Unauthorized(
            "?token= is not accepted: a URL is written to logs. Send Authorization: Bearer, "
            f"the {BEARER_PROTOCOL}<base64url token> subprotocol, "
            "or ?ticket= from POST /v1/ws/ticket"
        )
    credentials = authorization(headers, subprotocols)
    ticket = query.get("ticket")
    if credentials is None and ticket is not None:
        return tickets.redeem(ticket)
    return auth.token(credentials)


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
