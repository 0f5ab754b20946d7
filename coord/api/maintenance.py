"""etcdserverpb.Maintenance and etcdserverpb.Cluster (what etcdctl's endpoint and member
commands use)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

from coord.api.errors import unary
from coord.api.ports import ClusterMembers, MemberStatus
from coord.errors import CoordError
from coord.pb import rpc_pb2
from coord.rpc.handlers import Context as Ctx
from coord.rpc.status import StatusCode

VERSION = "3.4.23"
"""The etcd API version coord implements (clients gate features on it)."""

SNAPSHOT_CHUNK = 32 * 1024



class Maintained(MemberStatus, Protocol):
    """What Maintenance needs: :class:`~coord.api.ports.MemberStatus`, and for its Snapshot
    call the member's state as snapshot pieces."""

    async def state_snapshot(self) -> list[bytes | memoryview]: ...


class MaintenanceService:
    def __init__(self, core: Maintained) -> None:
        self.core = core

    @unary
    async def Status(self, request: rpc_pb2.StatusRequest, context: Ctx) -> rpc_pb2.StatusResponse:
        core = self.core
        size = core.approximate_size()
        resp = rpc_pb2.StatusResponse(
            version=VERSION, dbSize=size, dbSizeInUse=size, leader=core.leader_id,
            raftIndex=core.committed_index, raftTerm=core.term,
            raftAppliedIndex=core.applied_index, isLearner=core.is_learner)
        self.core.fill_header(resp.header)
        return resp

    @unary
    async def Alarm(self, request: rpc_pb2.AlarmRequest, context: Ctx) -> rpc_pb2.AlarmResponse:
        return rpc_pb2.AlarmResponse()

    @unary
    async def Defragment(self, request: rpc_pb2.DefragmentRequest,
                         context: Ctx) -> rpc_pb2.DefragmentResponse:
        return rpc_pb2.DefragmentResponse()

    @unary
    async def HashKV(self, request: rpc_pb2.HashKVRequest, context: Ctx) -> rpc_pb2.HashKVResponse:
        value, compact_rev = self.core.hash_kv(request.revision)
        resp = rpc_pb2.HashKVResponse(hash=value, compact_revision=compact_rev)
        self.core.fill_header(resp.header)
        return resp

    @unary
    async def Hash(self, request: rpc_pb2.HashRequest, context: Ctx) -> rpc_pb2.HashResponse:
        value, _ = self.core.hash_kv(0)
        resp = rpc_pb2.HashResponse(hash=value)
        self.core.fill_header(resp.header)
        return resp

    async def Snapshot(self, request: rpc_pb2.SnapshotRequest,
                       context: Ctx) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        # etcdctl checks that the file is a multiple of 512 bytes plus a sha256 trailer.
        pieces = await self.core.state_snapshot()
        size = sum(len(p) for p in pieces)
        pieces.append(bytes(-size % 512))
        remaining = size + len(pieces[-1]) + 32
        digest = hashlib.sha256()
        for chunk in _chunks(pieces, SNAPSHOT_CHUNK):
            digest.update(chunk)
            remaining -= len(chunk)
            resp = rpc_pb2.SnapshotResponse(blob=chunk, remaining_bytes=remaining)
            self.core.fill_header(resp.header)
            yield resp
        yield rpc_pb2.SnapshotResponse(blob=digest.digest(), remaining_bytes=0)

    @unary
    async def MoveLeader(self, request: rpc_pb2.MoveLeaderRequest,
                         context: Ctx) -> rpc_pb2.MoveLeaderResponse:
        await self.core.transfer_leader(request.targetID)
        resp = rpc_pb2.MoveLeaderResponse()
        self.core.fill_header(resp.header)
        return resp


def _chunks(pieces: list[bytes | memoryview], size: int) -> Iterator[bytes]:
    """The pieces' bytes, concatenated, in chunks of ``size`` (the last may be shorter)."""
    buf = bytearray()
    for piece in pieces:
        view = memoryview(piece)
        while view:
            take = view[:size - len(buf)]
            buf += take
            view = view[len(take):]
            if len(buf) == size:
                yield bytes(buf)
                buf.clear()
    if buf:
        yield bytes(buf)


class ClusterService:
    def __init__(self, core: ClusterMembers) -> None:
        self.core = core

    @unary
    async def MemberList(self, request: rpc_pb2.MemberListRequest,
                         context: Ctx) -> rpc_pb2.MemberListResponse:
        resp = rpc_pb2.MemberListResponse(members=self.core.members())
        self.core.fill_header(resp.header, revision=False)  # etcd's carries no revision
        return resp

    def _members_resp(self, resp: Any) -> None:
        resp.members.extend(self.core.members())
        self.core.fill_header(resp.header, revision=False)

    @unary
    async def MemberAdd(self, request: rpc_pb2.MemberAddRequest,
                        context: Ctx) -> rpc_pb2.MemberAddResponse:
        peers = [u.removeprefix("http://").removeprefix("https://") for u in request.peerURLs]
        if not peers:
            raise CoordError("etcdserver: member peer URLs not given")
        member_id = await self.core.add_member(peers, request.isLearner)
        resp = rpc_pb2.MemberAddResponse(member=rpc_pb2.Member(
            ID=member_id, peerURLs=list(request.peerURLs), isLearner=request.isLearner))
        self._members_resp(resp)
        return resp

    @unary
    async def MemberRemove(self, request: rpc_pb2.MemberRemoveRequest,
                           context: Ctx) -> rpc_pb2.MemberRemoveResponse:
        await self.core.remove_member(request.ID)
        resp = rpc_pb2.MemberRemoveResponse()
        self._members_resp(resp)
        return resp

    @unary
    async def MemberPromote(self, request: rpc_pb2.MemberPromoteRequest,
                            context: Ctx) -> rpc_pb2.MemberPromoteResponse:
        await self.core.promote_member(request.ID)
        resp = rpc_pb2.MemberPromoteResponse()
        self._members_resp(resp)
        return resp

    async def MemberUpdate(self, request: rpc_pb2.MemberUpdateRequest,
                           context: Ctx) -> rpc_pb2.MemberUpdateResponse:
        await context.abort(StatusCode.UNIMPLEMENTED,
                            "raftcron: member update is not supported; remove and re-add")
        raise AssertionError("unreachable")
