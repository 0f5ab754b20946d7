"""HPACK (RFC 7541) pieces for our HTTP/2 gRPC server, continued from test_h2_hpack.py:
Huffman coding (Appendix B), integers (5.1), every decoding error, dynamic table size
updates, and the server's literal-only encoder helpers."""

from __future__ import annotations

import random

import pytest

from coord.rpc.h2 import hpack
from coord.rpc.h2.hpack import (
    STATIC_TABLE,
    Decoder,
    HpackError,
    decode_int,
    encode_indexed,
    encode_int,
    encode_literal,
    encode_literal_indexed_name,
    huffman_decode,
    huffman_encode,
)
from tests.api.h2_hpack_vectors import (
    AUTHORITY,
    C2_2,
    C3_BLOCKS,
    CUSTOM,
    NO_CACHE,
    REQUEST_1,
    Header,
    dynamic,
    hex_bytes,
)

# --- Huffman (Appendix B) --------------------------------------------------------------------

HUFFMAN_VECTORS = [  # string literals of C.4 and C.6
    (b"www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
    (b"no-cache", "a8eb 1064 9cbf"),
    (b"custom-key", "25a8 49e9 5ba9 7d7f"),
    (b"custom-value", "25a8 49e9 5bb8 e8b4 bf"),
    (b"302", "6402"),
    (b"307", "640e ff"),
    (b"private", "aec3 771a 4b"),
    (b"Mon, 21 Oct 2013 20:13:21 GMT",
     "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff"),
    (b"https://www.example.com", "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3"),
    (b"gzip", "9bd9 ab"),
    (b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
     "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587"
     " 3160 65c0 03ed 4ee5 b106 3d50 07"),
]


@pytest.mark.parametrize(("text", "coded"), HUFFMAN_VECTORS)
def test_huffman_rfc_vectors(text: bytes, coded: str) -> None:
    """The Huffman coder agrees with the RFC's examples both ways."""
    assert huffman_encode(text) == hex_bytes(coded)
    assert huffman_decode(hex_bytes(coded)) == text


@pytest.mark.parametrize(("symbol", "code", "bits"), [
    (ord("0"), 0x0, 5), (ord("a"), 0x3, 5), (ord(" "), 0x14, 6), (0, 0x1FF8, 13),
    (ord("\n"), 0x3FFFFFFC, 30), (255, 0x3FFFFEE, 26),
])
def test_huffman_codes_of_single_symbols(symbol: int, code: int, bits: int) -> None:
    """Single symbols of Appendix B (shortest, longest and the ends of the byte range) code
    to their RFC bit patterns followed by all-ones padding."""
    pad = -bits % 8
    expected = ((code << pad) | ((1 << pad) - 1)).to_bytes((bits + pad) // 8, "big")
    assert huffman_encode(bytes((symbol,))) == expected
    assert huffman_decode(expected) == bytes((symbol,))


def test_huffman_round_trips_every_byte_value() -> None:
    """Every octet 0..255 survives encode/decode, alone and all in one string."""
    for value in range(256):
        assert huffman_decode(huffman_encode(bytes((value,)))) == bytes((value,))
    everything = bytes(range(256))
    assert huffman_decode(huffman_encode(everything)) == everything
    assert huffman_decode(huffman_encode(everything[::-1])) == everything[::-1]
    assert huffman_encode(b"") == b""
    assert huffman_decode(b"") == b""


def test_huffman_round_trips_random_strings() -> None:
    """Random binary and printable strings survive encode/decode, also when decoded again
    (the decoded-string cache must hand back the same bytes)."""
    rng = random.Random(7541)
    printable = bytes(range(0x20, 0x7F))
    for i in range(3000):
        n = rng.randint(0, 64)
        binary = i % 2 == 1
        data = rng.randbytes(n) if binary else bytes(rng.choices(printable, k=n))
        coded = huffman_encode(data)
        assert huffman_decode(coded) == data
        assert huffman_decode(coded) == data


def _bits(*codes: tuple[int, int]) -> bytes:
    """Concatenate (code, length) bit strings; the caller supplies any padding."""
    acc = nbits = 0
    for code, n in codes:
        acc = (acc << n) | code
        nbits += n
    assert nbits % 8 == 0
    return acc.to_bytes(nbits // 8, "big")


_A = (0x3, 5)  # 'a'
_EOS = (0x3FFFFFFF, 30)


@pytest.mark.parametrize("coded", [
    pytest.param(b"\xff", id="8-bit padding alone"),
    pytest.param(_bits(_A, (0x7FF, 11)), id="11-bit padding after a symbol"),
    pytest.param(hex_bytes("f1e3 c2e5 f23a 6ba0 ab90 f4ff ff"), id="extra 0xff byte"),
    pytest.param(_bits(_A, (0b000, 3)), id="padding of zeros"),
    pytest.param(_bits(_A, (0b110, 3)), id="padding ending in zero"),
    pytest.param(_bits(_A, (0b011, 3)), id="padding starting with zero"),
    pytest.param(_bits(_EOS, (0b11, 2)), id="EOS then padding"),
    pytest.param(_bits(_EOS, _A, (0x1F, 5)), id="EOS then a symbol"),
    pytest.param(_bits(_A, _EOS, (0x1F, 5)), id="EOS after a symbol"),
])
def test_huffman_rejects_bad_padding_and_eos(coded: bytes) -> None:
    """RFC 7541 5.2: padding over 7 bits, padding that is not a prefix of EOS, and an EOS
    symbol in the string are decoding errors, both alone and inside a header block."""
    with pytest.raises(HpackError):
        huffman_decode(coded)
    block = b"\x00\x01a" + encode_int(len(coded), 7, 0x80) + coded
    with pytest.raises(HpackError):
        Decoder().decode(block)


# --- Integers (5.1, C.1) ---------------------------------------------------------------------

@pytest.mark.parametrize(("value", "prefix", "coded"), [
    (10, 5, "0a"),  # C.1.1
    (1337, 5, "1f9a 0a"),  # C.1.2
    (42, 8, "2a"),  # C.1.3
])
def test_integer_rfc_vectors(value: int, prefix: int, coded: str) -> None:
    """The RFC's integer examples encode and decode exactly, and bits above the prefix (the
    representation's type bits) do not leak into the value."""
    assert encode_int(value, prefix) == hex_bytes(coded)
    assert decode_int(hex_bytes(coded), 0, prefix) == (value, len(hex_bytes(coded)))
    if prefix < 8:
        flags = 0xFF ^ ((1 << prefix) - 1)
        flagged = encode_int(value, prefix, flags)
        assert flagged[0] & flags == flags
        assert decode_int(flagged, 0, prefix) == (value, len(flagged))


@pytest.mark.parametrize("prefix", range(1, 9))
def test_integer_round_trip_around_the_prefix_boundary(prefix: int) -> None:
    """Values just below, at and above 2^N - 1 and large values (up to 2^31) round-trip, and
    decoding from an offset returns the position after the integer."""
    mask = (1 << prefix) - 1
    values = {0, 1, mask - 1, mask, mask + 1, mask + 126, mask + 127, mask + 128,
              mask + 16383, mask + 16384, 1 << 20, (1 << 28) - 1, 1 << 28, (1 << 31) - 1}
    for value in sorted(v for v in values if v >= 0):
        coded = encode_int(value, prefix)
        assert (len(coded) == 1) == (value < mask)
        assert decode_int(coded, 0, prefix) == (value, len(coded))
        framed = b"\xaa" + coded + b"\x55"
        assert decode_int(framed, 1, prefix) == (value, 1 + len(coded))


@pytest.mark.parametrize("coded", ["1f", "1f9a", "1fff ff", "1f80 8080"])
def test_truncated_integer_is_an_error(coded: str) -> None:
    """An integer whose continuation bytes run past the end of the block is an HpackError,
    not an IndexError or a wrong value."""
    with pytest.raises(HpackError):
        decode_int(hex_bytes(coded), 0, 5)


@pytest.mark.parametrize("coded", [
    b"\x1f" + b"\xff" * 10 + b"\x01",
    b"\x1f" + b"\x80" * 20 + b"\x00",
    b"\x1f" + b"\xff" * 1000,
])
def test_absurdly_long_integer_is_an_error(coded: bytes) -> None:
    """A peer cannot make the decoder build huge numbers or loop over endless continuation
    bytes: such integers are rejected."""
    with pytest.raises(HpackError):
        decode_int(coded, 0, 5)
    with pytest.raises(HpackError):
        Decoder().decode(b"\xff" + coded[1:])  # the same continuation bytes as an index


# --- Decoder errors and table size updates ---------------------------------------------------

def test_index_zero_is_an_error() -> None:
    """RFC 7541 6.1: index 0 in an indexed field is a decoding error."""
    with pytest.raises(HpackError):
        Decoder().decode(b"\x80")
    with pytest.raises(HpackError):
        Decoder().decode(b"\x82\x80")


def test_index_beyond_the_dynamic_table_is_an_error() -> None:
    """RFC 7541 2.3.3: an index past the end of the dynamic table, as a field or as a name,
    is a decoding error; one entry makes exactly index 62 valid."""
    for block in (b"\xbe", b"\x7e\x01v", b"\x0f\x2f\x01v", b"\x1f\x2f\x01v",
                  encode_indexed(1000)):
        with pytest.raises(HpackError):
            Decoder().decode(block)
    decoder = Decoder()
    decoder.decode(b"\x40\x01k\x01v")
    assert decoder.decode(b"\xbe") == [(b"k", b"v")]
    assert decoder.decode(b"\x0f\x2f\x01w") == [(b"k", b"w")]
    with pytest.raises(HpackError):
        decoder.decode(b"\xbf")


@pytest.mark.parametrize("block", [
    pytest.param(b"\x00", id="no name length"),
    pytest.param(b"\x00\x03ab", id="name cut"),
    pytest.param(b"\x00\x01a", id="no value length"),
    pytest.param(b"\x00\x01a\x05abc", id="value cut"),
    pytest.param(b"\x00\x01a\x05abcd", id="value one byte short"),
    pytest.param(b"\x00\x05abcd\x00", id="name one byte short"),
    pytest.param(b"\x41\x05ab", id="indexed-name value cut"),
    pytest.param(b"\x04", id="indexed-name no value"),
    pytest.param(b"\x00\x01a\x7f", id="value length cut"),
    pytest.param(hex_bytes("0081 618c f1e3 c2e5"), id="huffman value cut"),
])
def test_truncated_string_is_an_error(block: bytes) -> None:
    """A string literal (or its length) that runs past the end of the block is an HpackError,
    and nothing is inserted into the table."""
    decoder = Decoder()
    with pytest.raises(HpackError):
        decoder.decode(block)
    assert decoder.table_size == 0


def test_size_update_over_the_limit_is_an_error() -> None:
    """RFC 7541 6.3: a size update above the announced limit is a decoding error; up to the
    limit is accepted."""
    with pytest.raises(HpackError):
        Decoder().decode(encode_int(4097, 5, 0x20))
    decoder = Decoder(max_table_size=256)
    with pytest.raises(HpackError):
        decoder.decode(encode_int(257, 5, 0x20))
    assert decoder.decode(encode_int(256, 5, 0x20)) == []
    assert decoder.decode(encode_int(100, 5, 0x20)) == []
    with pytest.raises(HpackError):  # the limit is the announced one, not the last update
        decoder.decode(encode_int(257, 5, 0x20))
    assert decoder.decode(encode_int(256, 5, 0x20)) == []


def _c3_decoder() -> Decoder:
    decoder = Decoder()
    for block in C3_BLOCKS:
        decoder.decode(hex_bytes(block))
    assert decoder.table_size == 164
    return decoder


def test_size_update_to_zero_empties_the_table_and_inserts_work_after() -> None:
    """A size update to 0 evicts every entry; while the maximum is 0 inserted fields still
    decode but are not kept; after a size update back up, inserts are kept again."""
    decoder = _c3_decoder()
    assert decoder.decode(b"\x20") == []
    assert decoder.table_size == 0
    assert dynamic(decoder) == []
    with pytest.raises(HpackError):
        decoder.decode(b"\xbe")
    assert decoder.decode(b"\x40\x01k\x01v") == [(b"k", b"v")]
    assert decoder.table_size == 0
    block = encode_int(4096, 5, 0x20) + b"\x40\x01k\x01v" + b"\x7e\x01w"
    assert decoder.decode(block) == [(b"k", b"v"), (b"k", b"w")]
    assert dynamic(decoder) == [(b"k", b"w"), (b"k", b"v")]
    assert decoder.table_size == 2 * 34


def test_size_update_to_zero_then_up_in_one_block() -> None:
    """Two size updates at the start of a block (RFC 7541 4.2: the minimum, then the new
    size) clear the table and leave room for the block's inserts."""
    decoder = _c3_decoder()
    block = b"\x20" + encode_int(4096, 5, 0x20) + hex_bytes(C3_BLOCKS[0])
    assert decoder.decode(block) == REQUEST_1
    assert dynamic(decoder) == [AUTHORITY]
    assert decoder.table_size == 57


def test_smaller_size_update_evicts_oldest_entries() -> None:
    """Shrinking the table evicts from the oldest end until the entries fit."""
    decoder = _c3_decoder()
    assert decoder.decode(encode_int(110, 5, 0x20)) == []
    assert dynamic(decoder) == [CUSTOM, NO_CACHE]
    assert decoder.table_size == 107


def test_entry_larger_than_the_table_empties_it() -> None:
    """RFC 7541 4.4: inserting an entry larger than the maximum is not an error; the table
    ends up empty and the field itself still decodes."""
    decoder = Decoder(max_table_size=256)
    decoder.decode(b"\x40\x01k\x01v")
    assert decoder.table_size == 34
    big = b"x" * 300
    assert decoder.decode(b"\x40\x01k" + encode_int(len(big), 7) + big) == [(b"k", big)]
    assert decoder.table_size == 0
    assert dynamic(decoder) == []


def test_entries_exactly_filling_the_table_are_kept() -> None:
    """RFC 7541 4.1/4.4: eviction only happens while the size is over the maximum, so
    entries adding up to exactly the maximum all stay; a 35-byte entry then evicts both."""
    decoder = Decoder(max_table_size=68)
    decoder.decode(b"\x40\x01a\x01v" + b"\x40\x01b\x01v")
    assert decoder.table_size == 68
    assert dynamic(decoder) == [(b"b", b"v"), (b"a", b"v")]
    decoder.decode(b"\x40\x01c\x02vv")
    assert dynamic(decoder) == [(b"c", b"vv")]
    assert decoder.table_size == 35


def test_size_update_after_a_field_is_an_error() -> None:
    """RFC 7541 4.2: a dynamic table size update MUST come at the beginning of a header block
    (h2spec hpack/4.2 sends one at the end and expects COMPRESSION_ERROR)."""
    with pytest.raises(HpackError):
        Decoder().decode(b"\x82\x20")
    with pytest.raises(HpackError):
        Decoder().decode(b"\x82" + encode_int(4096, 5, 0x20))


# --- The server's encoder helpers ------------------------------------------------------------

ENCODED_HEADERS: list[Header] = [
    (b"grpc-status", b"0"),
    (b"grpc-message", b"etcdserver: key not found"),
    (b"", b""),
    (b"x", b""),
    (b"k" * 127, b"v" * 127),
    (b"k" * 128, b"v" * 128),
    (b"grpc-status-details-bin", bytes(range(256)) * 3),
    (b"content-type", b"application/grpc"),
]


def test_encode_literal_decodes_back_without_touching_the_table() -> None:
    """encode_literal gives fields that decode to the same name and value (also with lengths
    needing continuation bytes) and never add to the peer's dynamic table."""
    decoder = Decoder()
    for header in ENCODED_HEADERS:
        assert decoder.decode(encode_literal(*header)) == [header]
        assert decoder.table_size == 0
    block = b"".join(encode_literal(*header) for header in ENCODED_HEADERS)
    assert decoder.decode(block) == ENCODED_HEADERS
    assert decoder.table_size == 0
    assert encode_literal(b"password", b"secret") == b"\x00\x08password\x06secret"


def test_encode_literal_indexed_name_decodes_back_without_touching_the_table() -> None:
    """encode_literal_indexed_name names the field by static index (1..61, also those needing
    a continuation byte) and never adds to the peer's dynamic table; C.2.2 is this form."""
    decoder = Decoder()
    for index in range(1, len(STATIC_TABLE) + 1):
        value = b"v" * (index * 3)
        block = encode_literal_indexed_name(index, value)
        assert decoder.decode(block) == [(STATIC_TABLE[index - 1][0], value)]
        assert decoder.table_size == 0
    assert encode_literal_indexed_name(4, b"/sample/path") == hex_bytes(C2_2)
    assert decoder.decode(encode_literal_indexed_name(31, b"application/grpc")) == [
        (b"content-type", b"application/grpc")]
    assert decoder.table_size == 0


def test_encode_indexed_decodes_back_without_touching_the_table() -> None:
    """encode_indexed refers to a static entry without changing the table (C.2.4 is 0x82)."""
    decoder = Decoder()
    for index in range(1, len(STATIC_TABLE) + 1):
        assert decoder.decode(encode_indexed(index)) == [STATIC_TABLE[index - 1]]
        assert decoder.table_size == 0
    assert encode_indexed(2) == b"\x82"
    assert decoder.decode(encode_indexed(8)) == [(b":status", b"200")]


def test_encoded_response_block_leaves_a_filled_table_alone() -> None:
    """A block built from all three helpers, decoded by a decoder that already has dynamic
    entries, yields the intended headers and leaves those entries as they were."""
    decoder = _c3_decoder()
    before = dynamic(decoder)
    block = (encode_indexed(8)
             + encode_literal_indexed_name(31, b"application/grpc")
             + encode_literal(b"grpc-status", b"0")
             + encode_indexed(len(STATIC_TABLE) + 1))
    assert decoder.decode(block) == [(b":status", b"200"),
                                     (b"content-type", b"application/grpc"),
                                     (b"grpc-status", b"0"), CUSTOM]
    assert dynamic(decoder) == before
    assert decoder.table_size == 164


def test_header_list_limit_stops_decoding_early() -> None:
    """A block of 1-byte indexed references decodes to at most a slice past the limit
    before HeaderListTooLarge; blocks under the limit decode as before."""
    d = hpack.Decoder(max_list_size=16 << 10)
    with pytest.raises(hpack.HeaderListTooLarge):
        d.decode(b"\x82" * (64 << 10))
    big = hpack.encode_literal(b"x-meta", b"v" * 15_000)
    assert hpack.Decoder(max_list_size=16 << 10).decode(big) == [(b"x-meta", b"v" * 15_000)]
    with pytest.raises(hpack.HeaderListTooLarge):
        hpack.Decoder(max_list_size=16 << 10).decode(big + big)
