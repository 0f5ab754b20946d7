"""etcdctl put/get/del against real etcd and the target, output compared byte for byte
(after the harness's normalisation of revisions, ids, terms and timestamps)."""

from __future__ import annotations

import pytest

from tests.compat.harness import Case, Rev

pytestmark = pytest.mark.etcd


def seed_abcde(c: Case) -> None:
    for k, v in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")]:
        c.ctl("put", c.p + k, v)


def test_put_get_simple(compat) -> None:
    with compat() as c:
        c.ctl("put", c.p + "k", "hello")
        c.ctl("get", c.p + "k")
        c.ctl("get", c.p + "k", "-w", "json")
        c.ctl("get", c.p + "missing")
        c.ctl("get", c.p + "missing", "-w", "json")


def test_put_overwrite_version_and_prev_kv(compat) -> None:
    with compat() as c:
        c.ctl("put", c.p + "k", "v1")
        c.ctl("put", c.p + "k", "v1")  # same value still bumps revision and version
        c.ctl("get", c.p + "k", "-w", "json")
        c.ctl("put", c.p + "k", "v3", "--prev-kv")
        c.ctl("put", c.p + "k", "v4", "--prev-kv", "-w", "json")
        c.ctl("put", c.p + "new", "x", "--prev-kv")
        c.ctl("get", c.p + "k", "-w", "fields")


def test_get_prefix(compat) -> None:
    with compat() as c:
        seed_abcde(c)
        c.ctl("put", c.p[:-1] + "0", "outside")  # sorts just after the prefix end
        c.ctl("get", c.p, "--prefix")
        c.ctl("get", c.p, "--prefix", "-w", "json")


def test_get_range(compat) -> None:
    with compat() as c:
        seed_abcde(c)
        c.ctl("get", c.p + "b", c.p + "d")
        c.ctl("get", c.p + "d", c.p + "b")  # end <= key: empty, not an error
        c.ctl("get", c.p + "b", c.p + "d", "-w", "json")


def test_get_limit_and_count_via_json(compat) -> None:
    with compat() as c:
        seed_abcde(c)
        c.ctl("get", c.p, "--prefix", "--limit", "2")
        c.ctl("get", c.p, "--prefix", "--limit", "2", "-w", "json")  # more=true, count=5
        c.ctl("get", c.p, "--prefix", "--limit", "5", "-w", "json")
        c.ctl("get", c.p, "--prefix", "--limit", "1", "--keys-only", "-w", "json")


def seed_sortable(c: Case) -> None:
    """Key, create, modify, version and value orders all differ."""
    for k, v in [("c", "v1"), ("a", "x"), ("d", "y"), ("b", "z"), ("b", "v2"), ("a", "v3"),
                 ("a", "v4"), ("d", "v6"), ("d", "v7"), ("d", "v0")]:
        c.ctl("put", c.p + k, v)


@pytest.mark.parametrize("target", ["KEY", "CREATE", "MODIFY", "VERSION", "VALUE"])
def test_get_sort(compat, target: str) -> None:
    with compat() as c:
        seed_sortable(c)
        c.ctl("get", c.p, "--prefix", f"--sort-by={target}", "--order=ASCEND")
        c.ctl("get", c.p, "--prefix", f"--sort-by={target}", "--order=DESCEND")
        c.ctl("get", c.p, "--prefix", f"--sort-by={target}")  # no order given
        c.ctl("get", c.p, "--prefix", f"--sort-by={target}", "--order=DESCEND", "--limit=2",
              "-w", "json")


def test_get_order_without_sort_target(compat) -> None:
    with compat() as c:
        seed_sortable(c)
        c.ctl("get", c.p, "--prefix", "--order=DESCEND")
        c.ctl("get", c.p, "--prefix", "--order=ASCEND", "--keys-only")


def test_get_rev(compat) -> None:
    with compat() as c:
        c.ctl("put", c.p + "k", "v1")  # R+1
        c.ctl("put", c.p + "k", "v2")  # R+2
        c.ctl("del", c.p + "k")  # R+3
        c.ctl("put", c.p + "k", "v4")  # R+4
        for off in (1, 2, 3, 4):
            c.ctl("get", c.p + "k", "--rev", Rev(off), "-w", "json")
        c.ctl("get", c.p + "k", "--rev", Rev(1))
        c.ctl("get", c.p, "--prefix", "--rev", Rev(3))
        c.ctl("get", c.p + "k", "--rev", "0")  # 0 means latest


def test_get_keys_only_and_print_value_only(compat) -> None:
    with compat() as c:
        seed_abcde(c)
        c.ctl("get", c.p, "--prefix", "--keys-only")
        c.ctl("get", c.p, "--prefix", "--print-value-only")
        c.ctl("get", c.p + "c", "--print-value-only")
        c.ctl("get", c.p, "--prefix", "--keys-only", "-w", "json")


def test_get_serializable_and_hex(compat) -> None:
    with compat() as c:
        c.ctl("put", c.p + "k", "v\x01\x7f")
        c.ctl("get", c.p + "k", "--consistency=s")
        c.ctl("get", c.p + "k", "--hex")
        c.ctl("get", c.p + "k", "--hex", "-w", "fields")


