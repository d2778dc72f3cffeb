"""One connection to a NATS cluster, set up for failover, and the JetStream requests
the log makes over it.

nats-py leaves a few traps that this module closes:

- A publish or request future can wait forever once the connection drops or the
  server errs: every wait here is bounded by ``request_timeout_s``, and a publish is
  retried under the same ``Nats-Msg-Id`` until ``retry_deadline_s``, so JetStream's
  duplicate window turns a retry of a publish that did land into its first ack.
- A stream whose leader died answers nothing (or "no responders", or a 503 API error)
  until the election ends: all three are retried, anything else is raised.
- Reconnect defaults (2 s between attempts, 60 of them, a ping every 2 min) suit no
  failover: the settings below reconnect every 250 ms without limit and notice a dead
  server within a few seconds.
- Payloads past the server's ``max_payload`` (1 MiB by default) are refused before
  anything is sent, with :class:`~tidings.errors.TooLarge`.

Replies to publishes and reads come to one wildcard inbox, dispatched by token, so
that a batch of publishes or a batched direct get costs no subscription of its own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from tidings.errors import StorageUnavailable, TidingsError, TooLarge

# Room kept for the headers of a publish (Nats-Msg-Id and the protocol line) within
# the server's max_payload, which counts headers and payload together.
HEADER_ROOM = 512

# Status codes a JetStream reply may carry while a leader is being elected.
RETRYABLE_STATUS = frozenset({"408", "409", "503"})
RETRYABLE_API_CODES = frozenset({408, 409, 503})
# "no suitable peers for placement": a replicated stream asked for while too few
# servers are up (a cluster still starting, a server restarting): waited out too.
RETRYABLE_ERR_CODES = frozenset({10005})

# Atomic batches (nats-server 2.12+): at most this many records; a batch holding a
# message id already stored is refused whole with ERR_BATCH_DUPLICATE; one that lost
# a message on the way (a reconnect) is refused as incomplete and is sent again.
MAX_ATOMIC_BATCH = 1000
ERR_BATCH_DUPLICATE = 10201
# a sequence missing, a batch incomplete, too many batches in flight on the stream
RETRYABLE_BATCH_CODES = frozenset({10175, 10176, 10210})


@dataclass(frozen=True)
class NatsSettings:
    """How to reach the cluster and how long to wait for it."""

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    request_timeout_s: float = 2.0  # one attempt of a request or publish
    retry_deadline_s: float = 30.0  # all attempts: longer than an election (4-9 s)
    reconnect_wait_s: float = 0.25
    ping_interval_s: int = 2  # with 2 pings outstanding, a dead server is seen in ~6 s
    connect_timeout_s: int = 2
    pending_bytes: int = 16 << 20  # what may queue while reconnecting


class JetStreamApiError(TidingsError):
    """An error answered by the JetStream API: ``code`` (HTTP-like) and ``err_code``."""

    def __init__(self, detail: str, *, code: int, err_code: int) -> None:
        super().__init__(detail, code=code, err_code=err_code)
        self.code = code
        self.err_code = err_code


@dataclass(frozen=True)
class PubAck:
    """A stream's answer to a publish: the sequence it holds, and whether it was a
    duplicate of a message already in the window (then ``seq`` is the first one's)."""

    seq: int
    duplicate: bool


class _Retry(Exception):
    """A failure worth another attempt within the deadline."""


class NatsConnection:
    """A connected nats-py client and the requests of the JetStream log."""

    def __init__(self, settings: NatsSettings) -> None:
        self.settings = settings
        self._nc: Client | None = None
        self._prefix = ""
        self._tokens = itertools.count()
        self._waiting: dict[str, _Replies] = {}

    @property
    def client(self) -> Client:
        if self._nc is None or self._nc.is_closed:
            raise StorageUnavailable("not connected to NATS")
        return self._nc

    @property
    def max_payload(self) -> int:
        return int(self.client.max_payload)

    async def connect(self) -> None:
        s = self.settings

        async def quiet(_: Exception) -> None:
            return None  # reconnects are expected; failures surface as timeouts

        # nats-py retries a first connection without end when reconnects are
        # unlimited: bounded here as every other wait is, and the client closed
        nc = Client()
        try:
            await asyncio.wait_for(
                nc.connect(
                    list(s.servers),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=s.reconnect_wait_s,  # type: ignore[arg-type]  # a float works
                    ping_interval=s.ping_interval_s,
                    max_outstanding_pings=2,
                    connect_timeout=s.connect_timeout_s,
                    pending_size=s.pending_bytes,
                    error_cb=quiet,
                ),
                s.retry_deadline_s,
            )
        except Exception as exc:  # nats-py raises several unrelated types here
            with contextlib.suppress(Exception):
                await nc.close()
            where = ", ".join(s.servers)
            why = (
                f"no server answered within {s.retry_deadline_s} s"
                if isinstance(exc, TimeoutError)
                else str(exc)
            )
            raise StorageUnavailable(f"cannot connect to NATS at {where}: {why}") from None
        self._nc = nc
        self._prefix = nc.new_inbox() + "."
        await nc.subscribe(self._prefix + "*", cb=self._on_reply)

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), self.settings.request_timeout_s)

    # -- replies ---------------------------------------------------------------

    def _reply_to(self, replies: _Replies) -> str:
        token = self._prefix + format(next(self._tokens), "x")
        self._waiting[token] = replies
        return token

    async def _on_reply(self, msg: Msg) -> None:
        replies = self._waiting.get(msg.subject)
        if replies is not None:
            replies.add(msg)

    async def _await(self, token: str, replies: _Replies, timeout: float) -> list[Msg]:
        try:
            await asyncio.wait_for(asyncio.shield(replies.done), timeout)
        except TimeoutError:
            raise _Retry("no answer in time") from None
        finally:
            self._waiting.pop(token, None)
        return replies.msgs

    def _deadline(self) -> float:
        return time.monotonic() + self.settings.retry_deadline_s

    # -- the JetStream API -----------------------------------------------------

    async def api(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JetStream API request (``$JS.API.`` + ``subject``), retried while the
        cluster elects a leader; an API error other than that is raised."""
        payload = orjson.dumps(body) if body is not None else b""
        deadline = self._deadline()
        while True:
            try:
                msg = await self.client.request(
                    "$JS.API." + subject, payload, timeout=self.settings.request_timeout_s
                )
                if msg.headers and msg.headers.get("Status") in RETRYABLE_STATUS:
                    raise _Retry(f"status {msg.headers.get('Status')}")
                resp: dict[str, Any] = orjson.loads(msg.data)
                err = resp.get("error")
                if err is not None:
                    if (
                        err.get("code") in RETRYABLE_API_CODES
                        or err.get("err_code") in RETRYABLE_ERR_CODES
                        or "no suitable peers" in str(err.get("description"))
                    ):
                        raise _Retry(err.get("description", "unavailable"))
                    raise JetStreamApiError(
                        f"{subject}: {err.get('description')}",
                        code=int(err.get("code", 500)),
                        err_code=int(err.get("err_code", 0)),
                    )
                return resp
            except (_Retry, NatsError, StorageUnavailable) as exc:  # lost, reconnecting
                await self._backoff(deadline, f"JetStream API {subject}", exc)

    async def _backoff(self, deadline: float, what: str, exc: BaseException) -> None:
        if time.monotonic() >= deadline:
            raise StorageUnavailable(
                f"{what}: no answer within {self.settings.retry_deadline_s} s ({exc})"
            ) from None
        await asyncio.sleep(0.1)
        if self._nc is None or self._nc.is_closed:
            raise StorageUnavailable("not connected to NATS")

    # -- publishing ------------------------------------------------------------

    def check_size(self, payloads: Sequence[bytes]) -> None:
        """Refuse (before anything is sent) a payload past the server's limit."""
        limit = self.max_payload - HEADER_ROOM
        for i, p in enumerate(payloads):
            if len(p) > limit:
                raise TooLarge(
                    f"record {i} is {len(p)} bytes; NATS takes at most {limit} per record "
                    f"(the server's max_payload of {self.max_payload} less room for headers)",
                    index=i,
                    size=len(p),
                    limit=limit,
                )

    async def publish(
        self, subject: str, payloads: Sequence[bytes], msg_ids: Sequence[str],
        headers: dict[str, str] | None = None,
        on_no_responders: Callable[[], Awaitable[None]] | None = None,
        deadline: float | None = None,
    ) -> list[PubAck]:  # fmt: skip
        """Publish each payload with its ``Nats-Msg-Id``, pipelined, and wait for every
        ack; those not acknowledged are sent again under the same id until the deadline.
        An error the stream answers (not an election) is raised at once.
        ``on_no_responders`` is called when no stream took a publish (none exists, or
        none yet after a restart), and may raise to end the retries. ``deadline`` (a
        ``time.monotonic()``) ends the retries sooner than ``retry_deadline_s``."""
        self.check_size(payloads)
        acks: list[PubAck | None] = [None] * len(payloads)
        deadline = min(deadline or math.inf, self._deadline())
        todo = list(range(len(payloads)))
        while todo:
            failed: list[int] = []
            last: BaseException | None = None
            sent: list[tuple[int, str, _Replies]] = []
            try:
                try:
                    nc = self.client
                    for i in todo:
                        replies = _Replies(batch=False)
                        token = self._reply_to(replies)
                        sent.append((i, token, replies))
                        hdrs = {"Nats-Msg-Id": msg_ids[i]}
                        if headers:
                            hdrs.update(headers)
                        await nc.publish(subject, payloads[i], reply=token, headers=hdrs)
                except Exception as exc:  # a closed or reconnecting client refuses writes
                    last = exc
                pending = [r.done for _, _, r in sent if not r.done.done()]
                if pending:  # one timer for the whole batch
                    await asyncio.wait(pending, timeout=self.settings.request_timeout_s)
                if on_no_responders is not None and any(r.status == "503" for _, _, r in sent):
                    await on_no_responders()
                for i, _, replies in sent:
                    try:
                        acks[i] = _pub_ack(replies)
                    except _Retry as exc:
                        failed.append(i)
                        last = exc
            finally:
                for _, token, _ in sent:
                    self._waiting.pop(token, None)
            failed += todo[len(sent) :]
            if failed:
                await self._backoff(deadline, f"publish to {subject}", last or _Retry("?"))
            todo = failed
        return [a for a in acks if a is not None]

    async def publish_atomic(
        self, subject: str, payloads: Sequence[bytes], msg_ids: Sequence[str],
        on_no_responders: Callable[[], Awaitable[None]] | None = None,
        deadline: float | None = None, headers: dict[str, str] | None = None,
        last_subject: str | None = None, first_headers: dict[str, str] | None = None,
    ) -> list[int] | None:  # fmt: skip
        """Publish the payloads (each with ``headers``, if given) as one atomic batch
        (nats-server 2.12+, a stream with ``allow_atomic``): all are stored, at
        consecutive sequences, or none. The last goes to ``last_subject`` if given
        (another subject of the same stream), the others to ``subject``.
        ``first_headers`` go on the first record only (``Nats-Expected-Last-Sequence``:
        JetStream checks it against the stream before the batch, so on every record
        the second one would fail it). The
        sequences; None if the batch holds a ``Nats-Msg-Id`` already in the duplicate
        window (nothing of the batch is stored then). Resent whole under a new batch
        id until the deadline (as in :meth:`publish`)."""
        self.check_size(payloads)
        if not 1 <= len(payloads) <= MAX_ATOMIC_BATCH:
            raise ValueError(f"an atomic batch holds 1 to {MAX_ATOMIC_BATCH} records")
        deadline = min(deadline or math.inf, self._deadline())
        last = len(payloads) - 1
        while True:
            batch_id = uuid.uuid4().hex
            replies = _Replies(batch=False)
            token = self._reply_to(replies)
            try:
                try:
                    nc = self.client
                    for i, payload in enumerate(payloads):
                        hdrs = {
                            **(headers or {}),
                            "Nats-Batch-Id": batch_id,
                            "Nats-Batch-Sequence": str(i + 1),
                            "Nats-Msg-Id": msg_ids[i],
                        }
                        if i == 0 and first_headers:
                            hdrs.update(first_headers)
                        if i == last:
                            hdrs["Nats-Batch-Commit"] = "1"
                        if i == last:
                            await nc.publish(
                                last_subject or subject, payload, reply=token, headers=hdrs
                            )
                        else:
                            await nc.publish(subject, payload, headers=hdrs)
                    await self._await(token, replies, self.settings.request_timeout_s)
                finally:
                    self._waiting.pop(token, None)
                if replies.status == "503" and on_no_responders is not None:
                    await on_no_responders()
                ack = _pub_ack(replies)
                count = orjson.loads(replies.msgs[0].data).get("count")
                if count != len(payloads):
                    raise StorageUnavailable(f"batch to {subject}: acknowledged {count} records")
            except JetStreamApiError as exc:
                if exc.err_code == ERR_BATCH_DUPLICATE:
                    return None
                if exc.err_code not in RETRYABLE_BATCH_CODES:
                    raise
                await self._backoff(deadline, f"batch to {subject}", exc)
                continue
            except Exception as exc:  # no ack in time, a closed or reconnecting client
                if isinstance(exc, TidingsError) and not isinstance(exc, StorageUnavailable):
                    raise
                await self._backoff(deadline, f"batch to {subject}", exc)
                continue
            first = ack.seq - len(payloads) + 1
            return list(range(first, ack.seq + 1))

    # -- reading ---------------------------------------------------------------

    async def direct_batch(
        self, stream: str, seq: int, batch: int, max_bytes: int,
        on_no_responders: Callable[[], Awaitable[None]] | None = None,
        subject: str | None = None, start_time: str | None = None,
    ) -> tuple[list[Msg], int | None]:  # fmt: skip
        """Up to ``batch`` messages from ``seq`` on (or from the first stored at or after
        ``start_time``, RFC 3339, if given), only those on ``subject`` (wildcards allowed)
        if given, by a batched direct get, and the stream's last sequence as the
        answering replica saw it (None if not said). ``on_no_responders`` is called
        when no replica answered (the stream may be gone), and may raise to end the
        retries."""
        request: dict[str, Any] = {"batch": batch, "max_bytes": max_bytes}
        if start_time is not None:
            request["start_time"] = start_time
        else:
            request["seq"] = seq
        if subject is not None:
            request["next_by_subj"] = subject
        body = orjson.dumps(request)
        deadline = self._deadline()
        while True:
            replies = _Replies(batch=True)
            token = self._reply_to(replies)
            try:
                await self.client.publish("$JS.API.DIRECT.GET." + stream, body, reply=token)
                msgs = await self._await(token, replies, self.settings.request_timeout_s)
            except (_Retry, StorageUnavailable, NatsError) as exc:
                self._waiting.pop(token, None)
                await self._backoff(deadline, f"read of {stream}", exc)
                continue
            if replies.status in RETRYABLE_STATUS:
                if replies.status == "503" and on_no_responders is not None:
                    await on_no_responders()
                await self._backoff(deadline, f"read of {stream}", _Retry(replies.status or ""))
                continue
            return msgs, replies.last_seq

    async def stored_ids(
        self, stream: str, seq: int, msg_ids: Sequence[str],
        on_no_responders: Callable[[], Awaitable[None]] | None = None,
    ) -> list[int]:  # fmt: skip
        """The sequences from ``seq`` on whose messages carry ``msg_ids`` in order, as
        far as they do: the rest of a batch stored after its first record."""
        msgs, _ = await self.direct_batch(stream, seq, len(msg_ids), 1 << 20, on_no_responders)
        out: list[int] = []
        for msg, msg_id in zip(msgs, msg_ids, strict=False):
            hdrs = msg.headers or {}
            if hdrs.get("Nats-Msg-Id") != msg_id or hdrs.get("Nats-Sequence") != str(seq):
                break
            out.append(seq)
            seq += 1
        return out


class _Replies:
    """The messages answering one request. A single answer (a publish's ack) completes
    it; a batched direct get completes at its closing status message (``204`` end of
    batch, ``404`` nothing there, or an error), which any answer may also be."""

    __slots__ = ("batch", "done", "last_seq", "msgs", "status")

    def __init__(self, batch: bool) -> None:
        self.batch = batch
        self.msgs: list[Msg] = []
        self.status: str | None = None
        self.last_seq: int | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def add(self, msg: Msg) -> None:
        if self.done.done():
            return
        hdrs = msg.headers
        status = hdrs.get("Status") if hdrs else None
        if status is not None and not msg.data:
            assert hdrs is not None
            self.status = status
            last = hdrs.get("Nats-Last-Sequence")
            self.last_seq = int(last) if last else None
            self.done.set_result(None)
            return
        self.msgs.append(msg)
        if not self.batch:
            self.done.set_result(None)


def _pub_ack(replies: _Replies) -> PubAck:
    if not replies.done.done():
        raise _Retry("no ack in time")
    if replies.status is not None or not replies.msgs:
        raise _Retry(f"status {replies.status}")  # no responders: no leader yet
    resp = orjson.loads(replies.msgs[0].data)
    err = resp.get("error")
    if err is not None:
        if err.get("code") in RETRYABLE_API_CODES:
            raise _Retry(err.get("description", "unavailable"))
        raise JetStreamApiError(
            f"publish refused: {err.get('description')}",
            code=int(err.get("code", 500)),
            err_code=int(err.get("err_code", 0)),
        )
    return PubAck(int(resp["seq"]), bool(resp.get("duplicate", False)))


def b64decode(text: str) -> bytes:
    """The bytes of a base64 field of a JetStream API answer (empty if absent)."""
    return base64.b64decode(text) if text else b""


def parse_headers(raw: bytes) -> dict[str, str]:
    """The headers of a message as JetStream stores them (``NATS/1.0`` and lines of
    ``Name: value``); the last value of a repeated name."""
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().decode()] = value.strip().decode()
    return out
