"""The partitioned log over JetStream: one stream per topic partition.

Partition ``p`` of a topic is a stream of its own over two subjects (see ``names``:
the last record of each publish goes to the second, the end subject, so that the
tail gets one message per append), so a partition's offsets are the stream's
sequences less one: dense, never reused, kept by JetStream across restarts,
elections and retention. Records are appended with a ``Nats-Msg-Id`` each, several
as one atomic batch; JetStream's duplicate window answers a repeated id with the
first record's sequence, so a retried append returns the offsets it got first (see
:meth:`NatsLog.append` for a batch that holds both duplicates and new records).
Retention (``max_age``, ``max_bytes``) is the stream's: JetStream removes records
from the start and ``start_offset`` moves on.

Reads are batched direct gets (``$JS.API.DIRECT.GET``, one request for up to
``max_records``), measured faster than an ordered consumer or a pull fetch created
per read (see ``bench/nats_log.py``). Any replica answers a direct get; one behind
the leader may not hold a record whose append was acknowledged, so a read that comes
back empty below the end the leader reports asks the leader (``STREAM.MSG.GET``).
``wait`` is a subscription: an ordered push consumer per partition on its end
subject, headers only, which JetStream feeds only with stored records, one per
append. What a node keeps of a topic (its
partition count, its tails) is checked against the streams when they disagree: another
node may drop a topic and make it again.

Topics and their configuration live in the KV bucket ``td_topics`` (see ``meta``);
:meth:`NatsLog.bucket` gives the same compare-and-set store for other metadata.
"""

from __future__ import annotations

import asyncio
import calendar
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from tidings.backends.nats import names
from tidings.backends.nats.connection import (
    MAX_ATOMIC_BATCH,
    JetStreamApiError,
    NatsConnection,
    NatsSettings,
    b64decode,
    parse_headers,
)
from tidings.backends.nats.meta import (
    ERR_NO_MESSAGE,
    ERR_STREAM_NOT_FOUND,
    Entry,
    MetaBucket,
)
from tidings.backends.nats.tail import Tail as _Tail
from tidings.errors import (
    BadRequest,
    Conflict,
    OffsetOutOfRange,
    TopicNotFound,
)
from tidings.log.config import LogRecord, Retention, WrongEnd

DUPLICATE_WINDOW_MS = 120_000  # as the hub's dedupe window
MAX_PARTITIONS = 1024
MAX_READ_RECORDS = 1000  # per direct get; more is read in several
_ERR_STREAM_EXISTS = 10058
ERR_WRONG_LAST_SEQ = 10071  # Nats-Expected-Last-Sequence is not the stream's last
EXPECTED_LAST_SEQ = "Nats-Expected-Last-Sequence"
_LAST_SEQ = re.compile(r"wrong last sequence: (\d+)")
MAX_MSG_ID = 256  # within the room connection.HEADER_ROOM keeps for headers
_MSG_ID = re.compile(rf"[!-~]{{1,{MAX_MSG_ID}}}")


