"""Fault injection for tests: the peer transport's :class:`coord.server.transport.LinkHook`.

Installed in a test's own process with :func:`install`, or in a member process by starting
it through ``python -m tests.helpers.fault_member`` (what ``CoordCluster(faults=True)``
does). The peer service's ``Fault`` RPC then cuts links to named members in both
directions, or delays every outgoing batch. Production members have no hook: there the
RPC answers PERMISSION_DENIED.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog

from coord.pb import raft_pb2
from coord.server import transport

log = structlog.get_logger("tests.faults")


@dataclass
class Faults:
    """Links cut (by member name, both directions) and a delay on outgoing batches."""

    t: transport.Transport
    cut_names: set[str] = field(default_factory=set)
    delay: float = 0.0

    def cut(self, peer: int) -> bool:
        return bool(self.cut_names) and self.t.name_of(peer) in self.cut_names

    async def before_send(self) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)

    async def control(self, request: raft_pb2.FaultRequest) -> raft_pb2.FaultResponse:
        self.cut_names = set(request.cut)
        self.delay = request.delay_ms / 1000.0
        log.warning("transport.faults", cut=sorted(self.cut_names), delay_ms=request.delay_ms)
        return raft_pb2.FaultResponse(cut=sorted(self.cut_names), delay_ms=request.delay_ms)


def install() -> None:
    """Give every Transport made from now on in this process a :class:`Faults` hook."""
    transport.link_hook_factory = Faults


def uninstall() -> None:
    transport.link_hook_factory = None
