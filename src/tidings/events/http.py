"""CloudEvents over HTTP: structured, batch and binary mode, in and out.

The HTTP protocol binding of CloudEvents 1.0:
https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md
and the batch format of the JSON format (section 4). Events are checked and
filled by :mod:`tidings.events.envelope`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote, unquote

import orjson

from tidings.errors import BadRequest, InvalidEvent, TooLarge, UnsupportedMediaType
from tidings.events.batch import fill_batch
from tidings.events.envelope import (
    BATCH,
    MAX_EVENT_BYTES,
    _fill,
    _is_json,
    _kind,
    _media,
    _show,
    now_rfc3339,
)
from tidings.events.nesting import shallow, too_deep

__all__ = [
    "BATCH",
    "STRUCTURED",
    "parse_batch",
    "parse_binary",
    "parse_http",
    "parse_request",
    "parse_structured",
    "to_binary",
]

STRUCTURED: Final = "application/cloudevents+json"
# HTTP binding 3.1.3.2: printable ASCII is sent as is, except space, '"' and '%'.
_HEADER_SAFE: Final = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in ' "%')
_QUOTED_PAIR: Final = re.compile(r"\\(.)", re.DOTALL)


def parse_structured(
    body: bytes, *, topic: str, max_event_bytes: int | None = MAX_EVENT_BYTES
) -> dict[str, Any]:
    """One event in structured mode (``application/cloudevents+json``), checked and filled."""
    return _parse_structured(body, topic, max_event_bytes)[0]


def _parse_structured(
    body: bytes, topic: str, max_event_bytes: int | None
) -> tuple[dict[str, Any], bool]:
    """:func:`parse_structured`, and whether its id was made here (none was given)."""
    if max_event_bytes is not None and len(body) > max_event_bytes:
        raise _too_large(len(body), max_event_bytes)
    obj = _loads(body)
    made = isinstance(obj, dict) and obj.get("id") is None
    event = _fill(obj, topic, None, check_depth=not shallow(body))
    _check_size(event, max_event_bytes, None)
    return event, made


def parse_batch(
    body: bytes, *, topic: str, max_event_bytes: int | None = MAX_EVENT_BYTES
) -> list[dict[str, Any]]:
    """A batch (``application/cloudevents-batch+json``): every event checked and filled.

    All or nothing: the first bad event raises, naming its index. The events of one
    batch share one ``time`` where they give none. An empty array is a valid batch
    (JSON format 4.3, HTTP binding 3.3.2) and gives no events.
    """
    return _parse_batch(body, topic, max_event_bytes)[0]


def _parse_batch(
    body: bytes, topic: str, max_event_bytes: int | None
) -> tuple[list[dict[str, Any]], bool]:
    """:func:`parse_batch`, and whether every id in it is one just made (none was given)."""
    items = _loads(body)
    if not isinstance(items, list):
        raise BadRequest(f"a batch must be a JSON array of events, not {_kind(items)}")
    if not items:
        return items, False  # JSON format 4.3: "[]" is a valid batch, of no events
    now = now_rfc3339()
    # Filled in place: the list that was parsed is the list returned. The whole
    # batch at once when it can be; event by event to name a fault with its index.
    filled = fill_batch(items, topic, now)
    if filled is None:
        try:
            for index in range(len(items)):
                _fill(items[index], topic, now)
        except InvalidEvent as err:
            raise err.at_index(index) from None
    if max_event_bytes is not None:
        for index, event in enumerate(items):
            _check_size(event, max_event_bytes, index)
    return items, filled == "new ids"


def parse_binary(
    headers: Mapping[str, str],
    body: bytes,
    *,
    topic: str,
    max_event_bytes: int | None = MAX_EVENT_BYTES,
) -> dict[str, Any]:
    """One event in binary mode: attributes in ``ce-*`` headers, ``Content-Type``, data as body.

    A JSON body (``*/json``, ``*/*+json``) becomes ``data`` as a JSON value, a
    ``text/*`` body a string, anything else ``data_base64``; an empty body, no data.
    """
    content_type = None
    for key, value in headers.items():
        if key.lower() == "content-type":
            content_type = value
    return _parse_binary(headers, content_type, body, topic, max_event_bytes)


def parse_http(
    content_type: str | None,
    headers: Mapping[str, str],
    body: bytes,
    *,
    topic: str,
    max_event_bytes: int | None = MAX_EVENT_BYTES,
) -> list[dict[str, Any]]:
    """The events of one HTTP request, in whichever CloudEvents mode it uses.

    Structured and batch mode are chosen by media type; binary mode by a
    ``ce-specversion`` or ``ce-type`` header (with or without a content type, as
    an event may have no data). Anything else is :class:`UnsupportedMediaType`.
    """
    return parse_request(
        content_type, headers, body, topic=topic, max_event_bytes=max_event_bytes
    )[0]


def parse_request(
    content_type: str | None,
    headers: Mapping[str, str],
    body: bytes,
    *,
    topic: str,
    max_event_bytes: int | None = MAX_EVENT_BYTES,
) -> tuple[list[dict[str, Any]], bool]:
    """:func:`parse_http`, and whether every event's id was made here (none was given).

    Such ids cannot repeat one the hub has seen (see
    :meth:`tidings.core.publishing.PublishOps.publish_batch`). False means unknown.
    """
    media = _media(content_type) if content_type else ""
    if media == STRUCTURED:
        event, made = _parse_structured(body, topic, max_event_bytes)
        return [event], made
    if media == BATCH:
        return _parse_batch(body, topic, max_event_bytes)
    if not media.startswith("application/cloudevents") and any(
        key.lower() in ("ce-specversion", "ce-type") for key in headers
    ):
        return [_parse_binary(headers, content_type, body, topic, max_event_bytes)], False
    accepted = [STRUCTURED, BATCH, "binary mode (ce-type and ce-specversion headers)"]
    what = f"content type {content_type!r} is not accepted" if content_type else "no content type"
    raise UnsupportedMediaType(f"{what}: send {', '.join(accepted)}", accepted=accepted)


def to_binary(event: Mapping[str, Any]) -> tuple[dict[str, str], bytes]:
    """An event as binary-mode HTTP headers and body: the inverse of :func:`parse_binary`.

    Attribute values travel in their canonical string form, so an integer or a
    boolean extension comes back from :func:`parse_binary` as a string. ``data``
    without a ``datacontenttype`` is sent as ``application/json``, as JSON format
    3.1.2 asks.
    """
    headers: dict[str, str] = {}
    for name, value in event.items():
        if value is None or name in ("data", "data_base64", "datacontenttype"):
            continue
        headers["ce-" + name] = _header_value(value)
    content_type: str | None = event.get("datacontenttype")
    body = b""
    data_base64 = event.get("data_base64")
    if data_base64 is not None:
        body = base64.b64decode(data_base64)
    elif "data" in event:
        data = event["data"]
        if content_type is None:
            content_type = "application/json"
        if _is_json(content_type) or not isinstance(data, str):
            body = orjson.dumps(data)
        else:
            body = _encode_text(data, content_type)
    if content_type is not None:
        headers["content-type"] = content_type
    return headers, body


def _check_size(event: dict[str, Any], limit: int | None, index: int | None) -> None:
    # None: the caller measures the event as it stores it (the hub serializes once).
    if limit is None:
        return
    size = len(orjson.dumps(event))
    if size > limit:
        raise _too_large(size, limit, index)


def _too_large(size: int, limit: int, index: int | None = None) -> TooLarge:
    if index is None:
        return TooLarge(f"event is {size} bytes, over the limit of {limit}", size=size, limit=limit)
    return TooLarge(
        f"event {index}: event is {size} bytes, over the limit of {limit}",
        index=index,
        size=size,
        limit=limit,
    )


# -- HTTP binding -------------------------------------------------------------------------------


def _parse_binary(
    headers: Mapping[str, str],
    content_type: str | None,
    body: bytes,
    topic: str,
    limit: int | None,
) -> dict[str, Any]:
    if limit is not None and len(body) > limit:
        raise _too_large(len(body), limit)
    attributes: dict[str, Any] = {}
    for key, raw in headers.items():
        lowered = key.lower()
        if not lowered.startswith("ce-"):
            continue
        name = lowered[3:]
        if name in ("data", "data_base64", "datacontenttype"):
            where = "the Content-Type header" if name == "datacontenttype" else "the body"
            raise InvalidEvent(
                f"header {lowered!r} is not allowed in binary mode; {name} travels in {where}",
                attribute=name,
            )
        attributes[name] = _decode_header_value(name, raw)
    data_base64 = None
    if content_type:
        attributes["datacontenttype"] = content_type.strip()
    if body:
        if content_type and _is_json(content_type):
            attributes["data"] = _loads(body, "malformed JSON in body")
        elif content_type and _media(content_type).startswith("text/"):
            attributes["data"] = _decode_text(body, content_type)
        else:
            # Encoded after the checks, so normalize_event does not decode it again.
            data_base64 = base64.b64encode(body).decode("ascii")
    event = _fill(attributes, topic, None)
    if data_base64 is not None:
        event["data_base64"] = data_base64
    _check_size(event, limit, None)
    return event


def _header_value(value: object) -> str:
    """The canonical string form of an attribute value, percent-encoded per 3.1.3.2."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    if (
        text.isascii()
        and text.isprintable()
        and " " not in text
        and '"' not in text
        and "%" not in text
    ):
        return text
    return quote(text, safe=_HEADER_SAFE)


def _decode_header_value(name: str, raw: str) -> str:
    value = raw.strip(" \t")
    if not value.isascii():
        # 3.1.3.2: header values are printable US-ASCII, anything else percent-encoded
        # UTF-8; raw bytes past ASCII would be read in some guessed charset.
        raise InvalidEvent(
            f"header 'ce-{name}' holds bytes outside US-ASCII; percent-encode them as UTF-8"
            f" (CloudEvents HTTP binding 3.1.3.2): {_show(raw)}",
            attribute=name,
        )
    # Older senders may quote the value (RFC 7230 3.2.6); 3.1.3.2 says to accept it.
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
    if "%" in value:
        try:
            value = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise InvalidEvent(
                f"header 'ce-{name}' is not valid percent-encoded UTF-8: {_show(raw)}",
                attribute=name,
            ) from None
    return value


def _charset(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"') or "utf-8"
    return "utf-8"


def _decode_text(body: bytes, content_type: str) -> str:
    charset = _charset(content_type)
    try:
        return body.decode(charset)
    except LookupError:
        raise BadRequest(f"unknown charset {charset!r} in content type") from None
    except UnicodeDecodeError as err:
        raise BadRequest(f"body is not valid {charset}: {err.reason} at byte {err.start}") from None


def _encode_text(text: str, content_type: str) -> bytes:
    charset = _charset(content_type)
    try:
        return text.encode(charset)
    except LookupError:
        return text.encode()  # a charset Python does not know: UTF-8, the usual default
    except UnicodeEncodeError as err:
        raise InvalidEvent(
            f"attribute 'data' cannot be encoded as {charset}, which datacontenttype names:"
            f" {err.reason}",
            attribute="data",
        ) from None


# -- small helpers -----------------------------------------------------------------------------


def _loads(body: bytes, what: str = "malformed JSON") -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        if str(err).startswith("depth limit exceeded"):
            raise too_deep() from None
        raise BadRequest(f"{what}: {err}") from None


