"""etcdserverpb.Auth as etcd answers it while authentication is disabled.

raftcron has no users or roles yet. Clients still probe this service (etcdctl's
``--user``, clients that always ``Authenticate`` first and carry on when told auth is off),
so the read-only calls and ``AuthDisable`` answer like an etcd with auth disabled; calls
that would create auth state are refused with a clear UNIMPLEMENTED.
"""

from __future__ import annotations

from typing import Any

from coord.api.errors import unary
from coord.api.ports import Headers
from coord.errors import AuthNotEnabled, FailedPrecondition, Unimplemented
from coord.pb import rpc_pb2
from coord.rpc.handlers import Context as Ctx


class RootUserNotExist(FailedPrecondition):
    message = "etcdserver: root user does not exist"


class UserNotFound(FailedPrecondition):
    message = "etcdserver: user name not found"


class RoleNotFound(FailedPrecondition):
    message = "etcdserver: role name not found"


class Unsupported(Unimplemented):
    message = "raftcron: users, roles and authentication are not supported yet"


class AuthService:
    def __init__(self, core: Headers) -> None:
        self.core = core

    def _header(self, resp: Any) -> Any:
        self.core.fill_header(resp.header)
        return resp

    @unary
    async def AuthEnable(self, request: Any, context: Ctx) -> Any:
        raise RootUserNotExist()

    @unary
    async def AuthDisable(self, request: Any, context: Ctx) -> Any:
        return self._header(rpc_pb2.AuthDisableResponse())

    @unary
    async def Authenticate(self, request: Any, context: Ctx) -> Any:
        raise AuthNotEnabled()

    @unary
    async def UserList(self, request: Any, context: Ctx) -> Any:
        return self._header(rpc_pb2.AuthUserListResponse())

    @unary
    async def RoleList(self, request: Any, context: Ctx) -> Any:
        return self._header(rpc_pb2.AuthRoleListResponse())

    @unary
    async def UserGet(self, request: Any, context: Ctx) -> Any:
        raise UserNotFound()

    @unary
    async def RoleGet(self, request: Any, context: Ctx) -> Any:
        raise RoleNotFound()

    @unary
    async def UserDelete(self, request: Any, context: Ctx) -> Any:
        raise UserNotFound()

    @unary
    async def RoleDelete(self, request: Any, context: Ctx) -> Any:
        raise RoleNotFound()

    @unary
    async def UserAdd(self, request: Any, context: Ctx) -> Any:
        raise Unsupported()

    @unary
    async def UserChangePassword(self, request: Any, context: Ctx) -> Any:
        raise UserNotFound()

    @unary
    async def UserGrantRole(self, request: Any, context: Ctx) -> Any:
        raise UserNotFound()

    @unary
    async def UserRevokeRole(self, request: Any, context: Ctx) -> Any:
        raise UserNotFound()

    @unary
    async def RoleAdd(self, request: Any, context: Ctx) -> Any:
        raise Unsupported()

    @unary
    async def RoleGrantPermission(self, request: Any, context: Ctx) -> Any:
        raise RoleNotFound()

    @unary
    async def RoleRevokePermission(self, request: Any, context: Ctx) -> Any:
        raise RoleNotFound()
