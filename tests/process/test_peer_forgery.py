"""Issue 15 item 2: the peer port refuses what only a member, of this cluster, may send.

A forging client built from the peer proto alone (grpcio's ``raftcronpb.Peer`` stub, no
coord code on its sending side) talks to a real 3-member cluster: each reproduction from
the issue is answered FAILED_PRECONDITION and changes nothing; afterwards the cluster
still serves writes and reads on every member.

Not covered (cannot be without peer authentication): a forger that knows a member's id and
the cluster id, sending well-formed messages at a plausible term as that member — see
docs/hostile-input.md.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from coord.client import Client
from coord.pb import internal_pb2, raft_pb2, raft_pb2_grpc, rpc_pb2
from coord.raft import ConfChange, ConfChangeType, EntryType, MessageType
from coord.server.raft_node import TAG_REQUEST
from tests.helpers.procs import ProcessGroup
from tests.process.cluster import CoordCluster

pytestmark = pytest.mark.timeout(180)

BAD = 0xBAD
OBSERVE = 3.0
"""Seconds a 'nothing happens' check watches the cluster after the forgeries."""


def _msg(mtype: MessageType, frm: int, to: int, term: int = 0, **kw: Any) -> raft_pb2.RaftMessage:
    m = raft_pb2.RaftMessage(type=int(mtype), to=to, term=term, **kw)
    setattr(m, "from", frm)
    return m


def _batch(cluster_id: int, frm: int, *msgs: raft_pb2.RaftMessage) -> raft_pb2.MessageBatch:
    b = raft_pb2.MessageBatch(cluster_id=cluster_id, messages=list(msgs))
    setattr(b, "from", frm)
    return b


def _put_entry(key: bytes) -> raft_pb2.RaftEntry:
    req = internal_pb2.InternalRequest(id=424242, put=rpc_pb2.PutRequest(key=key, value=b"x"))
    return raft_pb2.RaftEntry(type=int(EntryType.NORMAL),
                              data=TAG_REQUEST + req.SerializeToString())


async def _send(peer: str, batch: raft_pb2.MessageBatch) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(peer) as ch:
        stub: Any = raft_pb2_grpc.PeerStub(ch)
        try:
            await stub.Send(iter([batch]), timeout=5)
        except grpc.aio.AioRpcError as err:
            return err.code()
        return grpc.StatusCode.OK


def test_forged_peer_messages_are_refused(procs: ProcessGroup) -> None:
    cluster = CoordCluster(procs, size=3)
    cluster.start()
    cluster.run(_scenario)


async def _scenario(c: CoordCluster) -> None:
    leader = await c.wait_leader()
    ids = c.ids()
    st = await c.status(leader)
    assert st is not None
    cid, term = st.header.cluster_id, st.raftTerm
    lid = ids[leader]
    follower = next(n for n in c.members if n != leader)
    fid = ids[follower]
    other = next(n for n in c.members if n not in (leader, follower))
    lpeer, fpeer = c.members[leader].peer, c.members[follower].peer
    refused = grpc.StatusCode.FAILED_PRECONDITION

    # 1. A proposal from non-member 0xbad: used to write a key replicated to all.
    prop = _msg(MessageType.PROP, BAD, lid, entries=[_put_entry(b"/forged/prop")])
    assert await _send(lpeer, _batch(cid, BAD, prop)) == refused
    # 2. A REMOVE_NODE conf change proposed by a non-member: used to remove a member.
    cc = ConfChange(ConfChangeType.REMOVE_NODE, ids[other], json.dumps({"rid": 7}).encode())
    remove = _msg(MessageType.PROP, BAD, lid, entries=[
        raft_pb2.RaftEntry(type=int(EntryType.CONF_CHANGE), data=cc.encode())])
    assert await _send(lpeer, _batch(cid, BAD, remove)) == refused
    # 3. Another cluster's batch, even from a member's id (etcd: 412 cluster ID mismatch).
    assert await _send(fpeer, _batch(cid ^ 1, lid, _msg(MessageType.HEARTBEAT, lid, fid,
                                                        term=term))) == refused
    # 4. Heartbeats at term 1,000,000 from a non-member: used to make most writes fail.
    assert await _send(fpeer, _batch(cid, BAD, _msg(MessageType.HEARTBEAT, BAD, fid,
                                                    term=1_000_000))) == refused
    # 5. A heartbeat at term 2^64-1, even claiming the leader's id: used to brick the
    #    cluster for good (term+1 overflowed uint64 on every member).
    assert await _send(fpeer, _batch(cid, lid, _msg(MessageType.HEARTBEAT, lid, fid,
                                                    term=2**64 - 1))) == refused
    # 6. Local-only types from the network (an election forced on a follower).
    assert await _send(fpeer, _batch(cid, lid, _msg(MessageType.HUP, lid, fid))) == refused
    # 7. A message whose from differs from its batch's.
    assert await _send(fpeer, _batch(cid, lid, _msg(MessageType.HEARTBEAT, BAD, fid,
                                                    term=term))) == refused

    # Nothing changed: same leader and term, three members, no forged key; writes and
    # linearizable reads work on every member for the observation interval.
    async with Client(c.endpoints) as cli:
        loop = asyncio.get_running_loop()
        end = loop.time() + OBSERVE
        n = 0
        while loop.time() < end:
            await cli.put(f"/real/{n}", "v")
            n += 1
        assert n > 0
        assert len(await cli.members()) == 3
    for name, m in c.members.items():
        async with Client([m.endpoint]) as one:
            got = await one.get("/forged/", prefix=True)
            assert got.count == 0, name
            real = await one.get("/real/", prefix=True)
            assert real.count == n, name
    st2 = await c.status(leader)
    assert st2 is not None and st2.raftTerm == term and st2.leader == lid
    assert all(m.alive() for m in c.members.values())
    assert "transport.peer_rejected" in c.logs()
