"""coord's error hierarchy, mirroring etcd's server errors.

Each error carries the gRPC status code and the exact message etcd 3.4 sends, because
clientv3 (and so etcdctl) maps the message string back to a typed error: a different
string changes what the user sees. The API layer turns a :class:`CoordError` into a gRPC
status with :func:`CoordError.code_name` and ``str(err)``.
"""

from __future__ import annotations


class CoordError(Exception):
    """Base of every error coord reports to clients. ``message`` is etcd's exact string."""

    code_name: str = "UNKNOWN"
    message: str = "etcdserver: unknown error"

    def __init__(self, message: str | None = None) -> None:
        if message is not None:
            self.message = message
        super().__init__(self.message)


class InvalidArgument(CoordError):
    code_name = "INVALID_ARGUMENT"


class EmptyKey(InvalidArgument):
    message = "etcdserver: key is not provided"


class KeyNotFound(InvalidArgument):
    message = "etcdserver: key not found"


class ValueProvided(InvalidArgument):
    message = "etcdserver: value is provided"


class LeaseProvided(InvalidArgument):
    message = "etcdserver: lease is provided"


class TooManyOps(InvalidArgument):
    message = "etcdserver: too many operations in txn request"


class DuplicateKey(InvalidArgument):
    message = "etcdserver: duplicate key given in txn request"


class RequestTooLarge(InvalidArgument):
    message = "etcdserver: request is too large"


class InvalidSortOption(InvalidArgument):
    """etcd 3.5's ErrGRPCInvalidSortOption (3.4 crashed the applier on these)."""

    message = "etcdserver: invalid sort option"


class ApplyFailed(CoordError):
    """A committed request the applier could not carry out (a check missing before the
    proposal): it is answered with this error, rolled back on every member alike (the
    applier is deterministic), and the member keeps serving. etcd has no such error: its
    validation is complete, and so should ours be; this is the net under it."""

    code_name = "INTERNAL"
    message = "etcdserver: request failed at apply (nothing was changed)"


class OutOfRange(CoordError):
    code_name = "OUT_OF_RANGE"


class Compacted(OutOfRange):
    message = "etcdserver: mvcc: required revision has been compacted"


class FutureRevision(OutOfRange):
    message = "etcdserver: mvcc: required revision is a future revision"


class LeaseTTLTooLarge(OutOfRange):
    message = "etcdserver: too large lease TTL"


class LeaseNotFound(CoordError):
    code_name = "NOT_FOUND"
    message = "etcdserver: requested lease not found"


class LeaseExists(CoordError):
    code_name = "FAILED_PRECONDITION"
    message = "etcdserver: lease already exists"


class NotLeader(CoordError):
    code_name = "FAILED_PRECONDITION"
    message = "etcdserver: not leader"


class Unavailable(CoordError):
    code_name = "UNAVAILABLE"


class NoLeader(Unavailable):
    message = "etcdserver: no leader"


class LeaderChanged(Unavailable):
    message = "etcdserver: leader changed"


class RequestTimeout(Unavailable):
    message = "etcdserver: request timed out"


class Stopped(Unavailable):
    message = "etcdserver: server stopped"


class NoSpace(CoordError):
    code_name = "RESOURCE_EXHAUSTED"
    message = "etcdserver: mvcc: database space exceeded"


class MemberNotFound(CoordError):
    code_name = "NOT_FOUND"
    message = "etcdserver: member not found"


class PeerURLExists(CoordError):
    code_name = "FAILED_PRECONDITION"
    message = "etcdserver: Peer URLs already exists"


class MemberNotLearner(CoordError):
    code_name = "FAILED_PRECONDITION"
    message = "etcdserver: can only promote a learner member"


class LearnerNotReady(CoordError):
    code_name = "FAILED_PRECONDITION"
    message = "etcdserver: can only promote a learner member which is in sync with leader"


class BadLeaderTransferee(CoordError):
    code_name = "FAILED_PRECONDITION"
    message = "etcdserver: bad leader transferee"


class MembershipUnsupported(CoordError):
    message = "raftcron: membership changes are not supported by this member"


class UnhealthyCluster(Unavailable):
    message = "etcdserver: unhealthy cluster"


class AuthNotEnabled(CoordError):
    code_name = "FAILED_PRECONDITION"
    message = "etcdserver: authentication is not enabled"


class NotEnoughStartedMembers(CoordError):
    """etcd 3.4 sends this one with code Unknown (it is not in v3rpc's error map on the
    member-remove path); the message is what clients match on."""

    code_name = "UNKNOWN"
    message = "etcdserver: re-configuration failed due to not enough started members"


class TooManyLearners(CoordError):
    code_name = "FAILED_PRECONDITION"
    message = "etcdserver: too many learner members in cluster"
