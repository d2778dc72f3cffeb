"""Metadata in JetStream KV buckets, changed by compare-and-set on revision.

A bucket is the stream ``KV_<name>`` over ``$KV.<name>.>``, configured as nats-py and
the ``nats`` CLI make one (one value kept per key, deletes as markers), so either can
inspect it. A value is JSON; its revision is the stream sequence of its last write.

Writes are publishes with ``Nats-Expected-Last-Subject-Sequence`` (the revision the
writer read; 0: the key must not exist) and a ``Nats-Msg-Id`` of their own, so that a
write retried after a lost ack answers its first revision instead of failing its own
compare-and-set: on a replicated stream the duplicate window answers it; on an R1
stream, which checks the expected sequence first, the refusal is followed by a read
of the key's last write, which is ours if it carries our id. Reads of one key go to the
stream leader (``STREAM.MSG.GET``): a value read there is never older than one whose
write was acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import api

from tidings.backends.nats.connection import JetStreamApiError, NatsConnection, b64decode
from tidings.errors import BadRequest, Conflict, StorageUnavailable

# JetStream's error codes for the cases a caller may meet.
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_NO_MESSAGE = 10037
ERR_STREAM_NOT_FOUND = 10059

_DEL = "KV-Operation"
_BUCKET = re.compile(r"[A-Za-z0-9_-]{1,64}")
# a KV key is subject tokens: no empty one, no wildcard, no space
_KEY = re.compile(r"[-/_=A-Za-z0-9]+(\.[-/_=A-Za-z0-9]+)*")
MAX_KEY = 1024


def _check_key(key: str) -> None:
    if len(key) > MAX_KEY or not _KEY.fullmatch(key):
        raise BadRequest(
            f"KV key {key[:80]!r} is not dot-separated tokens of [-/_=A-Za-z0-9] "
            f"(at most {MAX_KEY} characters)",
            field="key",
        )


@dataclass(frozen=True)
class Entry:
    """A key's value (None once deleted) at ``revision``."""

    key: str
    value: Any
    revision: int


