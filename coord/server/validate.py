"""Pre-proposal request checks, as etcd's v3rpc layer makes them (api/v3rpc/key.go).

Pure functions that raise the exact :mod:`coord.errors` etcd returns; they run before a
request is proposed, so a rejected request never reaches the log. Checks that depend on the
store state (missing lease, ignore_value on a missing key, revisions) happen in the applier.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message

from coord.errors import (
    DuplicateKey,
    EmptyKey,
    InvalidSortOption,
    KeyNotFound,
    LeaseProvided,
    RequestTooLarge,
    TooManyOps,
    ValueProvided,
)
from coord.limits import MAX_REQUEST_BYTES
from coord.pb import rpc_pb2

MAX_TXN_OPS = 128
"""etcd's default --max-txn-ops."""


_SORT_ORDERS = frozenset(rpc_pb2.RangeRequest.SortOrder.values())
_SORT_TARGETS = frozenset(rpc_pb2.RangeRequest.SortTarget.values())


def check_range(r: rpc_pb2.RangeRequest) -> None:
    """Empty key → EmptyKey; a sort order or target that is not one of the enum's values →
    InvalidSortOption (etcd 3.5's checkRangeRequest; proto3 keeps unknown enum numbers, and
    the applier must never see one)."""
    if not r.key:
        raise EmptyKey()
    if r.sort_order not in _SORT_ORDERS or r.sort_target not in _SORT_TARGETS:
        raise InvalidSortOption()


def check_put(r: rpc_pb2.PutRequest) -> None:
    """Empty key → EmptyKey; ignore_value with a value → ValueProvided; ignore_lease with a
    lease → LeaseProvided (in that order)."""
    if not r.key:
        raise EmptyKey()
    if r.ignore_value and r.value:
        raise ValueProvided()
    if r.ignore_lease and r.lease:
        raise LeaseProvided()


def check_delete_range(r: rpc_pb2.DeleteRangeRequest) -> None:
    """Empty key → EmptyKey."""
    if not r.key:
        raise EmptyKey()


def check_txn(r: rpc_pb2.TxnRequest, max_ops: int = MAX_TXN_OPS) -> None:
    """etcd's checkTxnRequest then checkIntervals on success and failure:

    * more than ``max_ops`` in compare, success or failure (each counted alone) → TooManyOps;
      a nested txn gets the budget ``max_ops - (its parent's largest list)``;
    * an empty compare key → EmptyKey; an empty RequestOp → KeyNotFound; each op is checked
      like a top-level request;
    * two puts of one key, or a put inside a delete range, in one branch (nested txns
      included; the same put in a nested txn's success and failure is fine) → DuplicateKey.
    """
    _check_txn_request(r, max_ops)
    _check_intervals(r.success)
    _check_intervals(r.failure)


def check_request_size(req: Message, limit: int = MAX_REQUEST_BYTES) -> None:
    """Encoded size above ``limit`` → RequestTooLarge (check the InternalRequest to propose)."""
    if req.ByteSize() > limit:
        raise RequestTooLarge()


def _check_txn_request(r: rpc_pb2.TxnRequest, max_ops: int) -> None:
    opc = max(len(r.compare), len(r.success), len(r.failure))
    if opc > max_ops:
        raise TooManyOps()
    for c in r.compare:
        if not c.key:
            raise EmptyKey()
    for ops in (r.success, r.failure):
        for op in ops:
            _check_op(op, max_ops - opc)


def _check_op(op: rpc_pb2.RequestOp, max_ops: int) -> None:
    which = op.WhichOneof("request")
    if which == "request_put":
        check_put(op.request_put)
    elif which == "request_range":
        check_range(op.request_range)
    elif which == "request_delete_range":
        check_delete_range(op.request_delete_range)
    elif which == "request_txn":
        _check_txn_request(op.request_txn, max_ops)
    else:
        raise KeyNotFound()


_Interval = tuple[bytes, bytes]  # [begin, end); end == b"" means +infinity


def _point(k: bytes) -> _Interval:
    return (k, k + b"\0")


def _hits(dels: list[_Interval], k: bytes) -> bool:
    return any(begin <= k and (not end or k < end) for begin, end in dels)


def _check_intervals(ops: Sequence[rpc_pb2.RequestOp]) -> tuple[set[bytes], list[_Interval]]:
    """etcd checkIntervals: returns this level's (puts, deletes) for the parent."""
    dels: list[_Interval] = []
    txns: list[rpc_pb2.TxnRequest] = []
    put_keys: list[bytes] = []
    for op in ops:  # one pass sorts the ops; the checks below keep etcd's order
        which = op.WhichOneof("request")
        if which == "request_put":
            put_keys.append(op.request_put.key)
        elif which == "request_delete_range":
            d = op.request_delete_range
            dels.append((d.key, d.range_end) if d.range_end else _point(d.key))
        elif which == "request_txn":
            txns.append(op.request_txn)
    puts: set[bytes] = set()
    for t in txns:
        puts_then, dels_then = _check_intervals(t.success)
        puts_else, dels_else = _check_intervals(t.failure)
        for k in puts_then:
            if k in puts or _hits(dels, k):
                raise DuplicateKey()
            puts.add(k)
        for k in puts_else:
            if (k in puts and k not in puts_then) or _hits(dels, k):
                raise DuplicateKey()
            puts.add(k)
        dels.extend(dels_then)
        dels.extend(dels_else)
    for k in put_keys:
        if k in puts or (dels and _hits(dels, k)):
            raise DuplicateKey()
        puts.add(k)
    return puts, dels


def read_only_txn(req: rpc_pb2.TxnRequest) -> bool:
    """True when no branch of the txn (nested ones included) can write."""
    for op in (*req.success, *req.failure):
        which = op.WhichOneof("request")
        if which in ("request_put", "request_delete_range"):
            return False
        if which == "request_txn" and not read_only_txn(op.request_txn):
            return False
    return True
