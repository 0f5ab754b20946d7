"""coord's error hierarchy, mirroring etcd's server errors.

Each error carries the exact message etcd 3.4 sends, because clientv3 (and so etcdctl) maps
the message string back to a typed error: a different string changes what the user sees.
Its kind (the base classes below: InvalidArgument, OutOfRange, NotFound, ...) decides its
gRPC status code, in one table of the API layer (``coord.api.errors.STATUS``).
"""

from __future__ import annotations


class CoordError(Exception):
    """Base of every error coord reports to clients. ``message`` is etcd's exact string.
    One of no more specific kind is answered with UNKNOWN."""

    message: str = "etcdserver: unknown error"

    def __init__(self, message: str | None = None) -> None:
        if message is not None:
            self.message = message
        super().__init__(self.message)


class InvalidArgument(CoordError):
    """A request that can never succeed as sent."""


class OutOfRange(CoordError):
    """A revision or TTL outside what the store has or allows."""


class NotFound(CoordError):
    """A lease or member that does not exist."""


class FailedPrecondition(CoordError):
    """A request this member cannot carry out in its present state."""


class Unavailable(CoordError):
    """The member cannot answer now; another member, or this one later, may."""


class ResourceExhausted(CoordError):
    """A quota is used up."""


class Internal(CoordError):
    """A failure of coord's own, not of the request."""


class Unimplemented(CoordError):
    """An etcd call coord does not implement."""


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


class ApplyFailed(Internal):
    """A committed request the applier could not carry out (a check missing before the
    proposal): it is answered with this error, rolled back on every member alike (the
    applier is deterministic), and the member keeps serving. etcd has no such error: its
    validation is complete, and so should ours be; this is the net under it."""

    message = "etcdserver: request failed at apply (nothing was changed)"


class Compacted(OutOfRange):
    message = "etcdserver: mvcc: required revision has been compacted"


class FutureRevision(OutOfRange):
    message = "etcdserver: mvcc: required revision is a future revision"


class LeaseTTLTooLarge(OutOfRange):
    message = "etcdserver: too large lease TTL"


class LeaseNotFound(NotFound):
    message = "etcdserver: requested lease not found"


class LeaseExists(FailedPrecondition):
    message = "etcdserver: lease already exists"


class NotLeader(FailedPrecondition):
    message = "etcdserver: not leader"


class NoLeader(Unavailable):
    message = "etcdserver: no leader"


class LeaderChanged(Unavailable):
    message = "etcdserver: leader changed"


class RequestTimeout(Unavailable):
    message = "etcdserver: request timed out"


class Stopped(Unavailable):
    message = "etcdserver: server stopped"


class NoSpace(ResourceExhausted):
    message = "etcdserver: mvcc: database space exceeded"


class MemberNotFound(NotFound):
    message = "etcdserver: member not found"


class PeerURLExists(FailedPrecondition):
    message = "etcdserver: Peer URLs already exists"


class MemberNotLearner(FailedPrecondition):
    message = "etcdserver: can only promote a learner member"


class LearnerNotReady(FailedPrecondition):
    message = "etcdserver: can only promote a learner member which is in sync with leader"


class BadLeaderTransferee(FailedPrecondition):
    message = "etcdserver: bad leader transferee"


class MembershipUnsupported(CoordError):
    message = "raftcron: membership changes are not supported by this member"


class UnhealthyCluster(Unavailable):
    message = "etcdserver: unhealthy cluster"


class AuthNotEnabled(FailedPrecondition):
    message = "etcdserver: authentication is not enabled"


class NotEnoughStartedMembers(CoordError):
    """etcd 3.4 sends this one with code Unknown (it is not in v3rpc's error map on the
    member-remove path); the message is what clients match on."""

    message = "etcdserver: re-configuration failed due to not enough started members"


class TooManyLearners(FailedPrecondition):
    message = "etcdserver: too many learner members in cluster"
