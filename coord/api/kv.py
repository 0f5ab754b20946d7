"""etcdserverpb.KV: Range, Put, DeleteRange, Txn, Compact — validate, run, fill the header."""

from __future__ import annotations

from coord.api.errors import unary
from coord.api.ports import RaftKV
from coord.pb import internal_pb2, rpc_pb2
from coord.rpc.handlers import Context as Ctx
from coord.server import validate
from coord.server.validate import read_only_txn


class KVService:
    def __init__(self, core: RaftKV) -> None:
        self.core = core

    @unary
    async def Range(self, request: rpc_pb2.RangeRequest, context: Ctx) -> rpc_pb2.RangeResponse:
        validate.check_range(request)
        await self.core.read_barrier(request.serializable)
        resp = self.core.range(request)
        self.core.fill_header(resp.header)
        return resp

    @unary
    async def Put(self, request: rpc_pb2.PutRequest, context: Ctx) -> rpc_pb2.PutResponse:
        validate.check_put(request)
        validate.check_request_size(request)
        resp: rpc_pb2.PutResponse = await self.core.propose(
            internal_pb2.InternalRequest(put=request))
        self.core.fill_header(resp.header)
        return resp

    @unary
    async def DeleteRange(self, request: rpc_pb2.DeleteRangeRequest,
                          context: Ctx) -> rpc_pb2.DeleteRangeResponse:
        validate.check_delete_range(request)
        validate.check_request_size(request)
        resp: rpc_pb2.DeleteRangeResponse = await self.core.propose(
            internal_pb2.InternalRequest(delete_range=request))
        self.core.fill_header(resp.header)
        return resp

    @unary
    async def Txn(self, request: rpc_pb2.TxnRequest, context: Ctx) -> rpc_pb2.TxnResponse:
        validate.check_txn(request)
        validate.check_request_size(request)
        req = internal_pb2.InternalRequest(txn=request)
        resp: rpc_pb2.TxnResponse
        if read_only_txn(request):
            await self.core.read_barrier(serializable=False)
            resp = self.core.apply_read_only(req)
        else:
            resp = await self.core.propose(req)
        self.core.fill_header(resp.header)
        return resp

    @unary
    async def Compact(self, request: rpc_pb2.CompactionRequest,
                      context: Ctx) -> rpc_pb2.CompactionResponse:
        resp: rpc_pb2.CompactionResponse = await self.core.propose(
            internal_pb2.InternalRequest(compaction=request))
        self.core.fill_header(resp.header)
        return resp
