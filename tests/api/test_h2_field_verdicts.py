"""RFC 9113 section 8's field checks made once per HPACK table entry: the decoder gives each
field a verdict (``validate.field_verdict``) when it decodes it as a literal and keeps it
with the table entry, so a field sent indexed is not checked again. These tests hold it
to the rules: a malformed field is refused every time it arrives, indexed or not, wherever
later inserts and evictions move its entry; the verdicts stay in step with the table; and
the cached verdicts say what the full check (``validate.problem``) says.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coord.rpc.h2 import hpack, validate
from coord.rpc.h2.server import DATA, END_HEADERS, END_STREAM, HEADERS, PROTOCOL_ERROR, frame
from coord.rpc.h2.server import grpc_message as message
from tests.api.h2_raw import RawClient, raw
from tests.api.h2_served import ECHO
from tests.api.h2_support import run
from tests.api.test_h2_rfc9113 import GOOD, MALFORMED

Field = tuple[bytes, bytes]


def _incremental(name: bytes, value: bytes) -> bytes:
    """A literal with incremental indexing and a literal name (RFC 7541 6.2.1)."""
    return (b"\x40" + hpack.encode_int(len(name), 7) + name
            + hpack.encode_int(len(value), 7) + value)


def _indexed(count: int, newer: int = 0) -> bytes:
    """The last ``count`` fields added to the table, in the order they were added, as
    indexed fields (``newer`` entries were added after them)."""
    return b"".join(hpack.encode_indexed(62 + newer + count - 1 - i) for i in range(count))


async def _call(client: RawClient, stream_id: int, block: bytes) -> int | None:
    """Send one request with ``block``; the RST_STREAM code it got, None if it was
    answered (with the echo handler's answer)."""
    client.send(frame(HEADERS, END_HEADERS, stream_id, block),
                frame(DATA, END_STREAM, stream_id, message(b"x")))
    response = await client.response(stream_id)
    if response.reset is None:
        assert response.data == message(b"echo:x")
    return response.reset


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_request_is_refused_again_when_its_fields_come_indexed(case: str) -> None:
    fields = MALFORMED[case]

    async def body() -> None:
        async with raw() as (client, served):
            first = b"".join(_incremental(n, v) for n, v in fields)
            assert await _call(client, 1, first) == PROTOCOL_ERROR
            assert await _call(client, 3, _indexed(len(fields))) == PROTOCOL_ERROR
            # A good request adds its fields: the malformed ones are still refused where
            # they moved to (their verdicts moved with them).
            good = b"".join(_incremental(n, v) for n, v in GOOD)
            assert await _call(client, 5, good) is None
            assert await _call(client, 7, _indexed(len(GOOD))) is None
            assert await _call(client, 9, _indexed(len(fields), newer=len(GOOD))) \
                == PROTOCOL_ERROR
            assert [d.method for d in served.seen] == [ECHO, ECHO]

    run(body())


def test_a_bad_value_under_a_good_indexed_name_is_refused() -> None:
    """The name of a good entry reused with a bad value (a literal with an indexed name)
    is judged anew: the entry's verdict belongs to the whole field."""
    async def body() -> None:
        async with raw() as (client, _):
            good = b"".join(_incremental(n, v) for n, v in [*GOOD, (b"x-a", b"1")])
            assert await _call(client, 1, good) is None
            # x-a is the newest entry (62): its name with a value that ends in a space
            bad = _indexed(len(GOOD), newer=1) + hpack.encode_literal_indexed_name(62, b"1 ")
            assert await _call(client, 3, bad) == PROTOCOL_ERROR
            te = _indexed(len(GOOD) - 1, newer=1)[:-1]  # GOOD without its te, then:
            te += hpack.encode_literal(b"te", b"gzip")
            assert await _call(client, 5, te) == PROTOCOL_ERROR
            assert await _call(client, 7, _indexed(len(GOOD), newer=1)) is None

    run(body())


def _reference(field: Field) -> int:
    """The verdict the full check gives."""
    why = validate.problem(*field)
    return validate.BAD if isinstance(why, str) else why


_NAMES = st.sampled_from([b":method", b":path", b":scheme", b":authority", b":status",
                          b":foo", b"content-type", b"grpc-timeout", b"grpc-encoding",
                          b"te", b"connection", b"upgrade", b"x-a", b"X-A", b"x a", b"",
                          b":", b"user-agent", b"x\x00"])
_VALUES = st.one_of(st.sampled_from([b"", b"trailers", b"POST", b"/s/M", b"gzip", b" x",
                                     b"x\t", b"a\rb", b"a\nb", b"\x00", b"application/grpc"]),
                    st.binary(max_size=6))
_FIELDS = st.tuples(_NAMES, _VALUES)


def _reference_head(headers: list[Field]) -> validate.Head | str:
    """RFC 9113 8.1.1, 8.2 and 8.3.1 over a field list, written plainly from the full
    check (what request_head did before verdicts and shapes were cached)."""
    seen: set[bytes] = set()
    regular = False
    got: dict[bytes, bytes] = {}
    for name, value in headers:
        why = validate.problem(name, value)
        if isinstance(why, str):
            return why
        if name[:1] != b":":
            regular = True
            got[name] = value
            continue
        if regular:
            return f"pseudo-header {name!r} after a regular field"
        if name in seen:
            return f"duplicate pseudo-header {name!r}"
        seen.add(name)
        got[name] = value
    method = got.get(b":method", b"")
    if not method:
        return "no :method"
    if method == b"CONNECT":
        if seen != {b":authority"}:
            return "CONNECT with :scheme or :path, or without :authority"
    elif not {b":scheme", b":path"} <= seen:
        return "no :scheme or :path"
    elif not got.get(b":path"):
        return "empty :path"
    return (method, got.get(b":path", b""), got.get(b"content-type", b""),
            got.get(b"grpc-timeout", b""), got.get(b"grpc-encoding", b""))


_REQUEST_FIELDS = st.one_of(
    st.sampled_from([(b":method", b"POST"), (b":method", b"CONNECT"), (b":method", b""),
                     (b":scheme", b"http"), (b":path", b"/s/M"), (b":path", b""),
                     (b":authority", b"x"), (b"content-type", b"application/grpc"),
                     (b"content-type", b"text/plain"), (b"grpc-timeout", b"5S"),
                     (b"grpc-encoding", b"gzip"), (b"te", b"trailers"),
                     (b"user-agent", b"u")]), _FIELDS)


@settings(max_examples=500, deadline=None)
@given(st.lists(_REQUEST_FIELDS, max_size=12))
def test_a_request_s_head_is_the_full_check_s(fields: list[Field]) -> None:
    """Judged twice (the second time from the cached verdicts and shape), a field list
    reads as the plain rules say: the same head, or the same reason it is malformed."""
    expected = _reference_head(fields)
    for _ in range(2):
        for field in fields:
            assert validate.field_verdict(field) == _reference(field), field
        assert validate.request_head(fields) == expected
        assert validate.request_head(fields, [_reference(f) for f in fields]) == expected


def test_a_cached_shape_still_reads_each_request_s_values() -> None:
    """Two requests of one shape (the same verdicts in the same order) with different
    values: each gets its own head, and an empty :path or :method is still refused."""
    good = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/a"),
            (b"content-type", b"application/grpc"), (b"grpc-timeout", b"1S")]
    assert validate.request_head(good) == (b"POST", b"/a", b"application/grpc", b"1S", b"")
    other = [(b":method", b"PUT"), (b":scheme", b"https"), (b":path", b"/b"),
             (b"content-type", b"application/grpc+proto"), (b"grpc-timeout", b"2m")]
    assert validate.request_head(other) == (b"PUT", b"/b", b"application/grpc+proto",
                                            b"2m", b"")
    assert validate.request_head([good[0], good[1], (b":path", b""), *good[3:]]) \
        == "empty :path"
    assert validate.request_head([(b":method", b""), *good[1:]]) == "no :method"


