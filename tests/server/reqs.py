"""Request builders shared by the mvcc/lease/server tests."""

from __future__ import annotations

from typing import Any

from coord.pb import internal_pb2, rpc_pb2
from coord.server.apply import Applier

C = rpc_pb2.Compare
RR = rpc_pb2.RangeRequest


def put(key: bytes, value: bytes = b"", **kw: Any) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, **kw))


def rng(key: bytes, end: bytes = b"", **kw: Any) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key, range_end=end, **kw))


def delete(key: bytes, end: bytes = b"", **kw: Any) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(
        request_delete_range=rpc_pb2.DeleteRangeRequest(key=key, range_end=end, **kw)
    )


def txn_op(
    compare: list[rpc_pb2.Compare] | None = None,
    success: list[rpc_pb2.RequestOp] | None = None,
    failure: list[rpc_pb2.RequestOp] | None = None,
) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_txn=txn(compare, success, failure))


def txn(
    compare: list[rpc_pb2.Compare] | None = None,
    success: list[rpc_pb2.RequestOp] | None = None,
    failure: list[rpc_pb2.RequestOp] | None = None,
) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(compare=compare or [], success=success or [], failure=failure or [])


def cmp(key: bytes, target: str, result: str, value: Any = None, end: bytes = b"") -> C:
    c = C(key=key, target=getattr(C, target), result=getattr(C, result), range_end=end)
    field = {
        "VALUE": "value",
        "VERSION": "version",
        "CREATE": "create_revision",
        "MOD": "mod_revision",
        "LEASE": "lease",
    }[target]
    if value is not None:
        setattr(c, field, value)
    return c


class Client:
    """Drives an Applier with InternalRequests like the server would."""

    def __init__(self, applier: Applier | None = None) -> None:
        self.a = applier if applier is not None else Applier()
        self.now = 0.0
        self._id = 0

    def _apply(self, **kw: Any) -> Any:
        self._id += 1
        return self.a.apply(internal_pb2.InternalRequest(id=self._id, **kw), self.now)

    def put(self, key: bytes, value: bytes = b"", **kw: Any) -> rpc_pb2.PutResponse:
        return self._apply(put=rpc_pb2.PutRequest(key=key, value=value, **kw))  # type: ignore[no-any-return]

    def delete(self, key: bytes, end: bytes = b"", **kw: Any) -> rpc_pb2.DeleteRangeResponse:
        return self._apply(  # type: ignore[no-any-return]
            delete_range=rpc_pb2.DeleteRangeRequest(key=key, range_end=end, **kw)
        )

    def get(self, key: bytes, end: bytes = b"", **kw: Any) -> rpc_pb2.RangeResponse:
        return self.a.range(rpc_pb2.RangeRequest(key=key, range_end=end, **kw))

    def txn(self, t: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        return self._apply(txn=t)  # type: ignore[no-any-return]

    def compact(self, rev: int, physical: bool = False) -> rpc_pb2.CompactionResponse:
        return self._apply(  # type: ignore[no-any-return]
            compaction=rpc_pb2.CompactionRequest(revision=rev, physical=physical)
        )

    def grant(self, ttl: int, lease_id: int = 0) -> rpc_pb2.LeaseGrantResponse:
        return self._apply(lease_grant=rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id))  # type: ignore[no-any-return]

    def revoke(self, lease_id: int) -> rpc_pb2.LeaseRevokeResponse:
        return self._apply(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=lease_id))  # type: ignore[no-any-return]

    def expire(self, *ids: int) -> None:
        self._apply(lease_expire=internal_pb2.LeaseExpire(ids=list(ids)))

    @property
    def rev(self) -> int:
        return self.a.current_revision


def kvs(resp: rpc_pb2.RangeResponse) -> list[tuple[bytes, int, int, int, bytes]]:
    """(key, create, mod, version, value) of each kv."""
    return [(kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value) for kv in resp.kvs]
