"""The JetStream log on one real nats-server (``sync_interval: always``): appends,
reads, dedupe, times, waits, retention, topic names, and bad input."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tidings.backends.nats import NatsLog, NatsSettings, names
from tidings.backends.nats import log as log_module
from tidings.backends.nats.connection import JetStreamApiError
from tidings.cluster.natsproc import NatsServer
from tidings.errors import BadRequest, OffsetOutOfRange, TooLarge, TopicNotFound
from tidings.log.config import Retention, WrongEnd

_n = itertools.count()


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{next(_n)}-{time.monotonic_ns() % 10**6}"


async def test_append_gives_dense_offsets_and_read_answers_them_in_order(
    nats_log: NatsLog,
) -> None:
    topic = unique()
    await nats_log.create_topic(topic, 2)
    assert await nats_log.append(topic, 0, [b"a", b"b", b"c"]) == [0, 1, 2]
    assert await nats_log.append(topic, 0, [b"d"]) == [3]
    assert await nats_log.append(topic, 1, [b"x"]) == [0]  # each partition its own
    before = int(time.time() * 1000)
    records = await nats_log.read(topic, 0, 0)
    assert [(o, p) for o, _, p in records] == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]
    assert all(abs(ts - before) < 60_000 for _, ts, _ in records)  # real append times
    assert [r[1] for r in records] == sorted(r[1] for r in records)
    assert await nats_log.read(topic, 0, 2, max_records=1) == records[2:3]
    assert await nats_log.read(topic, 0, 4) == []  # the end: nothing yet
    assert await nats_log.bounds(topic, 0) == (0, 4)


async def test_reads_respect_max_bytes_but_answer_at_least_one_record(
    nats_log: NatsLog,
) -> None:
    topic = unique()
    await nats_log.create_topic(topic, 1)
    await nats_log.append(topic, 0, [b"x" * 1000 for _ in range(10)])
    assert len(await nats_log.read(topic, 0, 0, max_bytes=3500)) == 3
    assert len(await nats_log.read(topic, 0, 0, max_bytes=10)) == 1


async def test_a_long_partition_reads_back_whole(nats_log: NatsLog) -> None:
    topic = unique()
    await nats_log.create_topic(topic, 1)
    payloads = [f"r{i}".encode() for i in range(2500)]
    assert await nats_log.append(topic, 0, payloads) == list(range(2500))
    got: list[bytes] = []
    offset = 0
    while True:
        records = await nats_log.read(topic, 0, offset, max_records=5000)
        if not records:
            break
        assert [r[0] for r in records] == list(range(offset, offset + len(records)))
        got += [r[2] for r in records]
        offset = records[-1][0] + 1
    assert got == payloads


async def test_a_repeated_message_id_returns_the_first_offset_and_appends_nothing(
    nats_log: NatsLog,
) -> None:
    topic = unique()
    await nats_log.create_topic(topic, 1)
    assert await nats_log.append(topic, 0, [b"a", b"b"], ["id-a", "id-b"]) == [0, 1]
    assert await nats_log.append(topic, 0, [b"c"], ["id-c"]) == [2]
    # a retry of the first append, then one half new
    assert await nats_log.append(topic, 0, [b"a", b"b"], ["id-a", "id-b"]) == [0, 1]
    assert await nats_log.append(topic, 0, [b"b", b"d"], ["id-b", "id-d"]) == [1, 3]
    assert [r[2] for r in await nats_log.read(topic, 0, 0)] == [b"a", b"b", b"c", b"d"]


async def test_new_records_after_duplicates_are_stored_together_despite_a_concurrent_writer(
    nats_log: NatsLog, nats_server: NatsServer
) -> None:
    """A batch that starts with ids already stored: its new records still land at
    consecutive offsets while another connection appends as fast as it can."""
    topic = unique()
    await nats_log.create_topic(topic, 1)
    other = await NatsLog.connect(NatsSettings(servers=(nats_server.url,)))
    stop = asyncio.Event()

    async def interloper() -> None:
        for i in range(20_000):  # bounded; stopped once the rounds are done
            if stop.is_set():
                return
            await other.append(topic, 0, [b"x"], [f"x{i}"])

    writer = asyncio.create_task(interloper())
    try:
        for r in range(20):
            (first,) = await nats_log.append(topic, 0, [b"A"], [f"A{r}"])
            await asyncio.sleep(0)
            ids = [f"A{r}"] + [f"C{r}-{i}" for i in range(10)]
            offsets = await nats_log.append(topic, 0, [b"A"] + [b"C"] * 10, ids)
            assert offsets[0] == first  # the duplicate: its first offset
            assert offsets[1:] == list(range(offsets[1], offsets[1] + 10)), offsets
    finally:
        stop.set()
        await writer
        await other.close()
    stored: list[bytes] = []
    while records := await nats_log.read(topic, 0, len(stored)):
        stored += [r[2] for r in records]
    assert stored.count(b"A") == 20  # no duplicate stored
    assert stored.count(b"C") == 200


async def test_offset_for_time_finds_the_first_record_at_or_after(nats_log: NatsLog) -> None:
    topic = unique()
    await nats_log.create_topic(topic, 1)
    assert await nats_log.offset_for_time(topic, 0, 0) == 0  # empty: the end
    await nats_log.append(topic, 0, [b"early"])
    await asyncio.sleep(0.05)
    await nats_log.append(topic, 0, [b"late"])
    records = await nats_log.read(topic, 0, 0)
    t0, t1 = records[0][1], records[1][1]
    assert t1 > t0
    assert await nats_log.offset_for_time(topic, 0, 0) == 0
    assert await nats_log.offset_for_time(topic, 0, t0) == 0
    assert await nats_log.offset_for_time(topic, 0, t0 + 1) == 1
    assert await nats_log.offset_for_time(topic, 0, t1) == 1
    assert await nats_log.offset_for_time(topic, 0, t1 + 1) == 2  # past the last: the end


async def test_wait_wakes_on_a_new_record_and_times_out_without_one(
    nats_log: NatsLog, nats_server: NatsServer
) -> None:
    topic = unique()
    await nats_log.create_topic(topic, 1)
    assert not await nats_log.wait(topic, 0, 0, timeout=0.2)
    # the record comes from another connection: only the subscription can tell
    other = await NatsLog.connect(NatsSettings(servers=(nats_server.url,)))
    try:
        waiter = asyncio.create_task(nats_log.wait(topic, 0, 0, timeout=30))
        far = asyncio.create_task(nats_log.wait(topic, 0, 5, timeout=0.5))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        await other.append(topic, 0, [b"hello"])
        assert await waiter
        assert not await far
        assert await nats_log.wait(topic, 0, 0, timeout=0)  # already there
    finally:
        await other.close()


async def test_a_batch_from_another_node_wakes_waiters_up_to_its_last_record(
    nats_log: NatsLog, nats_server: NatsServer
) -> None:
    """The tail follows the end subject (one message per append): a waiter at any
    offset of another node's batch wakes, one past it does not."""
    topic = unique()
    await nats_log.create_topic(topic, 1)
    assert not await nats_log.wait(topic, 0, 0, timeout=0.2)  # the tail is subscribed
    other = await NatsLog.connect(NatsSettings(servers=(nats_server.url,)))
    try:
        waiters = [asyncio.create_task(nats_log.wait(topic, 0, o, timeout=30)) for o in (0, 499)]
        beyond = asyncio.create_task(nats_log.wait(topic, 0, 500, timeout=1))
        await asyncio.sleep(0.1)
        assert await other.append(topic, 0, [b"r%d" % i for i in range(500)]) == list(range(500))
        assert await asyncio.gather(*waiters) == [True, True]
        assert not await beyond
        assert nats_log.tail_end(topic, 0) == 500
        single = asyncio.create_task(nats_log.wait(topic, 0, 500, timeout=30))
        await asyncio.sleep(0.05)
        await other.append(topic, 0, [b"one"])
        assert await single
    finally:
        await other.close()


