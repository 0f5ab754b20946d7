"""HPACK (RFC 7541) for our HTTP/2 gRPC server: the decoder must read every header block a
client's encoder may send (dynamic table, Huffman strings) and reject malformed ones with
HpackError (a COMPRESSION_ERROR), and the server's literal-only blocks must decode back to
what was meant without touching the client's decoder table.

The byte strings of the RFC vectors are typed from RFC 7541 Appendix C."""

from __future__ import annotations

import pytest

from coord.rpc.h2.hpack import (
    STATIC_TABLE,
    Decoder,
    HpackError,
    encode_indexed,
)
from tests.api.h2_hpack_vectors import (
    C2_2,
    C3_BLOCKS,
    REQUESTS,
    Header,
    dynamic,
    entry_size,
    hex_bytes,
)

# --- RFC 7541 Appendix C.2: one header field per block, fresh decoder each -----------------

C2 = [
    pytest.param(  # C.2.1 literal with incremental indexing, new name
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        (b"custom-key", b"custom-header"), [(b"custom-key", b"custom-header")], 55,
        id="C.2.1"),
    pytest.param(  # C.2.2 literal without indexing, indexed name
        C2_2, (b":path", b"/sample/path"), [], 0, id="C.2.2"),
    pytest.param(  # C.2.3 literal never indexed, new name
        "1008 7061 7373 776f 7264 0673 6563 7265 74",
        (b"password", b"secret"), [], 0, id="C.2.3"),
    pytest.param("82", (b":method", b"GET"), [], 0, id="C.2.4"),  # indexed field
]


@pytest.mark.parametrize(("block", "header", "table", "size"), C2)
def test_rfc_c2_single_fields(block: str, header: Header, table: list[Header],
                              size: int) -> None:
    """Each field representation decodes, and only incremental indexing adds an entry."""
    decoder = Decoder()
    assert decoder.decode(hex_bytes(block)) == [header]
    assert dynamic(decoder) == table
    assert decoder.table_size == size


# --- C.3 / C.4: three requests on one connection ---------------------------------------------

C4_BLOCKS = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
]


@pytest.mark.parametrize("blocks", [pytest.param(C3_BLOCKS, id="C.3-plain"),
                                    pytest.param(C4_BLOCKS, id="C.4-huffman")])
def test_rfc_requests_share_one_dynamic_table(blocks: list[str]) -> None:
    """Later requests on a connection refer to entries earlier ones inserted; the table's
    contents and size follow the RFC after every block."""
    decoder = Decoder()
    for block, (headers, table, size) in zip(blocks, REQUESTS, strict=True):
        assert decoder.decode(hex_bytes(block)) == headers
        assert dynamic(decoder) == table
        assert decoder.table_size == size


# --- C.5 / C.6: three responses with a 256-byte table (evictions) ----------------------------

_DATE_21 = (b"date", b"Mon, 21 Oct 2013 20:13:21 GMT")
_DATE_22 = (b"date", b"Mon, 21 Oct 2013 20:13:22 GMT")
_PRIVATE = (b"cache-control", b"private")
_LOCATION = (b"location", b"https://www.example.com")
_GZIP = (b"content-encoding", b"gzip")
_COOKIE = (b"set-cookie", b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")
RESPONSES: list[tuple[list[Header], list[Header], int]] = [
    ([(b":status", b"302"), _PRIVATE, _DATE_21, _LOCATION],
     [_LOCATION, _DATE_21, _PRIVATE, (b":status", b"302")], 222),
    ([(b":status", b"307"), _PRIVATE, _DATE_21, _LOCATION],
     [(b":status", b"307"), _LOCATION, _DATE_21, _PRIVATE], 222),
    ([(b":status", b"200"), _PRIVATE, _DATE_22, _LOCATION, _GZIP, _COOKIE],
     [_COOKIE, _GZIP, _DATE_22], 215),
]
C5_BLOCKS = [
    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133"
    " 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70"
    " 6c65 2e63 6f6d",
    "4803 3330 37c1 c0bf",
    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d"
    " 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049"
    " 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e"
    " 3d31",
]
C6_BLOCKS = [
    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6"
    " 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    "4883 640e ffc1 c0bf",
    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab"
    " 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f"
    " 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
]


@pytest.mark.parametrize("blocks", [pytest.param(C5_BLOCKS, id="C.5-plain"),
                                    pytest.param(C6_BLOCKS, id="C.6-huffman")])
def test_rfc_responses_evict_from_a_256_byte_table(blocks: list[str]) -> None:
    """With a 256-byte table, inserts evict the oldest entries exactly as the RFC shows, and
    indices keep resolving to the right entries after the evictions."""
    decoder = Decoder(max_table_size=256)
    for block, (headers, table, size) in zip(blocks, RESPONSES, strict=True):
        assert decoder.decode(hex_bytes(block)) == headers
        assert dynamic(decoder) == table
        assert decoder.table_size == size == entry_size(table)


def test_static_table_matches_rfc_appendix_a() -> None:
    """Indexed fields 1..61 are RFC 7541 Appendix A (spot checks at both ends and the entries
    gRPC uses), and index 62 is the first dynamic entry, not a static one."""
    assert len(STATIC_TABLE) == 61
    decoder = Decoder()
    expected = {
        1: (b":authority", b""), 2: (b":method", b"GET"), 3: (b":method", b"POST"),
        4: (b":path", b"/"), 7: (b":scheme", b"https"), 8: (b":status", b"200"),
        14: (b":status", b"500"), 16: (b"accept-encoding", b"gzip, deflate"),
        31: (b"content-type", b""), 58: (b"user-agent", b""), 61: (b"www-authenticate", b""),
    }
    for index, header in expected.items():
        assert decoder.decode(encode_indexed(index)) == [header]
    with pytest.raises(HpackError):
        decoder.decode(encode_indexed(62))
