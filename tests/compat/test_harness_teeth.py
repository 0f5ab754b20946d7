"""The comparison must have teeth: normalisation hides ids, terms, timestamps and
absolute revisions — and nothing else. Unit tests of the normaliser plus live cases
that must FAIL because the two sides really differ."""

from __future__ import annotations

import json
from pathlib import Path
from unittest.mock import MagicMock

import pytest

from tests.compat.harness import CompatMismatch, Normalizer, Pair, Rev, Server, Side

pytestmark = pytest.mark.etcd


def fake_server(cport: int = 1111, pport: int = 2222, cluster: int = 77, member: int = 99
                ) -> Server:
    proc = MagicMock()
    proc.client_port = cport
    proc.endpoint = f"127.0.0.1:{cport}"
    return Server("x", proc, pport, "etcdctl", cluster_id=cluster, member_id=member)


def norm(text: str, base: int = 100, **kw: int) -> str:
    return Normalizer(fake_server(**kw), base).text(text)


def header(rev: int, cluster: int = 77, member: int = 99, term: int = 2) -> dict[str, int]:
    return {"cluster_id": cluster, "member_id": member, "revision": rev, "raft_term": term}


def test_ids_terms_and_revision_offsets_are_normalised() -> None:
    a = json.dumps({"header": header(105), "kvs": [{"create_revision": 101, "lease": 123}]})
    b = json.dumps({"header": header(5, cluster=1, member=2, term=9),
                    "kvs": [{"create_revision": 1, "lease": 456}]})
    assert norm(a, base=100) == norm(b, base=0, cluster=1, member=2)


@pytest.mark.parametrize("field,va,vb", [
    ("version", 2, 3),
    ("count", 1, 2),
    ("value", "djE=", "djI="),
    ("more", True, False),
])
def test_other_fields_are_not_normalised(field: str, va: object, vb: object) -> None:
    a = json.dumps({"header": header(101), field: va})
    b = json.dumps({"header": header(101), field: vb})
    assert norm(a) != norm(b)


def test_revision_offset_differences_survive() -> None:
    a = json.dumps({"header": header(102)})
    b = json.dumps({"header": header(103)})
    assert norm(a) != norm(b)  # R+2 vs R+3


def test_id_identity_structure_survives() -> None:
    # the same lease id twice vs two different lease ids must not look alike
    same = "lease 0000000000000abc granted\nlease 0000000000000abc revoked"
    diff = "lease 0000000000000abc granted\nlease 0000000000000abd revoked"
    assert norm(same) != norm(diff)


def test_error_strings_survive() -> None:
    assert norm("Error: etcdserver: key not found") != norm(
        "Error: etcdserver: key is not provided")


def test_remaining_ttl_only_when_plausible() -> None:
    ok = norm("lease 0000000000000001 granted with TTL(60s), remaining(59s)")
    assert "remaining(<remaining>)" in ok
    assert "remaining(5s)" in norm("lease 0000000000000001 granted with TTL(60s), remaining(5s)")
    # etcd truncates the time left: right after a grant it shows TTL-1, never TTL
    assert "remaining(60s)" in norm("lease 0000000000000001 granted with TTL(60s), "
                                    "remaining(60s)")


def test_ports_timestamps_uuids() -> None:
    line = ('{"level":"warn","ts":"2026-11-22T01:59:57.370Z","target":'
            '"endpoint://client-614dfa3f-7c96-4a33-9de5-2ca5c2d3c9a5/127.0.0.1:1111"}')
    other = ('{"level":"warn","ts":"2027-01-01T00:00:00.000Z","target":'
             '"endpoint://client-00000000-7c96-4a33-9de5-2ca5c2d3c9a5/127.0.0.1:3333"}')
    assert norm(line) == norm(other, cport=3333)


def test_rev_args_resolve_per_server() -> None:
    side = Side(fake_server(), 40, Normalizer(fake_server(), 40), Path("."), MagicMock())
    assert side.resolve(["get", "k", "--rev", Rev(3)]) == ["get", "k", "--rev", "43"]


def test_live_comparison_fails_on_different_keys(compat_pair: Pair) -> None:
    """Deliberately different commands on the two servers: the case must fail with a diff
    naming both outputs."""
    c = compat_pair.case("teeth-keys")
    try:
        c.ctl("put", c.p + "a", "apple")
        c.ctl("put", c.p + "b", "banana")
        c.each(lambda side: side.ctl(["get", c.p + ("a" if side is c.sides[0] else "b")]))
        with pytest.raises(CompatMismatch) as err:
            c.check()
    finally:
        c.close()
    msg = str(err.value)
    assert "-    apple" in msg and "+    banana" in msg, msg


def test_live_comparison_fails_on_different_revisions(compat_pair: Pair) -> None:
    """One extra write on the target only: same output text, different revision offset."""
    c = compat_pair.case("teeth-revs")
    try:
        c.each(lambda side: [side.ctl(["put", c.p + "k", "v"], record=False)
                             for _ in range(1 if side is c.sides[0] else 2)])
        c.ctl("get", c.p + "k", "-w", "json")
        with pytest.raises(CompatMismatch) as err:
            c.check()
    finally:
        c.close()
    assert '"revision": "R+1"' in str(err.value) and '"revision": "R+2"' in str(err.value)


def test_lock_key_ids_and_lease_key_sets() -> None:
    n = Normalizer(fake_server(), 0)
    n.id_after("job/L")
    assert n.text("job/L/c27a20101f4ba08 job/L/1") == "job/L/<id1> job/L/<id2>"
    a = norm("lease 0000000000000001 granted with TTL(60s), remaining(60s), "
             "attached keys([k/b k/a])")
    b = norm("lease 0000000000000001 granted with TTL(60s), remaining(60s), "
             "attached keys([k/a k/b])")
    assert a == b
    assert a != norm("lease 0000000000000001 granted with TTL(60s), remaining(60s), "
                     "attached keys([k/a])")


def test_table_padding_only() -> None:
    a = norm("+------+---------+\n|   63 | started |")  # member id 99 = 0x63
    b = norm("+----------+---------+\n|     63 | started |")
    assert a == b
    assert a != norm("+------+---------+\n|   63 | unstarted |")


def test_member_ids_in_text() -> None:
    n = Normalizer(fake_server(cluster=0xabc, member=0x63), 0)
    assert (n.text("Member  5ace60d54150683 added to cluster              abc")
            == "Member <id1> added to cluster <cluster>")
    assert n.text("5ace60d54150683, unstarted, , http://x, , true").startswith("<id1>, ")
    assert n.text("Member 5ace60d541506837 removed from cluster abc").startswith("Member <id2>")