async def test_a_stream_made_with_one_subject_gets_its_end_subject(nats_log: NatsLog) -> None:
    """A partition's stream made before streams had an end subject takes appends and
    wakes waiters: the end subject is added to it."""
    topic = unique()
    await nats_log.create_topic(topic, 1)
    stream = names.stream_name(topic, 0)
    info = await nats_log.conn.api(f"STREAM.INFO.{stream}")
    old = {**info["config"], "subjects": [names.subject(topic, 0)]}
    await nats_log.conn.api(f"STREAM.UPDATE.{stream}", old)
    other = await NatsLog.connect(NatsSettings(servers=nats_log.conn.settings.servers))
    try:
        assert await other.append(topic, 0, [b"a", b"b"]) == [0, 1]
        assert await other.append(topic, 0, [b"c"]) == [2]
        assert await nats_log.wait(topic, 0, 2, timeout=30)
        info = await nats_log.conn.api(f"STREAM.INFO.{stream}")
        assert info["config"]["subjects"] == [names.subject(topic, 0), names.end_subject(topic, 0)]
    finally:
        await other.close()


async def test_max_bytes_retention_moves_the_start_and_never_reuses_offsets(
    nats_log: NatsLog,
) -> None:
    topic = unique()
    await nats_log.create_topic(topic, 1, Retention(max_bytes=4000))
    await nats_log.append(topic, 0, [b"x" * 100 for _ in range(100)])
    start, end = await nats_log.bounds(topic, 0)
    assert end == 100 and 0 < start < 100
    with pytest.raises(OffsetOutOfRange) as info:
        await nats_log.read(topic, 0, 0)
    assert info.value.fields == {"start": start, "end": 100}
    assert (await nats_log.read(topic, 0, start))[0][0] == start
    assert await nats_log.append(topic, 0, [b"y"]) == [100]


