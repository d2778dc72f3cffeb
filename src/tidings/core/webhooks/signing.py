"""Standard Webhooks signatures (https://www.standardwebhooks.com/, "Signature scheme").

A secret is ``whsec_`` + base64 of random bytes; the HMAC key is those bytes.
Each attempt carries::

    webhook-id:         the message id (the same on every attempt)
    webhook-timestamp:  seconds since the epoch, when the attempt was sent
    webhook-signature:  v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">

During a secret rotation's grace period both secrets sign, space-separated,
and a receiver accepts a message whose signature matches any one it knows.
"""

from __future__ import annotations

import base64
import hmac
import secrets as _secrets

PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    return PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_…`` secret. ValueError if it is not one."""
    if not secret.startswith(PREFIX):
        raise ValueError("a webhook secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except ValueError:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from None
    if not 16 <= len(key) <= 64:
        raise ValueError("a webhook secret's key is 16 to 64 bytes")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature."""
    mac = hmac.digest(key, b"%s.%d.%s" % (msg_id.encode(), timestamp, body), "sha256")
    return "v1," + base64.b64encode(mac).decode()


def signature_header(keys: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per key, space-separated."""
    return " ".join(sign(k, msg_id, timestamp, body) for k in keys)


def matches(key: bytes, msg_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """Whether any ``v1`` signature in ``header`` is ours, compared in constant time."""
    expected = sign(key, msg_id, timestamp, body).encode()
    found = False
    for sig in header.split():
        version, _, _ = sig.partition(",")
        if version == "v1" and hmac.compare_digest(sig.encode(), expected):
            found = True
    return found
