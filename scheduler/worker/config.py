"""A worker's configuration (its own module so that the parts' shared state can name it
without importing the wiring that builds them)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from coord.client import ChannelFactory, ClientAuth, ClientTLS
from scheduler.claim import ClaimStore
from scheduler.clock import Clock, SystemClock


class MetricsHooks(Protocol):
    """What the worker calls of its metrics (:class:`scheduler.metrics.WorkerMetrics`)."""

    claim_store: type[ClaimStore]
    def attach(self, ctx: Any) -> None: ...
    def session_lost(self, killed: int) -> None: ...


@dataclass
class WorkerConfig:
    name: str
    endpoints: list[str]
    tags: dict[str, str] = field(default_factory=dict)
    session_ttl: int = 10
    grace: float = 0.3
    """Seconds between the rendezvous ranks: rank k claims after ``k * grace``."""
    claim_ahead: float = 0.25
    """Seconds before an occurrence's instant that the first-ranked worker sends its claim;
    the process still starts at the instant. The claim's round trip (docs/scheduling.md,
    "Claiming ahead") is then off the fire-lag path. 0 claims at the instant."""
    log_dir: Path = field(default_factory=lambda: Path("raftcron-logs"))
    stop_timeout: float = 30.0
    sweep_interval: float = 15.0
    """Seconds between sweeps for runs whose claimant died unnoticed."""
    clock: Clock = field(default_factory=SystemClock)
    host: str = field(default_factory=socket.gethostname)
    compact_retention: float = 600.0
    """Seconds of store history to keep: the worker ranked first compacts the store, every
    ``retention / 10`` (at most every minute), to the revision it saw ``retention`` ago.
    Run records churn a revision or two per occurrence; without compaction the history
    grows forever (coord keeps it in memory and in every snapshot; etcd's database hits
    its space quota and turns read-only). 0 turns it off (a store shared with other
    applications that compact it themselves)."""
    freeze_heap: bool = False
    """Once the jobs are loaded, collect and ``gc.freeze()`` everything alive (the modules,
    the specs, the job timers): full collections then no longer walk that heap, whose
    pauses grow with the number of jobs and delay every due occurrence. For a worker that
    owns its process (the CLI); tests running several in one process don't."""
    channels: ChannelFactory | None = None
    """How the client reaches an endpoint (``coord.client.ChannelFactory``): an agent's
    reaches its own member in the same process without a socket."""
    metrics: MetricsHooks | None = None
    """This worker's ``raftcron_*`` series (:mod:`scheduler.metrics`); None: no metrics."""
    tls: ClientTLS | None = None
    """TLS to the endpoints (``--cacert``/``--cert``/``--key``); None: plaintext, or TLS
    with the system's CAs for ``https://`` endpoints."""
    auth: ClientAuth | None = None
    """The user the worker logs in as (``--user``) on a store with auth enabled."""