# A block: a table size update (or none), then entries sent indexed (by position among
# the entries the table holds, wrapped), then fields added to the table or sent without
# indexing (adding may evict).
_BLOCKS = st.tuples(st.none() | st.integers(0, 300), st.lists(st.integers(0, 200), max_size=8),
                    st.lists(st.tuples(st.booleans(), _FIELDS), max_size=12))


@settings(max_examples=300, deadline=None)
@given(st.lists(_BLOCKS, min_size=1, max_size=8))
def test_verdicts_stay_with_their_entries_through_inserts_and_evictions(
        blocks: list[tuple[int | None, list[int], list[tuple[bool, Field]]]]) -> None:
    """Blocks of size updates, indexed references and inserts into a small table: every
    field's verdict is the full check's, whatever the table evicted or moved."""
    decoder = hpack.Decoder(max_table_size=300, check=validate.field_verdict)
    for size, indexed, literals in blocks:
        if size is not None:
            assert decoder.decode_checked(hpack.encode_int(size, 5, 0x20)) == ([], [])
        entries = _table(decoder)
        block = b"".join(hpack.encode_indexed(62 + i % entries) for i in indexed) \
            if entries else b""
        block += b"".join(_incremental(*field) if add else hpack.encode_literal(*field)
                          for add, field in literals)
        headers, verdicts = decoder.decode_checked(block)
        assert len(headers) == (len(indexed) if entries else 0) + len(literals)
        assert verdicts == [_reference(f) for f in headers]
        # white-box: one verdict per table slot, so evictions drop verdicts too
        assert len(decoder._verdicts) == len(decoder._table)


def _table(decoder: hpack.Decoder) -> int:
    """How many entries the dynamic table holds, found by indexing (as a peer would)."""
    count = 0
    while True:
        try:
            decoder.decode_checked(hpack.encode_indexed(62 + count))
        except hpack.HpackError:
            return count
        count += 1


def test_the_static_table_s_verdicts_are_the_full_check_s() -> None:
    decoder = hpack.Decoder(check=validate.field_verdict)
    for index, field in enumerate(hpack.STATIC_TABLE, start=1):
        assert decoder.decode_checked(hpack.encode_indexed(index)) == (
            [field], [_reference(field)])


def test_a_decoder_without_a_check_gives_every_field_verdict_zero() -> None:
    """The peer client's decoder judges nothing (responses are not requests)."""
    decoder = hpack.Decoder()
    headers, verdicts = decoder.decode_checked(
        _incremental(b"X-Upper", b" x") + hpack.encode_indexed(8) + hpack.encode_indexed(62))
    assert headers == [(b"X-Upper", b" x"), (b":status", b"200"), (b"X-Upper", b" x")]
    assert verdicts == [0, 0, 0]
