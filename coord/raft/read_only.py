"""Bookkeeping for SAFE ReadIndex requests on the leader.

Each request (keyed by its context bytes) records the commit index at arrival; the leader
sends a heartbeat round carrying the context, and once a quorum of voters acknowledged it
(which proves the leader was still leader when the request arrived) the request and all
earlier ones are released with their recorded index. Queue order = arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coord.raft.types import Message


@dataclass(slots=True)
class ReadIndexStatus:
    req: Message
    index: int
    acks: dict[int, bool] = field(default_factory=dict)


class ReadOnly:
    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, req: Message) -> None:
        ctx = req.context
        if ctx in self.pending:
            return
        self.pending[ctx] = ReadIndexStatus(req, index)
        self.queue.append(ctx)

    def recv_ack(self, node_id: int, ctx: bytes) -> dict[int, bool] | None:
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks[node_id] = True
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Release the request with ``ctx`` and every request queued before it."""
        if ctx not in self.pending:
            return []
        k = self.queue.index(ctx)
        released = [self.pending.pop(c) for c in self.queue[: k + 1]]
        del self.queue[: k + 1]
        return released

    def last_pending_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""
