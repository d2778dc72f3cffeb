"""What a foreign web page could make a browser send, refused before any route runs.

An open hub on loopback trusts whoever can reach it, and a browser on the same
machine can, on behalf of any page it shows. :class:`BrowserGuard` wraps the app:

- Every request (HTTP or WebSocket) must name a ``Host`` the hub serves. DNS
  rebinding points a foreign name at 127.0.0.1, which makes the foreign page
  same-origin with the hub; its requests still carry the foreign name as Host.
  The rule of Jupyter (``allow_remote_access``) and Vite (``server.allowedHosts``).
- A state-changing request (POST, PUT, PATCH, DELETE), or a CORS preflight
  (OPTIONS), with an ``Origin`` must come from an allowed origin: the rule of
  the WebSocket handshake (:func:`tidings.server.live.origin_allowed`,
  ``--allowed-origin``).
- A POST, and a PUT or PATCH with a body, must carry a JSON or CloudEvents
  content type. Neither an HTML form nor a CORS-simple ``fetch`` can send one, so
  a page on another origin needs a CORS preflight, which the hub grants only to
  an allowed origin (and then lets that origin read the answers).
  A POST needs it even without a body, as a bodyless POST is CORS-simple too; a
  PUT, PATCH or DELETE never is, so without a body it needs no content type. The
  publish route also takes CloudEvents binary mode with any content type: its
  ``ce-specversion`` or ``ce-type`` header is not CORS-safelisted, so it too
  needs a preflight.

A refusal is a problem (403 naming the header, or 415) sent before the app sees
the request, so it changes nothing. The scan is one pass over the headers.
``/static`` keeps its own CORS rule: any page may import the browser client.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
_PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE"),
    (b"access-control-max-age", b"600"),
    (b"vary", b"Origin"),
    (b"content-length", b"0"),
]
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


@functools.lru_cache(maxsize=256)
def _host_verdict(host: bytes | None, allowed: tuple[str, ...]) -> bool:
    # Nearly every request names the same Host: parse each one once.
    return host_allowed(None if host is None else host.decode("latin-1"), allowed)


def refusal(
    method: str, path: str, headers: list[tuple[bytes, bytes]], rules: BrowserRules
) -> TidingsError | None:
    """Why a request must not reach the app, or None. ``method`` is "WEBSOCKET" for a handshake."""
    return _refusal(method, path, _scan(headers), rules)


_Seen = tuple[bytes | None, bytes | None, bytes | None, bool, bool]


def _scan(headers: list[tuple[bytes, bytes]]) -> _Seen:
    """Host, Origin, Content-Type, whether binary mode, whether a body: one pass."""
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
    return host, origin, content_type, binary, body


def _refusal(method: str, path: str, seen: _Seen, rules: BrowserRules) -> TidingsError | None:
    host, origin, content_type, binary, body = seen
    host_text = None if host is None else host.decode("latin-1")
    if not _host_verdict(host, rules.allowed_hosts):
        return Forbidden(
            f"Host {host_text!r} is not a name this hub serves; "
            "a hub reached by that name lists it with --allowed-host",
            header="Host",
        )
    if method not in _STATE_CHANGING and (method != "OPTIONS" or path.startswith("/static/")):
        return None  # a preflight (OPTIONS) asks for what it would change
    if origin is not None:
        origin_text = origin.decode("latin-1")
        if not origin_allowed(origin_text, host_text, rules.allowed_origins):
            return Forbidden(
                f"Origin {origin_text!r} may not change this hub; "
                "a page of that origin is allowed with --allowed-origin",
                header="Origin",
            )
    if method in ("OPTIONS", "DELETE") or (method != "POST" and not body):
        return None
    if content_type in JSON_TYPES:  # as clients send it: no parameters, lowercase
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
    """ASGI middleware applying :func:`refusal` to every HTTP request and WebSocket handshake,
    and answering CORS for allowed origins."""

    def __init__(self, app: ASGIApp, rules: BrowserRules) -> None:
        self.app = app
        self.rules = rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            method, path, headers = scope["method"], scope["path"], scope["headers"]
            seen = _scan(headers)
            error = _refusal(method, path, seen, self.rules)
            origin = seen[1]
            if (
                error is None
                and origin is not None
                and _cross_origin(origin, seen[0], self.rules)
                and not path.startswith("/static/")
            ):
                if method == "OPTIONS":
                    await _preflight(origin, headers, send)
                    return
                send = _with_cors(send, origin)
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


def _cross_origin(origin: bytes, host: bytes | None, rules: BrowserRules) -> bool:
    """Whether ``origin`` is an allowed one other than the hub's own (which needs no CORS)."""
    text, host_text = origin.decode("latin-1"), None if host is None else host.decode("latin-1")
    if urlsplit(text).netloc == host_text:
        return False
    return origin_allowed(text, host_text, rules.allowed_origins)


async def _preflight(origin: bytes, headers: list[tuple[bytes, bytes]], send: Send) -> None:
    """A CORS preflight from an allowed origin: the methods and the headers it asks for."""
    asked = next((v for k, v in headers if k == b"access-control-request-headers"), b"")
    extra = [(b"access-control-allow-headers", asked)] if asked else []
    await send(
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [(b"access-control-allow-origin", origin), *extra, *_PREFLIGHT_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": b""})


def _with_cors(send: Send, origin: bytes) -> Send:
    """``send`` adding the headers that let an allowed origin's page read the answer."""

    async def cors_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {
                **message,
                "headers": [
                    *message.get("headers", ()),
                    (b"access-control-allow-origin", origin),
                    (b"vary", b"Origin"),
                ],
            }
        await send(message)

    return cors_send


__all__ = ["LOOPBACK_HOSTS", "BrowserGuard", "BrowserRules", "host_allowed", "refusal"]
