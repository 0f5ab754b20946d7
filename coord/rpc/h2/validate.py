"""RFC 9113 section 8: is a decoded request header list a well-formed HTTP/2 request, and
a gRPC one? Pure functions over the ``(name, value)`` list the HPACK decoder returns.

A malformed request (8.1.1) is a stream error PROTOCOL_ERROR: the server answers it with
RST_STREAM and the connection goes on. A well-formed request that is not gRPC (a
``content-type`` that is not ``application/grpc``) gets HTTP 415, as gRPC's HTTP/2
protocol says and grpc-go does.
"""

from __future__ import annotations

_METHOD, _SCHEME, _PATH, _AUTHORITY, _PSEUDO = 1, 2, 4, 8, 15
_PSEUDO_BITS = {b":method": _METHOD, b":scheme": _SCHEME, b":path": _PATH,
                b":authority": _AUTHORITY}
"""The request pseudo-headers (8.3.1); ``:protocol`` needs SETTINGS_ENABLE_CONNECT_PROTOCOL,
which this server does not send, and ``:status`` belongs to responses."""

_CONTENT_TYPE, _TIMEOUT, _ENCODING = 16, 32, 64
_REGULAR_BITS = {b"content-type": _CONTENT_TYPE, b"grpc-timeout": _TIMEOUT,
                 b"grpc-encoding": _ENCODING}
"""The regular fields a gRPC server reads, picked out in the same pass."""

Head = tuple[bytes, bytes, bytes, bytes, bytes]
"""A well-formed request's ``:method``, ``:path``, ``content-type``, ``grpc-timeout`` and
``grpc-encoding`` (empty when absent)."""

CONNECTION_SPECIFIC = frozenset((b"connection", b"proxy-connection", b"keep-alive",
                                 b"transfer-encoding", b"upgrade"))
"""Fields that HTTP/2 forbids (8.2.2)."""

_NAME_BYTES = bytes(range(0x21, 0x41)) + bytes(range(0x5B, 0x7F))
"""The bytes a field name may hold (8.2.1): visible ASCII but upper case; a name that
still has bytes left after deleting these has controls, space, upper case or non-ASCII."""


def _bad_value(value: bytes) -> bool:
    """NUL, CR or LF in a value, or whitespace at its start or end (8.2.1)."""
    return (b"\x00" in value or b"\r" in value or b"\n" in value
            or (bool(value) and (value[0] in (0x20, 0x09) or value[-1] in (0x20, 0x09))))


_known: dict[tuple[bytes, bytes], int] = {}
"""Fields already found well-formed, each with its pseudo-header bit (0: a regular field).
Clients send the same few fields on every call, so most of a request is checked by one
dict lookup per field."""
_KNOWN_MAX, _KNOWN_FIELD = 1024, 128
"""At most so many fields of at most so many bytes are kept (128 KiB in all)."""


def _check_field(name: bytes, value: bytes) -> int | str:
    """A field never seen before: its bit (a pseudo-header's, a field gRPC reads, or 0),
    or what is wrong with it."""
    if name[:1] == b":":
        bit = _PSEUDO_BITS.get(name)
        if bit is None:
            return f"pseudo-header {name!r} is not a request's"
        if _bad_value(value):
            return f"bad characters in {name!r}"
        return bit
    if not name or name.translate(None, _NAME_BYTES):
        return f"bad field name {name!r}"
    if _bad_value(value):
        return f"bad characters in the value of {name!r}"
    if name in CONNECTION_SPECIFIC:
        return f"connection-specific field {name!r}"
    if name == b"te" and value != b"trailers":
        return "te other than trailers"
    return _REGULAR_BITS.get(name, 0)


def request_head(headers: list[tuple[bytes, bytes]]) -> Head | str:
    """The fields a gRPC server reads from a well-formed request, or why ``headers`` is
    not one (8.1.1, 8.2, 8.3.1): a single pass, most fields one dict lookup."""
    seen = 0  # the pseudo-headers seen, as _PSEUDO_BITS
    regular = False
    method = path = content_type = timeout = encoding = b""
    known = _known
    for field in headers:
        bit = known.get(field)
        if bit is None:
            checked = _check_field(*field)
            if isinstance(checked, str):
                return checked
            bit = checked
            if len(field[0]) + len(field[1]) <= _KNOWN_FIELD and bit != _TIMEOUT:
                if len(known) >= _KNOWN_MAX:
                    known.clear()
                known[field] = bit
        if not bit & _PSEUDO:
            regular = True
            if bit == _CONTENT_TYPE:
                content_type = field[1]
            elif bit == _TIMEOUT:
                timeout = field[1]
            elif bit == _ENCODING:
                encoding = field[1]
            continue
        if regular:
            return f"pseudo-header {field[0]!r} after a regular field"
        if seen & bit:
            return f"duplicate pseudo-header {field[0]!r}"
        seen |= bit
        if bit == _METHOD:
            method = field[1]
        elif bit == _PATH:
            path = field[1]
    if not method:
        return "no :method"
    if method == b"CONNECT":
        # CONNECT (8.5): :authority only. gRPC never sends it; the call fails as not POST.
        if seen != _AUTHORITY:
            return "CONNECT with :scheme or :path, or without :authority"
    elif seen & (_SCHEME | _PATH) != _SCHEME | _PATH:
        return "no :scheme or :path"
    elif not path:
        return "empty :path"
    return method, path, content_type, timeout, encoding


def grpc_content_type(value: bytes) -> bool:
    """``application/grpc``, alone or followed by ``+codec`` or ``;params`` (gRPC's
    PROTOCOL-HTTP2: a server answers any other with HTTP 415)."""
    return value.startswith(b"application/grpc") and value[16:17] in (b"", b"+", b";")