async def test_max_age_retention_removes_old_records_by_itself(nats_log: NatsLog) -> None:
    topic = unique()
    await nats_log.create_topic(topic, 1, Retention(max_age_ms=1000))
    await nats_log.append(topic, 0, [b"old", b"old"])
    deadline = time.monotonic() + 30
    while (await nats_log.bounds(topic, 0))[0] < 2:
        assert time.monotonic() < deadline, "JetStream never expired the records"
        await asyncio.sleep(0.2)
    assert await nats_log.bounds(topic, 0) == (2, 2)
    assert await nats_log.read(topic, 0, 2) == []
    with pytest.raises(OffsetOutOfRange):
        await nats_log.read(topic, 0, 1)
    assert await nats_log.append(topic, 0, [b"new"]) == [2]


@pytest.mark.parametrize(
    "topic",
    ["orders.eu", "a_b", "a.b_c-d", "x" + ".y" * 80, "Ü.ñ", "a" * 200, "." * 3, "_2E"],
)
async def test_any_topic_name_maps_to_valid_names_and_back(nats_log: NatsLog, topic: str) -> None:
    enc = names.encode(topic)
    assert names.decode(enc) == topic
    stream = names.stream_name(topic, 3)
    assert len(stream) <= names.MAX_STREAM_NAME
    assert not any(c in stream for c in ".*> /\\\t")
    if stream.startswith(names.STREAM_PREFIX):
        assert names.parse_stream_name(stream) == (topic, 3)
    full = topic + unique("-")
    await nats_log.create_topic(full, 1)
    assert await nats_log.append(full, 0, [b"v"]) == [0]
    assert (await nats_log.read(full, 0, 0))[0][2] == b"v"
    assert full in await nats_log.load_topics()


async def test_distinct_names_never_share_a_stream() -> None:
    seen: dict[str, str] = {}
    for topic in ["a.b", "a_b", "a_2Eb", "a-b", "ab", "a..b", "a_5F2Eb"]:
        stream = names.stream_name(topic, 0)
        assert stream not in seen, (topic, seen.get(stream))
        seen[stream] = topic


