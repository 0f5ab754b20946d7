"""What a member accepts from its peer port: the checks a message batch must pass before
its messages reach the Raft core.

The peer port is reachable by anyone who can reach the host, so a batch proves nothing by
itself. Without TLS these checks keep out what is plainly not a peer of this cluster: a
batch for another cluster (etcd answers such a peer 412 "cluster ID mismatch"), from an id
that is not a member of the current configuration, messages that claim another sender than
their batch or that are addressed to another member, message types only a node feeds
itself, and terms no real cluster reaches. Someone who knows a member's id can still speak
for it: only peer certificates (TLS) prove who is on the other end.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from coord.api.proto import raft_pb2
from coord.raft.types import LOCAL_MESSAGES, MessageType

log = structlog.get_logger("coord.transport")

MAX_TERM = 2**48
"""The largest term accepted from the network. A cluster electing a leader every
millisecond needs ~9,000 years to get there, and it leaves the core room to increment a term
(2^64 - 1 overflowed the wire format and stopped a member for good)."""

_NETWORK_TYPES = frozenset(int(t) for t in MessageType if t not in LOCAL_MESSAGES)
LOG_EVERY = 10.0
"""Seconds between two log lines about refused batches of one kind and sender."""


class PeerRefused(Exception):
    """A batch this member will not take; ``reason`` is the counter's label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class PeerChecks:
    member_id: int
    cluster_id: Callable[[], int]
    is_member: Callable[[int], bool]
    refused: Counter[str] = field(default_factory=Counter)
    """Refused batches by reason (for metrics and tests)."""
    _logged: dict[tuple[str, int], float] = field(default_factory=dict)

    def check(self, batch: raft_pb2.MessageBatch) -> None:
        """Raise :class:`PeerRefused` unless every message of ``batch`` may be stepped."""
        try:
            self._check(batch)
        except PeerRefused as err:
            self.refused[err.reason] += 1
            frm = getattr(batch, "from")
            now = time.monotonic()
            if now - self._logged.get((err.reason, frm), -LOG_EVERY) >= LOG_EVERY:
                self._logged[(err.reason, frm)] = now
                log.warning("transport.batch_refused", reason=err.reason, detail=str(err),
                            sender=f"{frm:x}", refused_total=self.refused[err.reason])
            raise

    def _check(self, batch: raft_pb2.MessageBatch) -> None:
        frm = getattr(batch, "from")
        ours = self.cluster_id()
        if ours and batch.cluster_id != ours:
            raise PeerRefused("cluster_id_mismatch",
                              f"cluster ID mismatch (ours {ours:x}, "
                              f"the batch's {batch.cluster_id:x})")
        if frm == self.member_id or not self.is_member(frm):
            raise PeerRefused("not_a_member", f"{frm:x} is not a member of this cluster")
        for m in batch.messages:
            if getattr(m, "from") != frm:
                raise PeerRefused("sender_mismatch",
                                  f"a message from {getattr(m, 'from'):x} in a batch from "
                                  f"{frm:x}")
            if m.to != self.member_id:
                raise PeerRefused("wrong_recipient", f"a message for {m.to:x}")
            if m.type not in _NETWORK_TYPES:
                raise PeerRefused("local_message_type", f"message type {m.type} is local-only")
            if m.term > MAX_TERM:
                raise PeerRefused("term_out_of_range", f"term {m.term} exceeds {MAX_TERM}")
