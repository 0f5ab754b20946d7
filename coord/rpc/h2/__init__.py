"""The client port's gRPC server: HTTP/2 (RFC 7540), HPACK (RFC 7541) and gRPC's framing,
written for asyncio, serving grpcio's method handlers (``coord.rpc.h2.server``)."""