async def test_a_payload_past_the_server_limit_is_refused_and_nothing_is_appended(
    nats_log: NatsLog,
) -> None:
    topic = unique()
    await nats_log.create_topic(topic, 1)
    with pytest.raises(TooLarge, match=r"record 1 is 1048577 bytes; NATS takes at most"):
        await nats_log.append(topic, 0, [b"ok", b"x" * (1 << 20 | 1)])
    assert await nats_log.bounds(topic, 0) == (0, 0)
    limit = nats_log.conn.max_payload - 512
    assert await nats_log.append(topic, 0, [b"y" * limit]) == [0]  # the largest taken
    # with the longest ids, in an atomic batch (its headers are the largest)
    big = [b"z" * limit, b"w" * limit]
    assert await nats_log.append(topic, 0, big, ["i" * 256, "j" * 256]) == [1, 2]
    assert [r[2] for r in await nats_log.read(topic, 0, 1, max_bytes=1)] == big[:1]


async def test_unknown_topics_partitions_and_offsets_are_named(nats_log: NatsLog) -> None:
    with pytest.raises(TopicNotFound, match="no topic 'nope'"):
        await nats_log.append("nope", 0, [b"x"])
    with pytest.raises(TopicNotFound):
        await nats_log.read("nope", 0, 0)
    topic = unique()
    await nats_log.create_topic(topic, 2)
    with pytest.raises(BadRequest, match="has partitions 0 to 1, not 2"):
        await nats_log.append(topic, 2, [b"x"])
    with pytest.raises(BadRequest, match="not -1"):
        await nats_log.read(topic, -1, 0)
    await nats_log.append(topic, 0, [b"x"])
    for offset in (-1, 2, 10**12):
        with pytest.raises(OffsetOutOfRange, match=rf"offset {offset} is outside \[0, 1\]"):
            await nats_log.read(topic, 0, offset)
    with pytest.raises(BadRequest, match="2 payloads but 1 ids"):
        await nats_log.append(topic, 0, [b"a", b"b"], ["only-one"])
    for bad_id in ["has space", "", "x" * 257, "caf\u00e9", "tab\there"]:
        with pytest.raises(BadRequest, match="message id 1 is not 1 to 256 printable ASCII"):
            await nats_log.append(topic, 0, [b"a", b"b"], ["fine", bad_id])
    with pytest.raises(BadRequest, match="partitions must be 1 to"):
        await nats_log.create_topic(unique(), 0)
    with pytest.raises(BadRequest, match="has 2 partitions"):
        await nats_log.create_topic(topic, 3)
    assert await nats_log.bounds(topic, 0) == (0, 1)  # nothing changed


async def test_a_dropped_topic_is_gone_for_every_node(
    nats_log: NatsLog, nats_server: NatsServer
) -> None:
    topic = unique()
    await nats_log.create_topic(topic, 1)
    other = await NatsLog.connect(NatsSettings(servers=(nats_server.url,)))
    try:
        assert await other.append(topic, 0, [b"x"]) == [0]  # `other` knows the topic now
        await nats_log.drop_topic(topic)
        with pytest.raises(TopicNotFound):
            await other.append(topic, 0, [b"y"])
        assert topic not in await other.load_topics()
        with pytest.raises(TopicNotFound):
            await nats_log.drop_topic(topic)
    finally:
        await other.close()


async def test_topics_outlive_the_connection(nats_server: NatsServer) -> None:
    topic = unique()
    settings = NatsSettings(servers=(nats_server.url,))
    first = await NatsLog.connect(settings)
    await first.create_topic(topic, 3, Retention(max_age_ms=3_600_000), {"owner": "shop"})
    await first.append(topic, 1, [b"kept"])
    await first.close()
    second = await NatsLog.connect(settings)
    try:
        config = (await second.load_topics())[topic]
        assert config == {"owner": "shop", "partitions": 3, "max_age_ms": 3_600_000,
                          "max_bytes": None}  # fmt: skip
        assert (await second.read(topic, 1, 0))[0][2] == b"kept"
    finally:
        await second.close()


