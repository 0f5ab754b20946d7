"""The Go 1.19 sort.Sort port: exact etcd tie order, and always a correct sort."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from coord.mvcc.gosort import go_sort
from tests.server.reqs import RR, Client


def test_matches_etcd_tie_order_for_20_keys() -> None:
    """compat FINDINGS F5: etcd 3.4.23's order for 20 keys with two version classes."""
    keys = [b"P/%02d" % i for i in range(1, 21)]
    c = Client()
    for k in keys:
        c.put(k, b"v")
    for i in (3, 7, 11, 15, 19):
        c.put(b"P/%02d" % i, b"w")

    def order(target: int, desc: bool) -> str:
        r = c.get(b"P/", b"P0", keys_only=True, sort_target=target,
                  sort_order=RR.DESCEND if desc else RR.ASCEND)
        return " ".join(kv.key[2:].decode() for kv in r.kvs)

    asc = "16 18 09 04 05 06 10 17 20 02 08 12 13 14 01 15 11 07 19 03"
    desc = "07 19 03 15 11 06 13 08 09 10 05 12 01 14 04 16 17 18 02 20"
    for target in (RR.VERSION, RR.VALUE):
        assert order(target, False) == asc
        assert order(target, True) == desc
    assert order(RR.CREATE, False).split() == [k[2:].decode() for k in keys]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=6), max_size=300), st.booleans())
def test_go_sort_sorts(values: list[int], reverse: bool) -> None:
    items = list(range(len(values)))
    keys = list(values)
    go_sort(items, keys, reverse)
    assert keys == sorted(values, reverse=reverse)
    assert [values[i] for i in items] == keys
    assert sorted(items) == list(range(len(values)))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(), max_size=200, unique=True), st.booleans())
def test_without_ties_equals_python_sort(values: list[int], reverse: bool) -> None:
    items = list(values)
    go_sort(items, list(values), reverse)
    assert items == sorted(values, reverse=reverse)


def test_small_inputs_are_stable() -> None:
    items = list(range(12))
    keys = [i % 3 for i in range(12)]
    go_sort(items, keys, True)
    assert items == [2, 5, 8, 11, 1, 4, 7, 10, 0, 3, 6, 9]
