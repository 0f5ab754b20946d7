"""etcdserverpb.Lease: grant/revoke go through the log; keepalive and TTL queries are served
by the leader's lessor, as in etcd."""

from __future__ import annotations

from collections.abc import AsyncIterator

from coord.api.errors import status_code, unary
from coord.api.ports import Leases
from coord.errors import CoordError
from coord.pb import internal_pb2, rpc_pb2
from coord.rpc.handlers import Context as Ctx


class LeaseService:
    def __init__(self, core: Leases) -> None:
        self.core = core

    @unary
    async def LeaseGrant(self, request: rpc_pb2.LeaseGrantRequest,
                         context: Ctx) -> rpc_pb2.LeaseGrantResponse:
        req = rpc_pb2.LeaseGrantRequest()
        req.CopyFrom(request)
        if req.ID == 0:
            req.ID = self.core.new_lease_id()
        resp: rpc_pb2.LeaseGrantResponse = await self.core.propose(
            internal_pb2.InternalRequest(lease_grant=req))
        self.core.fill_header(resp.header)
        return resp

    @unary
    async def LeaseRevoke(self, request: rpc_pb2.LeaseRevokeRequest,
                          context: Ctx) -> rpc_pb2.LeaseRevokeResponse:
        resp: rpc_pb2.LeaseRevokeResponse = await self.core.propose(
            internal_pb2.InternalRequest(lease_revoke=request))
        self.core.fill_header(resp.header)
        return resp

    async def LeaseKeepAlive(self, request_iterator: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest],
                             context: Ctx) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        # One response per request. A half-closed request stream ends the loop only when
        # the client is done sending, which is also when it stops reading.
        async for req in request_iterator:
            resp = rpc_pb2.LeaseKeepAliveResponse(ID=req.ID)
            self.core.fill_header(resp.header)  # the header is taken before the renewal
            try:
                ttl = await self.core.lease_renew(req.ID)
            except CoordError as err:
                await context.abort(status_code(err), err.message)
            if ttl > 0:
                resp.TTL = ttl
            yield resp

    @unary
    async def LeaseTimeToLive(self, request: rpc_pb2.LeaseTimeToLiveRequest,
                              context: Ctx) -> rpc_pb2.LeaseTimeToLiveResponse:
        await self.core.read_barrier(serializable=False)
        ttl, granted, keys = await self.core.lease_time_to_live(request.ID)
        resp = rpc_pb2.LeaseTimeToLiveResponse(ID=request.ID, TTL=ttl, grantedTTL=granted,
                                               keys=keys if request.keys else [])
        self.core.fill_header(resp.header)
        return resp

    @unary
    async def LeaseLeases(self, request: rpc_pb2.LeaseLeasesRequest,
                          context: Ctx) -> rpc_pb2.LeaseLeasesResponse:
        await self.core.read_barrier(serializable=False)
        ids = self.core.lease_ids_by_expiry()
        resp = rpc_pb2.LeaseLeasesResponse(leases=[rpc_pb2.LeaseStatus(ID=i) for i in ids])
        self.core.fill_header(resp.header)
        return resp

