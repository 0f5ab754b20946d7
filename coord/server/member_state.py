"""The state a member's parts share (:class:`~coord.server.raft_node.RaftNode` is made of
them: ``member_perform``, ``member_requests``, ``member_apply``, ``member_cluster``,
``snapshotter``), and the
few small helpers more than one part uses. ``RaftNode.__init__`` sets every attribute."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from coord.aiotools import within
from coord.errors import CoordError, LeaderChanged, NoLeader, RequestTimeout, Stopped
from coord.mvcc.store import SnapshotReuse
from coord.raft import RawNode, StateRole
from coord.server.apply import Applier
from coord.server.config import ServerConfig
from coord.server.member_core import EarlyCampaign, ReadBatcher
from coord.server.member_waiters import Fail, FailReason, Waiters
from coord.server.membership import Membership
from coord.server.snapfile import FileBackedStorage
from coord.server.transport import Transport
from coord.storage import WAL, SnapshotStore, Watermark
from coord.storage.wal_writer import WalWriter

if TYPE_CHECKING:
    from coord.server.member_ready import MemberCore

REQUEST_TIMEOUT = 7.0
"""Seconds a proposal waits to be applied before ``request timed out``."""
FAIL_ERRORS: dict[FailReason, Callable[[], CoordError]] = {
    "leader changed": LeaderChanged,
    "timed out": RequestTimeout,
    "stopped": Stopped,
}
"""The error a waiter given up on gets."""
TAG_REQUEST = b"R"
"""Entry data ``b"R" + InternalRequest``: a client request (``id`` matches its waiter)."""
TAG_ATTRS = b"A"
"""Entry data ``b"A" + json``: a member publishing its name and client URLs."""


class MemberState:
    config: ServerConfig
    applier: Applier
    member_id: int
    cluster_id: int
    join: bool
    _on_applied: Callable[[], None]
    membership: Membership
    storage: FileBackedStorage
    rn: RawNode | None
    _core: MemberCore | None
    """The sans-I/O member over ``rn`` (set by ``recover``): Ready handling, and when to
    snapshot, compact and release WAL segments (``_core.snaps``)."""
    _early: EarlyCampaign
    transport: Transport
    _snap_io: ThreadPoolExecutor
    """Writes snapshot files, so that a large one does not hold up WAL writes."""
    _snap_build: asyncio.Future[None] | None
    """The snapshot being built (at most one; see ``_take_snapshot``)."""
    _snap_reuse: SnapshotReuse | None
    """What the last snapshot serialised, for the next build to copy."""
    _snap_saves: set[asyncio.Task[bool]]
    _wal: WAL | None
    _writer: WalWriter | None
    """The one writer of ``_wal`` (where each write runs: on the loop or its thread)."""
    _snaps: SnapshotStore
    _watermark: Watermark | None
    _marking: asyncio.Future[bool] | None
    _marked_at: float
    _kick: asyncio.Event
    _tasks: list[asyncio.Task[Any]]
    _stopped: bool
    removed: bool
    _ids: itertools.count[int]
    _wait: Waiters[asyncio.Future[Any]]
    """This member's proposal and applied-index waiters, with their deadlines
    (``member_waiters``: who to answer, who to fail)."""
    _props: list[tuple[int, bytes]]
    _conf_waiters: dict[int, asyncio.Future[Any]]
    _reads: ReadBatcher[asyncio.Future[int]]
    _leader_waiters: list[asyncio.Future[None]]
    _applied: int
    _unsnapped_bytes: int
    """Bytes of the entries applied since the last durable snapshot."""
    _snap_bytes_at: int
    """``_unsnapped_bytes`` when the snapshot being built or saved was started: the count
    drops by that much only once that snapshot is durable (a build abandoned, or a save
    that fails, leaves the trigger armed)."""
    _term: int
    _leader: int
    _leaderless_since: float
    """When this member last lost its leader (see ``_term_bound``)."""
    _role: StateRole
    _commit: int

    @property
    def is_leader(self) -> bool:
        return self._role == StateRole.LEADER and not self._stopped

    def _bounded(self, fut: asyncio.Future[Any]) -> asyncio.Future[Any]:
        """``fut``, which fails with ``request timed out`` if it is not done within
        ``REQUEST_TIMEOUT`` (checked every tick)."""
        return self._wait.bound(fut, time.monotonic())

    def _expire_waiters(self, now: float) -> None:
        """Fail the waiters past their deadline (one timeout for all, so the order of
        deadlines is the order of creation: cheaper on the hot path than a timer handle
        per request)."""
        self._fail(self._wait.expired(now))

    def _fail(self, fail: Fail[asyncio.Future[Any]] | None) -> None:
        """Perform ``fail`` (``member_waiters``) with its error."""
        if fail is None:
            return
        err = FAIL_ERRORS[fail.reason]()
        for fut in fail.waiters:
            if not fut.done():
                fut.set_exception(err)

    def _next_id(self) -> int:
        return next(self._ids)

    async def _wait_leader(self) -> None:
        if self._leader != 0:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._leader_waiters.append(fut)
        timeout = 2 * self.config.election_ticks * self.config.tick_ms / 1000.0
        try:
            await within(fut, timeout)
        except TimeoutError:
            raise NoLeader() from None
