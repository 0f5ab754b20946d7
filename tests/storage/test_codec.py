"""Record framing: property tests for encode/decode, truncation and re-synchronisation."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from coord.storage.codec import (
    FRAME_HEADER_SIZE,
    Record,
    decode_frames,
    decode_segment_header,
    encode_frame,
    encode_segment_header,
    find_valid_frame,
)

records_st = st.lists(
    st.builds(Record, st.integers(1, 255), st.binary(max_size=300)), min_size=1, max_size=12
)


def encode_all(records: list[Record], first_seq: int) -> bytes:
    out = bytearray()
    for i, rec in enumerate(records):
        encode_frame(out, first_seq + i, rec)
    return bytes(out)


@given(records_st, st.integers(1, 2**40))
def test_roundtrip(records: list[Record], first_seq: int) -> None:
    """Encoded frames decode to the same records with no problem reported."""
    blob = encode_all(records, first_seq)
    result = decode_frames(blob, 0, first_seq)
    assert result.records == records
    assert result.problem is None and result.end == len(blob)
    assert result.next_seq == first_seq + len(records)


@settings(max_examples=200)
@given(records_st, st.data())
def test_any_truncation_decodes_a_prefix(records: list[Record], data: st.DataObject) -> None:
    """Cutting the bytes anywhere yields exactly the frames that fit, and a truncation
    problem unless the cut is on a frame boundary."""
    blob = encode_all(records, 1)
    cut = data.draw(st.integers(0, len(blob) - 1))
    result = decode_frames(blob[:cut], 0, 1)
    boundaries = [0]
    for rec in records:
        boundaries.append(boundaries[-1] + FRAME_HEADER_SIZE + len(rec.data))
    whole = max(i for i, b in enumerate(boundaries) if b <= cut)
    assert result.records == records[:whole]
    assert result.end == boundaries[whole]
    assert (result.problem is None) == (cut == boundaries[whole])
    if result.problem is not None:
        assert result.truncated
        assert find_valid_frame(blob[:cut], result.end + 1, result.next_seq) is None


@given(records_st)
def test_wrong_first_sequence_is_rejected(records: list[Record]) -> None:
    """Frames are only valid at their own sequence number."""
    blob = encode_all(records, 10)
    result = decode_frames(blob, 0, 11)
    assert result.records == [] and result.problem is not None
    assert "sequence" in result.problem


@given(records_st)
def test_find_valid_frame_respects_min_seq(records: list[Record]) -> None:
    """Re-synchronisation finds the next frame at or above min_seq, never an older one."""
    blob = encode_all(records, 5)
    assert find_valid_frame(blob, 0, 5) == (0, 5)
    assert find_valid_frame(blob, 0, 5 + len(records)) is None
    if len(records) > 1:
        second = FRAME_HEADER_SIZE + len(records[0].data)
        assert find_valid_frame(blob, 1, 5) == (second, 6)


@given(st.integers(0, 2**63), st.integers(1, 2**63))
def test_segment_header_roundtrip(index: int, first_seq: int) -> None:
    """Segment headers round-trip and any single flipped bit is detected."""
    head = encode_segment_header(index, first_seq)
    assert decode_segment_header(head) == (index, first_seq)
    for i in range(32):
        bad = bytearray(head)
        bad[i] ^= 0x10
        assert isinstance(decode_segment_header(bytes(bad)), str)
