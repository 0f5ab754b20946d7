"""Issue 15 item 2 at the transport: what a member accepts on its peer port, and a sender
that cannot be killed by what it is asked to send."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coord.pb import raft_pb2
from coord.raft import Message, MessageType
from coord.server.transport import (
    MAX_INDEX,
    MAX_TERM,
    MAX_TERM_STEP,
    PeerRejected,
    Transport,
    message_to_pb,
)
from tests.server.test_transport import _connected, _heartbeat, _until

MEMBERS = {1, 2, 3}


def _receiver(delivered: list[Message], term: int = MAX_TERM - MAX_TERM_STEP) -> Transport:
    return Transport(2, cluster_id=lambda: 77, deliver=delivered.extend,
                     report_unreachable=lambda p: None, report_snapshot=lambda p, ok: None,
                     name_of=lambda p: f"m{p}", is_member=MEMBERS.__contains__,
                     term_bound=lambda: term + MAX_TERM_STEP)


def _batch(frm: int, *msgs: raft_pb2.RaftMessage, cluster: int = 77) -> raft_pb2.MessageBatch:
    b = raft_pb2.MessageBatch(cluster_id=cluster, messages=list(msgs))
    setattr(b, "from", frm)
    return b


def _pb(mtype: MessageType | int, frm: int = 1, to: int = 2,
        **kw: Any) -> raft_pb2.RaftMessage:
    p = raft_pb2.RaftMessage(type=int(mtype), to=to, **kw)
    setattr(p, "from", frm)
    return p


REFUSED: dict[str, tuple[raft_pb2.MessageBatch, str]] = {
    "other cluster": (_batch(1, _pb(MessageType.HEARTBEAT, term=1), cluster=78),
                      "cluster ID mismatch"),
    "non-member proposal": (_batch(0xBAD, _pb(MessageType.PROP, frm=0xBAD)), "not a member"),
    "itself": (_batch(2, _pb(MessageType.HEARTBEAT, frm=2, term=1)), "not a member"),
    "from mismatch": (_batch(1, _pb(MessageType.HEARTBEAT, frm=3, term=1)), "bad from"),
    "to another": (_batch(1, _pb(MessageType.HEARTBEAT, to=3, term=1)), "bad to"),
    "unknown type": (_batch(1, _pb(99, term=1)), "bad type"),
    "HUP": (_batch(1, _pb(MessageType.HUP)), "local type"),
    "BEAT": (_batch(1, _pb(MessageType.BEAT)), "local type"),
    "CHECK_QUORUM": (_batch(1, _pb(MessageType.CHECK_QUORUM)), "local type"),
    "term 2^64-1": (_batch(1, _pb(MessageType.HEARTBEAT, term=2**64 - 1)), "bad term"),
    "term over bound": (_batch(1, _pb(MessageType.VOTE, term=MAX_TERM + 1)), "bad term"),
    "log term": (_batch(1, _pb(MessageType.VOTE, term=5, log_term=2**64 - 1)), "bad term"),
    "commit": (_batch(1, _pb(MessageType.HEARTBEAT, term=5, commit=MAX_INDEX + 1)),
               "bad index"),
    "entry": (_batch(1, _pb(MessageType.APP, term=5, entries=[
        raft_pb2.RaftEntry(term=2**64 - 1, index=1)])), "bad entry"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_batches_never_reach_the_core(case: str) -> None:
    batch, kind = REFUSED[case]
    delivered: list[Message] = []
    t = _receiver(delivered)
    with pytest.raises(PeerRejected) as err:
        t.accept(batch)
    assert err.value.kind == kind
    assert delivered == [] and t.rejected[kind] == 1


def test_a_term_far_above_this_members_is_refused_one_a_step_above_passes() -> None:
    """An absolute cap alone let one forged heartbeat at the cap stop every later election;
    a term may be at most MAX_TERM_STEP above this member's own."""
    delivered: list[Message] = []
    t = _receiver(delivered, term=5)
    with pytest.raises(PeerRejected, match="above this member's bound"):
        t.accept(_batch(1, _pb(MessageType.HEARTBEAT, term=5 + MAX_TERM_STEP + 1)))
    t.accept(_batch(1, _pb(MessageType.HEARTBEAT, term=5 + MAX_TERM_STEP)))
    assert [m.term for m in delivered] == [5 + MAX_TERM_STEP]


def test_member_batches_pass_including_forwarded_proposals() -> None:
    delivered: list[Message] = []
    t = _receiver(delivered)
    t.accept(_batch(1, _pb(MessageType.HEARTBEAT, term=MAX_TERM, commit=3),
                    _pb(MessageType.PROP, entries=[raft_pb2.RaftEntry(data=b"x")])))
    assert [m.type for m in delivered] == [MessageType.HEARTBEAT, MessageType.PROP]
    # One stream speaks for one member: a second sender on it is refused.
    with pytest.raises(PeerRejected, match="sender changed"):
        t.accept(_batch(3, _pb(MessageType.HEARTBEAT, frm=3, term=1)), stream_from=1)


def test_an_unencodable_message_does_not_kill_the_sender() -> None:
    """term + 1 at 2^64-1 used to raise in message_to_pb and end the sender task without a
    word: every later message to that peer was lost for good."""
    async def body() -> None:
        sender, receiver, server, delivered, _lost = await _connected()
        try:
            with pytest.raises(ValueError):
                message_to_pb(_heartbeat(1, 2, 2**64))
            sender.send([_heartbeat(1, 2, 2**64)])
            sender.send([_heartbeat(1, 2, 7)])
            await _until(lambda: [m.term for m in delivered] == [7])
            # A sender task that dies anyway is restarted.
            peer = sender._peers[2]
            peer.task.cancel()  # a cancel is a stop: not restarted
            await asyncio.sleep(0)
            assert sender.sender_restarts == 0

            async def boom() -> None:
                raise RuntimeError("bug")
            peer.task = asyncio.get_running_loop().create_task(boom())
            peer.task.add_done_callback(peer._supervise)
            await _until(lambda: sender.sender_restarts == 1)
            sender.send([_heartbeat(1, 2, 8)])
            await _until(lambda: [m.term for m in delivered] == [7, 8])
        finally:
            await sender.stop()
            receiver.stopped = True
            await server.stop(0)
    asyncio.run(body())
