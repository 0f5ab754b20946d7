"""etcdserverpb.Watch: a bidi stream per client, many watchers per stream.

The watch hub (``coord.mvcc.watch``) is pure; this adapter owns the two tasks of a stream:
a reader that hands each client request to the hub, and the writer (the handler itself)
that drains the hub's ready responses whenever it is woken. A client half-closing its side
does not end the stream: events keep flowing until the call is cancelled, as in etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from coord.pb import rpc_pb2
from coord.rpc.handlers import Context as Ctx
from coord.rpc.status import is_grpcio_error
from coord.server.core import Core

log = structlog.get_logger("coord.watch")

PROGRESS_INTERVAL = 600.0
"""etcd's default interval for progress notifications to watchers that asked for them."""


class WatchService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._progress_task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """Called after each applied batch. The hub wakes the affected streams itself."""

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            self.core.applier.watch_hub.progress_notify()

    async def close(self) -> None:
        if self._progress_task is not None:
            self._progress_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._progress_task

    async def Watch(self, request_iterator: AsyncIterator[rpc_pb2.WatchRequest],
                    context: Ctx) -> AsyncIterator[rpc_pb2.WatchResponse]:
        if self._progress_task is None:
            self._progress_task = asyncio.get_running_loop().create_task(self._progress_loop())
        wake = asyncio.Event()
        stream = self.core.applier.watch_hub.open_stream(wake.set)

        async def read_requests() -> None:
            try:
                async for req in request_iterator:
                    stream.handle(req)
            except asyncio.CancelledError:
                pass
            except Exception as err:
                if not is_grpcio_error(err):  # the grpcio fallback's ended request stream
                    raise

        reader = asyncio.get_running_loop().create_task(read_requests())
        try:
            while True:
                await wake.wait()
                wake.clear()
                while batch := stream.pending():
                    for resp in batch:
                        self.core.fill_header(resp.header, revision=False)
                        yield resp
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            stream.close()
