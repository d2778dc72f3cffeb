"""Webhook endpoints, their attempts log and their dead letters in JetStream, shared
by every node (the ``WebhookStore`` seam of ``tidings.core.webhooks.store``).

- Endpoints (configuration, secrets, health) are keys of the KV bucket
  ``td_webhooks`` (the endpoint id), written by compare-and-set on the revision this
  node last read or wrote; a write that lost the race reads the key again and
  writes on its revision: the last write wins. :meth:`NatsWebhookStore.changes`
  follows the bucket, so every node sees an endpoint made, changed or deleted on
  another.
- Attempts are messages of the stream ``td_webhook_attempts``, one subject per
  endpoint (``td.wha.<id>``), written in atomic batches of up to 1000; an attempt's
  id is its sequence. The stream keeps at
  most ``attempts_kept`` per endpoint and none older than ``attempts_max_age_ms``
  (JetStream drops the rest by itself), the bounds the embedded store prunes to.
- Dead letters are messages of the stream ``td_webhook_dead``, one subject each
  (``td.whd.<endpoint>.<id>``, one message kept per subject): the event whole as the
  data, the rest as JSON in the ``Td-Dead`` header; an update is a new message on
  the subject, a removal a purge of it. Ids are the hub time in ms shifted left 16
  bits plus 16 random bits: ordered by time, unique across nodes (the first write
  of a subject is a compare-and-set on "never written").
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
from nats.aio.msg import Msg

from tidings.backends.nats.connection import MAX_ATOMIC_BATCH, JetStreamApiError, NatsConnection
from tidings.backends.nats.meta import MetaBucket
from tidings.backends.nats.storage import NatsStorage
from tidings.core.webhooks.store import Attempt, WebhookDeadLetter, outcome_filter
from tidings.errors import Conflict

ENDPOINTS_BUCKET = "td_webhooks"
ATTEMPTS_STREAM = "td_webhook_attempts"
DEAD_STREAM = "td_webhook_dead"
_ATTEMPTS = "td.wha."
_DEAD = "td.whd."
_DEAD_HEADER = "Td-Dead"
_BATCH = 1000
_BATCH_BYTES = 4 << 20
ERR_STREAM_EXISTS = 10058

_ATTEMPT_FIELDS = (
    "endpoint", "time_ms", "msg_id", "topic", "partition", "offset", "attempt", "outcome",
    "status", "latency_ms", "error", "response", "trigger",
)  # fmt: skip


class NatsWebhookStore:
    """The webhook store on the cluster of a :class:`NatsStorage` (its connection)."""

    def __init__(
        self,
        storage: NatsStorage,
        *,
        attempts_kept: int = 100_000,
        attempts_max_age_ms: int = 30 * 86_400_000,
    ) -> None:
        self.storage = storage
        self.attempts_kept = attempts_kept
        self.attempts_max_age_ms = attempts_max_age_ms
        self.endpoints: MetaBucket
        self._started = False
        self._revisions: dict[str, int] = {}  # endpoint -> revision last read or written
        self._loaded_at = 0  # the bucket's revision when the endpoints were loaded
        self._rng = random.Random()

    @property
    def conn(self) -> NatsConnection:
        return self.storage.log.conn

    async def start(self) -> None:
        if self._started:
            return
        await self.storage.start()
        self.endpoints = await self.storage.log.bucket(ENDPOINTS_BUCKET)
        replicas = self.storage.replicas
        await self._ensure_stream({
            "name": ATTEMPTS_STREAM, "subjects": [_ATTEMPTS + "*"], "storage": "file",
            "num_replicas": replicas, "retention": "limits", "discard": "old",
            "max_msgs_per_subject": self.attempts_kept,
            "max_age": self.attempts_max_age_ms * 1_000_000, "allow_direct": True,
            "allow_atomic": True, "duplicate_window": 120 * 10**9,
        })  # fmt: skip
        await self._ensure_stream({
            "name": DEAD_STREAM, "subjects": [_DEAD + "*.*"], "storage": "file",
            "num_replicas": replicas, "retention": "limits", "discard": "old",
            "max_msgs_per_subject": 1, "allow_direct": True, "allow_rollup_hdrs": True,
            "duplicate_window": 120 * 10**9,
        })  # fmt: skip
        self._started = True

    async def _ensure_stream(self, config: dict[str, Any]) -> None:
        try:
            await self.conn.api(f"STREAM.CREATE.{config['name']}", config)
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_EXISTS:
                raise
            # made before, perhaps with other bounds: this node's bounds from now on
            await self.conn.api(f"STREAM.UPDATE.{config['name']}", config)

    # -- endpoints -----------------------------------------------------------------

    async def load_endpoints(self) -> list[dict[str, Any]]:
        await self.start()
        entries, self._loaded_at = await self.endpoints.items()
        for key, entry in entries.items():
            self._revisions[key] = entry.revision
        return [dict(e.value) for e in entries.values()]

    async def changes(self) -> AsyncIterator[tuple[str, dict[str, Any] | None]]:
        """Every endpoint written (its row) or deleted (None) since
        :meth:`load_endpoints`, on any node, this one included, as it happens."""
        await self.start()
        async for entry in self.endpoints.watch(self._loaded_at):
            if entry.value is None:
                self._revisions.pop(entry.key, None)
            else:
                self._revisions[entry.key] = max(
                    entry.revision, self._revisions.get(entry.key, 0)
                )
            yield entry.key, None if entry.value is None else dict(entry.value)

    async def save_endpoint(self, row: dict[str, Any]) -> None:
        await self.start()
        key = row["id"]
        revision = self._revisions.get(key)
        for _ in range(20):
            if revision is None:
                entry = await self.endpoints.get(key)
                revision = 0 if entry is None else entry.revision
            try:
                self._revisions[key] = await self.endpoints.put(key, row, revision)
                return
            except Conflict:
                revision = None  # written elsewhere meanwhile: the last write wins
        raise Conflict(f"webhook {key!r} kept changing while it was saved", webhook=key)

    async def delete_endpoint(self, endpoint: str) -> None:
        await self.start()
        entry = await self.endpoints.get(endpoint)
        if entry is not None and entry.value is not None:
            await self.endpoints.delete(endpoint)
        self._revisions.pop(endpoint, None)
        await self._purge(ATTEMPTS_STREAM, _ATTEMPTS + endpoint)
        await self._purge(DEAD_STREAM, f"{_DEAD}{endpoint}.*")

    async def _purge(self, stream: str, subject: str, keep: int | None = None) -> int:
        body: dict[str, Any] = {"filter": subject}
        if keep is not None:
            body["keep"] = keep
        resp = await self.conn.api(f"STREAM.PURGE.{stream}", body)
        return int(resp.get("purged", 0))

    # -- attempts ------------------------------------------------------------------

    async def add_attempts(self, attempts: Sequence[Attempt]) -> None:
        if not attempts:
            return
        await self.start()
        by_endpoint: dict[str, list[bytes]] = {}
        for a in attempts:
            row = [getattr(a, f) for f in _ATTEMPT_FIELDS]
            by_endpoint.setdefault(a.endpoint, []).append(orjson.dumps(row))
        # One atomic batch per 1000: one commit (one fsync under sync_interval: always)
        # for each, not one per attempt. A batch that landed though its ack was lost
        # is refused as a duplicate when sent again: stored once.
        for endpoint, payloads in by_endpoint.items():
            for start in range(0, len(payloads), MAX_ATOMIC_BATCH):
                chunk = payloads[start : start + MAX_ATOMIC_BATCH]
                ids = [uuid.uuid4().hex for _ in chunk]
                await self.conn.publish_atomic(_ATTEMPTS + endpoint, chunk, ids)

    async def _bounds(self, stream: str) -> tuple[int, int]:
        state = (await self.conn.api(f"STREAM.INFO.{stream}"))["state"]
        return int(state["first_seq"]), int(state["last_seq"])

    async def _scan(
        self, stream: str, subject: str, seq: int, upto: int | None = None,
        start_time: str | None = None,
    ) -> AsyncIterator[Msg]:  # fmt: skip
        """The messages on ``subject`` from ``seq`` (or ``start_time``) to ``upto``."""
        while upto is None or seq <= upto:
            msgs, _ = await self.conn.direct_batch(
                stream, seq, _BATCH, _BATCH_BYTES, subject=subject, start_time=start_time
            )
            start_time = None
            if not msgs:
                return
            for msg in msgs:
                n = _seq(msg)
                if upto is not None and n > upto:
                    return
                yield msg
                seq = n + 1

    async def attempts(
        self, endpoint: str, outcome: str | None, limit: int, before: int | None
    ) -> list[Attempt]:
        """Newest first: windows of the stream read forward, from its end backward,
        each twice as long as the one after it, until ``limit`` are found."""
        await self.start()
        wanted = outcome_filter(outcome)
        first, last = await self._bounds(ATTEMPTS_STREAM)
        hi = last if before is None else min(last, before - 1)
        window = max(4 * limit, 256)
        out: list[Attempt] = []
        while hi >= max(first, 1) and len(out) < limit:
            lo = max(first, 1, hi - window + 1)
            found = [
                a
                async for a in self._attempts_in(endpoint, lo, hi)
                if wanted is None or a.outcome in wanted
            ]
            out.extend(reversed(found))
            hi, window = lo - 1, window * 2
        return out[:limit]

    async def _attempts_in(
        self, endpoint: str, lo: int, hi: int | None, start_time: str | None = None
    ) -> AsyncIterator[Attempt]:
        async for msg in self._scan(ATTEMPTS_STREAM, _ATTEMPTS + endpoint, lo, hi, start_time):
            yield Attempt(**dict(zip(_ATTEMPT_FIELDS, orjson.loads(msg.data), strict=True)),
                          id=_seq(msg))

    async def prune_attempts(self, older_than_ms: int, keep: int) -> int:
        """JetStream drops attempts past the stream's bounds by itself; this keeps at
        most ``keep`` per endpoint now, even if the stream was made with more."""
        await self.start()
        entries, _ = await self.endpoints.items()
        n = 0
        for endpoint in entries:
            n += await self._purge(ATTEMPTS_STREAM, _ATTEMPTS + endpoint, keep)
        return n

    async def retry_state(
        self, endpoint: str, since_ms: int
    ) -> dict[tuple[str, int, int], tuple[int, int]]:
        await self.start()
        state: dict[tuple[str, int, int], tuple[int, int]] = {}
        succeeded: set[tuple[str, int, int]] = set()
        since = datetime.fromtimestamp(max(since_ms, 0) / 1000, UTC).isoformat()
        async for a in self._attempts_in(endpoint, 1, None, start_time=since):
            if a.trigger != "delivery" or a.time_ms < since_ms:
                continue
            if a.topic is None or a.partition is None or a.offset is None:
                continue
            pos = (a.topic, a.partition, a.offset)
            if a.outcome == "success":
                succeeded.add(pos)
            made, at = state.get(pos, (0, 0))
            state[pos] = (max(made, a.attempt), max(at, a.time_ms))
        return {p: v for p, v in state.items() if p not in succeeded}

    # -- dead letters ----------------------------------------------------------------

    async def _write_dead(self, dead: WebhookDeadLetter, expect: int | None) -> None:
        meta = {
            "endpoint": dead.endpoint, "time_ms": dead.time_ms, "topic": dead.topic,
            "partition": dead.partition, "offset": dead.offset, "msg_id": dead.msg_id,
            "attempts": dead.attempts, "reason": dead.reason, "replaying": dead.replaying,
        }  # fmt: skip
        headers = {_DEAD_HEADER: orjson.dumps(meta).decode()}
        if expect is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expect)
        subject = f"{_DEAD}{dead.endpoint}.{dead.id}"
        await self.conn.publish(subject, [dead.payload], [uuid.uuid4().hex], headers=headers)

    async def add_dead_letter(self, dead: WebhookDeadLetter) -> int:
        await self.start()
        for _ in range(20):
            id = (max(dead.time_ms, 0) << 16) | self._rng.getrandbits(16)
            try:
                await self._write_dead(replace(dead, id=id), expect=0)
                return id
            except JetStreamApiError as exc:
                if exc.err_code != 10071:  # the id is taken: another one
                    raise
        raise Conflict("no free dead-letter id")

    async def _dead_of(self, endpoint: str) -> list[WebhookDeadLetter]:
        out = []
        async for msg in self._scan(DEAD_STREAM, f"{_DEAD}{endpoint}.*", 1):
            hdrs = msg.headers or {}
            raw = hdrs.get(_DEAD_HEADER)
            if raw is None:
                continue
            meta = orjson.loads(raw)
            # (a direct get's answer comes on an inbox: the message's own subject is a header)
            id = int(hdrs.get("Nats-Subject", "").rsplit(".", 1)[-1])
            out.append(WebhookDeadLetter(payload=msg.data, id=id, **meta))
        out.sort(key=lambda d: d.id or 0, reverse=True)
        return out

    async def dead_letters(
        self, endpoint: str, limit: int, before: int | None, replaying: bool | None = None
    ) -> list[WebhookDeadLetter]:
        await self.start()
        out = [
            d
            for d in await self._dead_of(endpoint)
            if (before is None or (d.id or 0) < before)
            and (replaying is None or d.replaying == replaying)
        ]
        return out[:limit]

    async def mark_replaying(self, endpoint: str, ids: Iterable[int] | None) -> int:
        await self.start()
        chosen = None if ids is None else set(ids)
        n = 0
        for d in await self._dead_of(endpoint):
            if d.replaying or (chosen is not None and d.id not in chosen):
                continue
            await self._write_dead(replace(d, replaying=True), expect=None)
            n += 1
        return n

    async def update_dead_letter(self, dead: WebhookDeadLetter) -> None:
        await self.start()
        subject = f"{_DEAD}{dead.endpoint}.{dead.id}"
        msgs, _ = await self.conn.direct_batch(DEAD_STREAM, 1, 1, 1 << 10, subject=subject)
        if msgs:  # removed meanwhile: stays removed
            await self._write_dead(dead, expect=None)

    async def remove_dead_letter(self, id: int) -> None:
        await self.start()
        await self._purge(DEAD_STREAM, f"{_DEAD}*.{id}")

    async def close(self) -> None:
        """Nothing of its own: the connection is the storage's."""


def _seq(msg: Msg) -> int:
    hdrs = msg.headers or {}
    return int(hdrs.get("Nats-Sequence", "0"))


__all__ = ["NatsWebhookStore"]
