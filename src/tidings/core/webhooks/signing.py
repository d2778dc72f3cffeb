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
import binascii
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Sequence

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


_BLOCK = 64  # SHA-256's block size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class SigningKey:
    """An HMAC-SHA256 key (RFC 2104) with its two padded key blocks hashed once, so a
    signature hashes only its message: ``hmac.digest`` sets the key up on every call."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        block = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(block.translate(_IPAD))
        self._outer = hashlib.sha256(block.translate(_OPAD))

    def digest(self, msg: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def sign(key: bytes | SigningKey, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature."""
    msg = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    mac = key.digest(msg) if isinstance(key, SigningKey) else hmac.digest(key, msg, "sha256")
    return "v1," + binascii.b2a_base64(mac, newline=False).decode()


def signature_header(
    keys: Sequence[bytes | SigningKey], msg_id: str, timestamp: int, body: bytes
) -> str:
    """The ``webhook-signature`` value: one signature per key, space-separated."""
    if len(keys) == 1:
        return sign(keys[0], msg_id, timestamp, body)
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
