"""RFC 9113 section 8: is a decoded request header list a well-formed HTTP/2 request, and
a gRPC one? Pure functions over the ``(name, value)`` list the HPACK decoder returns.

A malformed request (8.1.1) is a stream error PROTOCOL_ERROR: the server answers it with
RST_STREAM and the connection goes on. A well-formed request that is not gRPC (a
``content-type`` that is not ``application/grpc``) gets HTTP 415, as gRPC's HTTP/2
protocol says and grpc-go does.
"""

from __future__ import annotations

import re

_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":path", b":authority"))
"""The request pseudo-headers (8.3.1); ``:protocol`` needs SETTINGS_ENABLE_CONNECT_PROTOCOL,
which this server does not send, and ``:status`` belongs to responses."""

CONNECTION_SPECIFIC = frozenset((b"connection", b"proxy-connection", b"keep-alive",
                                 b"transfer-encoding", b"upgrade"))
"""Fields that HTTP/2 forbids (8.2.2)."""

_BAD_NAME = re.compile(rb"[\x00-\x20A-Z\x7f-\xff]")
"""Bytes a field name must not contain (8.2.1): controls, space, upper case, non-ASCII.
(``:`` only starts a pseudo-header, which is checked by name.)"""
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")
"""A value must not hold NUL, CR or LF, nor start or end with whitespace (8.2.1)."""

_good: set[tuple[bytes, bytes]] = set()
"""Regular fields already found well-formed: clients send the same few on every call, so
most of a request is checked by one set lookup per field."""
_GOOD_MAX = 4096


def malformed(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why ``headers`` is not a well-formed request (8.1.1, 8.2, 8.3.1), or None."""
    seen: set[bytes] = set()
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                return f"pseudo-header {name!r} after a regular field"
            if name not in _REQUEST_PSEUDO:
                return f"pseudo-header {name!r} is not a request's"
            if name in seen:
                return f"duplicate pseudo-header {name!r}"
            seen.add(name)
            if _BAD_NAME.search(name, 1) is not None or _BAD_VALUE.search(value) is not None:
                return f"bad characters in {name!r}"
            continue
        regular = True
        if (name, value) in _good:
            continue
        if not name or _BAD_NAME.search(name) is not None:
            return f"bad field name {name!r}"
        if _BAD_VALUE.search(value) is not None:
            return f"bad characters in the value of {name!r}"
        if name in CONNECTION_SPECIFIC:
            return f"connection-specific field {name!r}"
        if name == b"te" and value != b"trailers":
            return "te other than trailers"
        if len(_good) >= _GOOD_MAX:
            _good.clear()
        _good.add((name, value))
    if b":method" not in seen:
        return "no :method"
    if _value(headers, b":method") == b"CONNECT":
        # CONNECT (8.5): :authority only. gRPC never sends it; the call fails as not POST.
        if b":scheme" in seen or b":path" in seen or b":authority" not in seen:
            return "CONNECT with :scheme or :path, or without :authority"
        return None
    if b":scheme" not in seen or b":path" not in seen:
        return "no :scheme or :path"
    if not _value(headers, b":path"):
        return "empty :path"
    return None


def _value(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    for key, value in headers:
        if key == name:
            return value
    return b""


def grpc_content_type(value: bytes) -> bool:
    """``application/grpc``, alone or followed by ``+codec`` or ``;params`` (gRPC's
    PROTOCOL-HTTP2: a server answers any other with HTTP 415)."""
    return value.startswith(b"application/grpc") and value[16:17] in (b"", b"+", b";")
