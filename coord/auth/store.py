"""The auth store: etcd's ``server/auth/store.go`` semantics over plain Python state.

Every change is the apply of a committed request, so every member holds the same users,
roles, enabled flag and auth revision at the same applied index (:meth:`snapshot` is
deterministic). Passwords arrive already hashed (bcrypt, done by the API layer before the
request is proposed): no plain password is ever in the log, a snapshot or this object.

Simple tokens are the one per-member part: the member that authenticates a user proposes
the token it made, every member records it when applying (so a client may use it on any
member), each with its own deadline on its own clock; tokens are not in snapshots (after
a restart a client authenticates again, as with etcd's simple tokens).

The rules etcd enforces, checked here in etcd's order:
* ``AuthEnable`` needs a ``root`` user holding the ``root`` role; enabling twice is a no-op.
* While enabled, ``root`` can't be deleted, the ``root`` role can't be deleted, and the
  ``root`` user can't lose the ``root`` role (``invalid auth management``).
* Granting the ``root`` role does not need the role to exist; a user with it may do
  anything.
* A permission's range is not checked (etcd 3.4 stores ``[z, a)`` as it is: it covers
  nothing).
* Each change but ``AuthEnable`` bumps the auth revision (etcd's ``commitRevision``);
  a no-op (granting a role held already, enabling twice) keeps it.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from coord.auth.errors import (
    AuthFailed,
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
from coord.pb import auth_pb2

ROOT = "root"
READ, WRITE, READWRITE = (auth_pb2.Permission.READ, auth_pb2.Permission.WRITE,
                          auth_pb2.Permission.READWRITE)
DEFAULT_TOKEN_TTL = 300
"""etcd's ``--auth-token-ttl`` default, in seconds; each use of a token renews it."""

SWEEP_EVERY = 256
"""Logins between two sweeps of the expired tokens."""

_MAGIC = b"COORDAUTH1"
_HEAD = struct.Struct("<?QII")
_LEN = struct.Struct("<I")
_INF = None


@dataclass
class User:
    name: str
    password: bytes
    """The bcrypt hash ('' for a user made with ``--no-password``)."""
    roles: list[str] = field(default_factory=list)
    no_password: bool = False


@dataclass
class Perm:
    key: bytes
    range_end: bytes
    perm_type: int


@dataclass
class _Token:
    user: str
    deadline: float


def _interval(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None]:
    """etcd's permission interval: a single key is ``[key, key+\\x00)``; a range end of
    ``\\x00`` means every key from ``key`` on (``None`` = no end)."""
    if not range_end:
        return key, key + b"\x00"
    if range_end == b"\x00":
        return key, _INF
    return key, range_end


def _covers(intervals: list[tuple[bytes, bytes | None]], lo: bytes, hi: bytes | None) -> bool:
    """Whether the union of ``intervals`` contains all of ``[lo, hi)`` (``None``: no end)."""
    reach = lo
    for start, end in sorted(intervals, key=lambda iv: iv[0]):
        if start > reach:
            break
        if end is None:
            return True
        reach = max(reach, end)
        if hi is not None and reach >= hi:
            return True
    return False


