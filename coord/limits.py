"""Request-size limits every layer agrees on (a leaf: it imports nothing).

They are etcd's, because clients size their requests by them: the scheduler keeps a job
small enough for one put on either store."""

from __future__ import annotations

from typing import Final

MAX_REQUEST_BYTES: Final = 1536 * 1024
"""etcd's ``--max-request-bytes`` default (1.5 MiB): the largest request the member proposes."""

RECV_LIMIT: Final = MAX_REQUEST_BYTES + 512 * 1024
"""The largest gRPC message the client port reads (2 MiB), as etcd's gRPC server: a larger
one is refused with grpc-go's wording; one between the two limits is refused by the
request-size check with etcd's ``request is too large``."""
