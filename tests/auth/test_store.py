"""The auth state machine (coord.auth.AuthStore) and its place in the applier: etcd's
rules, permission coverage, tokens, revisions, snapshots, and the check at apply time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coord.auth import (
    READ,
    READWRITE,
    WRITE,
    AuthFailed,
    AuthStore,
    InvalidAuthMgmt,
    InvalidAuthToken,
    NoPasswordUser,
    PermissionDenied,
    PermissionNotGranted,
    RoleAlreadyExist,
    RoleEmpty,
    RoleNotFound,
    RoleNotGranted,
    RootRoleNotExist,
    RootUserNotExist,
    UserAlreadyExist,
    UserEmpty,
    UserNotFound,
)
from coord.auth.store import SWEEP_EVERY, Perm
from coord.pb import auth_pb2, internal_pb2, rpc_pb2
from coord.server.apply import Applier

H = b"$2b$10$hash"


def enabled_store() -> AuthStore:
    a = AuthStore()
    a.user_add("root", H, False)
    a.user_grant_role("root", "root")
    a.enable()
    return a


def test_enable_needs_root_user_with_root_role() -> None:
    a = AuthStore()
    with pytest.raises(RootUserNotExist):
        a.enable()
    a.user_add("root", H, False)
    with pytest.raises(RootRoleNotExist):
        a.enable()
    a.user_grant_role("root", "root")  # the root role needs no RoleAdd
    rev = a.revision
    a.enable()
    a.enable()  # a no-op
    assert a.enabled and a.revision == rev  # enabling keeps the revision


def test_root_rules_while_enabled() -> None:
    a = enabled_store()
    a.role_add("root")
    for bad in (lambda: a.user_delete("root"), lambda: a.role_delete("root"),
                lambda: a.user_revoke_role("root", "root")):
        with pytest.raises(InvalidAuthMgmt):
            bad()
    a.disable()
    a.user_revoke_role("root", "root")  # allowed once disabled
    a.role_delete("root")
    a.user_delete("root")
    assert a.user_list() == [] and a.role_list() == []


def test_user_and_role_errors() -> None:
    a = AuthStore()
    with pytest.raises(UserEmpty):
        a.user_add("", H, False)
    a.user_add("u", H, False)
    with pytest.raises(UserAlreadyExist):
        a.user_add("u", H, False)
    with pytest.raises(RoleEmpty):
        a.role_add("")
    a.role_add("r")
    with pytest.raises(RoleAlreadyExist):
        a.role_add("r")
    with pytest.raises(RoleNotFound):
        a.user_grant_role("u", "nope")
    with pytest.raises(UserNotFound):
        a.user_grant_role("nope", "r")
    with pytest.raises(RoleNotGranted):
        a.user_revoke_role("u", "r")
    with pytest.raises(PermissionNotGranted):
        a.role_revoke_permission("r", b"k", b"")
    with pytest.raises(RoleNotFound):
        a.role_grant_permission("nope", Perm(b"k", b"", READ))
    with pytest.raises(UserNotFound):
        a.user_get("nope")
    rev = a.revision
    a.user_grant_role("u", "r")
    a.user_grant_role("u", "r")  # held already: no change, no new revision
    assert a.revision == rev + 1 and a.user_get("u") == ["r"]
    a.role_delete("r")
    assert a.user_get("u") == []  # a deleted role leaves its users


def test_grant_permission_replaces_the_type_of_the_same_range() -> None:
    a = AuthStore()
    a.role_add("r")
    a.role_grant_permission("r", Perm(b"b", b"c", READ))
    a.role_grant_permission("r", Perm(b"a", b"", WRITE))
    a.role_grant_permission("r", Perm(b"b", b"c", READWRITE))
    assert a.role_get("r") == [Perm(b"a", b"", WRITE), Perm(b"b", b"c", READWRITE)]
    a.role_revoke_permission("r", b"b", b"c")
    assert a.role_get("r") == [Perm(b"a", b"", WRITE)]


def test_permission_coverage_is_the_union_of_the_roles() -> None:
    a = enabled_store()
    a.user_add("u", H, False)
    for role, perm in (("r1", Perm(b"a/", b"a/m", READ)), ("r2", Perm(b"a/m", b"a0", READ)),
                       ("r3", Perm(b"k", b"", WRITE)), ("r4", Perm(b"z", b"\x00", READWRITE))):
        a.role_add(role)
        a.role_grant_permission(role, perm)
        a.user_grant_role("u", role)
    a.check("u", b"a/", b"a0", READ)  # covered by two adjacent ranges together
    a.check("u", b"a/x", b"", READ)
    a.check("u", b"k", b"", WRITE)
    a.check("u", b"zzz", b"\x00", WRITE)  # from-key inside an open-ended permission
    a.check("root", b"", b"\x00", WRITE)  # root may do anything
    for key, end, typ in ((b"a/", b"a1", READ), (b"a/x", b"", WRITE), (b"k", b"", READ),
                          (b"k", b"k\x00\x00", WRITE), (b"y", b"\x00", READ), (b"b", b"", READ)):
        with pytest.raises(PermissionDenied):
            a.check("u", key, end, typ)
    with pytest.raises(UserEmpty):
        a.check("", b"a/x", b"", READ)
    with pytest.raises(PermissionDenied):
        a.check("ghost", b"a/x", b"", READ)
    with pytest.raises(PermissionDenied):
        a.check_admin("u")
    a.check_admin("root")


@given(st.lists(st.tuples(st.binary(max_size=2), st.binary(max_size=2)), max_size=4),
       st.binary(max_size=2), st.binary(min_size=1, max_size=2))
def test_range_check_agrees_with_a_point_model(perms: list[tuple[bytes, bytes]], lo: bytes,
                                               hi: bytes) -> None:
    """A range [lo, hi) is allowed exactly when every point where coverage may change
    (``lo`` and each permission bound inside the range) lies in some permission: the
    union changes only at those points."""
    a = enabled_store()
    a.user_add("u", H, False)
    a.role_add("r")
    a.user_grant_role("u", "r")
    for key, end in perms:
        a.role_grant_permission("r", Perm(key, end, READ))
    ivs = [(k, None if e == b"\x00" else (e or k + b"\x00")) for k, e in perms]

    def point_in(p: bytes) -> bool:
        return any(s <= p and (e is None or p < e) for s, e in ivs)

    upper = None if hi == b"\x00" else hi
    bounds = {lo} | {b for s, e in ivs for b in (s, e) if b is not None}
    points = [p for p in bounds if lo <= p and (upper is None or p < upper)]
    expect = (upper is not None and lo >= upper) is False and all(map(point_in, points))
    try:
        a.check("u", lo, hi, READ)
        got = True
    except PermissionDenied:
        got = False
    if upper is not None and lo >= upper:
        return  # an empty range: etcd rejects it before any auth check
    assert got == expect


def test_tokens_expire_and_renew_and_die_with_their_user() -> None:
    a = enabled_store()
    a.token_ttl = 10.0
    a.user_add("u", H, False)
    a.assign_token("t1", "u", now=100.0)
    assert a.user_of_token("t1", 105.0) == "u"
    assert a.user_of_token("t1", 114.0) == "u"  # each use renews the TTL
    with pytest.raises(InvalidAuthToken):
        a.user_of_token("t1", 124.5)
    a.assign_token("t2", "u", now=200.0)
    a.user_change_password("u", b"$2b$10$other")
    with pytest.raises(InvalidAuthToken):
        a.user_of_token("t2", 201.0)
    a.assign_token("t3", "u", now=300.0)
    a.disable()
    a.enable()
    with pytest.raises(InvalidAuthToken):
        a.user_of_token("t3", 301.0)
    with pytest.raises(InvalidAuthToken):
        a.user_of_token("never", 0.0)


def test_expired_tokens_never_used_again_are_swept() -> None:
    a = enabled_store()
    a.token_ttl = 10.0
    for i in range(10 * SWEEP_EVERY):  # a login per second, each token used never again
        a.assign_token(f"t{i}", "root", now=float(i))
    assert a.token_count <= SWEEP_EVERY + 10
    assert a.user_of_token(f"t{10 * SWEEP_EVERY - 1}", float(10 * SWEEP_EVERY)) == "root"


def test_password_hash_lookup() -> None:
    a = AuthStore()
    a.user_add("u", H, False)
    a.user_add("cert", b"ignored", True)
    assert a.password_hash("u") == H
    with pytest.raises(AuthFailed):
        a.password_hash("nobody")
    with pytest.raises(NoPasswordUser):
        a.password_hash("cert")


def test_snapshot_round_trip_is_deterministic_and_drops_tokens() -> None:
    a = enabled_store()
    a.user_add("cert", b"", True)
    a.role_add("r")
    a.role_grant_permission("r", Perm(b"k", b"\x00", WRITE))
    a.user_grant_role("cert", "r")
    a.assign_token("t", "root", 0.0)
    data = a.snapshot()
    b = AuthStore()
    b.restore(data)
    assert b.snapshot() == data
    assert (b.enabled, b.revision, b.user_list(), b.role_get("r")) == (
        True, a.revision, ["cert", "root"], [Perm(b"k", b"\x00", WRITE)])
    assert b.users["cert"].no_password
    with pytest.raises(InvalidAuthToken):
        b.user_of_token("t", 0.0)
    b.restore(b"")
    assert not b.enabled and b.user_list() == [] and b.revision == 0
    with pytest.raises(ValueError, match="not an auth snapshot"):
        b.restore(b"junk")


# ---------------------------------------------------------------------- in the applier
def _req(**kw: object) -> internal_pb2.InternalRequest:
    return internal_pb2.InternalRequest(**kw)  # type: ignore[arg-type]


def _enabled_applier() -> Applier:
    ap = Applier()
    hashed = "aGFzaA=="
    ap.apply(_req(auth_user_add=rpc_pb2.AuthUserAddRequest(name="root", hashedPassword=hashed)), 0)
    ap.apply(_req(auth_user_grant_role=rpc_pb2.AuthUserGrantRoleRequest(user="root",
                                                                        role="root")), 0)
    ap.apply(_req(auth_user_add=rpc_pb2.AuthUserAddRequest(name="u", hashedPassword=hashed)), 0)
    ap.apply(_req(auth_role_add=rpc_pb2.AuthRoleAddRequest(name="r")), 0)
    ap.apply(_req(auth_role_grant_permission=rpc_pb2.AuthRoleGrantPermissionRequest(
        name="r", perm=auth_pb2.Permission(key=b"a/", range_end=b"a0",
                                           permType=auth_pb2.Permission.READWRITE))), 0)
    ap.apply(_req(auth_user_grant_role=rpc_pb2.AuthUserGrantRoleRequest(user="u", role="r")), 0)
    ap.apply(_req(auth_enable=rpc_pb2.AuthEnableRequest()), 0)
    return ap


def _as(user: str, **kw: object) -> internal_pb2.InternalRequest:
    req = _req(**kw)
    req.header.username = user
    return req


def test_applier_checks_writes_at_their_place_in_the_log() -> None:
    ap = _enabled_applier()
    rev = ap.current_revision
    ap.apply(_as("u", put=rpc_pb2.PutRequest(key=b"a/1", value=b"v")), 0)
    with pytest.raises(PermissionDenied):
        ap.apply(_as("u", put=rpc_pb2.PutRequest(key=b"b", value=b"v")), 0)
    with pytest.raises(UserEmpty):
        ap.apply(_as("", put=rpc_pb2.PutRequest(key=b"a/2", value=b"v")), 0)
    txn = rpc_pb2.TxnRequest(
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"a/2"))],
        failure=[rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(
            success=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(
                key=b"z"))]))])
    with pytest.raises(PermissionDenied):  # a nested op of the branch not taken
        ap.apply(_as("u", txn=txn), 0)
    with pytest.raises(PermissionDenied):  # only root manages auth
        ap.apply(_as("u", auth_role_add=rpc_pb2.AuthRoleAddRequest(name="x")), 0)
    # the permission revoked by an entry before the write: the write is refused
    ap.apply(_as("root", auth_role_revoke_permission=rpc_pb2.AuthRoleRevokePermissionRequest(
        role="r", key=b"a/", range_end=b"a0")), 0)
    with pytest.raises(PermissionDenied):
        ap.apply(_as("u", put=rpc_pb2.PutRequest(key=b"a/1", value=b"w")), 0)
    assert ap.current_revision == rev + 1  # only the first put wrote


def test_applier_snapshot_carries_auth_and_is_unchanged_without_it() -> None:
    plain = Applier()
    plain.put(rpc_pb2.PutRequest(key=b"k", value=b"v"))
    assert b"AUTH" not in plain.snapshot()[-64:]  # no auth ever: the old format
    ap = _enabled_applier()
    data = ap.snapshot()
    fresh = Applier()
    fresh.restore(data)
    assert fresh.auth.enabled and fresh.auth.user_list() == ["root", "u"]
    assert fresh.snapshot() == data
    fresh.restore(plain.snapshot())
    assert not fresh.auth.enabled and fresh.auth.user_list() == []