class MetaBucket:
    """One KV bucket: ``get``, ``put`` (compare-and-set), ``delete``, ``items``, ``watch``."""

    def __init__(self, conn: NatsConnection, name: str, replicas: int = 1) -> None:
        if not _BUCKET.fullmatch(name):
            raise BadRequest(
                f"bucket name {name!r} is not 1 to 64 of [A-Za-z0-9_-]", field="bucket"
            )
        self.conn = conn
        self.name = name
        self.stream = f"KV_{name}"
        self.replicas = replicas
        self._prefix = f"$KV.{name}."

    async def ensure(self) -> None:
        """Create the bucket unless it exists."""
        config = {
            "name": self.stream,
            "subjects": [self._prefix + ">"],
            "storage": "file",
            "num_replicas": self.replicas,
            "retention": "limits",
            "discard": "new",
            "max_msgs_per_subject": 1,
            "allow_rollup_hdrs": True,
            "deny_delete": True,
            "allow_direct": True,
            "duplicate_window": 120 * 10**9,
        }
        try:
            await self.conn.api(f"STREAM.CREATE.{self.stream}", config)
        except JetStreamApiError as exc:
            if exc.err_code != 10058:  # exists with another config: made elsewhere, keep it
                raise

    async def get(self, key: str) -> Entry | None:
        """The key's last write (value None if deleted), or None if never written."""
        _check_key(key)
        try:
            resp = await self.conn.api(
                f"STREAM.MSG.GET.{self.stream}", {"last_by_subj": self._prefix + key}
            )
        except JetStreamApiError as exc:
            if exc.err_code == ERR_NO_MESSAGE:
                return None
            raise
        msg = resp["message"]
        deleted = b"KV-Operation" in b64decode(msg.get("hdrs", ""))
        value = None if deleted or not msg.get("data") else orjson.loads(b64decode(msg["data"]))
        return Entry(key, value, int(msg["seq"]))

    async def put(
        self, key: str, value: Any, revision: int | None = None, *, msg_id: str | None = None
    ) -> int:
        """Write ``value``; unless ``revision`` is None, only if the key's last write is
        that revision (0: never written). Its new revision; :class:`Conflict` if not.
        ``msg_id`` names the write (a fresh one if None): the same write sent again
        answers the revision it got first, while it is still the key's last."""
        return await self._write(key, orjson.dumps(value), revision, {}, msg_id)

    async def create(self, key: str, value: Any) -> int:
        """Write ``value`` only if the key holds none (never written, or deleted)."""
        try:
            return await self.put(key, value, 0)
        except Conflict:
            entry = await self.get(key)
            if entry is None or entry.value is not None:
                raise
            return await self.put(key, value, entry.revision)

    async def delete(self, key: str, revision: int | None = None) -> int:
        """Leave a delete marker (``get`` answers its revision with value None)."""
        return await self._write(key, b"", revision, {_DEL: "DEL"})

    async def _write(
        self, key: str, data: bytes, revision: int | None, headers: dict[str, str],
        msg_id: str | None = None,
    ) -> int:  # fmt: skip
        _check_key(key)
        msg_id = msg_id or uuid.uuid4().hex
        if revision is not None:
            if revision < 0:
                raise BadRequest(f"revision {revision} is negative", field="revision")
            headers = {**headers, "Nats-Expected-Last-Subject-Sequence": str(revision)}
        try:
            (ack,) = await self.conn.publish(self._prefix + key, [data], [msg_id], headers=headers)
        except JetStreamApiError as exc:
            if exc.err_code == ERR_WRONG_LAST_SEQUENCE:
                # On an R1 stream the expected sequence is checked before the duplicate
                # window: a retry of a write that landed (its ack lost) is refused here.
                # If the key's last write is ours, that is the revision it got.
                landed = await self._last_written_by(key, msg_id)
                if landed is not None:
                    return landed
                raise Conflict(
                    f"{self.name}/{key} changed since revision {revision}",
                    key=key, revision=revision,
                ) from None  # fmt: skip
            raise
        return ack.seq

    async def _last_written_by(self, key: str, msg_id: str) -> int | None:
        """The revision of the key's last write if its ``Nats-Msg-Id`` is ``msg_id``."""
        try:
            resp = await self.conn.api(
                f"STREAM.MSG.GET.{self.stream}", {"last_by_subj": self._prefix + key}
            )
        except JetStreamApiError as exc:
            if exc.err_code == ERR_NO_MESSAGE:
                return None
            raise
        msg = resp["message"]
        for line in b64decode(msg.get("hdrs", "")).split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"nats-msg-id" and value.strip() == msg_id.encode():
                return int(msg["seq"])
        return None

    async def items(self) -> tuple[dict[str, Entry], int]:
        """Every key that holds a value, and the bucket's revision when they were read
        (a :meth:`watch` from it misses no later write)."""
        info = await self.conn.api(f"STREAM.INFO.{self.stream}")
        revision = int(info["state"]["last_seq"])
        out: dict[str, Entry] = {}
        if int(info["state"]["messages"]) == 0:
            return out, revision
        async for entry in self._replay(1, stop_at=revision):
            if entry.value is None:
                out.pop(entry.key, None)
            else:
                out[entry.key] = entry
        return out, revision

    async def watch(self, after: int = 0) -> AsyncIterator[Entry]:
        """Every write after revision ``after``, as it happens, until closed."""
        async for entry in self._replay(after + 1, stop_at=None):
            yield entry

    async def _replay(self, start: int, stop_at: int | None) -> AsyncIterator[Entry]:
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_msg(msg: Msg) -> None:
            queue.put_nowait(msg)

        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
        )
        settings = self.conn.settings
        try:
            js = self.conn.client.jetstream(timeout=settings.request_timeout_s)
            sub = await js.subscribe(
                self._prefix + ">", stream=self.stream, cb=on_msg, ordered_consumer=True,
                config=config,
            )  # fmt: skip
        except NatsError as exc:
            raise StorageUnavailable(f"cannot read bucket {self.name}: {exc}") from None
        # a listing (stop_at) ends: each message within request_timeout_s, all within
        # retry_deadline_s; a watch waits for writes as long as it is followed
        deadline = time.monotonic() + settings.retry_deadline_s
        try:
            while True:
                if stop_at is None:
                    msg = await queue.get()
                else:
                    left = min(settings.request_timeout_s, deadline - time.monotonic())
                    try:
                        msg = await asyncio.wait_for(queue.get(), max(left, 0))
                    except TimeoutError:
                        raise StorageUnavailable(
                            f"listing of bucket {self.name}: no answer in time "
                            f"(within {settings.retry_deadline_s} s in all)"
                        ) from None
                seq = msg.metadata.sequence.stream
                key = msg.subject[len(self._prefix) :]
                deleted = bool(msg.headers) and _DEL in msg.headers  # type: ignore[operator]
                value = None if deleted or not msg.data else orjson.loads(msg.data)
                yield Entry(key, value, seq)
                if stop_at is not None and (seq >= stop_at or msg.metadata.num_pending == 0):
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
