"""Receiving tidings webhooks: check that a request is signed by the hub.

::

    from tidings import webhooks

    event = webhooks.verify(secret, request.headers, await request.body())

:func:`verify` implements the receiver's side of Standard Webhooks
(https://www.standardwebhooks.com/, "Verifying webhooks"): the signature must
be an HMAC-SHA256 of ``"{webhook-id}.{webhook-timestamp}.{body}"`` under the
endpoint's secret, compared in constant time, and the timestamp must lie within
``tolerance`` of now, so a captured request cannot be replayed later. During a
secret rotation the hub signs with both secrets; either one verifies.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from tidings.core.webhooks.signing import matches, secret_key

__all__ = ["WebhookVerificationError", "verify"]

DEFAULT_TOLERANCE_S = 300


class WebhookVerificationError(Exception):
    """The request is not a webhook signed by the hub with this secret, or it is stale."""


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:  # a plain dict of headers may keep the sender's case
        lowered = {k.lower(): v for k, v in headers.items()}
        value = lowered.get(name)
    if not value:
        raise WebhookVerificationError(f"missing header {name}")
    return value


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """The event (the body's JSON) once the signature and timestamp check out.

    ``secret`` is the endpoint's ``whsec_…`` secret, ``headers`` any mapping of
    the request's headers, ``body`` the raw body exactly as received.
    Raises :class:`WebhookVerificationError` otherwise.
    """
    try:
        key = secret_key(secret)
    except ValueError as exc:
        raise WebhookVerificationError(str(exc)) from None
    raw = body.encode() if isinstance(body, str) else bytes(body)
    msg_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    signature = _header(headers, "webhook-signature")
    if not (stamp.isascii() and stamp.isdigit()):
        raise WebhookVerificationError("webhook-timestamp is not a number of seconds")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise WebhookVerificationError("message timestamp too old")
    if timestamp > current + tolerance:
        raise WebhookVerificationError("message timestamp too new")
    if not matches(key, msg_id, timestamp, raw, signature):
        raise WebhookVerificationError("no matching signature found")
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise WebhookVerificationError(f"the body is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return event
