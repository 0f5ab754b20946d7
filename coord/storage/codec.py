"""WAL record framing: encode records, decode a segment, find valid data after damage.

On-disk layout (all integers little-endian)::

    segment = segment header (40 bytes) + frame*
    segment header:
        magic      8s   b"RCWAL\\x00\\x01\\n"
        version    u32  1
        reserved   u32  0
        index      u64  segment number (0, 1, 2, ... contiguous)
        first_seq  u64  sequence number of the segment's first frame
        crc        u32  zlib.crc32 of the 32 bytes above
        pad        4x
    frame = header (24 bytes) + payload (length bytes)
    frame header:
        magic      2s   b"\\xc5\\x7e"       (lets recovery re-synchronise after damage)
        type       u8   1..255
        flags      u8   0
        length     u32  payload length
        seq        u64  global sequence number: 1, 2, 3, ... across all segments
        data_crc   u32  zlib.crc32(payload)
        hdr_crc    u32  zlib.crc32 of the 20 header bytes above

A frame is *valid at a position* when its header CRC matches, its sequence number is the one
expected there, its payload lies inside the file and the payload CRC matches. The sequence
number is what stops stale bytes (an old frame, a payload that happens to contain a frame)
from being taken for the next record; the header CRC is what makes the length trustworthy
before the payload is read.

This module is pure: it works on bytes and never touches files.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

__all__ = [
    "ENTRY",
    "FRAME_HEADER_SIZE",
    "HARD_STATE",
    "MAX_PAYLOAD",
    "METADATA",
    "SEGMENT_HEADER_SIZE",
    "SNAPSHOT_MARKER",
    "DecodeResult",
    "Record",
    "damage_of_last_frame",
    "decode_frames",
    "decode_segment_header",
    "encode_frame",
    "encode_segment_header",
    "find_valid_frame",
]

ENTRY = 1
"""A Raft log entry (or an applied write); payload owned by the caller."""
HARD_STATE = 2
"""Raft hard state: term, vote, commit."""
SNAPSHOT_MARKER = 3
"""A snapshot was saved at (index, term); earlier log entries may be dropped."""
METADATA = 4
"""Node / cluster identity and other write-once facts."""

MAX_PAYLOAD = 256 * 1024 * 1024
"""Largest payload one record may carry (256 MiB)."""

_FRAME_MAGIC = b"\xc5\x7e"
_FRAME = struct.Struct("<2sBBIQII")
FRAME_HEADER_SIZE = _FRAME.size  # 24
_FRAME_CRC_SPAN = FRAME_HEADER_SIZE - 4

_SEG_MAGIC = b"RCWAL\x00\x01\n"
_SEG_VERSION = 1
_SEG = struct.Struct("<8sIIQQI4x")
SEGMENT_HEADER_SIZE = _SEG.size  # 40
_SEG_CRC_SPAN = 32


@dataclass(frozen=True, slots=True)
class Record:
    """One WAL record: a type tag (1..255) and an opaque payload.

    ``ENTRY``, ``HARD_STATE``, ``SNAPSHOT_MARKER`` and ``METADATA`` are the types the server
    uses; the WAL itself gives no type a meaning except through ``carry_over``.
    """

    type: int
    data: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.type <= 255:
            raise ValueError(f"record type must be in 1..255, got {self.type}")
        if len(self.data) > MAX_PAYLOAD:
            raise ValueError(f"record payload of {len(self.data)} bytes exceeds {MAX_PAYLOAD}")


def encode_frame(out: bytearray, seq: int, record: Record) -> None:
    """Append the frame for ``record`` with sequence number ``seq`` to ``out``."""
    data = record.data
    head = _FRAME.pack(_FRAME_MAGIC, record.type, 0, len(data), seq, zlib.crc32(data), 0)[
        :_FRAME_CRC_SPAN
    ]
    out += head
    out += zlib.crc32(head).to_bytes(4, "little")
    out += data


def encode_segment_header(index: int, first_seq: int) -> bytes:
    """The 40-byte header that starts segment number ``index``."""
    head = _SEG.pack(_SEG_MAGIC, _SEG_VERSION, 0, index, first_seq, 0)[:_SEG_CRC_SPAN]
    return head + zlib.crc32(head).to_bytes(4, "little") + b"\0" * 4


def decode_segment_header(buf: bytes | memoryview) -> tuple[int, int] | str:
    """``(index, first_seq)`` from a segment header, or a string saying what is wrong."""
    if len(buf) < SEGMENT_HEADER_SIZE:
        return f"segment header truncated ({len(buf)} of {SEGMENT_HEADER_SIZE} bytes)"
    magic, version, _reserved, index, first_seq, crc = _SEG.unpack_from(buf, 0)
    if magic != _SEG_MAGIC:
        return "bad segment magic"
    if zlib.crc32(buf[:_SEG_CRC_SPAN]) != crc:
        return "segment header CRC mismatch"
    if version != _SEG_VERSION:
        return f"unsupported segment version {version}"
    return int(index), int(first_seq)


@dataclass(frozen=True, slots=True)
class DecodeResult:
    """What :func:`decode_frames` found.

    ``records`` are the valid frames from ``start`` up to ``end`` (exclusive), in order, with
    consecutive sequence numbers starting at the expected one. ``problem`` is ``None`` when the
    buffer ended exactly at a frame boundary; otherwise it says why the frame at ``end`` is not
    valid (and whether it merely runs past the end of the buffer: ``truncated``).
    """

    records: list[Record]
    end: int
    next_seq: int
    problem: str | None
    truncated: bool


def _check_frame(buf: bytes | memoryview, pos: int, seq: int | None) -> tuple[int, int] | str:
    """Validate the frame at ``pos``. ``seq``: required sequence number, or ``None`` = any.

    Returns ``(type, length)`` or a reason. A reason starting with ``"truncated"`` means the
    frame runs past the end of ``buf`` (a torn write looks like this).
    """
    size = len(buf)
    if size - pos < FRAME_HEADER_SIZE:
        return f"truncated frame header ({size - pos} of {FRAME_HEADER_SIZE} bytes)"
    magic, rtype, flags, length, fseq, data_crc, hdr_crc = _FRAME.unpack_from(buf, pos)
    if magic != _FRAME_MAGIC:
        return "bad frame magic"
    if zlib.crc32(buf[pos : pos + _FRAME_CRC_SPAN]) != hdr_crc:
        return "frame header CRC mismatch"
    if rtype == 0 or flags != 0 or length > MAX_PAYLOAD:
        return f"invalid frame header (type={rtype} flags={flags} length={length})"
    if seq is not None and fseq != seq:
        return f"unexpected sequence number {fseq} (expected {seq})"
    start = pos + FRAME_HEADER_SIZE
    if start + length > size:
        return f"truncated payload ({size - start} of {length} bytes)"
    if zlib.crc32(buf[start : start + length]) != data_crc:
        return "payload CRC mismatch"
    return int(rtype), int(length)


def decode_frames(buf: bytes | memoryview, start: int, first_seq: int) -> DecodeResult:
    """Decode consecutive valid frames from ``buf[start:]``, expecting ``first_seq`` first.

    Stops at the end of ``buf`` or at the first frame that is not valid there.
    """
    with memoryview(buf) as view:  # released on any error too (``buf`` may be an mmap)
        records: list[Record] = []
        pos = start
        seq = first_seq
        size = len(view)
        while pos < size:
            checked = _check_frame(view, pos, seq)
            if isinstance(checked, str):
                return DecodeResult(records, pos, seq, checked, checked.startswith("truncated"))
            rtype, length = checked
            body = pos + FRAME_HEADER_SIZE
            records.append(Record(rtype, bytes(view[body : body + length])))
            pos = body + length
            seq += 1
        return DecodeResult(records, pos, seq, None, False)


def find_valid_frame(buf: bytes | memoryview, start: int, min_seq: int) -> tuple[int, int] | None:
    """The first ``(offset, seq)`` at or after ``start`` holding a fully valid frame whose
    sequence number is at least ``min_seq``; ``None`` if there is none.

    Used after damage: a valid later frame means the damage is *not* a torn tail. Candidates
    are found by their magic bytes (a C-speed search), then fully checked.
    """
    data = bytes(buf) if isinstance(buf, memoryview) else buf
    pos = data.find(_FRAME_MAGIC, start)
    while pos != -1:
        checked = _check_frame(data, pos, None)
        if not isinstance(checked, str):
            fseq = int(_FRAME.unpack_from(data, pos)[4])
            if fseq >= min_seq:
                return pos, fseq
        pos = data.find(_FRAME_MAGIC, pos + 1)
    return None


SECTOR = 512
"""The unit a disk persists atomically: a crash can leave any sector of a write unwritten
(zeros in a preallocated file), as etcd's WAL decoder also assumes (``isTornEntry``)."""


