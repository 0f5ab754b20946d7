"""What one HTTP/2 client may cost a member (docs/security.md, "HTTP/2 limits").

The numbers follow grpc-go and Go's ``x/net/http2`` where they have one; a client that goes
over a rate limit gets GOAWAY ENHANCE_YOUR_CALM and its connection is closed, as in both.
"""

from __future__ import annotations

import time

MAX_CONCURRENT_STREAMS = 250
"""Announced in SETTINGS_MAX_CONCURRENT_STREAMS and enforced (REFUSED_STREAM beyond it):
Go's http2 server default. gRPC clients queue calls over the limit instead of sending them."""

MAX_HEADER_LIST_SIZE = 16 << 10
"""Announced in SETTINGS_MAX_HEADER_LIST_SIZE: decoded names and values plus 32 bytes per
field (RFC 7541 4.1); a block that decodes to more ends the connection as soon as the limit
is passed, so a block of 1-byte indexed references costs at most 16 KiB / 32 = 512 fields of
work. (grpc-go announces 16 MiB and plans 8 KiB; Go's http2 allows 1 MiB; etcd's clients
send well under 1 KiB.)"""

RESET_BURST, RESET_RATE = 200, 100.0
"""Streams the client may cancel (RST_STREAM) while this side still works on them: a burst,
then so many per second (CVE-2023-44487, "rapid reset"). Go's http2 server bounds the same
attack by running at most MAX_CONCURRENT_STREAMS handlers and closing a connection whose
backlog of calls passes 4 times that; here handlers are cheap tasks but the loop is shared
by every client and by Raft, so it is the rate of cancelled work that is limited."""

PING_BURST, PING_RATE = 100, 10.0
"""PING frames a client may send: a burst, then so many per second. gRPC clients send a
keepalive PING every few seconds at most (and BDP probes along with data)."""

SETTINGS_BURST, SETTINGS_RATE = 100, 10.0
"""SETTINGS frames (not acknowledgements) a client may send: a burst, then so many per
second; clients send one at the start and rarely more."""

PENDING_RESPONSE_LIMIT = 16 << 20
"""Response bytes a connection may hold back for lack of flow-control credit; while it holds
more, new calls on it are refused (REFUSED_STREAM: the client retries) and a further
response that cannot be sent at once is dropped (RST_STREAM ENHANCE_YOUR_CALM); streaming
handlers wait for credit before producing their next message. So a client that never
opens its window cannot make the member buffer without bound."""

PREFACE_TIMEOUT = 10.0
"""Seconds a new connection has to send the HTTP/2 preface and its SETTINGS."""


class Bucket:
    """A token bucket: ``take()`` is False once more than ``burst`` events came faster than
    ``rate`` per second."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, burst: int, rate: float) -> None:
        self._burst = float(burst)
        self._rate = rate
        self._tokens = float(burst)
        self._last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True
