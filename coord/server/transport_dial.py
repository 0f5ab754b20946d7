"""Telling the operator when a peer cannot be dialled for a TLS reason.

A member whose peer certificate is wrong (another CA, a CN its peers do not allow, a host
name its certificate does not carry, expired) fails every dial; the sender retries every
second or so and logs each failure at debug only, so at the default level the operator saw
nothing. :class:`DialLog` logs such a failure at warning — once per peer a minute, and
again at once when the error changes or after the peer was reached.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable

import structlog

from coord.rpc.h2.client import StreamCallError

log = structlog.get_logger("coord.transport")

TLS_WARN_INTERVAL = 60.0
"""Seconds between two warnings about the same TLS error of one peer's dials."""


def tls_error(err: BaseException) -> BaseException | None:
    """The TLS error behind ``err`` — an ``ssl.SSLError`` itself or along its causes, or a
    :class:`StreamCallError` that says it is TLS's (a server that closed right after the
    handshake) — or None."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return err if isinstance(err, StreamCallError) and err.tls else None


class DialLog:
    """Per peer: the last TLS error warned about, and when."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 interval: float = TLS_WARN_INTERVAL) -> None:
        self._clock = clock
        self._interval = interval
        self._last: dict[int, tuple[str, float]] = {}

    def failed(self, peer_id: int, address: str, err: BaseException) -> bool:
        """A dial of ``peer_id`` at ``address`` (or the call on it) failed with ``err``.
        Returns whether it was a TLS error warned about now."""
        cause = tls_error(err)
        if cause is None:
            return False
        text = str(cause)
        now = self._clock()
        last = self._last.get(peer_id)
        if last is not None and last[0] == text and now - last[1] < self._interval:
            return False
        self._last[peer_id] = (text, now)
        log.warning("transport.peer_tls_failed", to=f"{peer_id:x}", address=address,
                    error=text, hint="check --peer-cert-file, --peer-key-file and "
                    "--peer-trusted-ca-file on both members (and --peer-cert-allowed-cn)")
        return True

    def reached(self, peer_id: int) -> None:
        """A dial of ``peer_id`` succeeded: its next TLS failure is warned about at once."""
        self._last.pop(peer_id, None)
