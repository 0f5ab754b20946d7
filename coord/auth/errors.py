"""etcd's auth errors, with the exact strings and codes of etcd's
``api/v3rpc/rpctypes/error.go`` (clients map the message back to a typed error)."""

from __future__ import annotations

from coord.errors import CoordError, FailedPrecondition, InvalidArgument


class RootUserNotExist(FailedPrecondition):
    message = "etcdserver: root user does not exist"


class RootRoleNotExist(FailedPrecondition):
    message = "etcdserver: root user does not have root role"


class UserAlreadyExist(FailedPrecondition):
    message = "etcdserver: user name already exists"


class UserEmpty(InvalidArgument):
    message = "etcdserver: user name is empty"


class UserNotFound(FailedPrecondition):
    message = "etcdserver: user name not found"


class RoleAlreadyExist(FailedPrecondition):
    message = "etcdserver: role name already exists"


class RoleNotFound(FailedPrecondition):
    message = "etcdserver: role name not found"


class RoleEmpty(InvalidArgument):
    message = "etcdserver: role name is empty"


class AuthFailed(InvalidArgument):
    message = "etcdserver: authentication failed, invalid user ID or password"


class PermissionNotGiven(InvalidArgument):
    message = "etcdserver: permission not given"


class PermissionDenied(CoordError):
    """gRPC PermissionDenied (mapped in ``coord.api.errors``)."""

    message = "etcdserver: permission denied"


class RoleNotGranted(FailedPrecondition):
    message = "etcdserver: role is not granted to the user"


class PermissionNotGranted(FailedPrecondition):
    message = "etcdserver: permission is not granted to the role"


class InvalidAuthToken(CoordError):
    """gRPC Unauthenticated (mapped in ``coord.api.errors``)."""

    message = "etcdserver: invalid auth token"


class InvalidAuthMgmt(InvalidArgument):
    message = "etcdserver: invalid auth management"


class AuthOldRevision(InvalidArgument):
    message = "etcdserver: revision of auth store is old"


class NoPasswordUser(CoordError):
    """A password given for a user added with ``--no-password``: etcd 3.4 answers its
    auth package's error unmapped (gRPC Unknown)."""

    message = "auth: authentication failed, password was given for no password user"
