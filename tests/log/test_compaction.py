"""Compaction by key: the latest record per partitionkey stays, offsets never change."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from tidings.log import compaction, keymap
from tidings.log import format as fmt
from tidings.log.check import check_partition
from tidings.log.compaction import Compactor, compact_partition, remove_leftovers
from tidings.log.config import FsyncPolicy, LogConfig, LogRecord
from tidings.log.partition import PartitionLog

T0 = 1_700_000_000_000
HOUR = 3600 * 1000


class FakeClock:
    def __init__(self, now_ms: int = T0) -> None:
        self.now_ms = now_ms

    def time_ms(self) -> int:
        return self.now_ms


def event(key: str | None, value: Any = None, *, tombstone: bool = False, n: int = 0) -> bytes:
    ev: dict[str, Any] = {"id": f"e{n}", "type": "t", "source": "/s", "specversion": "1.0"}
    if key is not None:
        ev["partitionkey"] = key
    if not tombstone:
        ev["data"] = value
    return orjson.dumps(ev)


def config(**kw: Any) -> LogConfig:
    base: dict[str, Any] = {"segment_bytes": 1024, "index_interval": 128, "compaction": "key"}
    base.update(kw)
    return LogConfig(**base)


def open_log(path: Path, clock: FakeClock, **kw: Any) -> PartitionLog:
    return PartitionLog.open(path, config(**kw), FsyncPolicy("always"), clock)


def read_all(log: PartitionLog, offset: int | None = None, step: int = 3) -> list[LogRecord]:
    offset = log.start_offset if offset is None else offset
    out: list[LogRecord] = []
    while offset < log.end_offset:
        got = log.read_now(offset, max_records=step)
        if not got:
            break
        out.extend(got)
        offset = got[-1][0] + 1
    return out


def latest(records: list[tuple[int, bytes]]) -> dict[str, tuple[int, Any]]:
    """key -> (offset, data) of its last record, from what was appended."""
    out: dict[str, tuple[int, Any]] = {}
    for offset, payload in records:
        ev = orjson.loads(payload)
        if "partitionkey" in ev:
            out[ev["partitionkey"]] = (offset, ev.get("data"))
    return out


async def publish(log: PartitionLog, payloads: list[bytes], per_batch: int = 1) -> list[int]:
    offsets: list[int] = []
    for i in range(0, len(payloads), per_batch):
        chunk = payloads[i : i + per_batch]
        base = await log.append(chunk)
        offsets.extend(range(base, base + len(chunk)))
    return offsets


async def test_keeps_the_latest_record_of_each_key_at_its_offset(tmp_path: Path) -> None:
    clock = FakeClock()
    log = open_log(tmp_path / "p", clock)
    rng = random.Random(1)
    payloads = [event(f"k{rng.randrange(10)}", i, n=i) for i in range(300)]
    payloads[50] = event(None, "no key", n=50)
    offsets = await publish(log, payloads, per_batch=3)
    appended = list(zip(offsets, payloads, strict=True))
    assert log.segment_count > 5
    before = read_all(log)

    result = await compact_partition(log, clock.time_ms())
    assert result.rewritten > 0 and result.removed > 0

    after = read_all(log)
    assert log.start_offset == 0 and log.end_offset == 300
    assert len(after) < len(before)
    by_offset = {o: p for o, _, p in before}
    for o, _, p in after:  # every record kept is the same record at the same offset
        assert by_offset[o] == p
    kept = {o for o, _, _ in after}
    assert 50 in kept  # no key: kept
    for key, (offset, _) in latest(appended).items():
        assert offset in kept, key
    # sealed segments hold at most one record per key; the active one is left alone
    sealed_end = log.compactable()[-1].next_offset
    keys = [orjson.loads(p)["partitionkey"] for o, _, p in after if o < sealed_end and o != 50]
    assert len(keys) == len(set(keys))
    await log.close()

    # the same after a restart: recovery reads the gaps, the indexes load
    log = open_log(tmp_path / "p", clock)
    assert read_all(log) == after
    assert not log.report.damaged and not log.damage
    assert len(log.report.rebuilt_indexes) == 1  # the active segment's only: the rest load
    check = check_partition(tmp_path / "p")
    assert not check.damage and check.torn is None and check.records == len(after)
    await log.close()


async def test_a_read_from_a_removed_offset_answers_the_next_kept_record(tmp_path: Path) -> None:
    clock = FakeClock()
    log = open_log(tmp_path / "p", clock)
    payloads = [event("a", i, n=i) if i % 10 else event("b", i, n=i) for i in range(200)]
    await publish(log, payloads)
    await compact_partition(log, clock.time_ms())
    kept = [o for o, _, _ in read_all(log)]
    gaps = [o for o in range(log.end_offset) if o not in set(kept)]
    assert gaps
    for o in gaps[:50]:
        got = log.read_now(o, max_records=1)
        assert got and got[0][0] == min(k for k in kept if k > o)
    # every offset is still a valid position, and reads in every step size agree
    for step in (1, 2, 5, 1000):
        assert [r[0] for r in read_all(log, 0, step)] == kept
    # offset_for_time still answers a kept record or the end
    assert log.offset_for_time_now(0) == kept[0]
    assert log.offset_for_time_now(clock.time_ms() + 1) == log.end_offset
    await log.close()


async def test_tombstones_stay_for_delete_retention_then_go(tmp_path: Path) -> None:
    clock = FakeClock()
    log = open_log(tmp_path / "p", clock, delete_retention_ms=HOUR)
    await publish(log, [event("gone", i, n=i) for i in range(20)])
    await publish(log, [event("gone", tombstone=True, n=20)])
    tomb = log.end_offset - 1
    await publish(log, [event("other", i, n=100 + i) for i in range(60)])
    await compact_partition(log, clock.time_ms())
    await compact_partition(log, clock.time_ms())
    kept = {o: orjson.loads(p) for o, _, p in read_all(log)}
    assert tomb in kept and "data" not in kept[tomb]
    assert not any(ev.get("partitionkey") == "gone" for o, ev in kept.items() if o != tomb)

    clock.now_ms += HOUR - 1
    await compact_partition(log, clock.time_ms())
    assert tomb in {o for o, _, _ in read_all(log)}  # not yet

    clock.now_ms += 1
    result = await compact_partition(log, clock.time_ms())
    assert result.removed >= 1
    kept = {o: orjson.loads(p) for o, _, p in read_all(log)}
    assert not any(ev.get("partitionkey") == "gone" for ev in kept.values())
    assert log.read_now(tomb, 1)[0][0] > tomb
    await log.close()


async def test_a_tombstone_waits_while_an_older_record_of_its_key_is_there(
    tmp_path: Path,
) -> None:
    """Removed before the older value, the tombstone would let that value come back."""
    clock = FakeClock(T0)
    log = open_log(tmp_path / "p", clock, delete_retention_ms=0)
    await publish(log, [event("k", 1, n=1)])
    await publish(log, [event("x", i, n=10 + i) for i in range(30)])
    await publish(log, [event("k", tombstone=True, n=2)])
    await publish(log, [event("y", i, n=50 + i) for i in range(30)])
    keys = keymap.scan_keys(
        [keymap.Span(s.path, s.base_offset, s.next_offset) for s in log.compactable()]
    )
    rules = keymap.Rules(keys, clock.time_ms(), 0, log.end_offset - 1)
    tomb = keys.latest["k"]
    assert keys.first["k"] == 0 and rules.keep(tomb, T0, event("k", tombstone=True))
    # a pass removes the value, the next one the tombstone
    await compact_partition(log, clock.time_ms())
    await compact_partition(log, clock.time_ms())
    assert not any(orjson.loads(p).get("partitionkey") == "k" for _, _, p in read_all(log))
    await log.close()


async def test_the_partitions_last_record_stays(tmp_path: Path) -> None:
    clock = FakeClock()
    log = open_log(tmp_path / "p", clock, delete_retention_ms=0)
    await publish(log, [event(f"k{i % 3}", i, n=i) for i in range(40)])
    await publish(log, [event("k0", tombstone=True, n=99)])
    log.roll()  # the active segment is empty: the tombstone is the last record
    clock.now_ms += 1
    await compact_partition(log, clock.time_ms())
    await compact_partition(log, clock.time_ms())
    last = log.end_offset - 1
    assert log.read_now(last, 1)[0][0] == last
    assert read_all(log)[-1][0] == last
    await log.close()


async def test_a_segment_with_nothing_to_remove_is_left_as_it_is(tmp_path: Path) -> None:
    clock = FakeClock()
    log = open_log(tmp_path / "p", clock)
    await publish(log, [event(f"k{i}", i, n=i) for i in range(100)])
    files = {p.name: p.stat().st_ino for p in (tmp_path / "p").iterdir()}
    result = await compact_partition(log, clock.time_ms())
    assert result.segments > 1 and result.rewritten == 0
    assert {p.name: p.stat().st_ino for p in (tmp_path / "p").iterdir()} == files
    await log.close()


async def test_records_in_large_batches_and_clock_steps_back(tmp_path: Path) -> None:
    clock = FakeClock()
    log = open_log(tmp_path / "p", clock, segment_bytes=64 * 1024)
    appended: list[tuple[int, bytes]] = []
    rng = random.Random(7)
    for round_ in range(30):
        clock.now_ms += rng.choice([-5000, 10, 1000])  # a clock that steps back now and then
        chunk = [event(f"k{rng.randrange(40)}", round_, n=round_ * 100 + i) for i in range(60)]
        offsets = await publish(log, chunk, per_batch=60)
        appended.extend(zip(offsets, chunk, strict=True))
    await compact_partition(log, clock.time_ms())
    after = read_all(log, step=50)
    kept = {o for o, _, _ in after}
    want = latest(appended)
    sealed_end = log.compactable()[-1].next_offset
    assert all(offset in kept for offset, _ in want.values())
    assert all(o in kept for o, _ in appended if o >= sealed_end)
    for seg in log.compactable():  # every batch's header spans its records' times
        for position, header in seg.batches():
            frame = os.pread(seg.fd, header.size, position)
            for _, ts, _ in fmt.decode_records(header, frame):
                assert header.first_ts <= ts <= header.last_ts
    await log.close()
    log = open_log(tmp_path / "p", clock, segment_bytes=64 * 1024)
    assert read_all(log, step=50) == after
    await log.close()


async def test_damage_in_a_segment_is_kept_as_it_is_and_recorded(tmp_path: Path) -> None:
    clock = FakeClock()
    log = open_log(tmp_path / "p", clock)
    await publish(log, [event(f"k{i % 4}", i, n=i) for i in range(120)])
    seg = log.compactable()[0]
    await log.close()
    # flip a byte in the payload of the segment's third batch
    raw = bytearray(seg.path.read_bytes())
    position = 0
    for _ in range(2):
        position += fmt.BatchHeader(raw[position : position + fmt.BATCH_HEADER_LEN]).size
    bad = fmt.BatchHeader(raw[position : position + fmt.BATCH_HEADER_LEN])
    raw[position + bad.size - 3] ^= 0xFF
    seg.path.write_bytes(bytes(raw))
    seg.index_path.unlink()  # so that recovery scans it and finds the damage

    log = open_log(tmp_path / "p", clock)
    [damage] = log.damage
    assert (damage.first_offset, damage.end_offset) == (bad.base_offset, bad.next_offset)
    before = read_all(log)
    await compact_partition(log, clock.time_ms())
    after = read_all(log)
    assert len(after) < len(before)
    [moved] = log.damage  # the same offsets lost, the bad bytes kept, at their new place
    assert (moved.first_offset, moved.end_offset, moved.length) == (
        damage.first_offset, damage.end_offset, damage.length,
    )
    data = Path(tmp_path / "p" / moved.segment).read_bytes()
    assert data[moved.position : moved.position + moved.length] == bytes(
        raw[damage.position : damage.position + damage.length]
    )
    await log.close()
    log = open_log(tmp_path / "p", clock)
    assert read_all(log) == after
    assert [(d.first_offset, d.end_offset) for d in log.damage] == [
        (damage.first_offset, damage.end_offset)
    ]
    check = check_partition(tmp_path / "p")
    assert [(d.first_offset, d.end_offset) for d in check.damage] == [
        (damage.first_offset, damage.end_offset)
    ]
    await log.close()


async def test_every_step_of_a_compaction_is_safe_to_die_at(tmp_path: Path) -> None:
    """The files as a crash after each step leaves them: the log reads the same."""
    clock = FakeClock()
    log = open_log(tmp_path / "p", clock)
    await publish(log, [event(f"k{i % 5}", i, n=i) for i in range(150)])
    want = latest([(o, p) for o, _, p in read_all(log)])
    seg = log.compactable()[0]
    part = keymap.Span(seg.path, seg.base_offset, seg.next_offset)
    keys = keymap.scan_keys([keymap.Span(s.path, s.base_offset, s.next_offset)
                                 for s in log.compactable()])
    rules = keymap.Rules(keys, clock.time_ms(), HOUR, log.end_offset - 1)
    await log.close()
    directory = tmp_path / "p"
    snapshots: list[dict[str, bytes]] = []

    def snap() -> None:
        snapshots.append({p.name: p.read_bytes() for p in directory.iterdir()})

    snap()
    done = compaction.rewrite(part, rules, 128)  # tmp files written, old indexes gone
    assert done is not None
    snap()
    os.replace(done.tmp_log, part.path)  # the new .log in place
    snap()
    compaction.place_indexes(done)
    snap()
    for i, files in enumerate(snapshots):
        crashed = tmp_path / f"crash{i}"
        crashed.mkdir()
        for name, data in files.items():
            (crashed / name).write_bytes(data)
        log = open_log(crashed, clock)
        got = read_all(log)
        assert not log.damage, i
        assert not list(crashed.glob("*" + compaction.TMP_SUFFIX))
        kept = {o for o, _, _ in got}
        assert all(o in kept for o, _ in want.values()), i
        await log.close()


def test_remove_leftovers(tmp_path: Path) -> None:
    (tmp_path / "00000000000000000000.log.compacting").write_bytes(b"x")
    (tmp_path / "00000000000000000000.log").write_bytes(b"")
    assert [p.name for p in remove_leftovers(tmp_path)] == ["00000000000000000000.log.compacting"]
    assert [p.name for p in tmp_path.iterdir()] == ["00000000000000000000.log"]


async def test_a_round_passes_over_a_partition_again_only_when_needed(tmp_path: Path) -> None:
    clock = FakeClock()
    log = open_log(tmp_path / "p", clock)
    await publish(log, [event(f"k{i % 5}", i, n=i) for i in range(100)])
    compactor = Compactor()
    assert await compactor.run_round([{0: log}], clock.time_ms()) > 0
    await compactor.run_round([{0: log}], clock.time_ms())  # the pass after a removal
    passes = compactor.passes
    assert await compactor.run_round([{0: log}], clock.time_ms()) == 0
    assert compactor.passes == passes  # nothing new: no pass
    await publish(log, [event(f"k{i % 5}", i, n=i) for i in range(100)])
    assert await compactor.run_round([{0: log}], clock.time_ms()) > 0
    await log.close()


@pytest.mark.parametrize("count", [0, 1, 3])
def test_compacted_batch_round_trip(count: int) -> None:
    records = [(10 + 2 * i, T0 + i, f"p{i}".encode()) for i in range(count)]
    frame = fmt.encode_compacted(10, 8, records, T0, T0 + 5)
    header = fmt.BatchHeader(frame[: fmt.BATCH_HEADER_LEN])
    assert header.compacted and header.records == count and header.next_offset == 18
    assert fmt.check_crc(header, frame)
    assert fmt.decode_records(header, frame) == records
    # a range: from an offset (one a compaction removed, too), at most so many
    assert fmt.decode_records(header, frame, 11, 1) == records[1:2]
    assert fmt.decode_records(header, frame, 12, -1) == records[1:]


async def test_a_linked_batch_is_kept_whole_until_every_part_is_settled(tmp_path: Path) -> None:
    """Another partition's recovery may look a linked part up (until all its parts lie
    in compactable segments): compacted before then, that partition would be cut."""
    from tidings.backends.embedded.storage import EmbeddedStorage
    from tidings.log.config import Retention

    compacted = Retention(compaction="key")
    cfg = LogConfig(segment_bytes=1024, index_interval=128)

    async def opened() -> tuple[EmbeddedStorage, PartitionLog, PartitionLog]:
        storage = EmbeddedStorage(tmp_path / "data", FsyncPolicy("always"), cfg)
        await storage.save_topic("t", {"partitions": 2})  # else the next open removes its files
        p0 = await storage.open_partition("t", 0, compacted)
        return storage, p0, await storage.open_partition("t", 1, compacted)

    storage, p0, p1 = await opened()
    bases = await storage.append_linked(
        "t", [(0, [event("a", 0, n=0)]), (1, [event("b", 0, n=1), event("b", 1, n=2)])]
    )
    link = p1.link_at(bases[1])
    assert link is not None
    for i in range(60):  # partition 1 rolls past its part; partition 0's stays active
        await p1.append([event("b", i + 2, n=10 + i)])
    assert p1.compactable() and not p0.compactable()
    assert await storage.compact(T0) > 0
    assert p1.link_at(bases[1]) == link  # copied as it was
    await storage.close()

    storage, p0, p1 = await opened()  # recovery checks the link of partition 0's part
    assert [r[0] for r in p0.read_now(0)] == [0]
    for i in range(60):
        await p0.append([event("a", i + 1, n=100 + i)])
    assert await storage.compact(T0) > 0
    await storage.compact(T0)
    assert p1.link_at(bases[1]) is None  # settled: compacted like any batch
    assert bases[1] not in {o for o, _, _ in read_all(p1)}  # "b" 0: not the latest
    await storage.close()
    storage, p0, p1 = await opened()
    assert {orjson.loads(p)["data"] for _, _, p in read_all(p1)} >= {61}
    await storage.close()


async def test_a_round_comes_back_for_a_tombstone_that_waited(tmp_path: Path) -> None:
    clock = FakeClock()
    log = open_log(tmp_path / "p", clock, delete_retention_ms=0)
    await publish(log, [event("k", 1, n=1)])
    await publish(log, [event("x", i, n=10 + i) for i in range(30)])
    await publish(log, [event("k", tombstone=True, n=2)])
    await publish(log, [event("y", i, n=50 + i) for i in range(30)])
    compactor = Compactor()
    await compactor.run_round([{0: log}], clock.time_ms())
    assert any(orjson.loads(p).get("partitionkey") == "k" for _, _, p in read_all(log))
    await compactor.run_round([{0: log}], clock.time_ms())  # due again at once
    assert not any(orjson.loads(p).get("partitionkey") == "k" for _, _, p in read_all(log))
    passes = compactor.passes
    await compactor.run_round([{0: log}], clock.time_ms())
    assert compactor.passes == passes
    await log.close()


async def test_retention_and_resume_positions_on_a_compacted_partition(tmp_path: Path) -> None:
    clock = FakeClock()
    log = open_log(tmp_path / "p", clock, retention_ms=HOUR)
    await publish(log, [event(f"k{i % 7}", i, n=i) for i in range(150)])
    clock.now_ms += 2 * HOUR
    await publish(log, [event(f"k{i % 7}", i, n=1000 + i) for i in range(150)])
    await compact_partition(log, clock.time_ms())
    kept = [o for o, _, _ in read_all(log)]
    # a resume position taken anywhere goes on with the records after it
    for position in range(0, log.end_offset, 17):
        assert [o for o, _, _ in read_all(log, position)] == [o for o in kept if o >= position]
    assert log.apply_retention_now(clock.time_ms()) > 0
    assert log.start_offset > 0
    assert [o for o, _, _ in read_all(log)] == [o for o in kept if o >= log.start_offset]
    await log.close()


async def test_a_rewrite_without_the_keys_of_the_scan_parses_them_again(tmp_path: Path) -> None:
    """Past MAX_CODES records (or a file not the one scanned), keys are read again."""
    clock = FakeClock()
    log = open_log(tmp_path / "p", clock)
    await publish(log, [event(f"k{i % 6}", i, n=i) for i in range(120)])
    spans = [keymap.Span(s.path, s.base_offset, s.next_offset) for s in log.compactable()]
    outputs = []
    for forget in (False, True):
        keys = keymap.scan_keys(spans)
        assert set(keys.codes) == {s.path for s in spans}
        if forget:
            keys.codes.clear()
        rules = keymap.Rules(keys, clock.time_ms(), HOUR, log.end_offset - 1)
        done = compaction.rewrite(spans[0], rules, 128)
        assert done is not None
        outputs.append((done.tmp_log.read_bytes(), done.removed, done.kept))
        done.discard()
    assert outputs[0] == outputs[1]
    await log.close()
