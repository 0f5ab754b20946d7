"""HPACK (RFC 7541) as a gRPC server needs it: a complete decoder, and an encoder that only
writes literals without indexing (so the peer's decoder table is never touched).

The decoder keeps the dynamic table the peer's encoder fills (RFC 7541 section 2.3.2) and
decodes Huffman-coded strings (Appendix B). Decoded Huffman strings are cached by their
encoded bytes: a client sends the same few header values on every call, so after the first
calls a decode is a dict lookup.
"""

from __future__ import annotations

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


def _decode_str(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos >= len(data):
        raise HpackError("truncated string")
    huffman = data[pos] & 0x80
    length, pos = decode_int(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise HpackError("truncated string")
    raw = data[pos:end]
    return (huffman_decode(raw) if huffman else raw), end


class Decoder:
    """One connection's decoding context (the dynamic table lives as long as the connection).

    ``max_table_size`` is the limit this side announced (SETTINGS_HEADER_TABLE_SIZE); the
    peer's encoder may shrink the table below it with a size update, never grow past it.
    """

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE,
                 max_list_size: int = 1 << 62) -> None:
        self.max_list_size = max_list_size
        """Decoding stops with :class:`HeaderListTooLarge` once the fields decoded so far
        (names, values, 32 bytes each) pass this (SETTINGS_MAX_HEADER_LIST_SIZE)."""
        self._dynamic: list[tuple[bytes, bytes]] = []
        self._size = 0
        self._limit = max_table_size
        self._max = max_table_size

    @property
    def table_size(self) -> int:
        return self._size

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if index <= 0:
            raise HpackError("header index 0")
        if index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        i = index - len(STATIC_TABLE) - 1
        if i >= len(self._dynamic):
            raise HpackError(f"header index {index} is not in the table")
        return self._dynamic[i]

    def _insert(self, name: bytes, value: bytes) -> None:
        self._dynamic.insert(0, (name, value))
        self._size += len(name) + len(value) + 32
        self._evict()

    def _evict(self) -> None:
        while self._size > self._max and self._dynamic:
            name, value = self._dynamic.pop()
            self._size -= len(name) + len(value) + 32

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """Decode one complete header block (HEADERS + CONTINUATION payloads joined).

        The list-size limit is checked between slices of :data:`CHECK_EVERY` bytes of the
        block rather than per field (a field takes at least one byte, so the work past the
        limit is bounded by a slice; blocks of real calls are a single slice)."""
        headers: list[tuple[bytes, bytes]] = []
        pos, end = 0, len(block)
        name: bytes
        value: bytes
        while pos < end:
            stop = end if end - pos <= CHECK_EVERY else pos + CHECK_EVERY
            while pos < stop:
                first = block[pos]
                if first & 0x80:  # indexed field
                    index, pos = decode_int(block, pos, 7)
                    headers.append(self._entry(index))
                    continue
                if first & 0x40:  # literal with incremental indexing
                    index, pos = decode_int(block, pos, 6)
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
                    index, pos = decode_int(block, pos, 4)
                if index:
                    name = self._entry(index)[0]
                else:
                    name, pos = _decode_str(block, pos)
                value, pos = _decode_str(block, pos)
                if first & 0x40:
                    self._insert(name, value)
                headers.append((name, value))
            if end > CHECK_EVERY and (len(headers) > self.max_list_size // 32 or sum(
                    len(n) + len(v) + 32 for n, v in headers) > self.max_list_size):
                raise HeaderListTooLarge(f"header list over {self.max_list_size} bytes")
        return headers


def encode_literal(name: bytes, value: bytes) -> bytes:
    """A literal field without indexing and with a literal name, not Huffman-coded."""
    return b"\x00" + encode_int(len(name), 7) + name + encode_int(len(value), 7) + value


def encode_literal_indexed_name(index: int, value: bytes) -> bytes:
    """A literal field without indexing whose name is static-table entry ``index``."""
    return encode_int(index, 4) + encode_int(len(value), 7) + value


def encode_indexed(index: int) -> bytes:
    return encode_int(index, 7, 0x80)
