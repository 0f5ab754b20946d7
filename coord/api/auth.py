"""etcdserverpb.Auth: users, roles, permissions and simple tokens, with etcd's semantics
and error strings (the rules themselves: :mod:`coord.auth.store`).

Changes go through the log (the member stamps each with its sender, and the applier
checks the sender is ``root`` while auth is enabled, as etcd's ``needAdminPermission``).
Passwords are hashed here, with bcrypt at etcd's cost, before anything is proposed: the log
carries the hash in ``hashedPassword`` (etcd 3.5's field), never the password.
Authenticate checks the password here and proposes only the token it made for the user.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import string
import time
from collections.abc import Callable
from typing import Any, Protocol

import bcrypt

from coord.api.errors import unary
from coord.api.ports import Headers, Proposer
from coord.auth import AuthFailed, AuthStore
from coord.auth.caller import caller
from coord.errors import AuthNotEnabled, CoordError
from coord.pb import internal_pb2, rpc_pb2
from coord.rpc.handlers import Context as Ctx

BCRYPT_COST = 10
"""etcd's default ``--bcrypt-cost`` (Go's bcrypt.DefaultCost)."""
_TOKEN_LETTERS = string.ascii_letters


class AuthMember(Headers, Proposer, Protocol):
    """What Auth (and the auth guard) need of the member: its applied auth state, read
    only (changes go through ``propose``)."""

    @property
    def auth_store(self) -> AuthStore: ...

    @property
    def cert_users(self) -> bool:
        """Whether a verified client certificate's common name is the user of a call
        without a token (``--client-cert-auth``, as etcd)."""


def hash_password(password: str) -> str:
    """etcd's stored form: the bcrypt hash, base64 as in ``hashedPassword``."""
    raw = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_COST))
    return base64.b64encode(raw).decode()


def _password_ok(password: str, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), hashed)
    except ValueError:  # not a bcrypt hash (cannot happen for a user added here)
        return False


class AuthService:
    def __init__(self, core: AuthMember) -> None:
        self.core = core

    def _header(self, resp: Any) -> Any:
        self.core.fill_header(resp.header)
        return resp

    async def _propose(self, **request: Any) -> Any:
        return self._header(await self.core.propose(internal_pb2.InternalRequest(**request)))

    async def _admin_read(self, own: Callable[[AuthStore, str], bool] | None = None,
                          ) -> AuthStore:
        """The auth state for a linearizable read by an admin (etcd sends these through
        the log with the admin check; a read barrier gives the same view). ``own``: what
        a non-admin may read all the same (its own user, a role it has: etcd 3.4)."""
        await self.core.read_barrier(serializable=False)
        store = self.core.auth_store
        user = caller.get()
        if user is not None:
            try:
                store.check_admin(user)
            except CoordError:
                if own is None or not own(store, user):
                    raise
        return store

    @unary
    async def AuthEnable(self, request: Any, context: Ctx) -> Any:
        return await self._propose(auth_enable=request)

    @unary
    async def AuthDisable(self, request: Any, context: Ctx) -> Any:
        return await self._propose(auth_disable=request)

    @unary
    async def AuthStatus(self, request: Any, context: Ctx) -> Any:
        """etcd 3.5's AuthStatus (any user): enabled, and the auth revision."""
        await self.core.read_barrier(serializable=False)
        store = self.core.auth_store
        return self._header(rpc_pb2.AuthStatusResponse(enabled=store.enabled,
                                                       authRevision=store.revision))

    @unary
    async def Authenticate(self, request: rpc_pb2.AuthenticateRequest, context: Ctx) -> Any:
        # As etcd: a linearizable view first, so a user just added (or a password just
        # changed) through another member is seen here.
        await self.core.read_barrier(serializable=False)
        store = self.core.auth_store
        if not store.enabled:
            raise AuthNotEnabled()
        hashed = store.password_hash(request.name)
        if not await asyncio.to_thread(_password_ok, request.password, hashed):
            raise AuthFailed()
        token = "".join(secrets.choice(_TOKEN_LETTERS) for _ in range(16))
        token = f"{token}.{time.monotonic_ns()}"
        return await self._propose(authenticate=internal_pb2.AuthenticateAssign(
            name=request.name, token=token))

    @unary
    async def UserAdd(self, request: rpc_pb2.AuthUserAddRequest, context: Ctx) -> Any:
        req = rpc_pb2.AuthUserAddRequest(name=request.name, options=request.options)
        if request.name and not request.options.no_password:
            # A hash sent by the client is ignored (etcd 3.5 overwrites it too).
            req.hashedPassword = await asyncio.to_thread(hash_password, request.password)
        return await self._propose(auth_user_add=req)

    @unary
    async def UserChangePassword(self, request: rpc_pb2.AuthUserChangePasswordRequest,
                                 context: Ctx) -> Any:
        req = rpc_pb2.AuthUserChangePasswordRequest(name=request.name)
        user = self.core.auth_store.users.get(request.name)
        if user is not None and not user.no_password:
            req.hashedPassword = await asyncio.to_thread(hash_password, request.password)
        return await self._propose(auth_user_change_password=req)

    @unary
    async def UserDelete(self, request: Any, context: Ctx) -> Any:
        return await self._propose(auth_user_delete=request)

    @unary
    async def UserGrantRole(self, request: Any, context: Ctx) -> Any:
        return await self._propose(auth_user_grant_role=request)

    @unary
    async def UserRevokeRole(self, request: Any, context: Ctx) -> Any:
        return await self._propose(auth_user_revoke_role=request)

    @unary
    async def RoleAdd(self, request: Any, context: Ctx) -> Any:
        return await self._propose(auth_role_add=request)

    @unary
    async def RoleDelete(self, request: Any, context: Ctx) -> Any:
        return await self._propose(auth_role_delete=request)

    @unary
    async def RoleGrantPermission(self, request: Any, context: Ctx) -> Any:
        return await self._propose(auth_role_grant_permission=request)

    @unary
    async def RoleRevokePermission(self, request: Any, context: Ctx) -> Any:
        return await self._propose(auth_role_revoke_permission=request)

    @unary
    async def UserGet(self, request: rpc_pb2.AuthUserGetRequest, context: Ctx) -> Any:
        roles = (await self._admin_read(lambda _s, user: user == request.name)
                 ).user_get(request.name)
        return self._header(rpc_pb2.AuthUserGetResponse(roles=roles))

    @unary
    async def UserList(self, request: Any, context: Ctx) -> Any:
        users = (await self._admin_read()).user_list()
        return self._header(rpc_pb2.AuthUserListResponse(users=users))

    @unary
    async def RoleGet(self, request: rpc_pb2.AuthRoleGetRequest, context: Ctx) -> Any:
        perms = (await self._admin_read(lambda s, user: s.has_role(user, request.role))
                 ).role_get(request.role)
        resp = rpc_pb2.AuthRoleGetResponse()
        for p in perms:
            resp.perm.add(permType=p.perm_type, key=p.key,
                          range_end=p.range_end)
        return self._header(resp)

    @unary
    async def RoleList(self, request: Any, context: Ctx) -> Any:
        roles = (await self._admin_read()).role_list()
        return self._header(rpc_pb2.AuthRoleListResponse(roles=roles))
