"""The peer port refuses what is plainly not a peer of this cluster (issue #15 item 2): a
batch from a non-member (it once wrote a key replicated to every member, and removed a
member with a conf-change proposal), for another cluster id, carrying local-only message
types, messages for another member or in another sender's name, or a term no cluster
reaches (2^64 - 1 once stopped the whole cluster for good). Each forged batch is answered
FAILED_PRECONDITION, changes nothing, and the cluster keeps serving — across a restart too.

Without TLS, an attacker who knows a member's id can still speak for it; peer certificates
are what close that (docs/security.md)."""

from __future__ import annotations

import asyncio

import pytest

from coord.api.h2.client import StreamCall, StreamCallError
from coord.api.proto import internal_pb2, raft_pb2, rpc_pb2
from coord.api.status import StatusCode
from coord.client import Client
from coord.raft import ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType
from coord.server.raft_node import TAG_REQUEST
from coord.server.transport import SEND_METHOD, H2PeerStub, message_to_pb
from tests.helpers.procs import ProcessGroup
from tests.process.cluster import CoordCluster

pytestmark = pytest.mark.timeout(180)

NON_MEMBER = 0xBAD


def _batch(frm: int, cluster_id: int, *msgs: Message) -> raft_pb2.MessageBatch:
    b = raft_pb2.MessageBatch(cluster_id=cluster_id, messages=[message_to_pb(m) for m in msgs])
    setattr(b, "from", frm)
    return b


def _put_entry(key: bytes) -> Entry:
    req = internal_pb2.InternalRequest(id=424242, put=rpc_pb2.PutRequest(key=key, value=b"x"))
    return Entry(term=0, index=0, type=EntryType.NORMAL,
                 data=TAG_REQUEST + req.SerializeToString())


async def _refused(peer: str, batch: raft_pb2.MessageBatch) -> str:
    with pytest.raises(StreamCallError) as err:
        await H2PeerStub(peer).SendSnapshot(batch, timeout=5)
    assert err.value.status is StatusCode.FAILED_PRECONDITION, err.value
    return str(err.value)


async def _forge(c: CoordCluster) -> None:
    leader = await c.wait_leader()
    ids = c.ids()
    follower = next(n for n in c.members if n != leader)
    lid, fid = ids[leader], ids[follower]
    lpeer, fpeer = c.members[leader].peer, c.members[follower].peer
    async with Client(c.endpoints, timeout=5) as cli:
        await cli.put("/before", "ok")
        resp = await cli.get("/before")
        cluster_id = resp.header.cluster_id
        term = resp.header.raft_term
        members_before = len(await cli.members())

    prop = Message(MessageType.PROP, lid, NON_MEMBER, entries=(_put_entry(b"/forged"),))
    assert "not a member" in await _refused(lpeer, _batch(NON_MEMBER, cluster_id, prop))
    remove = ConfChange(ConfChangeType.REMOVE_NODE, fid, b"")
    cc = Message(MessageType.PROP, lid, NON_MEMBER, entries=(
        Entry(term=0, index=0, type=EntryType.CONF_CHANGE, data=remove.encode()),))
    assert "not a member" in await _refused(lpeer, _batch(NON_MEMBER, cluster_id, cc))
    # Heartbeats far in the future, from a non-member and in a member's name.
    hb = Message(MessageType.HEARTBEAT, fid, NON_MEMBER, term=1_000_000)
    assert "not a member" in await _refused(fpeer, _batch(NON_MEMBER, cluster_id, hb))
    top = Message(MessageType.HEARTBEAT, fid, lid, term=2**64 - 1)
    assert "term" in await _refused(fpeer, _batch(lid, cluster_id, top))
    # Another cluster, a local-only type, a message in another sender's name or for
    # another member.
    app = Message(MessageType.APP, fid, lid, term=term, entries=(_put_entry(b"/forged"),))
    assert "cluster ID mismatch" in await _refused(fpeer, _batch(lid, cluster_id ^ 1, app))
    hup = Message(MessageType.HUP, fid, lid)
    assert "local-only" in await _refused(fpeer, _batch(lid, cluster_id, hup))
    other = next(n for n in c.members if n not in (leader, follower))
    mixed = Message(MessageType.HEARTBEAT, fid, ids[other], term=term)
    assert "in a batch from" in await _refused(fpeer, _batch(lid, cluster_id, mixed))
    elsewhere = Message(MessageType.HEARTBEAT, ids[other], lid, term=term)
    assert "for " in await _refused(fpeer, _batch(lid, cluster_id, elsewhere))

    # The long-lived Send stream refuses a forged batch too, and ends.
    call = await StreamCall.open(fpeer, SEND_METHOD, connect_timeout=5)
    call.write(_batch(NON_MEMBER, cluster_id, hb).SerializeToString())
    with pytest.raises(StreamCallError) as ended:
        await asyncio.wait_for(call.finish(), 10)
    assert ended.value.status is StatusCode.FAILED_PRECONDITION

    async with Client(c.endpoints, timeout=5) as cli:
        assert (await cli.get("/forged")).kvs == []
        assert len(await cli.members()) == members_before
        await cli.put("/after", "ok")
        for m in c.members.values():  # linearizable reads on every member see the write
            async with Client([m.endpoint], timeout=5) as one:
                assert [kv.value for kv in (await one.get("/after")).kvs] == [b"ok"]


def test_forged_peer_batches_change_nothing(procs: ProcessGroup) -> None:
    c = CoordCluster(procs, size=3, faults=False)
    c.start()
    asyncio.run(_forge(c))
    assert all(m.alive() for m in c.members.values()), c.logs()
    assert "transport.batch_refused" in c.logs()
    # Nothing forged was persisted: every member restarts and the cluster serves.
    for name in list(c.members):
        c.kill9(name)
    c.start()

    async def serves() -> None:
        await c.wait_leader()
        async with Client(c.endpoints, timeout=5) as cli:
            await cli.put("/restarted", "ok")
    asyncio.run(serves())
