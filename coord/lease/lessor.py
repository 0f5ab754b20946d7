"""The lessor: leases, their TTLs and attached keys. Pure: time is passed in.

Replicated state (identical on every member, part of snapshots): the set of leases in grant
order, each with its granted TTL and attached keys. Local state (only meaningful on the
primary, i.e. the Raft leader): each lease's deadline. A non-primary keeps every deadline at
infinity, like etcd's ``forever()``; :meth:`promote` gives every lease a full TTL from the
promotion time (etcd renews on leader change), :meth:`demote` goes back to infinity.

Expiry never changes state here: the primary polls :meth:`expired` and proposes a
``LeaseExpire`` through the log; applying it calls :meth:`revoke` like a client revoke.
Keys are attached/detached by the applier as puts and deletes are applied.
"""

from __future__ import annotations

import math
import struct

from coord.errors import LeaseExists, LeaseNotFound, LeaseTTLTooLarge, NotLeader

MIN_TTL = 2
"""etcd's default minLeaseTTL: ceil(1.5 * election timeout) = 2 s with 1 s elections."""
MAX_TTL = 9_000_000_000
"""etcd's MaxLeaseTTL; larger grants fail with LeaseTTLTooLarge."""

_FOREVER = math.inf
_MAGIC = b"COORDLEASE1"
_QQ = struct.Struct("<qq")
_I = struct.Struct("<I")


class Lease:
    """One lease. ``ttl`` is the granted TTL (seconds, already raised to the minimum)."""

    __slots__ = ("deadline", "id", "keys", "ttl")

    def __init__(self, lease_id: int, ttl: int, deadline: float) -> None:
        self.id = lease_id
        self.ttl = ttl
        self.deadline = deadline
        self.keys: set[bytes] = set()


class Lessor:
    """Leases by id. IDs are any non-zero int64 (negative ones too, as etcd accepts)."""

    def __init__(self, min_ttl: int = MIN_TTL) -> None:
        self.min_ttl = min_ttl
        self._leases: dict[int, Lease] = {}
        self._primary = False

    # ------------------------------------------------------------------ replicated ops
    def grant(self, lease_id: int, ttl: int, now: float) -> Lease:
        """Create a lease (etcd lessor.Grant). ID 0 → LeaseNotFound (the server must pick one
        first); ``ttl > MAX_TTL`` → LeaseTTLTooLarge (checked before existence); an existing ID
        → LeaseExists. TTL is raised to ``min_ttl``. Deadline ``now + ttl`` on the primary."""
        if lease_id == 0:
            raise LeaseNotFound()
        if ttl > MAX_TTL:
            raise LeaseTTLTooLarge()
        if lease_id in self._leases:
            raise LeaseExists()
        ttl = max(ttl, self.min_ttl)
        lease = Lease(lease_id, ttl, now + ttl if self._primary else _FOREVER)
        self._leases[lease_id] = lease
        return lease

    def revoke(self, lease_id: int) -> list[bytes]:
        """Remove a lease; returns its attached keys sorted (the caller deletes them in one
        revision). Unknown or 0 → LeaseNotFound."""
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            raise LeaseNotFound()
        return sorted(lease.keys)

    def attach(self, lease_id: int, key: bytes) -> None:
        """Attach ``key`` to a lease (no-op for 0 or an unknown lease)."""
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        """Detach ``key`` from a lease (no-op if not attached or the lease is gone)."""
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)

    # ------------------------------------------------------------------ queries
    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self._leases

    def lookup(self, lease_id: int) -> Lease | None:
        """The lease, or None."""
        return self._leases.get(lease_id)

    def leases(self) -> list[int]:
        """All lease IDs in grant order."""
        return list(self._leases)

    def keys(self, lease_id: int) -> list[bytes]:
        """A lease's attached keys, sorted (empty if unknown)."""
        lease = self._leases.get(lease_id)
        return sorted(lease.keys) if lease is not None else []

    def time_to_live(self, lease_id: int, now: float) -> tuple[int, int, list[bytes]]:
        """``(ttl_left, granted_ttl, sorted keys)``; unknown or expired → ``(-1, 0, [])``.

        ttl_left is truncated to whole seconds like etcd. On a non-primary (no deadlines) it
        is the granted TTL; the server should forward TimeToLive to the leader, as etcd does.
        """
        lease = self._leases.get(lease_id)
        if lease is None:
            return -1, 0, []
        left = lease.deadline - now
        if left <= 0:
            return -1, 0, []
        ttl_left = lease.ttl if left == _FOREVER else int(left)
        return ttl_left, lease.ttl, sorted(lease.keys)

    # ------------------------------------------------------------------ primary-only ops
    def renew(self, lease_id: int, now: float) -> int:
        """KeepAlive: reset the deadline to ``now + ttl``; returns the granted TTL, or 0 if the
        lease is unknown or already expired (awaiting its revoke). Only the primary renews:
        otherwise NotLeader (the server forwards keepalives to the leader)."""
        if not self._primary:
            raise NotLeader()
        lease = self._leases.get(lease_id)
        if lease is None or lease.deadline <= now:
            return 0
        lease.deadline = now + lease.ttl
        return lease.ttl

    def expired(self, now: float, limit: int = 0) -> list[int]:
        """IDs whose deadline has passed, earliest first (ties by ID); empty unless primary.
        Pure query: the same IDs come back until their LeaseExpire is applied, so the server
        must not re-propose IDs already in flight. ``limit > 0`` caps the list."""
        if not self._primary:
            return []
        due = sorted((lease.deadline, lease.id) for lease in self._leases.values()
                     if lease.deadline <= now)
        if limit > 0:
            due = due[:limit]
        return [lid for _, lid in due]

    def promote(self, now: float) -> None:
        """Become primary: every lease gets a full TTL from ``now``."""
        self._primary = True
        for lease in self._leases.values():
            lease.deadline = now + lease.ttl

    def demote(self) -> None:
        """Stop being primary: deadlines become infinite."""
        self._primary = False
        for lease in self._leases.values():
            lease.deadline = _FOREVER

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> bytes:
        """Deterministic bytes: leases in grant order as (id, granted ttl). Keys are not
        stored: they are rebuilt from the store's records on restore."""
        parts = [_MAGIC, _I.pack(len(self._leases))]
        parts.extend(_QQ.pack(lease.id, lease.ttl) for lease in self._leases.values())
        return b"".join(parts)

    def restore(self, data: bytes, now: float) -> None:
        """Replace all leases with a :meth:`snapshot` (keys empty; re-attach them after). On
        the primary each restored lease gets a full TTL from ``now``."""
        if not data.startswith(_MAGIC):
            raise ValueError("not a lessor snapshot")
        pos = len(_MAGIC)
        (n,) = _I.unpack_from(data, pos)
        pos += 4
        if len(data) != pos + n * _QQ.size:
            raise ValueError("bad lessor snapshot length")
        leases: dict[int, Lease] = {}
        for lid, ttl in _QQ.iter_unpack(data[pos:]):
            leases[lid] = Lease(lid, ttl, now + ttl if self._primary else _FOREVER)
        self._leases = leases
