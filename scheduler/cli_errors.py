"""The one line a client command prints for a store error (``raftcron`` exits 1).

Only a failure to reach any endpoint is "cannot reach the store"; an answer from the store
says what the store said — a request larger than it accepts names the size and the limit
(it was reported as unreachable before).
"""

from __future__ import annotations

import re

from coord.client import ClientError
from coord.client.errors import ServerError, UnavailableError
from coord.limits import MAX_REQUEST_BYTES
from scheduler.cli_tls import handshake_hint

__all__ = ["MAX_REQUEST_BYTES", "client_failure"]


_LARGER = re.compile(r"larger than max \((\d+) vs\. (\d+)\)")


def client_failure(endpoints: str, err: ClientError) -> str:
    """What to print after ``Error: `` for ``err``."""
    if isinstance(err, ServerError) and not isinstance(err, UnavailableError):
        m = _LARGER.search(err.message)
        if m is not None:
            return (f"the request is too large: {int(m.group(1)):,} bytes, and the store at "
                    f"{endpoints} accepts at most {int(m.group(2)):,} bytes per message "
                    f"({err.message})")
        if err.message == "etcdserver: request is too large":
            return (f"the request is too large: the store at {endpoints} accepts requests "
                    f"of at most {MAX_REQUEST_BYTES:,} bytes (1.5 MiB, etcd's "
                    f"--max-request-bytes) ({err.message})")
        return f"the store at {endpoints} refused the request: {err}"
    return f"cannot reach the store at {endpoints}: {err}{handshake_hint(endpoints, str(err))}"
