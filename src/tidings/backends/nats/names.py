"""Names of topics in NATS: streams, subjects and KV keys, reversibly.

NATS forbids ``.`` (a subject's token separator), ``*``, ``>``, whitespace and path
separators in stream names and subject tokens; a KV key may hold ``[-/_=.A-Za-z0-9]``
but not an empty token. A topic name is written with ``[A-Za-z0-9-]`` as they are and
every other character as ``_`` and the two hex digits of each UTF-8 byte (``_`` is
``_5F``, ``.`` is ``_2E``): the result is a valid token, stream name part and key,
and decodes to the topic it came from.

Partition ``p`` of a topic is the stream ``td_<enc>_<p>`` over the one subject
``td.<enc>.<p>``. A stream name is at most 255 characters; a topic whose encoding
does not fit is the stream ``td-h-<hash>_<p>`` (the first 32 hex digits of the SHA-256
of the topic name), and every stream keeps its topic name in its metadata.
"""

from __future__ import annotations

import hashlib
import re

from tidings.errors import BadRequest

STREAM_PREFIX = "td_"
HASHED_PREFIX = "td-h-"
SUBJECT_PREFIX = "td."
MAX_STREAM_NAME = 255

_PLAIN = re.compile(r"[A-Za-z0-9-]")
_ENCODED = re.compile(r"(?:[A-Za-z0-9-]|_[0-9A-F]{2})+")


def encode(topic: str) -> str:
    """The topic as ``[A-Za-z0-9_-]`` (see the module docstring)."""
    if not topic:
        raise BadRequest("a topic name is not empty", field="topic")
    out = []
    for ch in topic:
        if _PLAIN.fullmatch(ch):
            out.append(ch)
        else:
            out.extend(f"_{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def decode(encoded: str) -> str:
    """The topic that :func:`encode` wrote as ``encoded``."""
    if not _ENCODED.fullmatch(encoded):
        raise ValueError(f"not an encoded topic name: {encoded!r}")
    raw = bytearray()
    i = 0
    while i < len(encoded):
        if encoded[i] == "_":
            raw.append(int(encoded[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(encoded[i].encode())
            i += 1
    return raw.decode("utf-8")


def stream_name(topic: str, partition: int) -> str:
    name = f"{STREAM_PREFIX}{encode(topic)}_{partition}"
    if len(name) <= MAX_STREAM_NAME:
        return name
    digest = hashlib.sha256(topic.encode("utf-8")).hexdigest()[:32]
    return f"{HASHED_PREFIX}{digest}_{partition}"


def subject(topic: str, partition: int) -> str:
    return f"{SUBJECT_PREFIX}{encode(topic)}.{partition}"


def end_subject(topic: str, partition: int) -> str:
    """The stream's second subject: the last record of each publish goes there, so that
    a consumer filtered on it (the tail) gets one message per append, not per record."""
    return subject(topic, partition) + ".e"


def parse_stream_name(name: str) -> tuple[str, int] | None:
    """(topic, partition) of a stream named by :func:`stream_name`, unless hashed
    (then the topic is in the stream's metadata) or not one of ours: None."""
    if not name.startswith(STREAM_PREFIX):
        return None
    enc, _, part = name[len(STREAM_PREFIX) :].rpartition("_")
    if not part.isdigit() or not enc:
        return None
    try:
        return decode(enc), int(part)
    except ValueError:
        return None


def key(topic: str) -> str:
    """The topic's key in a KV bucket."""
    return encode(topic)
