"""HPACK (RFC 7541) as a gRPC server needs it: a complete decoder, and an encoder that only
writes literals without indexing (so the peer's decoder table is never touched).

The decoder keeps the dynamic table the peer's encoder fills (RFC 7541 section 2.3.2) and
decodes Huffman-coded strings (Appendix B). Decoded Huffman strings are cached by their
encoded bytes: a client sends the same few header values on every call, so after the first
calls a decode is a dict lookup. A server's decoder also judges each field (RFC 9113
section 8, :mod:`coord.rpc.h2.validate`) when it decodes it as a literal, and keeps the
verdict with the field's table entry: a request whose fields are all indexed is not
checked again.
"""

from __future__ import annotations

from collections.abc import Callable

STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = (
    (b":authority", b""), (b":method", b"GET"), (b":method", b"POST"), (b":path", b"/"),
    (b":path", b"/index.html"), (b":scheme", b"http"), (b":scheme", b"https"),
    (b":status", b"200"), (b":status", b"204"), (b":status", b"206"), (b":status", b"304"),
    (b":status", b"400"), (b":status", b"404"), (b":status", b"500"),
    (b"accept-charset", b""), (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""), (b"accept-ranges", b""), (b"accept", b""),
    (b"access-control-allow-origin", b""), (b"age", b""), (b"allow", b""),
    (b"authorization", b""), (b"cache-control", b""), (b"content-disposition", b""),
    (b"content-encoding", b""), (b"content-language", b""), (b"content-length", b""),
    (b"content-location", b""), (b"content-range", b""), (b"content-type", b""),
    (b"cookie", b""), (b"date", b""), (b"etag", b""), (b"expect", b""), (b"expires", b""),
    (b"from", b""), (b"host", b""), (b"if-match", b""), (b"if-modified-since", b""),
    (b"if-none-match", b""), (b"if-range", b""), (b"if-unmodified-since", b""),
    (b"last-modified", b""), (b"link", b""), (b"location", b""), (b"max-forwards", b""),
    (b"proxy-authenticate", b""), (b"proxy-authorization", b""), (b"range", b""),
    (b"referer", b""), (b"refresh", b""), (b"retry-after", b""), (b"server", b""),
    (b"set-cookie", b""), (b"strict-transport-security", b""), (b"transfer-encoding", b""),
    (b"user-agent", b""), (b"vary", b""), (b"via", b""), (b"www-authenticate", b""),
)
"""RFC 7541 Appendix A; entry ``i`` has index ``i + 1``."""

HUFFMAN_CODE_LENGTHS: tuple[int, ...] = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30,
    28, 28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5,
    7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22,
    22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23,
    22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22,
    21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26,
    26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20,
    24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27,
    27, 28, 27, 27, 27, 27, 27, 26, 30,
)
"""Code length of each symbol (0-255, then 256 = EOS) of RFC 7541 Appendix B. The code is
canonical, so the lengths determine the codes: symbols sorted by (length, symbol) get
consecutive codes, shifted left whenever the length grows."""

EOS = 256
DEFAULT_TABLE_SIZE = 4096
CHECK_EVERY = 512
"""Bytes of a header block decoded between two checks of the header list's size."""


class HpackError(Exception):
    """A header block that does not decode: a COMPRESSION_ERROR of the connection."""


class HeaderListTooLarge(HpackError):
    """A header block that decodes to more than the decoder's ``max_list_size``."""


def _canonical_codes(lengths: tuple[int, ...]) -> dict[tuple[int, int], int]:
    order = sorted(range(len(lengths)), key=lambda s: (lengths[s], s))
    codes: dict[tuple[int, int], int] = {}
    code = 0
    prev = lengths[order[0]]
    for i, sym in enumerate(order):
        if i:
            code = (code + 1) << (lengths[sym] - prev)
        prev = lengths[sym]
        codes[(lengths[sym], code)] = sym
    return codes


_SYMBOLS = _canonical_codes(HUFFMAN_CODE_LENGTHS)
_CODES = {sym: (code, n) for (n, code), sym in _SYMBOLS.items()}


def _decoding_machine() -> tuple[list[tuple[int, int, bool]], list[bool]]:
    """The Huffman tree as a state machine that reads 4 bits at a time.

    States are the tree's internal nodes (0 = the root). ``table[state * 16 + nibble]`` is
    (next state, symbol completed or -1, EOS met). No code is shorter than 5 bits, so a
    nibble completes at most one symbol. ``accepting[state]``: the string may end there —
    at the root, or on the all-ones path at most 7 bits deep (a prefix of EOS as padding).
    """
    nodes: list[list[int]] = [[0, 0]]  # child > 0: internal node; child < 0: leaf -(sym + 1)
    for (length, code), sym in _SYMBOLS.items():
        node = 0
        for i in range(length - 1, -1, -1):
            bit = (code >> i) & 1
            if i == 0:
                nodes[node][bit] = -(sym + 1)
            else:
                if nodes[node][bit] == 0:
                    nodes.append([0, 0])
                    nodes[node][bit] = len(nodes) - 1
                node = nodes[node][bit]
    accepting = [False] * len(nodes)
    node, depth = 0, 0
    while depth <= 7 and node >= 0:
        accepting[node] = True
        node, depth = nodes[node][1], depth + 1
    table: list[tuple[int, int, bool]] = []
    for state in range(len(nodes)):
        for nibble in range(16):
            node, sym, eos = state, -1, False
            for shift in (3, 2, 1, 0):
                child = nodes[node][(nibble >> shift) & 1]
                if child < 0:
                    sym = -child - 1
                    eos = eos or sym == EOS
                    node = 0
                else:
                    node = child
            table.append((node, sym, eos))
    return table, accepting


