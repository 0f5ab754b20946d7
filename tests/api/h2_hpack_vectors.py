"""Shared by the HPACK tests (test_h2_hpack*.py): RFC 7541 Appendix C.3's requests and
header blocks, and readers of a decoder's dynamic table."""

from __future__ import annotations

from coord.rpc.h2.hpack import STATIC_TABLE, Decoder, HpackError, encode_indexed

Header = tuple[bytes, bytes]


def hex_bytes(text: str) -> bytes:
    return bytes.fromhex(text)  # whitespace between the groups is ignored


def dynamic(decoder: Decoder) -> list[Header]:
    """The decoder's dynamic table, newest entry first, read through indexed fields only
    (an indexed field never changes the table)."""
    entries: list[Header] = []
    index = len(STATIC_TABLE) + 1
    while True:
        try:
            entries.extend(decoder.decode(encode_indexed(index)))
        except HpackError:
            return entries
        index += 1


def entry_size(entries: list[Header]) -> int:
    return sum(len(name) + len(value) + 32 for name, value in entries)


C2_2 = "040c 2f73 616d 706c 652f 7061 7468"
"""RFC 7541 C.2.2: a literal without indexing, indexed name (``:path /sample/path``)."""

REQUEST_1 = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
              (b":authority", b"www.example.com")]
REQUEST_2 = [*REQUEST_1, (b"cache-control", b"no-cache")]
REQUEST_3 = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/index.html"),
              (b":authority", b"www.example.com"), (b"custom-key", b"custom-value")]
AUTHORITY = (b":authority", b"www.example.com")
NO_CACHE = (b"cache-control", b"no-cache")
CUSTOM = (b"custom-key", b"custom-value")
REQUESTS: list[tuple[list[Header], list[Header], int]] = [
    (REQUEST_1, [AUTHORITY], 57),
    (REQUEST_2, [NO_CACHE, AUTHORITY], 110),
    (REQUEST_3, [CUSTOM, NO_CACHE, AUTHORITY], 164),
]
C3_BLOCKS = [
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
]
