"""The applier's auth part: applying etcd's auth management requests to the
:class:`coord.auth.AuthStore`, and checking a client request's permissions at its place in
the log, as etcd's ``authApplierV3`` does (so a permission revoked before a write commits
stops that write on every member alike)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from coord.auth import READ, WRITE, AuthStore
from coord.auth.store import Perm
from coord.lease.lessor import Lessor
from coord.pb import internal_pb2, rpc_pb2

AUTH_REQUESTS = frozenset({
    "auth_enable", "auth_disable", "authenticate", "auth_user_add", "auth_user_delete",
    "auth_user_change_password", "auth_user_grant_role", "auth_user_revoke_role",
    "auth_role_add", "auth_role_delete", "auth_role_grant_permission",
    "auth_role_revoke_permission"})
"""The InternalRequest fields applied to the auth store."""

_RESPONSES: dict[str, Callable[[], Any]] = {
    "auth_enable": rpc_pb2.AuthEnableResponse,
    "auth_disable": rpc_pb2.AuthDisableResponse,
    "authenticate": rpc_pb2.AuthenticateResponse,
    "auth_user_add": rpc_pb2.AuthUserAddResponse,
    "auth_user_delete": rpc_pb2.AuthUserDeleteResponse,
    "auth_user_change_password": rpc_pb2.AuthUserChangePasswordResponse,
    "auth_user_grant_role": rpc_pb2.AuthUserGrantRoleResponse,
    "auth_user_revoke_role": rpc_pb2.AuthUserRevokeRoleResponse,
    "auth_role_add": rpc_pb2.AuthRoleAddResponse,
    "auth_role_delete": rpc_pb2.AuthRoleDeleteResponse,
    "auth_role_grant_permission": rpc_pb2.AuthRoleGrantPermissionResponse,
    "auth_role_revoke_permission": rpc_pb2.AuthRoleRevokePermissionResponse,
}


def _hash(hashed: str) -> bytes:
    return base64.b64decode(hashed) if hashed else b""


def apply_auth(auth: AuthStore, req: internal_pb2.InternalRequest, which: str,
               now: float) -> Any:
    """Apply one auth request (its sender's admin right checked first when it carries a
    header, etcd's ``needAdminPermission``); the response, header unset."""
    if which != "authenticate" and req.HasField("header"):
        auth.check_admin(req.header.username)
    msg = getattr(req, which)
    resp = _RESPONSES[which]()
    if which == "auth_enable":
        auth.enable()
    elif which == "auth_disable":
        auth.disable()
    elif which == "authenticate":
        auth.assign_token(msg.token, msg.name, now)
        resp.token = msg.token
    elif which == "auth_user_add":
        auth.user_add(msg.name, _hash(msg.hashedPassword), msg.options.no_password)
    elif which == "auth_user_delete":
        auth.user_delete(msg.name)
    elif which == "auth_user_change_password":
        auth.user_change_password(msg.name, _hash(msg.hashedPassword))
    elif which == "auth_user_grant_role":
        auth.user_grant_role(msg.user, msg.role)
    elif which == "auth_user_revoke_role":
        auth.user_revoke_role(msg.name, msg.role)
    elif which == "auth_role_add":
        auth.role_add(msg.name)
    elif which == "auth_role_delete":
        auth.role_delete(msg.role)
    elif which == "auth_role_grant_permission":
        perm = msg.perm if msg.HasField("perm") else None
        auth.role_grant_permission(msg.name, None if perm is None else Perm(
            perm.key, perm.range_end, perm.permType))
    else:
        auth.role_revoke_permission(msg.role, msg.key, msg.range_end)
    return resp


def check_txn(auth: AuthStore, user: str, t: rpc_pb2.TxnRequest) -> None:
    """etcd checkTxnAuth: read on every compare, then every op of both branches (nested
    txns included), whichever branch runs."""
    for c in t.compare:
        auth.check(user, c.key, c.range_end, READ)
    for op in (*t.success, *t.failure):
        which = op.WhichOneof("request")
        if which == "request_range":
            auth.check(user, op.request_range.key, op.request_range.range_end, READ)
        elif which == "request_put":
            check_put(auth, user, op.request_put, None)
        elif which == "request_delete_range":
            check_delete(auth, user, op.request_delete_range)
        elif which == "request_txn":
            check_txn(auth, user, op.request_txn)


def check_put(auth: AuthStore, user: str, p: rpc_pb2.PutRequest, lessor: Lessor | None) -> None:
    auth.check(user, p.key, b"", WRITE)
    if lessor is not None and p.lease:
        # A lease already attached to a key this user may not write: the user could not
        # revoke it, so it may not attach it to more keys (etcd checkLeasePuts).
        for key in lessor.keys(p.lease) if p.lease in lessor else ():
            auth.check(user, key, b"", WRITE)
    if p.prev_kv:
        auth.check(user, p.key, b"", READ)


def check_delete(auth: AuthStore, user: str, d: rpc_pb2.DeleteRangeRequest) -> None:
    auth.check(user, d.key, d.range_end, WRITE)
    if d.prev_kv:
        auth.check(user, d.key, d.range_end, READ)


def check_request(auth: AuthStore, lessor: Lessor, req: internal_pb2.InternalRequest,
                  which: str) -> None:
    """The permission check of a client request carrying a header (auth enabled)."""
    user = req.header.username
    if which == "put":
        check_put(auth, user, req.put, lessor)
    elif which == "delete_range":
        check_delete(auth, user, req.delete_range)
    elif which == "txn":
        check_txn(auth, user, req.txn)
    elif which == "range":
        auth.check(user, req.range.key, req.range.range_end, READ)
    elif which == "lease_revoke":
        lid = req.lease_revoke.ID
        for key in lessor.keys(lid) if lid in lessor else ():
            auth.check(user, key, b"", WRITE)