class AuthStore:
    def __init__(self, token_ttl: float = DEFAULT_TOKEN_TTL) -> None:
        self.enabled = False
        self._revision = 0
        self.listeners: set[Callable[[], None]] = set()
        """Called after every change of users, roles or permissions (the auth revision
        moves): open watches re-check their permission (coord.api.auth_watch)."""
        self.users: dict[str, User] = {}
        self.roles: dict[str, list[Perm]] = {}
        self.token_ttl = token_ttl
        self._tokens: dict[str, _Token] = {}
        self._assigned = 0

    @property
    def revision(self) -> int:
        return self._revision

    @revision.setter
    def revision(self, value: int) -> None:
        self._revision = value
        self._changed()

    def _changed(self) -> None:
        for listener in list(self.listeners):
            listener()

    # ------------------------------------------------------------------ enable / disable
    def enable(self) -> None:
        if self.enabled:
            return
        root = self.users.get(ROOT)
        if root is None:
            raise RootUserNotExist()
        if ROOT not in root.roles:
            raise RootRoleNotExist()
        self.enabled = True

    def disable(self) -> None:
        if not self.enabled:
            return
        self.enabled = False
        self._tokens.clear()
        self.revision += 1

    # ------------------------------------------------------------------ users
    def user_add(self, name: str, password_hash: bytes, no_password: bool) -> None:
        if not name:
            raise UserEmpty()
        if name in self.users:
            raise UserAlreadyExist()
        self.users[name] = User(name, b"" if no_password else password_hash,
                                no_password=no_password)
        self.revision += 1

    def user_delete(self, name: str) -> None:
        if self.enabled and name == ROOT:
            raise InvalidAuthMgmt()
        if name not in self.users:
            raise UserNotFound()
        del self.users[name]
        self._invalidate(name)
        self.revision += 1

    def user_change_password(self, name: str, password_hash: bytes) -> None:
        user = self.users.get(name)
        if user is None:
            raise UserNotFound()
        if not user.no_password:
            user.password = password_hash
        self._invalidate(name)
        self.revision += 1

    def user_grant_role(self, name: str, role: str) -> None:
        user = self.users.get(name)
        if user is None:
            raise UserNotFound()
        if role != ROOT and role not in self.roles:
            raise RoleNotFound()
        if role in user.roles:
            return
        bisect.insort(user.roles, role)
        self.revision += 1

    def user_revoke_role(self, name: str, role: str) -> None:
        if self.enabled and name == ROOT and role == ROOT:
            raise InvalidAuthMgmt()
        user = self.users.get(name)
        if user is None:
            raise UserNotFound()
        if role not in user.roles:
            raise RoleNotGranted()
        user.roles.remove(role)
        self.revision += 1

    def user_get(self, name: str) -> list[str]:
        user = self.users.get(name)
        if user is None:
            raise UserNotFound()
        return list(user.roles)

    def user_list(self) -> list[str]:
        return sorted(self.users)

    def password_hash(self, name: str) -> bytes:
        """The stored hash to check a password against (Authenticate); AuthFailed for an
        unknown or password-less user, as etcd answers both."""
        user = self.users.get(name)
        if user is None:
            raise AuthFailed()
        if user.no_password:
            raise NoPasswordUser()
        return user.password

    # ------------------------------------------------------------------ roles
    def role_add(self, name: str) -> None:
        if not name:
            raise RoleEmpty()
        if name in self.roles:
            raise RoleAlreadyExist()
        self.roles[name] = []
        self.revision += 1

    def role_delete(self, name: str) -> None:
        if self.enabled and name == ROOT:
            raise InvalidAuthMgmt()
        if name not in self.roles:
            raise RoleNotFound()
        del self.roles[name]
        for user in self.users.values():
            if name in user.roles:
                user.roles.remove(name)
        self.revision += 1

    def role_get(self, name: str) -> list[Perm]:
        perms = self.roles.get(name)
        if perms is None:
            raise RoleNotFound()
        return list(perms)  # etcd 3.4 answers root's stored permissions (none) as well

    def role_list(self) -> list[str]:
        return sorted(self.roles)

    def role_grant_permission(self, name: str, perm: Perm | None) -> None:
        if perm is None:
            raise PermissionNotGiven()
        perms = self.roles.get(name)
        if perms is None:
            raise RoleNotFound()
        for p in perms:
            if p.key == perm.key and p.range_end == perm.range_end:
                p.perm_type = perm.perm_type
                break
        else:
            perms.append(Perm(perm.key, perm.range_end, perm.perm_type))
            perms.sort(key=lambda p: p.key)  # stable, as Go's sort of etcd's few permissions
        self.revision += 1

    def role_revoke_permission(self, name: str, key: bytes, range_end: bytes) -> None:
        perms = self.roles.get(name)
        if perms is None:
            raise RoleNotFound()
        kept = [p for p in perms if p.key != key or p.range_end != range_end]
        if len(kept) == len(perms):
            raise PermissionNotGranted()
        self.roles[name] = kept
        self.revision += 1

    # ------------------------------------------------------------------ tokens
    def assign_token(self, token: str, user: str, now: float) -> None:
        """Record a token the authenticating member made (applied on every member). Every
        :data:`SWEEP_EVERY` logins the expired tokens go, so tokens never used again (one
        per etcdctl command) don't pile up."""
        if user in self.users:
            self._tokens[token] = _Token(user, now + self.token_ttl)
        self._assigned += 1
        if self._assigned % SWEEP_EVERY == 0:
            for tok in [k for k, t in self._tokens.items() if t.deadline <= now]:
                del self._tokens[tok]

    @property
    def token_count(self) -> int:
        return len(self._tokens)

    def user_of_token(self, token: str, now: float) -> str:
        """The user a valid token stands for (its TTL renewed); InvalidAuthToken else."""
        t = self._tokens.get(token)
        if t is None or t.deadline <= now or t.user not in self.users:
            self._tokens.pop(token, None)
            raise InvalidAuthToken()
        t.deadline = now + self.token_ttl
        return t.user

    def _invalidate(self, user: str) -> None:
        for tok in [k for k, t in self._tokens.items() if t.user == user]:
            del self._tokens[tok]

    # ------------------------------------------------------------------ checks
    def is_root(self, user: str) -> bool:
        u = self.users.get(user)
        return u is not None and ROOT in u.roles

    def has_role(self, user: str, role: str) -> bool:
        u = self.users.get(user)
        return u is not None and role in u.roles

    def check_admin(self, user: str) -> None:
        """etcd IsAdminPermitted: root only while enabled."""
        if not self.enabled:
            return
        if not user:
            raise UserEmpty()
        if not self.is_root(user):
            raise PermissionDenied()

    def check(self, user: str, key: bytes, range_end: bytes, perm_type: int) -> None:
        """etcd isOpPermitted: may ``user`` do ``perm_type`` (READ or WRITE) on
        ``[key, range_end)`` (a single key without ``range_end``)? The whole range must be
        covered by the union of the user's roles' permissions of that type."""
        if not self.enabled:
            return
        if not user:
            raise UserEmpty()
        u = self.users.get(user)
        if u is None:
            raise PermissionDenied()
        if ROOT in u.roles:
            return
        intervals = [_interval(p.key, p.range_end)
                     for role in u.roles for p in self.roles.get(role, ())
                     if p.perm_type in (perm_type, READWRITE)]
        if range_end:
            lo, hi = _interval(key, range_end)
            if _covers(intervals, lo, hi):
                return
        else:
            for start, end in intervals:
                if start <= key and (end is None or key < end):
                    return
        raise PermissionDenied()

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> bytes:
        """Deterministic bytes of the replicated state (not the tokens)."""
        parts = [_MAGIC, _HEAD.pack(self.enabled, self.revision, len(self.users),
                                    len(self.roles))]
        for name in sorted(self.users):
            u = self.users[name]
            msg = auth_pb2.User(name=name.encode(), password=u.password, roles=u.roles)
            if u.no_password:
                msg.options.no_password = True
            raw = msg.SerializeToString(deterministic=True)
            parts += [_LEN.pack(len(raw)), raw]
        for name in sorted(self.roles):
            role = auth_pb2.Role(name=name.encode())
            for p in self.roles[name]:
                role.keyPermission.add(permType=p.perm_type, key=p.key,
                                       range_end=p.range_end)
            raw = role.SerializeToString(deterministic=True)
            parts += [_LEN.pack(len(raw)), raw]
        return b"".join(parts)

    def restore(self, data: bytes) -> None:
        """Replace the state with a :meth:`snapshot` (``b""``: the empty state)."""
        fresh = AuthStore(self.token_ttl)
        if data:
            if not data.startswith(_MAGIC):
                raise ValueError("not an auth snapshot")
            pos = len(_MAGIC)
            enabled, revision, n_users, n_roles = _HEAD.unpack_from(data, pos)
            pos += _HEAD.size
            for i in range(n_users + n_roles):
                (n,) = _LEN.unpack_from(data, pos)
                pos += _LEN.size
                raw = data[pos:pos + n]
                pos += n
                if i < n_users:
                    u = auth_pb2.User.FromString(raw)
                    fresh.users[u.name.decode()] = User(
                        u.name.decode(), u.password, list(u.roles), u.options.no_password)
                else:
                    r = auth_pb2.Role.FromString(raw)
                    fresh.roles[r.name.decode()] = [
                        Perm(p.key, p.range_end, p.permType) for p in r.keyPermission]
            if pos != len(data):
                raise ValueError("bad auth snapshot length")
            fresh.enabled = enabled
            fresh._revision = revision
        self.enabled = fresh.enabled
        self._revision = fresh.revision
        self.users = fresh.users
        self.roles = fresh.roles
        self._tokens = {}
        self._changed()
