"""The deterministic applier: turns committed InternalRequests into state changes and
etcd-shaped responses.

Every member applies the same log in the same order and ends in the same state (snapshot bytes
are identical). ``now`` is only used for lease deadlines, which are local primary state.

Invariants:

* A request either fully applies or raises a :class:`coord.errors.CoordError` with no state
  change at all (every check etcd's applier makes runs before the first write; an unexpected
  failure mid-write rolls the batch back).
* One revision per changing request; read-only requests (and deletes that match nothing)
  leave the revision alone.
* ``header.revision`` is filled as etcd fills it; nested responses in a Txn carry only that
  field, a nested TxnResponse has an empty header. The API layer adds cluster_id, member_id
  and raft_term to the top-level header only.
* The watch hub (``applier.watch_hub``) is notified of each new revision synchronously, in
  the ``apply`` call that creates it.
"""

from __future__ import annotations

import struct
from typing import Any

import structlog

from coord.auth import AuthStore
from coord.errors import (
    ApplyFailed,
    Compacted,
    CoordError,
    FutureRevision,
    KeyNotFound,
    LeaseNotFound,
)
from coord.lease.lessor import Lessor
from coord.mvcc.store import KVStore
from coord.mvcc.watch import WatchHub
from coord.pb import internal_pb2, rpc_pb2
from coord.server.apply_auth import AUTH_REQUESTS, apply_auth, check_request
from coord.server.apply_read import compare, fill_kv, range_into

_OP_RANGE, _OP_PUT, _OP_DELETE, _OP_TXN, _OP_EMPTY = range(5)
_Step = tuple[int, Any, Any]
_Plan = tuple[bool, list[_Step]]
_SNAP_MAGIC = b"COORDAPPLY1"
_AUTH_MAGIC = b"AUTH"
_L = struct.Struct("<Q")

Response = (
    rpc_pb2.PutResponse
    | rpc_pb2.DeleteRangeResponse
    | rpc_pb2.TxnResponse
    | rpc_pb2.CompactionResponse
    | rpc_pb2.LeaseGrantResponse
    | rpc_pb2.LeaseRevokeResponse
    | rpc_pb2.RangeResponse
    | Any
)


log = structlog.get_logger("coord.apply")


class ApplyInvariantError(RuntimeError):
    """The applier's state may be inconsistent (a rollback itself failed): the member must
    stop rather than serve or vote on it."""


def lease_id_for(request_id: int) -> int:
    """Deterministic positive int63 lease ID derived from a proposal id (never 0)."""
    lid = (request_id * 0x9E3779B97F4A7C15) & ((1 << 63) - 1)
    return lid or 1


