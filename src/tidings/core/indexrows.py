"""The event index's rows: made from records read back, or from what a publish knew.

A row is ``(offset, time, hash of the id, hash of the correlationid or None)``
(:data:`~tidings.core.storage.IndexRow`). The index makes them in its writer thread,
off the event loop, from one of two sources for each run of offsets:

- **records** read back from the log (:func:`rows_of_records`): the id and
  correlationid are read from the stored bytes, or parsed when the bytes cannot say;
- **a hint** (:class:`Hint`) that the publish path left when its append was
  acknowledged: the ids and correlationids it had already checked, the base offset
  its append got and the time it began. Nothing is read back for those offsets.

Ids the hub made for one batch (one UUIDv7 counting up in its last 32 bits, see
:func:`tidings.events.batch.new_event_ids`) bound for one partition, with no
correlationid, become one :data:`~tidings.core.storage.IdRun` instead of a row each:
a lookup of such an id (:func:`run_key`) finds the run that holds it.

Both give the same hashes for the same event. A hint's time is the publish's clock
reading taken just before its append (the log stamps the append from the same clock,
within the same turn of the loop), raised to the last time indexed in its partition,
so a partition's rows keep their order. Rows are hints either way: every lookup
checks the record a row points at.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from operator import methodcaller
from typing import NamedTuple
from zlib import adler32, crc32

import orjson

from tidings.core.storage import IdRun, IndexRow, LogRecord, PartitionStore
from tidings.events.batch import counted_ids


class Hint(NamedTuple):
    """The events a publish appended to partition ``partition`` of ``topic`` (the
    store ``part``), in offset order from the base its append got."""

    topic: str
    partition: int
    part: PartitionStore
    ids: list[str]
    corrs: list[str | None] | None  # None: no event has a correlationid
    ts: int
    made: bool = False  # the hub made ``ids`` for this batch (perhaps as one run)


def key_hash(value: str) -> int:
    """The index's key for an id or correlationid (see :func:`_hash`)."""
    return _hash(value.encode("utf-8", "surrogatepass"))


def _hash(raw: bytes) -> int:
    """64 bits as a signed integer: CRC-32 and Adler-32 side by side, both in C.

    Not a cryptographic hash, nor need it be: every row found is checked against the
    record itself, so a collision costs one more read, never a wrong answer.
    """
    return ((crc32(raw) << 32) | adler32(raw)) - (1 << 63)


_DATA = b'"data'  # "data or "data_base64: the only members that may hold nested objects
_ID = b'"id":"'
_CORR = b'"correlationid":"'
_CORR_NAME = b'"correlationid"'


_AMBIGUOUS = object()


def _member(payload: bytes, key: bytes, data_at: int) -> bytes | object | None:
    """The string value of top-level member ``key`` (as ``b'"name":"'``), None if the
    payload has no such member, or ``_AMBIGUOUS`` when the bytes cannot say."""
    i = payload.find(key, 0, data_at)
    if i < 0:
        # Not before the data: the last occurrence is top-level if only scalars follow
        # it (after its value, a single "}", the payload's own, and no "]"); inside a
        # nested object or array, its closing bracket would follow too.
        i = payload.rfind(key)
        if i < 0:
            return None
        start = i + len(key)
        stop = payload.find(b'"', start)
        rest = payload[stop + 1 :]
        if rest.count(b"}") != 1 or not rest.endswith(b"}") or b"]" in rest:
            return _AMBIGUOUS
    else:
        start = i + len(key)
        stop = payload.find(b'"', start)
    value = payload[start:stop]
    return _AMBIGUOUS if b"\\" in value else value


