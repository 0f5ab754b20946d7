"""coord's RPC runtime, below the API adapters (``coord.api``): gRPC status codes
(``status``), method tables and the per-call context (``handlers``), HTTP/2 and gRPC framing
on asyncio (``h2``: server and peer client) and in-process calls to a member (``local``).

It knows nothing of etcd's services or of the member: it imports only the standard
library, protobuf, structlog and itself (grpc only in ``local``, the client's side)."""