class NatsLog:
    """Topics of partitions over JetStream streams, and their metadata in KV."""

    def __init__(
        self,
        conn: NatsConnection,
        *,
        replicas: int = 1,
        duplicate_window_ms: int = DUPLICATE_WINDOW_MS,
    ) -> None:
        if replicas not in (1, 3, 5):
            raise BadRequest(f"replicas must be 1, 3 or 5, not {replicas}", field="replicas")
        self.conn = conn
        self.replicas = replicas
        self.duplicate_window_ms = duplicate_window_ms
        self.topics = MetaBucket(conn, "td_topics", replicas)
        self._partitions: dict[str, int] = {}  # topic -> partition count, as last read
        self._windows: dict[str, float] = {}  # topic -> its duplicate window, seconds
        self._tails: dict[str, _Tail] = {}  # stream -> its subscription for wait()
        self.topics_revision = 0  # of td_topics, as load_topics last read it
        self._closed = False

    @classmethod
    async def connect(cls, settings: NatsSettings, **options: Any) -> NatsLog:
        conn = NatsConnection(settings)
        await conn.connect()
        log = cls(conn, **options)
        try:
            await log.topics.ensure()
        except BaseException:
            await conn.close()
            raise
        return log

    async def close(self) -> None:
        self._closed = True
        for tail in list(self._tails.values()):
            await tail.close()
        self._tails.clear()
        await self.conn.close()

    async def bucket(self, name: str) -> MetaBucket:
        """A KV bucket of this log's replicas, created if needed (groups, webhooks...)."""
        b = MetaBucket(self.conn, name, self.replicas)
        await b.ensure()
        return b

    # -- topics ----------------------------------------------------------------

    async def create_topic(
        self,
        topic: str,
        partitions: int,
        retention: Retention | None = None,
        config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create the topic's streams and record it; the same again changes nothing.
        ``config`` is kept beside (the hub's own settings of the topic)."""
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise BadRequest(
                f"partitions must be 1 to {MAX_PARTITIONS}, not {partitions}", field="partitions"
            )
        retention = retention or Retention()
        for name, v in (("max_age_ms", retention.max_age_ms), ("max_bytes", retention.max_bytes)):
            if v is not None and v <= 0:
                raise BadRequest(f"{name} must be positive, not {v}", field=name)
        names.encode(topic)  # refuses an empty name
        record = {
            **(config or {}),
            "partitions": partitions,
            "max_age_ms": retention.max_age_ms,
            "max_bytes": retention.max_bytes,
        }
        existing = await self.topics.get(names.key(topic))
        _check_partitions(topic, existing, partitions)
        # the streams first: a recorded topic has its streams (a failure here leaves
        # streams without a record, which the same call again completes)
        for p in range(partitions):
            await self._ensure_stream(topic, p, retention)
        for _ in range(10):  # another node may create or change it meanwhile
            existing = await self.topics.get(names.key(topic))
            try:
                if existing is not None and existing.value is not None:
                    _check_partitions(topic, existing, partitions)
                    await self.topics.put(names.key(topic), record, existing.revision)
                else:
                    await self.topics.create(names.key(topic), record)
                break
            except Conflict:
                continue
        else:
            raise Conflict(f"topic {topic!r} kept changing while it was created", topic=topic)
        self._remember(topic, record)
        return record

    def _remember(self, topic: str, record: dict[str, Any]) -> int:
        self._windows[topic] = self._window_ms(record.get("max_age_ms")) / 1000
        count = self._partitions[topic] = int(record["partitions"])
        return count

    def _window_ms(self, max_age_ms: int | None) -> int:
        if max_age_ms is not None:
            return min(self.duplicate_window_ms, max_age_ms)  # JetStream requires it
        return self.duplicate_window_ms

    async def _ensure_stream(self, topic: str, partition: int, retention: Retention) -> None:
        window_ms = self._window_ms(retention.max_age_ms)
        config = {
            "name": names.stream_name(topic, partition),
            "subjects": [names.subject(topic, partition), names.end_subject(topic, partition)],
            "storage": "file",
            "num_replicas": self.replicas,
            "retention": "limits",
            "discard": "old",
            "max_age": (retention.max_age_ms or 0) * 1_000_000,
            "max_bytes": retention.max_bytes if retention.max_bytes is not None else -1,
            "duplicate_window": window_ms * 1_000_000,
            "allow_direct": True,
            "allow_atomic": True,
            "deny_delete": True,
            "metadata": {"tidings_topic": topic, "tidings_partition": str(partition)},
        }
        name = config["name"]
        try:
            await self.conn.api(f"STREAM.CREATE.{name}", config)
        except JetStreamApiError as exc:
            if exc.err_code != _ERR_STREAM_EXISTS:
                raise
            await self.conn.api(f"STREAM.UPDATE.{name}", config)  # new retention

    async def load_topics(self) -> dict[str, dict[str, Any]]:
        """Every topic's record, as ``create_topic`` saved it; ``topics_revision`` is
        then the bucket's revision they were read at (a watch from it misses nothing)."""
        entries, self.topics_revision = await self.topics.items()
        out = {names.decode(k): e.value for k, e in entries.items()}
        self._partitions = {}
        self._windows = {}
        for t, v in out.items():
            self._remember(t, v)
        return out

    async def drop_topic(self, topic: str) -> None:
        """Delete the topic's streams, then its record."""
        entry = await self.topics.get(names.key(topic))
        if entry is None or entry.value is None:
            raise TopicNotFound(f"no topic {topic!r}", topic=topic)
        for p in range(int(entry.value["partitions"])):
            await self.drop_stream(topic, p)
        await self.topics.delete(names.key(topic), entry.revision)
        self._partitions.pop(topic, None)
        self._windows.pop(topic, None)

    async def drop_stream(self, topic: str, partition: int) -> None:
        """Delete one partition's stream (none: nothing to do) and stop following it."""
        stream = names.stream_name(topic, partition)
        tail = self._tails.pop(stream, None)
        if tail is not None:
            await tail.close()
        try:
            await self.conn.api(f"STREAM.DELETE.{stream}")
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_NOT_FOUND:
                raise

    async def _forget(self, topic: str) -> None:
        """Drop what this node keeps of a topic (dropped, perhaps by another node)."""
        count = self._partitions.pop(topic, 0)
        self._windows.pop(topic, None)
        for p in range(count):
            tail = self._tails.pop(names.stream_name(topic, p), None)
            if tail is not None:
                await tail.close()

    async def _stream(self, topic: str, partition: int) -> str:
        """The stream of a partition that exists; else TopicNotFound or BadRequest."""
        count = self._partitions.get(topic)
        if count is not None and not 0 <= partition < count:
            count = None  # as last read here: another node may have made it again since
        if count is None:
            entry = await self.topics.get(names.key(topic))
            if entry is None or entry.value is None:
                raise TopicNotFound(f"no topic {topic!r}", topic=topic)
            count = self._remember(topic, entry.value)
        if not 0 <= partition < count:
            raise BadRequest(
                f"topic {topic!r} has partitions 0 to {count - 1}, not {partition}",
                field="partition",
            )
        return names.stream_name(topic, partition)

    async def _gone(self, topic: str, partition: int) -> None:
        """Raise TopicNotFound if the partition's stream does not exist (any more)."""
        try:
            info = await self.conn.api(f"STREAM.INFO.{names.stream_name(topic, partition)}")
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                await self._forget(topic)
                raise TopicNotFound(f"no topic {topic!r}", topic=topic) from None
            raise
        await self._end_subject(info)

    async def _end_subject(self, info: dict[str, Any]) -> None:
        """Give a stream made before streams had an end subject its end subject (its
        records stay as they are)."""
        config = info.get("config") or {}
        subjects = list(config.get("subjects") or [])
        if len(subjects) != 1 or not subjects[0].startswith(names.SUBJECT_PREFIX):
            return
        config = {**config, "subjects": [subjects[0], subjects[0] + ".e"]}
        await self.conn.api(f"STREAM.UPDATE.{config['name']}", config)

    # -- records ---------------------------------------------------------------

    async def append(
        self,
        topic: str,
        partition: int,
        payloads: Sequence[bytes],
        msg_ids: Sequence[str] | None = None,
        headers: dict[str, str] | None = None,
        repeats: float | None = None,
        expect_end: int | None = None,
    ) -> list[int]:
        """Append each payload (each with ``headers``, if given); the offset of each,
        once JetStream acknowledged it. ``repeats``: the ``time.monotonic()`` at which
        an earlier call with the same ids began (its outcome unknown): this call's
        retries end within that call's duplicate window instead of its own.

        ``expect_end``: stored only if the first record lands at that offset, decided
        by JetStream (``Nats-Expected-Last-Sequence`` on the first record of the one
        atomic batch, so at most 1000 payloads), whichever node appended before; else
        :class:`~tidings.core.storage.WrongEnd` naming the stream's end, nothing stored. A
        retry of an append that did land answers its offsets: refused for the
        sequence, its ids are found stored from ``expect_end`` on.

        Up to 1000 payloads are one atomic batch: stored together at consecutive offsets,
        or none (StorageUnavailable once the deadline passes); a longer append is one
        batch per 1000. A payload whose id is in the duplicate window is not appended
        again: its offset is the first one's. JetStream refuses a batch holding such an
        id whole; it is then sent again from its first record: each record whose id is
        a duplicate answers its first offset, and once one is not, the records after
        the duplicates go as one atomic batch (consecutive offsets, nothing between).
        Only when duplicates and new records alternate (a new one before a duplicate)
        is a new record stored alone. Without ids, fresh ones make retries inside this
        call safe; the retries of one call end within the topic's duplicate window
        (``max_age`` may shorten it below the retry deadline).
        """
        landed = await self.append_marked(
            topic, partition, payloads, msg_ids, headers, repeats, expect_end=expect_end
        )
        assert landed is not None  # split: never refused
        return landed[0]

    async def append_marked(
        self,
        topic: str,
        partition: int,
        payloads: Sequence[bytes],
        msg_ids: Sequence[str] | None = None,
        headers: dict[str, str] | None = None,
        repeats: float | None = None,
        split: bool = True,
        expect_end: int | None = None,
    ) -> tuple[list[int], list[bool]] | None:
        """:meth:`append`, answering also whether each record was stored before (its id
        in the duplicate window: its offset is the first one's). ``split=False``: a batch
        that JetStream refuses for an id it holds is not sent again record by record
        (which could store some of its new records and not the rest, if the process
        died meanwhile): None, nothing stored. ``expect_end`` as :meth:`append` takes it."""
        stream = await self._stream(topic, partition)
        if msg_ids is None:
            msg_ids = [uuid.uuid4().hex for _ in payloads]
        elif len(msg_ids) != len(payloads):
            raise BadRequest(f"{len(payloads)} payloads but {len(msg_ids)} ids", field="msg_ids")
        else:
            for i, msg_id in enumerate(msg_ids):
                if not _MSG_ID.fullmatch(msg_id):
                    raise BadRequest(
                        f"message id {i} is not 1 to {MAX_MSG_ID} printable ASCII characters "
                        "without spaces",
                        field="msg_ids",
                        index=i,
                    )
        if not payloads:
            return [], []
        self.conn.check_size(payloads)
        expect: dict[str, str] | None = None
        if expect_end is not None:
            if len(payloads) > MAX_ATOMIC_BATCH:
                raise BadRequest(
                    f"an append at an expected end holds at most {MAX_ATOMIC_BATCH} records, "
                    f"not {len(payloads)}",
                    field="events",
                )
            expect = {EXPECTED_LAST_SEQ: str(expect_end)}

        async def no_stream() -> None:
            await self._gone(topic, partition)

        subject = names.subject(topic, partition)
        end = names.end_subject(topic, partition)  # the last record of each publish
        # every retry of this call within the duplicate window of its first attempt
        window_s = self._windows.get(topic, self.duplicate_window_ms / 1000)
        if repeats is None:
            deadline = time.monotonic() + 0.8 * window_s
        else:  # at least one attempt is made even past it
            deadline = repeats + 0.95 * window_s
        try:
            if len(payloads) == 1:
                acks = await self.conn.publish(
                    end, payloads, msg_ids, {**(headers or {}), **(expect or {})} or None,
                    on_no_responders=no_stream, deadline=deadline,
                )  # fmt: skip
                offsets = [acks[0].seq - 1]
                repeated = [acks[0].duplicate]
            else:
                offsets, repeated = [], []
                for b in range(0, len(payloads), MAX_ATOMIC_BATCH):
                    chunk = payloads[b : b + MAX_ATOMIC_BATCH]
                    ids = msg_ids[b : b + MAX_ATOMIC_BATCH]
                    seqs = await self.conn.publish_atomic(
                        subject, chunk, ids, no_stream, deadline, headers, last_subject=end,
                        first_headers=expect,
                    )  # fmt: skip
                    if seqs is None and not split and b == 0:
                        return None  # an id already stored, and nothing of this call was
                    if seqs is None:  # an id already stored
                        seqs, again = await self._append_past_duplicates(
                            stream, subject, chunk, ids, no_stream, deadline, headers, expect
                        )
                    else:
                        again = [False] * len(seqs)
                    offsets += [s - 1 for s in seqs]
                    repeated += again
        except JetStreamApiError as exc:
            if exc.err_code != ERR_WRONG_LAST_SEQ or expect_end is None:
                raise
            # JetStream checks the sequence before the ids of a batch: a retry of one
            # that landed (its ack lost) is refused so; its records answer it (this
            # call's own: not stored before it).
            landed = await self.conn.stored_ids(stream, expect_end + 1, msg_ids, no_stream)
            if len(landed) != len(payloads):
                raise WrongEnd(expect_end, await self._end_of(stream, exc)) from None
            offsets, repeated = [s - 1 for s in landed], [False] * len(landed)
        tail = self._tails.get(stream)
        if tail is not None:
            tail.advance(max(offsets) + 1)
        return offsets, repeated

    async def _append_past_duplicates(
        self, stream: str, subject: str, chunk: Sequence[bytes], ids: Sequence[str],
        no_stream: Callable[[], Awaitable[None]], deadline: float,
        headers: dict[str, str] | None = None, expect: dict[str, str] | None = None,
    ) -> tuple[list[int], list[bool]]:  # fmt: skip
        """The sequences of a batch that JetStream refused for an id it holds, and which
        of them were stored before (duplicates): the first
        record alone, acknowledged before the next is sent, as long as its id is a
        duplicate (its first sequence answers, nothing is stored), and with it the
        records stored after it under the next ids (the rest of a batch that landed,
        read back); then the rest as one atomic batch, again while it is refused. A
        record that is not a duplicate is stored alone only when a later one is.
        ``expect`` (an expected last sequence) goes on the first record's publish."""
        seqs: list[int] = []
        end = subject + ".e"  # names.end_subject: the last record of each publish
        repeated: list[bool] = []
        i = 0
        while i < len(chunk):
            first = {**(headers or {}), **(expect or {})} if i == 0 else headers
            (ack,) = await self.conn.publish(
                end, chunk[i : i + 1], ids[i : i + 1], first or None,
                on_no_responders=no_stream, deadline=deadline,
            )  # fmt: skip
            seqs.append(ack.seq)
            repeated.append(ack.duplicate)
            i += 1
            if ack.duplicate and i < len(chunk):
                # stored after the first one, within its window: duplicates too
                landed = await self.conn.stored_ids(stream, ack.seq + 1, ids[i:], no_stream)
                seqs += landed
                repeated += [True] * len(landed)
                i += len(landed)
                if i < len(chunk):
                    rest = await self.conn.publish_atomic(
                        subject, chunk[i:], ids[i:], no_stream, deadline, headers,
                        last_subject=end,
                    )  # fmt: skip
                    if rest is not None:
                        return seqs + rest, repeated + [False] * len(rest)
        return seqs, repeated

    async def _end_of(self, stream: str, exc: JetStreamApiError) -> int:
        """The stream's end that a refused expected last sequence names (else asked)."""
        said = _LAST_SEQ.search(str(exc.detail))
        if said is not None:
            return int(said.group(1))
        return (await self._bounds(stream))[1]

    async def read(
        self, topic: str, partition: int, offset: int, max_records: int = 1000,
        max_bytes: int = 1 << 20,
    ) -> list[LogRecord]:  # fmt: skip
        """Records from ``offset`` on, in order: at least one if any is there, else up to
        ``max_records`` and ``max_bytes``. OffsetOutOfRange outside [start, end]."""
        msgs = await self.read_with_headers(topic, partition, offset, max_records, max_bytes)
        return [(o, ts, data) for o, ts, data, _ in msgs]

    async def read_with_headers(
        self, topic: str, partition: int, offset: int, max_records: int = 1000,
        max_bytes: int = 1 << 20,
    ) -> list[tuple[int, int, bytes, dict[str, str]]]:  # fmt: skip
        """As :meth:`read`, each record with the headers it was appended with."""
        stream = await self._stream(topic, partition)
        if max_records < 1 or max_bytes < 1:
            raise BadRequest("max_records and max_bytes must be positive", field="max_records")
        if offset < 0:
            raise await self._out_of_range(stream, offset)
        batch = min(max_records, MAX_READ_RECORDS)

        async def no_stream() -> None:  # dropped, perhaps by another node
            await self._gone(topic, partition)

        msgs, _ = await self.conn.direct_batch(stream, offset + 1, batch, max_bytes, no_stream)
        if not msgs:
            start, end = await self._bounds(stream)
            if not start <= offset <= end:
                raise _range_error(offset, start, end)
            if offset == end:
                return []
            return await self._read_leader(stream, offset)  # a replica behind answered
        records: list[tuple[int, int, bytes, dict[str, str]]] = []
        size = 0
        for msg in msgs:
            hdrs = msg.headers or {}
            seq = int(hdrs["Nats-Sequence"])
            if not records and seq != offset + 1:
                raise await self._out_of_range(stream, offset)  # retention took it
            size += len(msg.data)
            if records and size > max_bytes:
                break
            records.append((seq - 1, _ts_ms(hdrs["Nats-Time-Stamp"]), msg.data, hdrs))
        return records

    async def _read_leader(
        self, stream: str, offset: int
    ) -> list[tuple[int, int, bytes, dict[str, str]]]:
        try:
            resp = await self.conn.api(f"STREAM.MSG.GET.{stream}", {"seq": offset + 1})
        except JetStreamApiError as exc:
            if exc.err_code == ERR_NO_MESSAGE:
                raise await self._out_of_range(stream, offset) from None
            raise
        m = resp["message"]
        data = b64decode(m.get("data", ""))
        hdrs = parse_headers(b64decode(m.get("hdrs", "")))
        return [(int(m["seq"]) - 1, _ts_ms(m["time"]), data, hdrs)]

    async def _out_of_range(self, stream: str, offset: int) -> OffsetOutOfRange:
        start, end = await self._bounds(stream)
        return _range_error(offset, start, end)

    async def _bounds(self, stream: str) -> tuple[int, int]:
        info = await self.conn.api(f"STREAM.INFO.{stream}")
        await self._end_subject(info)
        state = info["state"]
        end = int(state["last_seq"])
        start = end if int(state["messages"]) == 0 else int(state["first_seq"]) - 1
        tail = self._tails.get(stream)
        if tail is not None:
            created = str(info.get("created"))
            if tail.created is None:
                tail.created = created
            if tail.created == created:
                tail.advance(end)
            else:  # the stream was dropped and made again (by any node): a new tail
                del self._tails[stream]
                await tail.close()
        return start, end

    async def bounds(self, topic: str, partition: int) -> tuple[int, int]:
        """(start_offset, end_offset), from the stream leader."""
        return await self._bounds(await self._stream(topic, partition))

    async def start_offset(self, topic: str, partition: int) -> int:
        return (await self.bounds(topic, partition))[0]

    async def end_offset(self, topic: str, partition: int) -> int:
        return (await self.bounds(topic, partition))[1]

    async def offset_for_time(self, topic: str, partition: int, ts_ms: int) -> int:
        """The offset of the first record appended at ``ts_ms`` or later; the end if none."""
        stream = await self._stream(topic, partition)
        when = datetime.fromtimestamp(max(ts_ms, 0) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            resp = await self.conn.api(f"STREAM.MSG.GET.{stream}", {"start_time": when})
        except JetStreamApiError as exc:
            if exc.err_code == ERR_NO_MESSAGE:
                return (await self._bounds(stream))[1]
            raise
        return int(resp["message"]["seq"]) - 1

    async def follow(self, topic: str, partition: int) -> _Tail:
        """The partition's tail, subscribed (whether or not the topic is recorded yet):
        its ``end`` follows every record stored from then on, whichever node wrote it."""
        stream = names.stream_name(topic, partition)
        tail = self._tails.get(stream)
        if tail is None:
            tail = self._tails[stream] = _Tail(self, stream, names.end_subject(topic, partition))
        await tail.started()
        return tail

    def tail_end(self, topic: str, partition: int) -> int:
        """The end the partition's tail has seen on this node; 0 if not followed."""
        tail = self._tails.get(names.stream_name(topic, partition))
        return 0 if tail is None else tail.end

    async def wait(
        self, topic: str, partition: int, offset: int, timeout: float | None = None
    ) -> bool:
        """True once a record at ``offset`` is readable; False on timeout or close."""
        stream = await self._stream(topic, partition)
        tail = self._tails.get(stream)
        if tail is None:
            tail = self._tails[stream] = _Tail(self, stream, names.end_subject(topic, partition))
        until = None if timeout is None else time.monotonic() + timeout
        try:  # the subscription's start counts within the timeout
            async with asyncio.timeout(timeout):
                await tail.started()
        except TimeoutError:
            return tail.end > offset
        left = None if until is None else max(until - time.monotonic(), 0)
        return await tail.wait(offset, left)


def _check_partitions(topic: str, existing: Entry | None, partitions: int) -> None:
    if existing is None or existing.value is None:
        return
    if existing.value.get("partitions") != partitions:
        raise BadRequest(
            f"topic {topic!r} has {existing.value.get('partitions')} partitions",
            field="partitions",
        )


def _range_error(offset: int, start: int, end: int) -> OffsetOutOfRange:
    return OffsetOutOfRange(f"offset {offset} is outside [{start}, {end}]", start=start, end=end)


_SECONDS: dict[str, int] = {}


def _ts_ms(stamp: str) -> int:
    """Milliseconds of a JetStream time stamp (RFC 3339 in UTC, ``Z``, up to 9 digits
    of fraction, trailing zeros dropped)."""
    head = stamp[:19]
    secs = _SECONDS.get(head)
    if secs is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        secs = _SECONDS[head] = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
    frac = stamp[20:-1] if len(stamp) > 20 and stamp[19] == "." else ""
    return secs * 1000 + int((frac + "000")[:3])
