"""RFC 9113 section 8: is a decoded request header list a well-formed HTTP/2 request, and
a gRPC one? Pure functions over the ``(name, value)`` list the HPACK decoder returns.

A malformed request (8.1.1) is a stream error PROTOCOL_ERROR: the server answers it with
RST_STREAM and the connection goes on. A well-formed request that is not gRPC (a
``content-type`` that is not ``application/grpc``) gets HTTP 415, as gRPC's HTTP/2
protocol says and grpc-go does.
"""

from __future__ import annotations

_METHOD, _SCHEME, _PATH, _AUTHORITY = 1, 2, 4, 8
_PSEUDO_BITS = {b":method": _METHOD, b":scheme": _SCHEME, b":path": _PATH,
                b":authority": _AUTHORITY}
"""The request pseudo-headers (8.3.1); ``:protocol`` needs SETTINGS_ENABLE_CONNECT_PROTOCOL,
which this server does not send, and ``:status`` belongs to responses."""

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


_good: set[tuple[bytes, bytes]] = set()
"""Fields already found well-formed: clients send the same few on every call, so most of
a request is checked by one set lookup per field."""
_GOOD_MAX, _GOOD_FIELD = 1024, 128
"""At most so many fields of at most so many bytes are kept (128 KiB in all)."""


def malformed(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why ``headers`` is not a well-formed request (8.1.1, 8.2, 8.3.1), or None."""
    seen = 0  # the pseudo-headers seen, as _PSEUDO_BITS
    regular = False
    method = path = b""
    good = _good
    for field in headers:
        name = field[0]
        if name[:1] == b":":
            bit = _PSEUDO_BITS.get(name)
            if regular:
                return f"pseudo-header {name!r} after a regular field"
            if bit is None:
                return f"pseudo-header {name!r} is not a request's"
            if seen & bit:
                return f"duplicate pseudo-header {name!r}"
            seen |= bit
            if bit == _METHOD:
                method = field[1]
            elif bit == _PATH:
                path = field[1]
            if field in good:
                continue
            if _bad_value(field[1]):
                return f"bad characters in {name!r}"
        else:
            regular = True
            if field in good:
                continue
            value = field[1]
            if not name or name.translate(None, _NAME_BYTES):
                return f"bad field name {name!r}"
            if _bad_value(value):
                return f"bad characters in the value of {name!r}"
            if name in CONNECTION_SPECIFIC:
                return f"connection-specific field {name!r}"
            if name == b"te" and value != b"trailers":
                return "te other than trailers"
        if len(name) + len(field[1]) <= _GOOD_FIELD:
            if len(good) >= _GOOD_MAX:
                good.clear()
            good.add(field)
    if not method:
        return "no :method"
    if method == b"CONNECT":
        # CONNECT (8.5): :authority only. gRPC never sends it; the call fails as not POST.
        if seen != _AUTHORITY:
            return "CONNECT with :scheme or :path, or without :authority"
        return None
    if seen & (_SCHEME | _PATH) != _SCHEME | _PATH:
        return "no :scheme or :path"
    if not path:
        return "empty :path"
    return None


def grpc_content_type(value: bytes) -> bool:
    """``application/grpc``, alone or followed by ``+codec`` or ``;params`` (gRPC's
    PROTOCOL-HTTP2: a server answers any other with HTTP 415)."""
    return value.startswith(b"application/grpc") and value[16:17] in (b"", b"+", b";")
