"""etcdctl txn (stdin scripts) and compaction, etcd vs target."""

from __future__ import annotations

import pytest

from tests.compat.harness import Rev

pytestmark = pytest.mark.etcd


def test_txn_success_path(compat) -> None:
    with compat() as c:
        c.ctl("put", c.p + "k", "v1")
        script = (f'mod("{c.p}k") > "0"\n\n'
                  f"put {c.p}new created\nget {c.p}k\ndel {c.p}k\n\n"
                  f"put {c.p}failed yes\n\n")
        c.txn(script)
        c.ctl("get", c.p, "--prefix", "-w", "json")


def test_txn_failure_path(compat) -> None:
    with compat() as c:
        c.ctl("put", c.p + "k", "v1")
        script = (f'value("{c.p}k") = "nope"\n\n'
                  f"put {c.p}ok yes\n\n"
                  f"put {c.p}failed yes\nget {c.p}k\n\n")
        c.txn(script)
        c.txn(script, "-w", "json")
        c.ctl("get", c.p, "--prefix")


def test_txn_create_zero_lock_idiom(compat) -> None:
    with compat() as c:
        script = (f'create("{c.p}lock") = "0"\n\n'
                  f"put {c.p}lock owner-1\n\n"
                  f"get {c.p}lock\n\n")
        c.txn(script, "-w", "json")  # acquires
        c.txn(script, "-w", "json")  # fails, shows the holder
        c.txn(script)
        c.ctl("get", c.p + "lock", "-w", "json")


def test_txn_version_and_mod_compares(compat) -> None:
    with compat() as c:
        c.ctl("put", c.p + "k", "a")  # R+1
        c.ctl("put", c.p + "k", "b")  # R+2, version 2
        for cmp in ['version("{k}") = "2"', 'version("{k}") > "2"', 'version("{k}") < "3"',
                    'version("{m}") = "0"', 'create("{k}") != "0"', 'mod("{k}") = "{r2}"',
                    'mod("{k}") < "{r2}"', 'create("{m}") = "0"']:
            text = cmp.format(k=f"{c.p}k", m=f"{c.p}missing", r2="{r2}")
            c.each(lambda side, text=text: side.ctl(
                ["txn"], stdin=(text.replace("{r2}", str(side.base + 2))
                                + f"\n\nget {c.p}k\n\nput {c.p}fail x\n\n").encode()))
        c.ctl("get", c.p + "fail", "-w", "json")


def test_txn_value_compares(compat) -> None:
    with compat() as c:
        c.ctl("put", c.p + "k", "mmm")
        for cmp in ['value("{k}") = "mmm"', 'value("{k}") != "mmm"', 'value("{k}") > "aaa"',
                    'value("{k}") < "aaa"', 'value("{m}") != "x"', 'value("{m}") = ""']:
            text = cmp.format(k=f"{c.p}k", m=f"{c.p}missing")
            c.txn(f"{text}\n\nget {c.p}k\n\nput {c.p}failed-{len(text)} x\n\n")
        c.ctl("get", c.p, "--prefix", "--keys-only")


def test_txn_multiple_compares_and_ops_share_one_revision(compat) -> None:
    with compat() as c:
        c.ctl("put", c.p + "a", "1")
        c.ctl("put", c.p + "b", "2")
        script = (f'value("{c.p}a") = "1"\nversion("{c.p}b") = "1"\n\n'
                  f"put {c.p}x 10\nput {c.p}y 20\ndel {c.p}a\nget {c.p} --prefix\n\n\n")
        c.txn(script, "-w", "json")
        c.ctl("get", c.p, "--prefix", "-w", "json")


def test_txn_duplicate_key_error(compat) -> None:
    with compat() as c:
        c.txn(f"\nput {c.p}k 1\nput {c.p}k 2\n\n\n")
        c.txn(f"\nput {c.p}k 1\ndel {c.p}k\n\n\n")
        c.txn(f"\nput {c.p}k 1\ndel {c.p} --prefix\n\n\n")
        c.txn(f"\ndel {c.p}k\ndel {c.p}k\n\n\n")  # two deletes of one key are fine
        c.ctl("get", c.p, "--prefix", "-w", "json")


def test_txn_too_many_ops(compat) -> None:
    with compat() as c:
        ops128 = "".join(f"put {c.p}k{i:03d} v\n" for i in range(128))
        ops129 = ops128 + f"put {c.p}k128 v\n"
        c.txn(f"\n{ops129}\n\n")
        c.txn(f"\n{ops128}\n\n")
        cmps129 = "".join(f'version("{c.p}k{i:03d}") = "1"\n' for i in range(129))
        c.txn(f"{cmps129}\nget {c.p}k000\n\n\n")
        c.txn(f'mod("") > "0"\n\nget {c.p}k000\n\n\n')  # empty compare key
        c.ctl("get", c.p, "--prefix", "--limit=1", "-w", "json")


def test_txn_empty_and_read_only(compat) -> None:
    with compat() as c:
        c.txn("\n\n\n")
        c.txn("\n\n\n", "-w", "json")
        c.txn(f"\nget {c.p}nothing\ndel {c.p}nothing\n\n\n", "-w", "json")  # no revision bump
        c.ctl("get", c.p + "nothing", "-w", "json")


def test_txn_put_with_missing_lease(compat) -> None:
    with compat() as c:
        c.txn(f"\nput {c.p}k v --lease=1234abcd\n\n\n")
        c.ctl("get", c.p + "k")


def test_compaction_and_revision_errors(compat) -> None:
    with compat() as c:
        c.ctl("put", c.p + "k", "v1")  # R+1
        c.ctl("put", c.p + "k", "v2")  # R+2
        c.ctl("put", c.p + "k", "v3")  # R+3
        c.ctl("compaction", Rev(2))
        c.ctl("get", c.p + "k", "--rev", Rev(1))  # compacted
        c.ctl("get", c.p + "k", "--rev", Rev(2), "-w", "json")  # == compact rev: allowed
        c.ctl("get", c.p + "k", "--rev", Rev(3))
        c.ctl("compaction", Rev(2))  # again: compacted
        c.ctl("compaction", Rev(1))
        c.ctl("compaction", Rev(100))  # future
        c.ctl("get", c.p + "k", "--rev", Rev(100))  # future
        c.ctl("compaction", Rev(3), "--physical")
        c.ctl("get", c.p + "k", "-w", "json")