_MACHINE, _ACCEPTING = _decoding_machine()
_CACHE_LIMIT = 4096
_CACHED_LENGTH = 64
_decoded: dict[bytes, bytes] = {}


def huffman_decode(data: bytes) -> bytes:
    """Decode a Huffman-coded string literal; padding must be a prefix of EOS (all ones) of
    at most 7 bits (RFC 7541 section 5.2). Short strings (the values clients repeat on
    every call) are cached by their encoded bytes."""
    hit = _decoded.get(data)
    if hit is not None:
        return hit
    out = bytearray()
    machine = _MACHINE
    state = 0
    for byte in data:
        state, sym, eos = machine[(state << 4) | (byte >> 4)]
        if sym >= 0:
            if eos:
                raise HpackError("EOS symbol in a Huffman-coded string")
            out.append(sym)
        state, sym, eos = machine[(state << 4) | (byte & 0x0F)]
        if sym >= 0:
            if eos:
                raise HpackError("EOS symbol in a Huffman-coded string")
            out.append(sym)
    if not _ACCEPTING[state]:
        raise HpackError("invalid Huffman padding")
    result = bytes(out)
    if len(data) <= _CACHED_LENGTH:
        if len(_decoded) >= _CACHE_LIMIT:
            _decoded.clear()
        _decoded[data] = result
    return result