def test_get_fields_output(compat) -> None:
    with compat() as c:
        seed_abcde(c)
        c.ctl("get", c.p, "--prefix", "--limit=2", "-w", "fields")
        c.ctl("get", c.p + "zz", "-w", "fields")


def test_del_single_and_missing(compat) -> None:
    with compat() as c:
        seed_abcde(c)
        c.ctl("del", c.p + "a")
        c.ctl("del", c.p + "a")  # missing key: 0, no revision bump
        c.ctl("del", c.p + "a", "-w", "json")
        c.ctl("put", c.p + "a", "again")  # recreated: version 1, new create revision
        c.ctl("get", c.p + "a", "-w", "json")


def test_del_prefix(compat) -> None:
    with compat() as c:
        seed_abcde(c)
        c.ctl("put", c.p[:-1] + "0", "outside")
        c.ctl("del", c.p, "--prefix")
        c.ctl("get", c.p, "--prefix")
        c.ctl("get", c.p[:-1] + "0")
        c.ctl("del", c.p, "--prefix", "-w", "json")


def test_del_prev_kv(compat) -> None:
    with compat() as c:
        seed_abcde(c)
        c.ctl("del", c.p + "b", "--prev-kv")
        c.ctl("del", c.p + "c", c.p + "e", "--prev-kv", "-w", "json")
        c.ctl("get", c.p, "--prefix", "--keys-only")


def test_del_range(compat) -> None:
    with compat() as c:
        seed_abcde(c)
        c.ctl("del", c.p + "b", c.p + "d")
        c.ctl("get", c.p, "--prefix", "--keys-only")


def test_empty_key_errors(compat) -> None:
    with compat() as c:
        c.ctl("get", "")
        c.ctl("put", "", "v")
        c.ctl("del", "")


def test_non_ascii_keys_and_values(compat) -> None:
    with compat() as c:
        c.ctl("put", c.p + "ключ", "значение ☃")
        c.ctl("put", c.p + "日本/語", "値")
        c.ctl("put", c.p + "emoji-🎉", "✓")
        c.ctl("get", c.p, "--prefix")
        c.ctl("get", c.p, "--prefix", "-w", "json")
        c.ctl("get", c.p + "日本", "--prefix", "--print-value-only")
        c.ctl("get", c.p, "--prefix", "--sort-by=VALUE", "--keys-only")
        c.ctl("del", c.p + "ключ", "--prev-kv")


def test_large_value_100k_via_stdin(compat) -> None:
    big = ("0123456789abcdef" * 8192).encode()  # 128 KiB, over the argv limit
    with compat() as c:
        c.ctl("put", c.p + "big", stdin=big)
        c.ctl("get", c.p + "big", "--print-value-only")
        c.ctl("get", c.p + "big", "-w", "json")
        c.ctl("get", c.p + "big", "--keys-only")


def test_oversized_put_rejected(compat) -> None:
    huge = b"x" * int(1.6 * 1024 * 1024)
    with compat() as c:
        c.ctl("put", c.p + "huge", stdin=huge)
        c.ctl("get", c.p + "huge", "-w", "json")  # nothing was written, no revision bump


def test_put_ignore_value_and_lease_errors(compat) -> None:
    with compat() as c:
        c.ctl("put", c.p + "k", "--ignore-value")  # missing key
        c.ctl("put", c.p + "k", "v1")
        c.ctl("put", c.p + "k", "v2", "--ignore-value")  # value is provided
        c.ctl("put", c.p + "k", "--ignore-value")
        c.ctl("put", c.p + "k", "v9", "--ignore-lease")
        c.ctl("get", c.p + "k", "-w", "json")


def test_put_over_grpc_message_limit(compat) -> None:
    """2.1 MiB: etcdctl's own 2 MiB send limit refuses it before the server sees it (the
    server's receive limit is exercised by the aetcd ``errors`` scenario)."""
    with compat() as c:
        c.ctl("put", c.p + "huge", stdin=b"x" * int(2.1 * 1024 * 1024))
        c.ctl("get", c.p + "huge", "-w", "json")


def seed_ties(c: Case, n: int) -> None:
    """n keys (ascending), every 4th one written twice: many ties on VERSION/VALUE."""
    for i in range(1, n + 1):
        c.ctl("put", f"{c.p}{i:02d}", "v")
    for i in range(3, n + 1, 4):
        c.ctl("put", f"{c.p}{i:02d}", "w")


def test_get_sort_ties_small(compat) -> None:
    """≤ 12 results: etcd's sort (Go insertion sort) keeps key order among ties."""
    with compat() as c:
        seed_ties(c, 10)
        for target in ("VERSION", "VALUE", "CREATE"):
            for order in ("ASCEND", "DESCEND"):
                c.ctl("get", c.p, "--prefix", f"--sort-by={target}", f"--order={order}",
                      "--keys-only")


def test_get_sort_ties_large(compat) -> None:
    """> 12 results: etcd sorts with Go's unstable sort.Sort (pdqsort), which reorders
    ties deterministically; clients see that order."""
    with compat() as c:
        seed_ties(c, 20)
        for target in ("VERSION", "VALUE"):
            for order in ("ASCEND", "DESCEND"):
                c.ctl("get", c.p, "--prefix", f"--sort-by={target}", f"--order={order}",
                      "--keys-only")
