"""coord's authentication state machine (etcd's auth store): users, roles, permissions, the
enabled flag and the auth revision, changed only by applying committed requests. Pure: no
I/O, no clock (time is passed in), no asyncio; the API layer hashes passwords and builds
tokens, the applier applies, the snapshot carries :meth:`AuthStore.snapshot`."""

from coord.auth.errors import (
    AuthFailed,
    AuthOldRevision,
    InvalidAuthMgmt,
    InvalidAuthToken,
    NoPasswordUser,
    PermissionDenied,
    PermissionNotGiven,
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
from coord.auth.store import READ, READWRITE, ROOT, WRITE, AuthStore

__all__ = [
    "READ", "READWRITE", "ROOT", "WRITE", "AuthFailed", "AuthOldRevision", "AuthStore",
    "InvalidAuthMgmt", "InvalidAuthToken", "NoPasswordUser", "PermissionDenied",
    "PermissionNotGiven",
    "PermissionNotGranted", "RoleAlreadyExist", "RoleEmpty", "RoleNotFound", "RoleNotGranted",
    "RootRoleNotExist", "RootUserNotExist", "UserAlreadyExist", "UserEmpty", "UserNotFound",
]