def huffman_encode(data: bytes) -> bytes:
    """Huffman-code a string (used by tests and kept for completeness; the server's own
    header blocks are plain literals)."""
    acc = nbits = 0
    for byte in data:
        code, n = _CODES[byte]
        acc = (acc << n) | code
        nbits += n
    pad = -nbits % 8
    acc = (acc << pad) | ((1 << pad) - 1)
    return acc.to_bytes((nbits + pad) // 8, "big")


def decode_int(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """An integer with an N-bit prefix at ``data[pos]`` (section 5.1): (value, next pos)."""
    mask = (1 << prefix) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise HpackError("truncated integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HpackError("integer too large")


def encode_int(value: int, prefix: int, first: int = 0) -> bytes:
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes((first | value,))
    out = bytearray((first | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


Check = Callable[[tuple[bytes, bytes]], int]
"""A header field's verdict (``field_verdict`` of :mod:`coord.rpc.h2.validate` for a
server): the decoder computes it once per field it decodes as a literal and keeps it with
the table entry, so a field sent indexed costs no check at all."""


def _unchecked(field: tuple[bytes, bytes]) -> int:
    return 0


_NO_ENTRY = (b"", b"")
"""Slot 0 of a decoder's table: index 0 is an error (RFC 7541 6.1), never looked up."""
_STATIC_VERDICTS: dict[Check, tuple[int, ...]] = {}
"""Each check's verdicts on the static table, computed once per process."""


class Decoder:
    """One connection's decoding context (the dynamic table lives as long as the connection).

    ``max_table_size`` is the limit this side announced (SETTINGS_HEADER_TABLE_SIZE); the
    peer's encoder may shrink the table below it with a size update, never grow past it.
    ``check`` gives each field a verdict (:meth:`decode_checked`): computed when a literal
    is decoded, kept with its dynamic table entry, and once per process for the static
    table.
    """

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE,
                 max_list_size: int = 1 << 62, check: Check | None = None) -> None:
        self.max_list_size = max_list_size
        """Decoding stops with :class:`HeaderListTooLarge` once the fields decoded so far
        (names, values, 32 bytes each) pass this (SETTINGS_MAX_HEADER_LIST_SIZE)."""
        self._check = _unchecked if check is None else check
        static = _STATIC_VERDICTS.get(self._check)
        if static is None:
            static = tuple(map(self._check, STATIC_TABLE))
            _STATIC_VERDICTS[self._check] = static
        self._table: list[tuple[bytes, bytes]] = [_NO_ENTRY, *STATIC_TABLE]
        """Index ``i`` of RFC 7541 2.3.3 at position ``i``: the static table, then the
        dynamic one, newest first."""
        self._verdicts: list[int] = [0, *static]
        """Each entry's verdict, at the entry's position."""
        self._size = 0
        self._limit = max_table_size
        self._max = max_table_size

    @property
    def table_size(self) -> int:
        return self._size

    def _insert(self, entry: tuple[bytes, bytes], verdict: int) -> None:
        self._table.insert(_FIRST_DYNAMIC, entry)
        self._verdicts.insert(_FIRST_DYNAMIC, verdict)
        self._size += len(entry[0]) + len(entry[1]) + 32
        self._evict()

    def _evict(self) -> None:
        table = self._table
        while self._size > self._max and len(table) > _FIRST_DYNAMIC:
            name, value = table.pop()
            self._verdicts.pop()
            self._size -= len(name) + len(value) + 32

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """Decode one complete header block (HEADERS + CONTINUATION payloads joined)."""
        return self.decode_checked(block)[0]

    def decode_checked(self, block: bytes) -> tuple[list[tuple[bytes, bytes]], list[int]]:
        """Decode one complete header block: its fields, and the ``check`` verdict of each.

        The list-size limit is checked between slices of :data:`CHECK_EVERY` bytes of the
        block rather than per field (a field takes at least one byte, so the work past the
        limit is bounded by a slice; blocks of real calls are a single slice)."""
        headers: list[tuple[bytes, bytes]] = []
        verdicts: list[int] = []
        table, known, check = self._table, self._verdicts, self._check
        add_field, add_verdict = headers.append, verdicts.append
        pos, end = 0, len(block)
        name: bytes
        value: bytes
        while pos < end:
            stop = end if end - pos <= CHECK_EVERY else pos + CHECK_EVERY
            while pos < stop:
                first = block[pos]
                if first & 0x80:  # indexed field: the common case, inlined
                    index = first & 0x7F
                    if index == 0x7F:
                        index, pos = decode_int(block, pos, 7)
                    else:
                        pos += 1
                    if not index:
                        raise HpackError(_bad_index(index))
                    try:
                        add_field(table[index])
                    except IndexError:
                        raise HpackError(_bad_index(index)) from None
                    add_verdict(known[index])
                    continue
                if first & 0x40:  # literal with incremental indexing
                    index, pos = (decode_int(block, pos, 6) if first & 0x3F == 0x3F
                                  else (first & 0x3F, pos + 1))
                elif first & 0x20:  # dynamic table size update: only before the first field
                    if headers:
                        raise HpackError("table size update after a header field")
                    size, pos = decode_int(block, pos, 5)
                    if size > self._limit:
                        raise HpackError(f"table size {size} over the limit {self._limit}")
                    self._max = size
                    self._evict()
                    continue
                else:  # literal without indexing / never indexed
                    index, pos = (decode_int(block, pos, 4) if first & 0x0F == 0x0F
                                  else (first & 0x0F, pos + 1))
                if index:
                    if index >= len(table):
                        raise HpackError(_bad_index(index))
                    name = table[index][0]
                else:  # a literal name (strings are decoded inline: the hot path)
                    if pos >= end:
                        raise HpackError("truncated string")
                    first_byte = block[pos]
                    length, pos = (decode_int(block, pos, 7) if first_byte & 0x7F == 0x7F
                                   else (first_byte & 0x7F, pos + 1))
                    if pos + length > end:
                        raise HpackError("truncated string")
                    name = block[pos:pos + length]
                    pos += length
                    if first_byte & 0x80:
                        name = huffman_decode(name)
                if pos >= end:  # the value
                    raise HpackError("truncated string")
                first_byte = block[pos]
                length, pos = (decode_int(block, pos, 7) if first_byte & 0x7F == 0x7F
                               else (first_byte & 0x7F, pos + 1))
                if pos + length > end:
                    raise HpackError("truncated string")
                value = block[pos:pos + length]
                pos += length
                if first_byte & 0x80:
                    value = huffman_decode(value)
                entry = (name, value)
                verdict = check(entry)
                if first & 0x40:
                    self._insert(entry, verdict)
                add_field(entry)
                add_verdict(verdict)
            if end > CHECK_EVERY and (len(headers) > self.max_list_size // 32 or sum(
                    len(n) + len(v) + 32 for n, v in headers) > self.max_list_size):
                raise HeaderListTooLarge(f"header list over {self.max_list_size} bytes")
        return headers, verdicts


_FIRST_DYNAMIC = len(STATIC_TABLE) + 1
"""The index of the newest dynamic table entry."""


def _bad_index(index: int) -> str:
    return "header index 0" if not index else f"header index {index} is not in the table"


def encode_literal(name: bytes, value: bytes) -> bytes:
    """A literal field without indexing and with a literal name, not Huffman-coded."""
    return b"\x00" + encode_int(len(name), 7) + name + encode_int(len(value), 7) + value


def encode_literal_indexed_name(index: int, value: bytes) -> bytes:
    """A literal field without indexing whose name is static-table entry ``index``."""
    return encode_int(index, 4) + encode_int(len(value), 7) + value


def encode_indexed(index: int) -> bytes:
    return encode_int(index, 7, 0x80)
