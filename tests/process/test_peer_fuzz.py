"""Issue 15 acceptance: fuzzing the peer port of a real 3-member cluster.

hypothesis builds Raft message batches — every message type, numbers at their extremes —
and a forging client (grpcio's stub of the peer proto) sends them to the members:

* from non-members, for another cluster id, or with a field out of range (type, term,
  index, from/to): each must be refused with FAILED_PRECONDITION;
* responses under a real member's id with in-range fields (what a confused or lagging member
  could send: APP_RESP, HEARTBEAT_RESP, VOTE_RESP, PRE_VOTE_RESP, READ_INDEX_RESP at the
  current term or below): the core must shrug them off.

No member may exit or log a traceback, and afterwards the cluster passes a linearizability
check. Messages that only a member would send and that change logs (APP, SNAP, VOTE at a
plausible term, under a member's id) are not fuzzed: without peer TLS a forger who knows a
member's id can send those (docs/hostile-input.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coord.pb import raft_pb2, raft_pb2_grpc
from coord.raft import MessageType
from coord.server.transport import MAX_INDEX, MAX_TERM
from tests.helpers.procs import ProcessGroup
from tests.process.cluster import CoordCluster
from tests.process.test_request_fuzz import _lin_check

pytestmark = pytest.mark.timeout(300)

FUZZ_BATCHES = 1000
RESPONSES = [MessageType.APP_RESP, MessageType.HEARTBEAT_RESP, MessageType.VOTE_RESP,
             MessageType.PRE_VOTE_RESP, MessageType.READ_INDEX_RESP]
_U64 = st.sampled_from([0, 1, 2, 1000, MAX_TERM, MAX_TERM + 1, MAX_INDEX + 1, 2**63,
                        2**64 - 1]) | st.integers(0, 2**64 - 1)


def _send(ch: grpc.Channel, batch: raft_pb2.MessageBatch) -> grpc.StatusCode:
    try:
        raft_pb2_grpc.PeerStub(ch).Send(iter([batch]), timeout=5)
    except grpc.RpcError as err:
        code: grpc.StatusCode = err.code()
        return code
    return grpc.StatusCode.OK


def _message(frm: int, to: int, mtype: int, **kw: Any) -> raft_pb2.RaftMessage:
    m = raft_pb2.RaftMessage(type=mtype, to=to, **kw)
    setattr(m, "from", frm)
    return m


def test_fuzzed_peer_batches(procs: ProcessGroup) -> None:
    c = CoordCluster(procs, size=3)
    c.start()
    leader = asyncio.run(c.wait_leader())
    st_ = asyncio.run(c.status(leader))
    assert st_ is not None
    cid, term = st_.header.cluster_id, st_.raftTerm
    ids = c.ids()
    names = list(c.members)
    chans = {n: grpc.insecure_channel(c.members[n].peer) for n in names}
    counts: dict[str, int] = {"refused": 0, "accepted": 0}
    try:
        @settings(max_examples=FUZZ_BATCHES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def fuzz(data: st.DataObject) -> None:
            to_name = data.draw(st.sampled_from(names))
            to = ids[to_name]
            bad = data.draw(st.sampled_from(["non-member", "cluster", "type", "term",
                                             "index", "from", "to", "none"]))
            frm = data.draw(st.sampled_from([ids[n] for n in names if n != to_name]))
            mtype = data.draw(st.sampled_from([int(t) for t in RESPONSES]))
            fields = dict(term=data.draw(st.integers(0, term)),
                          index=data.draw(st.integers(0, 1000)),
                          commit=data.draw(st.integers(0, 1000)),
                          reject=data.draw(st.booleans()),
                          reject_hint=data.draw(st.integers(0, 1000)),
                          log_term=data.draw(st.integers(0, term)))
            bcid, bfrm, mfrm, mto = cid, frm, frm, to
            if bad == "non-member":
                bfrm = mfrm = data.draw(st.sampled_from([0, 0xBAD, 2**64 - 1]))
            elif bad == "cluster":
                bcid = data.draw(_U64.filter(lambda v: v != cid))
            elif bad == "type":
                mtype = data.draw(st.sampled_from([0, 1, 12, 13, 14, 19, 99, 2**31 - 1]))
            elif bad == "term":
                fields["term"] = data.draw(st.integers(MAX_TERM + 1, 2**64 - 1))
            elif bad == "index":
                fields[data.draw(st.sampled_from(["index", "commit", "reject_hint"]))] = \
                    data.draw(st.integers(MAX_INDEX + 1, 2**64 - 1))
            elif bad == "from":
                mfrm = data.draw(_U64.filter(lambda v: v != frm))
            elif bad == "to":
                mto = data.draw(_U64.filter(lambda v: v != to))
            batch = raft_pb2.MessageBatch(cluster_id=bcid, messages=[
                _message(mfrm, mto, mtype, **fields)])
            setattr(batch, "from", bfrm)
            code = _send(chans[to_name], batch)
            if bad == "none":
                assert code == grpc.StatusCode.OK, code
                counts["accepted"] += 1
            else:
                assert code == grpc.StatusCode.FAILED_PRECONDITION, (bad, code)
                counts["refused"] += 1

        fuzz()
    finally:
        for ch in chans.values():
            ch.close()
    print(f"peer fuzz: {counts}")
    assert all(m.alive() for m in c.members.values()), c.logs()
    assert "Traceback" not in c.logs(), c.logs()
    asyncio.run(_lin_check(c))
