"""Background renewal of one lease (:class:`KeepAlive`, made by ``Client.keep_alive``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import grpc
import structlog

from coord.aiotools import within
from coord.client.channels import EOF, Endpoint, caller_cancelled
from coord.client.errors import ClientError, UnavailableError
from coord.pb import rpc_pb2

log = structlog.get_logger("coord.client")


class Endpoints(Protocol):
    """What a keepalive needs of its client: the current endpoint, and moving past one."""

    timeout: float

    def _current(self) -> Endpoint: ...

    async def _rotate(self, failed: Endpoint) -> None: ...


class KeepAlive:
    """Background renewal of one lease over one long-lived LeaseKeepAlive stream.

    ``deadline`` is the monotonic instant after which the server may have expired the lease:
    the send time of the last successful renewal (or of the grant) plus the TTL — the
    server starts its TTL only when the request arrives, so this is never later than the
    server's. ``lost`` is set once the lease is known to be gone (the server answered TTL 0)
    or when the deadline is within ``margin`` seconds with no renewal: whoever acts under
    the lease must stop *before* the server can hand what it protects to someone else.
    """

    def __init__(self, client: Endpoints, lease_id: int, ttl: int,
                 granted_at: float | None = None) -> None:
        self.client = client
        self.lease_id = lease_id
        self.ttl = ttl
        self.margin = min(ttl * 0.1, 1.0)
        self.lost = asyncio.Event()
        self.deadline = (time.monotonic() if granted_at is None else granted_at) + ttl
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"keepalive-{lease_id:x}")

    @property
    def give_up_at(self) -> float:
        return self.deadline - self.margin

    async def stop(self) -> None:
        # The flag ends the renewal loop at its next turn even if the cancellation were
        # lost on the way (see coord.aiotools); the cancel ends it at once.
        self._stopping = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def _expired(self) -> bool:
        if time.monotonic() >= self.give_up_at:
            log.warning("lease.lost", lease=f"{self.lease_id:x}", reason="not renewed in time")
            self.lost.set()
            return True
        return False

    async def _run(self) -> None:
        interval = max(self.ttl / 3.0, 0.2)
        watchdog = asyncio.get_running_loop().create_task(self._watchdog())
        try:
            while not (self.lost.is_set() or self._stopping):
                ep = self.client._current()
                try:
                    await ep.login(self.client.timeout)  # the stream carries the token
                except grpc.aio.AioRpcError as err:
                    log.warning("lease.login_failed", lease=f"{self.lease_id:x}",
                                error=err.details() or str(err.code()))
                    await self.client._rotate(ep)
                    await asyncio.sleep(0.1)
                    continue
                call = ep.lease.LeaseKeepAlive()
                try:
                    while not (self.lost.is_set() or self._stopping):
                        sent_at = time.monotonic()
                        await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=self.lease_id))
                        resp = await within(
                            call.read(), timeout=max(self.give_up_at - sent_at, 0.05))
                        if resp is EOF:
                            raise UnavailableError(grpc.StatusCode.UNAVAILABLE,
                                                   "keepalive stream ended")
                        if resp.TTL <= 0:
                            log.warning("lease.lost", lease=f"{self.lease_id:x}",
                                        reason="not found")
                            self.lost.set()
                            return
                        self.deadline = sent_at + resp.TTL
                        await asyncio.sleep(interval)
                except asyncio.CancelledError:
                    if caller_cancelled():
                        raise
                    await asyncio.sleep(0.05)  # stream cancelled under us: open a new one
                except (grpc.aio.AioRpcError, ClientError, TimeoutError,
                        asyncio.InvalidStateError) as err:
                    # InvalidStateError: the stream died under us (RPC already finished).
                    log.warning("lease.keepalive_failed", lease=f"{self.lease_id:x}",
                                error=str(err) or type(err).__name__)
                    await self.client._rotate(ep)
                    await asyncio.sleep(0.1)
                finally:
                    call.cancel()
        except Exception:
            # Fail safe: a renewal loop that broke unexpectedly must not leave the holder
            # believing its lease is alive.
            log.exception("lease.keepalive_crashed", lease=f"{self.lease_id:x}")
            self.lost.set()
            raise
        finally:
            watchdog.cancel()

    async def _watchdog(self) -> None:
        """Declares the lease lost on time even while a renewal call hangs."""
        while not self._expired():
            await asyncio.sleep(max(min(self.give_up_at - time.monotonic(), 0.25), 0.01))
