"""Damage beside linked batches: a linked batch is a good batch to step over damage to,
and a linked publish whole in every partition is kept when damage sits before a part."""

from __future__ import annotations

from pathlib import Path

from tests.log.test_corruption import flip
from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.log import format as fmt
from tidings.log.check import check_partition
from tidings.log.config import Retention

TOPIC = "t"


def write_batch(directory: Path, base: int, payloads: list[bytes], link: bytes = b"") -> int:
    """Append one batch to the segment at offset 0; its byte position."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / fmt.segment_name(0, ".log"), "ab") as f:
        position = f.tell()
        f.write(fmt.encode_batch(base, payloads, 1_000, link))
    return position


async def test_damage_before_the_parts_of_a_whole_linked_batch_cuts_nothing(
    tmp_path: Path,
) -> None:
    """Each partition has a bad batch just before its part of a linked publish (in
    partition 0 its length is flipped, so the next good batch is found by its magic
    byte alone): recovery steps over the damage to the linked batch, finds the publish
    whole, and keeps it and what follows it; only the bad batches' records are lost."""
    setup = EmbeddedStorage(tmp_path)
    await setup.save_topic(TOPIC, {"partitions": 2})
    await setup.close()
    topic = tmp_path / "topics" / TOPIC
    link = fmt.encode_link(fmt.Link(5, ((0, 2, 1), (1, 2, 2))))
    write_batch(topic / "0", 0, [b"a0"])
    bad0 = write_batch(topic / "0", 1, [b"lost0"])
    write_batch(topic / "0", 2, [b"l0"], link)
    write_batch(topic / "1", 0, [b"b0"])
    bad1 = write_batch(topic / "1", 1, [b"lost1"])
    write_batch(topic / "1", 2, [b"l1", b"l2"], link)
    write_batch(topic / "1", 4, [b"after"])
    flip(topic / "0" / fmt.segment_name(0, ".log"), bad0 + 2, 6)  # a length past the end
    flip(topic / "1" / fmt.segment_name(0, ".log"), bad1 + fmt.BATCH_HEADER_LEN + 9)  # payload

    # The offline check agrees: damage, no torn tail.
    for p, bad in ((0, bad0), (1, bad1)):
        found = check_partition(topic / str(p))
        assert found.torn is None
        assert [(d.position, d.first_offset, d.end_offset) for d in found.damage] == [(bad, 1, 2)]

    storage = EmbeddedStorage(tmp_path)
    try:
        p0 = await storage.open_partition(TOPIC, 0, Retention())
        p1 = await storage.open_partition(TOPIC, 1, Retention())
        assert p0.report.truncated == [] and p1.report.truncated == []
        assert [(r[0], r[2]) for r in p0.read_now(0)] == [(0, b"a0"), (2, b"l0")]
        assert [(r[0], r[2]) for r in p1.read_now(0)] == [
            (0, b"b0"),
            (2, b"l1"),
            (3, b"l2"),
            (4, b"after"),
        ]
        assert [(d.position, d.first_offset, d.end_offset) for d in p0.damage] == [(bad0, 1, 2)]
        assert [(d.position, d.first_offset, d.end_offset) for d in p1.damage] == [(bad1, 1, 2)]
        assert await p0.append([b"next"]) == 3
        assert await p1.append([b"next"]) == 5
    finally:
        await storage.close()


async def test_a_damaged_part_of_a_linked_batch_costs_its_own_records_only(
    tmp_path: Path,
) -> None:
    """Partition 1's part of a linked publish is damaged, with a good batch after it:
    it was written whole once, so the publish is not torn. The part's records are
    lost and named; the other part and everything after both are kept."""
    setup = EmbeddedStorage(tmp_path)
    await setup.save_topic(TOPIC, {"partitions": 2})
    await setup.close()
    topic = tmp_path / "topics" / TOPIC
    link = fmt.encode_link(fmt.Link(6, ((0, 1, 1), (1, 1, 2))))
    write_batch(topic / "0", 0, [b"a0"])
    write_batch(topic / "0", 1, [b"l0"], link)
    write_batch(topic / "0", 2, [b"a2"])
    write_batch(topic / "1", 0, [b"b0"])
    part = write_batch(topic / "1", 1, [b"l1", b"l2"], link)
    write_batch(topic / "1", 3, [b"b3"])
    flip(topic / "1" / fmt.segment_name(0, ".log"), part + fmt.BATCH_HEADER_LEN + 3)

    storage = EmbeddedStorage(tmp_path)
    try:
        p0 = await storage.open_partition(TOPIC, 0, Retention())
        p1 = await storage.open_partition(TOPIC, 1, Retention())
        assert p0.report.truncated == [] and p1.report.truncated == []
        assert [(r[0], r[2]) for r in p0.read_now(0)] == [(0, b"a0"), (1, b"l0"), (2, b"a2")]
        assert [(r[0], r[2]) for r in p1.read_now(0)] == [(0, b"b0"), (3, b"b3")]
        assert [(d.position, d.first_offset, d.end_offset) for d in p1.damage] == [(part, 1, 3)]
        assert list(topic.glob("*/*.cut-*")) == []
        assert await p0.append([b"next"]) == 3
        assert await p1.append([b"next"]) == 4
    finally:
        await storage.close()
