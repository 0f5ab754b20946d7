"""etcdctl endpoint / member commands and whole-keyspace reads on fresh servers."""

from __future__ import annotations

import pytest

from tests.compat.harness import Pair

pytestmark = pytest.mark.etcd


def test_endpoint_health(compat) -> None:
    with compat() as c:
        c.ctl("endpoint", "health")
        c.ctl("endpoint", "health", "-w", "json")


def test_endpoint_status_json(compat) -> None:
    with compat() as c:
        c.ctl("endpoint", "status", "-w", "json")
        c.ctl("endpoint", "status", "-w", "fields")


def test_member_list(compat) -> None:
    with compat() as c:
        c.ctl("member", "list")
        c.ctl("member", "list", "-w", "json")
        c.ctl("member", "list", "-w", "table")


def test_fresh_store_absolute_revisions_and_from_key(fresh_pair: Pair) -> None:
    """On fresh servers the absolute revisions must agree: a new store is at 1."""
    with fresh_pair.case("fresh", absolute=True) as c:
        c.ctl("get", "", "--from-key", "-w", "json")
        c.ctl("put", "b", "2")
        c.ctl("put", "a", "1")
        c.ctl("put", "c", "3")
        c.ctl("put", "d", "4")
        c.ctl("get", "", "--from-key")
        c.ctl("get", "", "--from-key", "-w", "json")
        c.ctl("get", "b", "--from-key", "--keys-only")
        c.ctl("get", "", "--from-key", "--limit=2", "-w", "json")
        c.ctl("del", "c", "--from-key", "--prev-kv")
        c.ctl("get", "", "--from-key", "-w", "json")
        c.ctl("del", "", "--from-key")
        c.ctl("get", "", "--from-key", "-w", "json")
        c.ctl("endpoint", "status", "-w", "json")
