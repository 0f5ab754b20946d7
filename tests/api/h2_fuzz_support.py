"""What the HTTP/2 fuzz tests of both ends share (tests/api/test_h2_fuzz.py for the
server's core, test_h2_client_fuzz.py for the client's): byte streams cut at random
points, and conversations mutated byte by byte."""

from __future__ import annotations

import itertools

from hypothesis import strategies as st


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` in pieces, cut at the points ``cuts`` name (modulo its length)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


Mutation = tuple[int, int, str]
"""(where, byte, how): flip the byte at ``where`` with ``byte``, insert ``byte`` there, or
delete the byte there."""


def mutations(size: int) -> st.SearchStrategy[list[Mutation]]:
    """One to eight mutations of a conversation of ``size`` bytes."""
    return st.lists(st.tuples(st.integers(0, size), st.integers(0, 255),
                              st.sampled_from(["flip", "insert", "delete"])),
                    min_size=1, max_size=8)


def mutate(data: bytes, changes: list[Mutation]) -> bytes:
    """``data`` with ``changes`` applied in order."""
    out = bytearray(data)
    for where, byte, how in changes:
        pos = min(where, len(out))
        if how == "flip" and pos < len(out):
            out[pos] ^= byte or 1
        elif how == "insert":
            out[pos:pos] = bytes((byte,))
        elif pos < len(out):
            del out[pos]
    return bytes(out)