class Applier:
    """Applies InternalRequests to a :class:`KVStore` and a :class:`Lessor`."""

    def __init__(self, store: KVStore | None = None, lessor: Lessor | None = None,
                 auth: AuthStore | None = None) -> None:
        self.store = store if store is not None else KVStore()
        self.lessor = lessor if lessor is not None else Lessor()
        self.auth = auth if auth is not None else AuthStore()
        """Users, roles, permissions (replicated: changed only by applied requests)."""
        self.watch_hub = WatchHub(self.store)
        """The store's watchers: its commit observer, told of each new revision."""
        self._dispatch = {
            "put": self._apply_put,
            "delete_range": self._apply_delete_range,
            "txn": self._apply_txn,
            "compaction": self._apply_compaction,
            "lease_grant": self._apply_lease_grant,
            "lease_revoke": self._apply_lease_revoke,
            "range": self._apply_range,
        }

    # ------------------------------------------------------------------ accessors
    @property
    def current_revision(self) -> int:
        """The store's current revision."""
        return self.store.current_revision

    @property
    def compact_revision(self) -> int:
        """The store's compact revision (-1 if never compacted)."""
        return self.store.compact_revision

    # ------------------------------------------------------------------ entry points
    def apply(self, req: internal_pb2.InternalRequest, now: float) -> Response | None:
        """Apply one committed request; returns its response (None for LeaseExpire or an
        empty request). Raises CoordError with no state change — also for a request that
        fails unexpectedly (:class:`ApplyFailed`, after rolling back anything staged), so
        one bad request can never stop a member. Raises :class:`ApplyInvariantError` only
        when the rollback itself fails."""
        try:
            return self._apply(req, now)
        except CoordError:
            raise
        except Exception as exc:
            try:
                if self.store.in_write:
                    self._rollback()
            except Exception as bad:
                raise ApplyInvariantError(
                    f"rollback of a failed {req.WhichOneof('request')} request failed: "
                    f"{bad!r} (after {exc!r})") from bad
            log.error("apply.request_failed", request=req.WhichOneof("request"),
                      request_id=req.id, error=repr(exc))
            raise ApplyFailed() from exc

    def _apply(self, req: internal_pb2.InternalRequest, now: float) -> Response | None:
        which = req.WhichOneof("request")
        if which is None:
            return None
        if which == "lease_expire":
            self._apply_lease_expire(req.lease_expire)
            return None
        if which in AUTH_REQUESTS:
            return apply_auth(self.auth, req, which, now)
        if self.auth.enabled and req.HasField("header"):
            check_request(self.auth, self.lessor, req, which)
        if which == "lease_grant":
            return self._apply_lease_grant(req.lease_grant, now, req.id)
        fn = self._dispatch[which]
        return fn(getattr(req, which))  # type: ignore[operator]

    def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        """A read outside the log (serializable or after ReadIndex)."""
        return self._range(req)

    def put(self, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        """Apply a PutRequest directly (tests, benchmarks, single-node fast paths)."""
        return self._apply_put(req)

    def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        """Apply a TxnRequest directly."""
        return self._apply_txn(req)

    # ------------------------------------------------------------------ range
    def _range(self, r: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        resp = rpc_pb2.RangeResponse()
        range_into(self.store, resp, r)
        return resp

    # ------------------------------------------------------------------ put / delete
    def _check_put(self, p: rpc_pb2.PutRequest) -> None:
        if (p.ignore_value or p.ignore_lease) and self.store.get(p.key) is None:
            raise KeyNotFound()
        if p.lease and not p.ignore_lease and p.lease not in self.lessor:
            raise LeaseNotFound()

    def _put_into(self, resp: rpc_pb2.PutResponse, p: rpc_pb2.PutRequest) -> None:
        """Stage one put (checks done by the caller); header = the new revision."""
        store = self.store
        key = p.key
        value = p.value
        lease = p.lease
        if p.ignore_value or p.ignore_lease:
            cur = store.get(key)
            if cur is None:
                raise KeyNotFound()
            if p.ignore_value:
                value = cur.value  # type: ignore[assignment]
            if p.ignore_lease:
                lease = cur.lease
        prev = store.put(key, value, lease)
        resp.header.revision = store.current_revision + 1
        if prev is not None:
            if prev.lease != lease:
                if prev.lease:
                    self.lessor.detach(prev.lease, key)
                if lease:
                    self.lessor.attach(lease, key)
            if p.prev_kv:
                fill_kv(resp.prev_kv, key, prev)
        elif lease:
            self.lessor.attach(lease, key)

    def _apply_put(self, p: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        store = self.store
        resp = rpc_pb2.PutResponse()
        if not (p.lease or p.ignore_value or p.ignore_lease or store.in_write):
            # Hot path: a plain put cannot fail, so stage and commit in one step.
            key = p.key
            prev, rev = store.put_commit(key, p.value, 0)
            resp.header.revision = rev
            if prev is not None:
                if prev.lease:
                    self.lessor.detach(prev.lease, key)
                if p.prev_kv:
                    fill_kv(resp.prev_kv, key, prev)
            return resp
        self._check_put(p)
        try:
            self._put_into(resp, p)
        except BaseException:
            self._rollback()
            raise
        store.commit()
        return resp

    def _delete_into(
        self, resp: rpc_pb2.DeleteRangeResponse, d: rpc_pb2.DeleteRangeRequest
    ) -> None:
        store = self.store
        deleted = store.delete_range(d.key, d.range_end)
        resp.header.revision = store.current_revision + (1 if store.in_write else 0)
        if not deleted:
            return
        resp.deleted = len(deleted)
        detach = self.lessor.detach
        for k, rec in deleted:
            if rec.lease:
                detach(rec.lease, k)
        if d.prev_kv:
            add = resp.prev_kvs.add
            for k, rec in deleted:
                fill_kv(add(), k, rec)

    def _apply_delete_range(self, d: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        resp = rpc_pb2.DeleteRangeResponse()
        try:
            self._delete_into(resp, d)
        except BaseException:
            self._rollback()
            raise
        self.store.commit()
        return resp

    def _rollback(self) -> None:
        """Undo staged store changes and re-derive lease attachments for the touched keys."""
        store = self.store
        touched = store.pending_keys()
        store.rollback()
        lessor = self.lessor
        for lid in lessor.leases():
            for k in touched:
                lessor.detach(lid, k)
        for k in touched:
            rec = store.get(k)
            if rec is not None and rec.lease:
                lessor.attach(rec.lease, k)

    # ------------------------------------------------------------------ txn
    def _plan(self, t: rpc_pb2.TxnRequest, puts: list[rpc_pb2.PutRequest],
              ranges: list[rpc_pb2.RangeRequest]) -> _Plan:
        """etcd compareToPath in one pass: evaluate this txn's compares and, recursively, those
        of the nested txns on the chosen branch, all against the start state. Collects the
        chosen puts and ranges for the pre-checks."""
        ok = True
        for c in t.compare:
            if not compare(self.store, c):
                ok = False
                break
        steps: list[_Step] = []
        for op in t.success if ok else t.failure:
            which = op.WhichOneof("request")
            if which == "request_put":
                p = op.request_put
                puts.append(p)
                steps.append((_OP_PUT, p, None))
            elif which == "request_range":
                q = op.request_range
                ranges.append(q)
                steps.append((_OP_RANGE, q, None))
            elif which == "request_delete_range":
                steps.append((_OP_DELETE, op.request_delete_range, None))
            elif which == "request_txn":
                sub = op.request_txn
                steps.append((_OP_TXN, sub, self._plan(sub, puts, ranges)))
            else:
                steps.append((_OP_EMPTY, None, None))
        return ok, steps

    def _exec(self, plan: _Plan, resp: rpc_pb2.TxnResponse) -> None:
        ok, steps = plan
        if ok:
            resp.succeeded = True
        add = resp.responses.add
        for kind, msg, sub in steps:
            ro = add()
            if kind == _OP_PUT:
                self._put_into(ro.response_put, msg)
            elif kind == _OP_RANGE:
                range_into(self.store, ro.response_range, msg)
            elif kind == _OP_DELETE:
                self._delete_into(ro.response_delete_range, msg)
            elif kind == _OP_TXN:
                inner = ro.response_txn
                inner.header.SetInParent()  # a nested TxnResponse has an empty header
                assert sub is not None
                self._exec(sub, inner)

    def _apply_txn(self, t: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        puts: list[rpc_pb2.PutRequest] = []
        ranges: list[rpc_pb2.RangeRequest] = []
        plan = self._plan(t, puts, ranges)
        # etcd checkRequests: every chosen put (lease, ignore_* on a missing key), then every
        # chosen range (future / compacted revision), before anything is written.
        for p in puts:
            self._check_put(p)
        if ranges:
            store = self.store
            first = store.first_revision
            cur = store.current_revision
            for q in ranges:
                rev = q.revision
                if rev == 0:
                    continue
                if rev > cur:
                    raise FutureRevision()
                if rev < first:
                    raise Compacted()
        resp = rpc_pb2.TxnResponse()
        try:
            self._exec(plan, resp)
        except BaseException:
            self._rollback()
            raise
        resp.header.revision = self.store.commit()
        return resp

    # ------------------------------------------------------------------ compaction
    def _apply_compaction(self, c: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        self.store.compact(c.revision)
        resp = rpc_pb2.CompactionResponse()
        resp.header.revision = self.store.current_revision
        return resp

    # ------------------------------------------------------------------ leases
    def _apply_lease_grant(
        self, g: rpc_pb2.LeaseGrantRequest, now: float = 0.0, request_id: int = 0
    ) -> rpc_pb2.LeaseGrantResponse:
        lid = g.ID
        if lid == 0:
            lid = lease_id_for(request_id)
            while lid in self.lessor:
                lid = lease_id_for(lid + 1)
        lease = self.lessor.grant(lid, g.TTL, now)
        resp = rpc_pb2.LeaseGrantResponse(ID=lease.id, TTL=lease.ttl)
        resp.header.revision = self.store.current_revision
        return resp

    def _revoke(self, lease_id: int) -> None:
        keys = self.lessor.revoke(lease_id)
        if not keys:
            return
        store = self.store
        try:
            for k in keys:
                store.delete_range(k)
        except BaseException:  # pragma: no cover - deletes of single keys cannot fail
            store.rollback()
            raise
        store.commit()

    def _apply_lease_revoke(self, r: rpc_pb2.LeaseRevokeRequest) -> rpc_pb2.LeaseRevokeResponse:
        self._revoke(r.ID)
        resp = rpc_pb2.LeaseRevokeResponse()
        resp.header.revision = self.store.current_revision
        return resp

    def _apply_lease_expire(self, e: internal_pb2.LeaseExpire) -> None:
        for lid in e.ids:
            if lid in self.lessor:
                self._revoke(lid)

    # ------------------------------------------------------------------ lease reads
    def lease_time_to_live(
        self, req: rpc_pb2.LeaseTimeToLiveRequest, now: float
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        """LeaseTimeToLive as etcd answers it (call on the leader): unknown or expired →
        ``TTL: -1`` with OK status; keys (sorted) only when ``req.keys``."""
        ttl, granted, keys = self.lessor.time_to_live(req.ID, now)
        resp = rpc_pb2.LeaseTimeToLiveResponse(ID=req.ID, TTL=ttl, grantedTTL=granted)
        if req.keys:
            resp.keys.extend(keys)
        resp.header.revision = self.store.current_revision
        return resp

    def lease_leases(self) -> rpc_pb2.LeaseLeasesResponse:
        """LeaseLeases: every lease ID in grant order."""
        resp = rpc_pb2.LeaseLeasesResponse()
        resp.header.revision = self.store.current_revision
        add = resp.leases.add
        for lid in self.lessor.leases():
            add(ID=lid)
        return resp

    def lease_keepalive(
        self, req: rpc_pb2.LeaseKeepAliveRequest, now: float
    ) -> rpc_pb2.LeaseKeepAliveResponse:
        """One KeepAlive answer (leader only; NotLeader otherwise): header taken before the
        renewal, ``TTL`` = granted TTL, or absent (0) for an unknown/expired lease."""
        resp = rpc_pb2.LeaseKeepAliveResponse(ID=req.ID)
        resp.header.revision = self.store.current_revision
        ttl = self.lessor.renew(req.ID, now)
        if ttl:
            resp.TTL = ttl
        return resp

    def _apply_range(self, r: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        return self._range(r)

    # ------------------------------------------------------------------ snapshots / hash
    def snapshot(self) -> bytes:
        """Deterministic bytes of the store (with history since the compact revision) and the
        lessor (leases with granted TTLs)."""
        return self.pack_snapshot(self.store.snapshot(), self.lessor.snapshot(),
                                  self.auth_snapshot())

    def auth_snapshot(self) -> bytes:
        """The auth state's part of a snapshot: empty while no auth request was ever
        applied (the snapshot is then byte for byte what it was before auth existed)."""
        auth = self.auth
        if not (auth.revision or auth.enabled or auth.users or auth.roles):
            return b""
        return auth.snapshot()

    @staticmethod
    def pack_snapshot(store: bytes, lessor: bytes, auth: bytes = b"") -> bytes:
        """The applier snapshot made of a store snapshot, a lessor snapshot and an auth
        snapshot taken at the same applied index (:meth:`snapshot` in steps, for a sliced
        build)."""
        return b"".join(Applier.pack_snapshot_parts([store], lessor, auth)[0])

    @staticmethod
    def pack_snapshot_parts(
        store: list[bytes | memoryview], lessor: bytes, auth: bytes = b""
    ) -> tuple[list[bytes | memoryview], int]:
        """:meth:`pack_snapshot` of the store snapshot's pieces, as pieces to join, and the
        offset of the store's bytes in the joined result. The auth part, when there is
        one, follows the lessor's behind its own tag."""
        size = sum(len(p) for p in store)
        head = _SNAP_MAGIC + _L.pack(size)
        tail: list[bytes | memoryview] = (
            [_AUTH_MAGIC, _L.pack(len(auth)), auth] if auth else [])
        return [head, *store, _L.pack(len(lessor)), lessor, *tail], len(head)

    def restore(self, data: bytes, now: float = 0.0) -> None:
        """Replace the whole state with a :meth:`snapshot`; lease keys are re-attached from
        the store's live records."""
        if not data.startswith(_SNAP_MAGIC):
            raise ValueError("not an applier snapshot")
        pos = len(_SNAP_MAGIC)
        (n,) = _L.unpack_from(data, pos)
        pos += 8
        s = data[pos : pos + n]
        pos += n
        (m,) = _L.unpack_from(data, pos)
        pos += 8
        lz = data[pos : pos + m]
        pos += m
        auth = b""
        if pos != len(data):
            if data[pos : pos + len(_AUTH_MAGIC)] != _AUTH_MAGIC:
                raise ValueError("bad applier snapshot length")
            pos += len(_AUTH_MAGIC)
            (a,) = _L.unpack_from(data, pos)
            pos += 8
            auth = data[pos : pos + a]
            if pos + a != len(data):
                raise ValueError("bad applier snapshot length")
        self.store.restore(s)
        self.lessor.restore(lz, now)
        self.auth.restore(auth)
        store = self.store
        for k in store.sorted_keys():
            rec = store.get(k)
            if rec is not None and rec.lease:
                self.lessor.attach(rec.lease, k)

    def hash_kv(self, rev: int = 0) -> tuple[int, int]:
        """``(hash, compact_rev)`` of the store up to ``rev`` (0 = current); see
        :meth:`KVStore.hash_kv`. Raises Compacted / FutureRevision."""
        h, _cur, comp = self.store.hash_kv(rev)
        return h, comp