def _zero_sector_chunk(buf: bytes | memoryview, start: int, end: int) -> bool:
    """Whether some sector-aligned piece of ``buf[start:end]`` is all zeros."""
    pos = start
    while pos < end:
        stop = min(end, (pos // SECTOR + 1) * SECTOR)
        chunk = bytes(buf[pos:stop])
        if chunk.count(0) == len(chunk):
            return True
        pos = stop
    return False


def damage_of_last_frame(
    buf: bytes | memoryview, pos: int, seq: int, last_data: int
) -> str | None:
    """Whether the invalid frame at ``pos`` — the last thing in the log: no valid frame
    follows, and ``last_data`` is the offset of the segment's last non-zero byte — is a torn
    write (``None``) or a damaged record (the reason).

    Torn means its bytes end early, as a crash mid-write leaves them: the file ends inside
    the frame, or its last bytes (or any sector of it) are zeros that were never written, or
    what is there is not a frame of this log at all (garbage, a stale frame with another
    sequence number). Damaged means a record that was written whole — its header is the
    expected frame's, its last byte is written — yet fails its checksum: a flipped bit,
    not a crash, and dropping it could drop an acknowledged write.
    """
    size = len(buf)
    head_end = pos + FRAME_HEADER_SIZE
    if head_end > size or last_data < head_end - 1:
        return None  # the header itself was cut short
    magic, rtype, flags, length, fseq, data_crc, hdr_crc = _FRAME.unpack_from(buf, pos)
    hdr_ok = zlib.crc32(buf[pos : pos + _FRAME_CRC_SPAN]) == hdr_crc
    sane = rtype != 0 and flags == 0 and length <= MAX_PAYLOAD
    if hdr_ok and magic == _FRAME_MAGIC and sane:
        if fseq != seq:
            return None  # a stale frame left from earlier data, not the next record
        end = head_end + length
        if end > size or last_data < end - 1 or _zero_sector_chunk(buf, pos, end):
            return None
        return f"record {seq} is complete but its payload CRC does not match"
    # The header fails its checks. It is the expected record with a damaged header when
    # the magic is the only damage, or the sequence number is right, or the payload it
    # describes matches its CRC; anything else is not a frame of this log.
    fixed = bytes(_FRAME_MAGIC) + bytes(buf[pos + 2 : pos + _FRAME_CRC_SPAN])
    ours = (
        (magic != _FRAME_MAGIC and zlib.crc32(fixed) == hdr_crc and fseq == seq)
        or (magic == _FRAME_MAGIC and fseq == seq)
        or (
            magic == _FRAME_MAGIC
            and length <= MAX_PAYLOAD
            and head_end + length <= size
            and zlib.crc32(buf[head_end : head_end + length]) == data_crc
        )
    )
    if not ours or _zero_sector_chunk(buf, pos, min(size, last_data + 1)):
        return None
    return f"the header of record {seq} is damaged (its bytes are all written)"