def _attributes(payload: bytes) -> tuple[bytes, bytes | None] | None:
    """The id and correlationid of a stored event as their UTF-8 bytes, read without
    parsing it; None when the bytes alone cannot say for sure.

    The log stores events as orjson wrote them: compact, non-ASCII as UTF-8. Before
    the first ``"data`` every member is a string, number or boolean, and a quote
    inside a string is escaped, so ``"id":"`` there can only be the top-level id;
    the id the hub fills in comes last, after the data (see :func:`_member`). An
    event the bytes cannot vouch for (a value with an escape, a brace in a string
    after the data) is parsed.
    """
    data_at = payload.find(_DATA)
    if data_at < 0:
        data_at = len(payload)
    eid = _member(payload, _ID, data_at)
    if not isinstance(eid, bytes):
        return None
    corr = _member(payload, _CORR, data_at)
    if corr is None:
        if payload.find(_CORR_NAME) >= 0:
            return None  # present, but not a string
        return eid, None
    if not isinstance(corr, bytes):
        return None
    return eid, corr


def _parsed(payload: bytes) -> tuple[bytes, bytes | None] | None:
    try:
        ev = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    eid = ev.get("id") if isinstance(ev, dict) else None
    if not isinstance(eid, str):
        return None
    corr = ev.get("correlationid")
    enc = "surrogatepass"
    return eid.encode("utf-8", enc), corr.encode("utf-8", enc) if isinstance(corr, str) else None


def rows_of_records(records: Sequence[LogRecord]) -> list[IndexRow]:
    """One row per record with a string id (in the writer thread, off the loop)."""
    out: list[IndexRow] = []
    for offset, ts, payload in records:
        found = _attributes(payload) or _parsed(payload)
        if found is not None:
            eid, corr = found
            out.append((offset, ts, _hash(eid), None if corr is None else _hash(corr)))
    return out


def rows_of_hint(base: int, ts: int, hint: Hint) -> list[IndexRow]:
    """One row per event of ``hint``, at ``base`` on, all with time ``ts``. A
    correlationid that is not a string gets none, as :func:`_parsed` gives it."""
    hashes = list(map(_hash, map(_encode, hint.ids)))
    offsets = range(base, base + len(hashes))
    if hint.corrs is None:
        return list(zip(offsets, repeat(ts), hashes, repeat(None)))
    corrs = [_hash(_encode(c)) if isinstance(c, str) else None for c in hint.corrs]
    return list(zip(offsets, repeat(ts), hashes, corrs))


_encode = methodcaller("encode", "utf-8", "surrogatepass")

_RUN_PREFIX = 28  # a made run's ids share their first 28 characters
_HEX = frozenset("0123456789abcdef")


def run_key(event_id: str) -> tuple[int, int] | None:
    """Where an :data:`~tidings.core.storage.IdRun` holding ``event_id`` is found: the
    hash of its first 28 characters and its last 8 (hex) as a number; None when it
    cannot be an id the hub made (36 characters, ending in 8 lowercase hex digits)."""
    low = event_id[_RUN_PREFIX:]
    if len(event_id) != 36 or not _HEX.issuperset(low):
        return None
    return key_hash(event_id[:_RUN_PREFIX]), int(low, 16)


def run_of_hint(base: int, ts: int, hint: Hint) -> IdRun | None:
    """``hint`` as one run, when its ids are a run the hub made (counting up from the
    first, checked in full: a batch whose ids were made one by one is not) and no
    event has a correlationid (those take a row each)."""
    ids = hint.ids
    if not hint.made or hint.corrs is not None or len(ids) < 2:
        return None
    key = run_key(ids[0])
    if key is None or counted_ids(ids[0], len(ids)) != ids:
        return None
    return base, ts, key[0], key[1], len(ids)


Chunk = tuple[int, int, Hint] | list[LogRecord]  # (base, time, hint), or records read


def rows_of(chunks: Sequence[Chunk]) -> tuple[list[IndexRow], list[IdRun]]:
    """The rows and runs of a partition's chunks, each in offset order."""
    out: list[IndexRow] = []
    runs: list[IdRun] = []
    for chunk in chunks:
        if isinstance(chunk, list):
            out += rows_of_records(chunk)
        else:
            run = run_of_hint(*chunk)
            if run is not None:
                runs.append(run)
            else:
                out += rows_of_hint(*chunk)
    return out, runs