@pytest.mark.parametrize(
    ("stamp", "ms"),
    [
        ("2026-12-05T09:44:47.311090947Z", 1796463887311),
        ("2026-12-05T09:44:47.3Z", 1796463887300),
        ("2026-12-05T09:44:47.05Z", 1796463887050),
        ("2026-12-05T09:44:47Z", 1796463887000),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_jetstream_time_stamps_read_as_milliseconds(stamp: str, ms: int) -> None:
    # Go's RFC 3339 with nanoseconds drops trailing zeros of the fraction
    assert log_module._ts_ms(stamp) == ms


@pytest.mark.parametrize("bad", ["", "a.b", "a_2", "a_ZZ", "a b", "_C3"])
def test_a_name_that_no_topic_encodes_to_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        names.decode(bad)
    assert names.parse_stream_name(f"td_{bad}_0") is None


async def test_close_wakes_waiters_with_false(nats_server: NatsServer) -> None:
    log = await NatsLog.connect(NatsSettings(servers=(nats_server.url,)))
    topic = unique()
    await log.create_topic(topic, 1)
    waiter = asyncio.create_task(log.wait(topic, 0, 0, timeout=60))
    await asyncio.sleep(0.2)
    await log.close()
    assert await asyncio.wait_for(waiter, 10) is False


async def test_two_nodes_creating_one_topic_at_once_both_succeed(
    nats_log: NatsLog, nats_server: NatsServer
) -> None:
    topic = unique()
    other = await NatsLog.connect(NatsSettings(servers=(nats_server.url,)))
    try:
        results = await asyncio.gather(
            *(log.create_topic(topic, 2) for log in (nats_log, other, nats_log, other))
        )
        assert all(r["partitions"] == 2 for r in results)
        assert await other.append(topic, 1, [b"x"]) == [0]
        assert (await nats_log.load_topics())[topic]["partitions"] == 2
    finally:
        await other.close()


async def test_concurrent_appends_each_land_whole_at_consecutive_offsets(
    nats_log: NatsLog, nats_server: NatsServer
) -> None:
    topic = unique()
    await nats_log.create_topic(topic, 1)
    other = await NatsLog.connect(NatsSettings(servers=(nats_server.url,)))
    try:
        batches = [[f"{b}:{i}".encode() for i in range(50)] for b in range(12)]
        results = await asyncio.gather(
            *((nats_log if b % 2 else other).append(topic, 0, batch) for b, batch in
              enumerate(batches))
        )  # fmt: skip
        for offsets in results:
            assert offsets == list(range(offsets[0], offsets[0] + 50))
        records = {o: p for o, _, p in await nats_log.read(topic, 0, 0)}
        assert len(records) == 600
        for batch, offsets in zip(batches, results, strict=True):
            assert [records[o] for o in offsets] == batch
    finally:
        await other.close()


async def test_bad_read_sizes_are_refused(nats_log: NatsLog) -> None:
    topic = unique()
    await nats_log.create_topic(topic, 1)
    await nats_log.append(topic, 0, [b"x"])
    for kwargs in ({"max_records": 0}, {"max_bytes": 0}, {"max_records": -5}):
        with pytest.raises(BadRequest, match="must be positive"):
            await nats_log.read(topic, 0, 0, **kwargs)


async def test_a_topic_created_again_with_new_retention_applies_it(nats_log: NatsLog) -> None:
    topic = unique()
    await nats_log.create_topic(topic, 1)
    await nats_log.append(topic, 0, [b"x" * 100 for _ in range(100)])
    assert (await nats_log.bounds(topic, 0))[0] == 0
    await nats_log.create_topic(topic, 1, Retention(max_bytes=4000), {"v": 2})
    start, end = await nats_log.bounds(topic, 0)
    assert end == 100 and start > 0
    assert (await nats_log.load_topics())[topic]["max_bytes"] == 4000
    # a time before the start: the first record kept
    assert await nats_log.offset_for_time(topic, 0, 0) == start


async def test_a_topic_dropped_and_made_again_by_another_node_is_seen_here(
    nats_log: NatsLog, nats_server: NatsServer
) -> None:
    """This node's cached partition count, streams and tails follow what another
    node did: a dropped topic reads as TopicNotFound (not the retry deadline), one
    made again with more partitions takes appends to them, a new stream a new tail."""
    dropped, grown, renewed = unique(), unique(), unique()
    await nats_log.create_topic(dropped, 2)
    await nats_log.create_topic(grown, 2)
    await nats_log.create_topic(renewed, 1)
    assert await nats_log.append(dropped, 0, [b"a"]) == [0]
    assert await nats_log.append(renewed, 0, [b"a", b"b", b"c"]) == [0, 1, 2]
    assert await nats_log.wait(renewed, 0, 2, timeout=5)  # its tail is at 3
    other = await NatsLog.connect(NatsSettings(servers=(nats_server.url,)))
    try:
        await other.drop_topic(dropped)
        async with asyncio.timeout(20):  # the retry deadline is 30 s
            with pytest.raises(TopicNotFound):
                await nats_log.read(dropped, 0, 0)
        await other.drop_topic(grown)
        await other.create_topic(grown, 4)
        assert await nats_log.append(grown, 3, [b"new"]) == [0]
        await other.drop_topic(renewed)
        await other.create_topic(renewed, 1)
        assert await nats_log.read(renewed, 0, 0) == []  # the new stream is empty
        assert not await nats_log.wait(renewed, 0, 0, timeout=0.3)  # its tail, not the old
        await other.append(renewed, 0, [b"x"])
        assert await nats_log.wait(renewed, 0, 0, timeout=30)
    finally:
        await other.close()


async def test_a_topic_whose_streams_cannot_be_made_is_not_recorded(nats_log: NatsLog) -> None:
    """Streams first, then the record: a record never names streams that do not exist."""
    topic = unique()
    # another stream already holds the subject of partition 1: JetStream refuses that one
    await nats_log.conn.api(
        "STREAM.CREATE.intruder", {"name": "intruder", "subjects": [names.subject(topic, 1)]}
    )
    try:
        with pytest.raises(JetStreamApiError):
            await nats_log.create_topic(topic, 2)
        assert await nats_log.topics.get(names.key(topic)) is None
        assert topic not in await nats_log.load_topics()
    finally:
        await nats_log.conn.api("STREAM.DELETE.intruder")
    await nats_log.create_topic(topic, 2)  # the same call again completes it
    assert await nats_log.append(topic, 1, [b"a"]) == [0]


@pytest.mark.parametrize("count", [1, 3])
async def test_an_append_at_an_expected_end_is_stored_only_there(
    nats_log: NatsLog, count: int
) -> None:
    """``expect_end``: JetStream stores the append only if the stream ends there (one
    record, or the first of an atomic batch); else WrongEnd naming the end, nothing
    stored. The same append again (its ack lost) answers its offsets."""
    topic = unique()
    await nats_log.create_topic(topic, 1)
    assert await nats_log.append(topic, 0, [b"a", b"b"], expect_end=0) == [0, 1]
    payloads = [f"r{i}".encode() for i in range(count)]
    ids = [f"{topic}-{i}" for i in range(count)]
    for wrong in (0, 1, 3):
        with pytest.raises(WrongEnd) as refused:
            await nats_log.append(topic, 0, payloads, ids, expect_end=wrong)
        assert (refused.value.end, refused.value.fields["expected"]) == (2, wrong)
    assert await nats_log.end_offset(topic, 0) == 2
    stored = list(range(2, 2 + count))
    assert await nats_log.append(topic, 0, payloads, ids, expect_end=2) == stored
    assert await nats_log.append(topic, 0, payloads, ids, expect_end=2) == stored  # a retry
    assert await nats_log.end_offset(topic, 0) == 2 + count
    with pytest.raises(WrongEnd):  # other ids at the old end: refused
        await nats_log.append(topic, 0, payloads, expect_end=2)
    assert [r[2] for r in await nats_log.read(topic, 0, 2)] == payloads
