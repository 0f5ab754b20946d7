"""Building blocks for transactions: compares and operations.

>>> cmp = Compare.create(b"/cron/lock/a") == 0
>>> ops = [put(b"/cron/lock/a", b"me", lease=7)]

A compare is built from a target (``Compare.value/version/create/mod/lease``) and one of
``== != < >`` against an int (or bytes for ``value``).
"""

from __future__ import annotations

from dataclasses import dataclass

from coord.pb import rpc_pb2

Key = str | bytes


def to_bytes(key: Key) -> bytes:
    return key.encode() if isinstance(key, str) else key


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that covers every key starting with ``prefix`` (etcd's rule)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # all bytes were 0xff: everything from the prefix on


_TARGET = rpc_pb2.Compare.CompareTarget
_RESULT = rpc_pb2.Compare.CompareResult
_INT_FIELDS: dict[int, str] = {
    _TARGET.VERSION: "version", _TARGET.CREATE: "create_revision",
    _TARGET.MOD: "mod_revision", _TARGET.LEASE: "lease",
}


@dataclass(frozen=True, slots=True)
class _Target:
    target: int
    key: bytes
    range_end: bytes = b""

    def _cmp(self, result: int, other: object) -> rpc_pb2.Compare:
        c = rpc_pb2.Compare(key=self.key, range_end=self.range_end)
        c.result = result  # type: ignore[assignment]
        c.target = self.target  # type: ignore[assignment]
        if self.target == _TARGET.VALUE:
            if not isinstance(other, bytes | str):
                raise TypeError("value compares take bytes or str")
            c.value = to_bytes(other)
        else:
            if not isinstance(other, int):
                raise TypeError("version/create/mod/lease compares take an int")
            field = _INT_FIELDS[self.target]
            setattr(c, field, other)
        return c

    def __eq__(self, other: object) -> rpc_pb2.Compare:  # type: ignore[override]
        return self._cmp(_RESULT.EQUAL, other)

    def __ne__(self, other: object) -> rpc_pb2.Compare:  # type: ignore[override]
        return self._cmp(_RESULT.NOT_EQUAL, other)

    def __lt__(self, other: object) -> rpc_pb2.Compare:
        return self._cmp(_RESULT.LESS, other)

    def __gt__(self, other: object) -> rpc_pb2.Compare:
        return self._cmp(_RESULT.GREATER, other)

    __hash__ = None  # type: ignore[assignment]


class Compare:
    """Factories for compare targets: ``Compare.version(k) == 0``."""

    @staticmethod
    def value(key: Key) -> _Target:
        return _Target(_TARGET.VALUE, to_bytes(key))

    @staticmethod
    def version(key: Key) -> _Target:
        return _Target(_TARGET.VERSION, to_bytes(key))

    @staticmethod
    def create(key: Key) -> _Target:
        return _Target(_TARGET.CREATE, to_bytes(key))

    @staticmethod
    def mod(key: Key) -> _Target:
        return _Target(_TARGET.MOD, to_bytes(key))

    @staticmethod
    def lease(key: Key) -> _Target:
        return _Target(_TARGET.LEASE, to_bytes(key))


def range_request(key: Key, *, prefix: bool = False, range_end: Key | None = None,
                  revision: int = 0, limit: int = 0, serializable: bool = False,
                  keys_only: bool = False, count_only: bool = False) -> rpc_pb2.RangeRequest:
    k = to_bytes(key)
    end = prefix_end(k) if prefix else (to_bytes(range_end) if range_end is not None else b"")
    return rpc_pb2.RangeRequest(key=k, range_end=end, revision=revision, limit=limit,
                                serializable=serializable, keys_only=keys_only,
                                count_only=count_only)


def get(key: Key, *, prefix: bool = False, range_end: Key | None = None,
        limit: int = 0) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_range=range_request(key, prefix=prefix,
                                                         range_end=range_end, limit=limit))


def put(key: Key, value: Key, *, lease: int = 0, prev_kv: bool = False) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
        key=to_bytes(key), value=to_bytes(value), lease=lease, prev_kv=prev_kv))


def delete(key: Key, *, prefix: bool = False, prev_kv: bool = False) -> rpc_pb2.RequestOp:
    k = to_bytes(key)
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(
        key=k, range_end=prefix_end(k) if prefix else b"", prev_kv=prev_kv))


def txn_op(compare: list[rpc_pb2.Compare], success: list[rpc_pb2.RequestOp],
           failure: list[rpc_pb2.RequestOp]) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(
        compare=compare, success=success, failure=failure))
