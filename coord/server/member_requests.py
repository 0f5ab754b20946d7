"""A member's clients: proposals (batched into one PROP per Ready-loop turn) and
linearizable reads (ReadIndex, batched), each answered through a waiter that times out
after ``REQUEST_TIMEOUT``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from coord.errors import (
    CoordError,
    LeaderChanged,
    NoLeader,
    Stopped,
)
from coord.pb import internal_pb2
from coord.raft import (
    Entry,
    Message,
    MessageType,
    ProposalDropped,
    StateRole,
)
from coord.server.member_state import (
    TAG_REQUEST,
    MemberState,
)

log = structlog.get_logger("coord.raftnode")


class Requests(MemberState):
    async def propose(self, req: internal_pb2.InternalRequest) -> Any:
        """Replicate ``req``; return the applier's response once it is applied here."""
        if self._stopped or self.removed:
            raise Stopped()
        if self._leader == 0:
            await self._wait_leader()
        assert self.rn is not None
        req.id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._wait.proposed(req.id, fut)
        try:
            # Queued and stepped in as one PROP per Ready-loop turn: one append message per
            # follower for a whole batch of proposals instead of one per proposal.
            self._props.append((req.id, TAG_REQUEST + req.SerializeToString()))
            self._kick.set()
            return await self._bounded(fut)
        finally:
            self._wait.forget(req.id)

    def _flush_proposals(self) -> None:
        if not self._props or self.rn is None:
            return
        batch, self._props = self._props, []
        try:
            self.rn.step(Message(MessageType.PROP, self.member_id, self.member_id,
                                 entries=tuple(Entry(0, 0, data=d) for _, d in batch)))
        except ProposalDropped:
            # never appended anywhere: safe for the client to retry
            for fut in self._wait.dropped([rid for rid, _ in batch]):
                fut.set_exception(NoLeader())

    def _fail_conf_waiters(self, err: CoordError) -> None:
        for fut in self._conf_waiters.values():
            if not fut.done():
                fut.set_exception(err)

    def _fail_all(self, err: CoordError) -> None:
        for fut in self._wait.drain().waiters:
            if not fut.done():
                fut.set_exception(err)
        self._fail_conf_waiters(err)
        for rf in self._reads.drain():
            if not rf.done():
                rf.set_exception(err)
        for lf in self._leader_waiters:
            if not lf.done():
                lf.set_exception(err)

    async def read_index(self) -> None:
        """Linearizable-read barrier: ReadIndex through the leader, then wait until this
        member applied up to the read index.

        On the leader of a one-voter cluster no round is needed: no other member can
        commit, so the commit index is the read index — once this leader has committed an
        entry of its own term (until then the commit index it recovered may lag a write
        that was acknowledged before a restart, Raft §6.4, the rule etcd applies to the
        multi-member case). The read then only waits for ``applied >= commit``: no
        message, no Ready, no future when the member is caught up."""
        if self._stopped or self.removed:
            raise Stopped()
        if self._leader == 0:
            await self._wait_leader()
        assert self.rn is not None
        rn = self.rn
        sole = rn.sole_voter_read()
        if sole is not None:
            index, of_this_term = sole
            if not of_this_term:
                # this term's first entry (the no-op) is at or before the last index
                await self._wait_applied(rn.last_index())
                await self.read_index()
                return
            if index > self._applied:
                await self._wait_applied(index)
            return
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads.add(fut)
        self._issue_read()
        index = await self._bounded(fut)
        if index > self._applied:
            await self._wait_applied(index)

    async def _wait_applied(self, index: int) -> None:
        """Wait until this member applied ``index`` (``request timed out`` after
        ``REQUEST_TIMEOUT``)."""
        if index <= self._applied:
            return
        af: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wait.wait_applied(index, af)
        await self._bounded(af)

    def _issue_read(self) -> None:
        """Issue a ReadIndex for the waiting reads (``member_core.ReadBatcher``)."""
        if self._reads.issue(self.rn, time.monotonic()):
            self._kick.set()

    def _read_done(self, ctx: bytes, index: int) -> None:
        batch = self._reads.done(ctx)
        if not batch:
            return
        for f in batch:
            if not f.done():
                f.set_result(index)
        self._issue_read()

    def _check_reads(self) -> None:
        """Re-issue a ReadIndex that got no answer within an election timeout (lost)."""
        if self._reads.check(self.rn, time.monotonic()):
            self._kick.set()

    def _on_soft_state(self, leader: int, role: StateRole) -> None:
        old = self._leader
        if leader == 0 and old != 0:
            self._leaderless_since = time.monotonic()
        was_leader = self._role == StateRole.LEADER
        self._leader = leader
        self._role = role
        # The lessor follows leadership at once (Core's loop also checks periodically):
        # a new leader extends every lease, as etcd's Promote does.
        if role == StateRole.LEADER and not was_leader:
            self.applier.lessor.promote(time.monotonic())
        elif was_leader and role != StateRole.LEADER:
            self.applier.lessor.demote()
        if leader != old:
            log.info("raftnode.leader", leader=f"{leader:x}", role=role.name,
                     term=self.rn.term if self.rn else 0)
            if old != 0:
                self._fail(self._wait.leader_changed())
                self._fail_conf_waiters(LeaderChanged())
            self._reads.leader_changed()
            if leader != 0:
                for f in self._leader_waiters:
                    if not f.done():
                        f.set_result(None)
                self._leader_waiters.clear()
                self._issue_read()
