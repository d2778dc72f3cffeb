"""The batch byte layout: encode, decode, and every way a batch can be refused."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.log import format as fmt


def _header(frame: bytes) -> fmt.BatchHeader:
    return fmt.BatchHeader(frame[: fmt.BATCH_HEADER_LEN])


def _rewrite(frame: bytes, fmt_char: str, at: int, value: int) -> bytes:
    """``frame`` with one little-endian field at ``at`` replaced by ``value``."""
    out = bytearray(frame)
    struct.pack_into("<" + fmt_char, out, at, value)
    return bytes(out)


# Byte positions of the header fields, from the layout in format.py.
LENGTH_AT, CRC_AT, BASE_AT, COUNT_AT, MAGIC_AT = 0, 4, 8, 16, 36


@given(
    base=st.integers(0, 2**63),
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=20),
    ts=st.integers(-(2**62), 2**62),
)
def test_round_trip(base: int, payloads: list[bytes], ts: int) -> None:
    frame = fmt.encode_batch(base, payloads, ts)
    header = _header(frame)
    assert header.size == len(frame)
    assert header.base_offset == base
    assert header.count == len(payloads)
    assert header.next_offset == base + len(payloads)
    assert header.first_ts == header.last_ts == ts
    assert fmt.check_crc(header, frame)
    assert fmt.decode_records(header, frame) == [(base + i, ts, p) for i, p in enumerate(payloads)]


@given(
    payloads=st.lists(st.binary(max_size=50), min_size=1, max_size=20),
    first=st.integers(0, 30),
    limit=st.integers(-1, 25),
)
def test_a_range_of_a_batch_is_the_same_records_as_the_whole_cut(
    payloads: list[bytes], first: int, limit: int
) -> None:
    frame = fmt.encode_batch(5, payloads, 1000)
    header = _header(frame)
    whole = fmt.decode_records(header, frame)
    got = fmt.decode_records(header, frame, 5 + first, limit)
    wanted = [r for r in whole if r[0] >= 5 + first]
    assert got == (wanted if limit < 0 else wanted[:limit])


def test_a_range_of_a_batch_still_checks_the_framing_of_every_record() -> None:
    # The fault lies past the one record asked for: it is found all the same.
    frame = fmt.encode_batch(0, [b"abc", b"de"], 1)
    frame = _with_good_crc(_rewrite(frame, "I", COUNT_AT, 1))
    with pytest.raises(ValueError, match="left over"):
        fmt.decode_records(_header(frame), frame, 0, 1)
    frame = fmt.encode_batch(0, [b"abc", b"de", b"f"], 1)
    size_at = fmt.BATCH_HEADER_LEN + 2 * fmt.RECORD_HEADER_LEN + 5 + 4
    frame = _with_good_crc(_rewrite(frame, "I", size_at, 9))
    with pytest.raises(ValueError, match="payload past the end"):
        fmt.decode_records(_header(frame), frame, 0, 1)


def test_layout_matches_the_documented_sizes() -> None:
    frame = fmt.encode_batch(7, [b"abc", b""], 1000)
    assert len(frame) == fmt.BATCH_HEADER_LEN + 2 * fmt.RECORD_HEADER_LEN + 3
    length, crc, base, count, first_ts, last_ts, magic, flags, reserved = struct.unpack_from(
        fmt.BATCH_HEADER, frame
    )
    assert length == len(frame) - fmt.LENGTH_FIELD_LEN
    assert (base, count, first_ts, last_ts) == (7, 2, 1000, 1000)
    assert (magic, flags, reserved) == (fmt.FORMAT_VERSION, 0, 0)
    assert crc == zlib.crc32(frame[fmt.CRC_START :])


def test_decode_accepts_a_memoryview_inside_a_larger_buffer() -> None:
    frame = fmt.encode_batch(3, [b"x" * 10, b"y"], 5)
    buf = memoryview(b"\0" * 17 + frame + b"trailing")
    batch = buf[17 : 17 + len(frame)]
    header = _header(bytes(batch))
    assert fmt.check_crc(header, batch)
    assert [r[2] for r in fmt.decode_records(header, batch)] == [b"x" * 10, b"y"]


def test_segment_names_sort_as_offsets() -> None:
    names = [fmt.segment_name(n, ".log") for n in (0, 9, 10, 4096, 2**63)]
    assert names == sorted(names)
    assert fmt.segment_name(4096, ".index") == "00000000000000004096.index"


@pytest.mark.parametrize("magic", [0, 2, 255])
def test_bad_magic_is_refused(magic: int) -> None:
    frame = _rewrite(fmt.encode_batch(0, [b"a"], 1), "B", MAGIC_AT, magic)
    with pytest.raises(ValueError, match="magic"):
        _header(frame)


def test_zero_count_is_refused() -> None:
    frame = _rewrite(fmt.encode_batch(0, [b"a"], 1), "I", COUNT_AT, 0)
    with pytest.raises(ValueError, match="no records"):
        _header(frame)


@pytest.mark.parametrize(
    "length",
    [0, fmt.BATCH_HEADER_LEN - fmt.LENGTH_FIELD_LEN - 1, fmt.MAX_BATCH_BYTES + 1, 2**32 - 1],
)
def test_bad_length_is_refused(length: int) -> None:
    frame = _rewrite(fmt.encode_batch(0, [b"a"], 1), "I", LENGTH_AT, length)
    with pytest.raises(ValueError, match="length"):
        _header(frame)


@given(data=st.data())
def test_any_flipped_bit_fails_the_crc_or_the_header(data: st.DataObject) -> None:
    payloads = data.draw(st.lists(st.binary(max_size=50), min_size=1, max_size=5))
    frame = fmt.encode_batch(data.draw(st.integers(0, 2**40)), payloads, 123)
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    bad = bytearray(frame)
    bad[bit // 8] ^= 1 << (bit % 8)
    try:
        header = _header(bytes(bad))
    except ValueError:
        return  # refused by the header checks
    assert header.size > len(bad) or not fmt.check_crc(header, bytes(bad))


def test_flipped_payload_bit_fails_crc() -> None:
    frame = bytearray(fmt.encode_batch(0, [b"hello", b"world"], 1))
    frame[-1] ^= 0x01
    header = _header(bytes(frame))
    assert not fmt.check_crc(header, frame)


def test_flipped_crc_bit_fails_crc() -> None:
    frame = bytearray(fmt.encode_batch(0, [b"hello"], 1))
    frame[CRC_AT] ^= 0x80
    assert not fmt.check_crc(_header(bytes(frame)), frame)


def test_flipped_base_offset_bit_fails_crc() -> None:
    frame = bytearray(fmt.encode_batch(0, [b"hello"], 1))
    frame[BASE_AT + 3] ^= 0x10
    assert not fmt.check_crc(_header(bytes(frame)), frame)


def _with_good_crc(frame: bytes) -> bytes:
    """Recompute the CRC so that only the framing is wrong."""
    crc = zlib.crc32(frame[fmt.CRC_START :])
    return _rewrite(frame, "I", CRC_AT, crc)


def test_record_size_past_the_batch_is_refused() -> None:
    frame = fmt.encode_batch(0, [b"abc"], 1)
    size_at = fmt.BATCH_HEADER_LEN + 4
    frame = _with_good_crc(_rewrite(frame, "I", size_at, 4))
    header = _header(frame)
    assert fmt.check_crc(header, frame)
    with pytest.raises(ValueError, match="payload past the end"):
        fmt.decode_records(header, frame)


def test_more_records_than_the_batch_holds_is_refused() -> None:
    frame = fmt.encode_batch(0, [b"abc"], 1)
    frame = _with_good_crc(_rewrite(frame, "I", COUNT_AT, 2))
    header = _header(frame)
    assert fmt.check_crc(header, frame)
    with pytest.raises(ValueError, match="record header past the end"):
        fmt.decode_records(header, frame)


def test_record_header_cut_by_the_batch_end_is_refused() -> None:
    # two records, the second with an empty payload, then drop 4 bytes of its header
    frame = fmt.encode_batch(0, [b"abc", b""], 1)[:-4]
    frame = _rewrite(frame, "I", LENGTH_AT, len(frame) - fmt.LENGTH_FIELD_LEN)
    frame = _with_good_crc(frame)
    header = _header(frame)
    with pytest.raises(ValueError, match="record header past the end"):
        fmt.decode_records(header, frame)


def test_bytes_left_over_after_the_records_are_refused() -> None:
    frame = fmt.encode_batch(0, [b"abc", b"de"], 1)
    frame = _with_good_crc(_rewrite(frame, "I", COUNT_AT, 1))
    header = _header(frame)
    with pytest.raises(ValueError, match="left over"):
        fmt.decode_records(header, frame)


def test_record_timestamps_are_deltas_from_first_ts() -> None:
    frame = fmt.encode_batch(10, [b"a", b"b"], 1000)
    second_delta_at = fmt.BATCH_HEADER_LEN + fmt.RECORD_HEADER_LEN + 1
    frame = _with_good_crc(_rewrite(frame, "I", second_delta_at, 25))
    header = _header(frame)
    assert fmt.decode_records(header, frame) == [(10, 1000, b"a"), (11, 1025, b"b")]
