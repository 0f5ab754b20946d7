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


BAD = -1
"""The verdict on a malformed field (:func:`problem` says what is wrong with it)."""
_TE = 128
"""A name's verdict for ``te``, whose only allowed value is ``trailers``."""

_known: dict[tuple[bytes, bytes], int] = {}
"""Fields already judged, with their verdicts: clients send the same few fields on every
call, so a field sent as a literal is mostly judged by one dict lookup (a field sent
indexed is not judged at all: its verdict is kept with its HPACK table entry)."""
_names: dict[bytes, int] = {}
"""Each field name judged: its pseudo-header or gRPC bit, 0 for another good name,
:data:`_TE` or :data:`BAD` (a new value of a known name costs a look at its characters)."""
_KNOWN_MAX, _KNOWN_FIELD = 1024, 128
"""At most so many fields (and names) of at most so many bytes are kept (128 KiB each)."""


def _name_verdict(name: bytes) -> int:
    if name[:1] == b":":
        return _PSEUDO_BITS.get(name, BAD)
    if not name or name.translate(None, _NAME_BYTES) or name in CONNECTION_SPECIFIC:
        return BAD
    return _TE if name == b"te" else _REGULAR_BITS.get(name, 0)


def field_verdict(field: tuple[bytes, bytes]) -> int:
    """A ``(name, value)`` field's verdict (8.2.1, 8.2.2, 8.3): :data:`BAD`, its
    pseudo-header bit, the bit of a field gRPC reads, or 0. The HPACK decoder calls it once
    per field it decodes as a literal and keeps it with the field's table entry
    (:meth:`hpack.Decoder.decode_checked`); it depends on nothing but the field."""
    verdict = _known.get(field)
    if verdict is not None:
        return verdict
    name, value = field
    bit = _names.get(name)
    if bit is None:
        bit = _name_verdict(name)
        if len(name) <= _KNOWN_FIELD:
            if len(_names) >= _KNOWN_MAX:
                _names.clear()
            _names[name] = bit
    if bit < 0 or _bad_value(value):
        verdict = BAD
    elif bit == _TE:
        verdict = 0 if value == b"trailers" else BAD
    else:
        verdict = bit
    if bit != _TIMEOUT and len(name) + len(value) <= _KNOWN_FIELD:  # a timeout rarely repeats
        if len(_known) >= _KNOWN_MAX:
            _known.clear()
        _known[field] = verdict
    return verdict


def problem(name: bytes, value: bytes) -> int | str:
    """What is wrong with a field (a message), or its bit as :func:`field_verdict` gives it."""
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


Plan = tuple[int, int, int, int, int, int]
"""A request's shape as :func:`request_head` reads it: the pseudo-headers it has (bits),
and the positions of ``:method``, ``:path``, ``content-type``, ``grpc-timeout`` and
``grpc-encoding`` (-1 when absent)."""

_plans: dict[tuple[int, ...], Plan] = {}
"""Shapes already found well-formed, by the fields' verdicts in order: a client sends its
fields in the same order on every call, so a request is read without a loop over it."""
_PLANS_MAX, _PLAN_FIELDS = 256, 32


def _plan(headers: list[tuple[bytes, bytes]], verdicts: list[int]) -> Plan | str:
    """The shape of a request, or what is wrong with it (8.1.1, 8.2, 8.3.1)."""
    seen = 0  # the pseudo-headers seen, as _PSEUDO_BITS
    regular = False
    method = path = content_type = timeout = encoding = -1
    for i, bit in enumerate(verdicts):
        if not bit:
            regular = True
        elif bit > _PSEUDO:
            regular = True
            if bit == _CONTENT_TYPE:
                content_type = i
            elif bit == _TIMEOUT:
                timeout = i
            else:
                encoding = i
        elif bit < 0:
            why = problem(*headers[i])
            return why if isinstance(why, str) else f"bad field {headers[i][0]!r}"
        elif regular:
            return f"pseudo-header {headers[i][0]!r} after a regular field"
        elif seen & bit:
            return f"duplicate pseudo-header {headers[i][0]!r}"
        else:
            seen |= bit
            if bit == _METHOD:
                method = i
            elif bit == _PATH:
                path = i
    return seen, method, path, content_type, timeout, encoding


def request_head(headers: list[tuple[bytes, bytes]],
                 verdicts: list[int] | None = None) -> Head | str:
    """The fields a gRPC server reads from a well-formed request, or why ``headers`` is
    not one (8.1.1, 8.2, 8.3.1). ``verdicts``: each field's :func:`field_verdict`, as the
    HPACK decoder gives them (computed here when not given)."""
    if verdicts is None:
        verdicts = [field_verdict(field) for field in headers]
    shape = tuple(verdicts)
    plan = _plans.get(shape)
    if plan is None:
        found = _plan(headers, verdicts)
        if isinstance(found, str):
            return found
        plan = found
        if len(shape) <= _PLAN_FIELDS:
            if len(_plans) >= _PLANS_MAX:
                _plans.clear()
            _plans[shape] = plan
    seen, at_method, at_path, at_type, at_timeout, at_encoding = plan
    method = headers[at_method][1] if at_method >= 0 else b""
    if not method:
        return "no :method"
    path = headers[at_path][1] if at_path >= 0 else b""
    if method == b"CONNECT":
        # CONNECT (8.5): :authority only. gRPC never sends it; the call fails as not POST.
        if seen != _AUTHORITY:
            return "CONNECT with :scheme or :path, or without :authority"
    elif seen & (_SCHEME | _PATH) != _SCHEME | _PATH:
        return "no :scheme or :path"
    elif not path:
        return "empty :path"
    return (method, path, headers[at_type][1] if at_type >= 0 else b"",
            headers[at_timeout][1] if at_timeout >= 0 else b"",
            headers[at_encoding][1] if at_encoding >= 0 else b"")


def grpc_content_type(value: bytes) -> bool:
    """``application/grpc``, alone or followed by ``+codec`` or ``;params`` (gRPC's
    PROTOCOL-HTTP2: a server answers any other with HTTP 415)."""
    return value.startswith(b"application/grpc") and value[16:17] in (b"", b"+", b";")
