"""What a foreign web page could make a browser send, refused before any route runs.

An open hub on loopback trusts whoever can reach it, and a browser on the same
machine can, on behalf of any page it shows. :class:`BrowserGuard` wraps the app:

- Every request (HTTP or WebSocket) must name a ``Host`` the hub serves. DNS
  rebinding points a foreign name at 127.0.0.1, which makes the foreign page
  same-origin with the hub; its requests still carry the foreign name as Host.
  The rule of Jupyter (``allow_remote_access``) and Vite (``server.allowedHosts``).
- A state-changing request (POST, PUT, PATCH, DELETE) with an ``Origin`` must
  come from an allowed origin: the rule of the WebSocket handshake
  (:func:`tidings.server.live.origin_allowed`, ``--allowed-origin``).
- A POST, and a PUT or PATCH with a body, must carry a JSON or CloudEvents
  content type. Neither an HTML form nor a CORS-simple ``fetch`` can send one, so
  a page on another origin needs a CORS preflight, which the hub does not grant.
  A POST needs it even without a body, as a bodyless POST is CORS-simple too; a
  PUT, PATCH or DELETE never is, so without a body it needs no content type. The
  publish route also takes CloudEvents binary mode with any content type: its
  ``ce-specversion`` or ``ce-type`` header is not CORS-safelisted, so it too
  needs a preflight.

A refusal is a problem (403 naming the header, or 415) sent before the app sees
the request, so it changes nothing. The scan is one pass over the headers.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from tidings.errors import Forbidden, TidingsError, UnsupportedMediaType
from tidings.server.live import origin_allowed

#: Host names a hub always serves: no foreign page can be served from them.
LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "[::1]")
JSON_TYPES = frozenset(
    {
        b"application/json",
        b"application/cloudevents+json",
        b"application/cloudevents-batch+json",
    }
)
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_BINARY_MODE = frozenset({b"ce-specversion", b"ce-type"})


@dataclass(frozen=True, slots=True)
class BrowserRules:
    """``allowed_hosts``: names (``hub.example.com``), domains with their subdomains
    (``.example.com``) or ``"*"``; the port is not compared. ``allowed_origins``:
    as :class:`tidings.server.live.LiveOptions` has them (None: loopback and own)."""

    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    allowed_origins: tuple[str, ...] | None = None


def host_name(header: str) -> str:
    """The name of a ``Host`` header: lowercase, without port or trailing dot."""
    name = header.strip().lower()
    if name.startswith("["):
        end = name.find("]")
        name = name[: end + 1] if end > 0 else name
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    return name.rstrip(".")


def host_allowed(header: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a request's ``Host`` is one the hub serves; a request with none is no browser's."""
    if header is None or "*" in allowed:
        return True
    name = host_name(header)
    for entry in allowed:
        if name == entry or (entry.startswith(".") and (name.endswith(entry) or name == entry[1:])):
            return True
    return False


def refusal(
    method: str, path: str, headers: list[tuple[bytes, bytes]], rules: BrowserRules
) -> TidingsError | None:
    """Why a request must not reach the app, or None. ``method`` is "WEBSOCKET" for a handshake."""
    host = origin = content_type = None
    binary = body = False
    for key, value in headers:
        if key == b"host":
            host = value
        elif key == b"origin":
            origin = value
        elif key == b"content-type":
            content_type = value
        elif key in _BINARY_MODE:
            binary = True
        elif key == b"content-length":
            body = body or value.strip() != b"0"
        elif key == b"transfer-encoding":
            body = True
    host_text = None if host is None else host.decode("latin-1")
    if not host_allowed(host_text, rules.allowed_hosts):
        return Forbidden(
            f"Host {host_text!r} is not a name this hub serves; "
            "a hub reached by that name lists it with --allowed-host",
            header="Host",
        )
    if method not in _STATE_CHANGING:
        return None
    if origin is not None:
        origin_text = origin.decode("latin-1")
        if not origin_allowed(origin_text, host_text, rules.allowed_origins):
            return Forbidden(
                f"Origin {origin_text!r} may not change this hub; "
                "a page of that origin is allowed with --allowed-origin",
                header="Origin",
            )
    if method == "DELETE" or (method != "POST" and not body):
        return None
    media = b"" if content_type is None else content_type.split(b";", 1)[0].strip().lower()
    if media in JSON_TYPES:
        return None
    publish = path.startswith("/v1/topics/") and path.endswith("/events")
    if binary and publish:
        return None  # CloudEvents binary mode: its ce-* header needs a preflight
    accepted = sorted(t.decode() for t in JSON_TYPES)
    given = f"Content-Type {media.decode('latin-1')!r}" if media else "no Content-Type"
    binary_mode = " or CloudEvents binary mode (ce-specversion, ce-type headers)"
    return UnsupportedMediaType(
        f"{given} on {method}: send {', '.join(accepted)}{binary_mode if publish else ''}",
        header="Content-Type",
        accepted=accepted,
    )


class BrowserGuard:
    """ASGI middleware applying :func:`refusal` to every HTTP request and WebSocket handshake."""

    def __init__(self, app: ASGIApp, rules: BrowserRules) -> None:
        self.app = app
        self.rules = rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            error = refusal(scope["method"], scope["path"], scope["headers"], self.rules)
        elif kind == "websocket":
            error = refusal("WEBSOCKET", scope["path"], scope["headers"], self.rules)
        else:
            error = None
        if error is None:
            await self.app(scope, receive, send)
            return
        problem = error.to_problem()
        problem["instance"] = scope["path"]
        body = orjson.dumps(problem)
        start = {
            "status": error.status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
        if kind == "http":
            await send({"type": "http.response.start", **start})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", **start})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": error.close_code})


__all__ = ["LOOPBACK_HOSTS", "BrowserGuard", "BrowserRules", "host_allowed", "refusal"]
