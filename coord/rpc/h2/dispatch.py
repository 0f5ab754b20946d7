"""Server dispatch on asyncio: a call's handler resolved, started and run as a task, its
deadline kept, its response stream paced by flow control. The HTTP/2 state below it is the
sans-I/O :class:`coord.rpc.h2.core.ServerCore`, whose hooks this implements; the protocol
above it is :class:`coord.rpc.h2.connection.Connection`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Protocol

import structlog

from coord.rpc.h2.call import (
    CallDetails,
    Requests,
    Stream,
    call_path,
    identity,
    metadata,
    parse_timeout,
)
from coord.rpc.h2.core import CoreServer, ServerCore
from coord.rpc.h2.frames import PROTOCOL_ERROR
from coord.rpc.h2.streams import (
    LOCAL_CLOSED,
)
from coord.rpc.h2.tls import ServerTLS
from coord.rpc.h2.validate import Head, grpc_content_type
from coord.rpc.handlers import CallContext, Outcome, RpcAbort, Send, run_call
from coord.rpc.status import StatusCode

log = structlog.get_logger("coord.rpc.h2")


class ServerState(CoreServer, Protocol):
    """What a connection needs of its server (:class:`coord.rpc.h2.server.H2Server`)."""

    idle: asyncio.Event
    connections: set[Any]
    tls: ServerTLS | None


class CallDispatch(ServerCore):
    """The calls of one server connection, from a complete request header block to the
    call's last frame, as asyncio tasks."""

    server: ServerState
    loop: asyncio.AbstractEventLoop

    # -- calls ---------------------------------------------------------------------------

    def _start_call(self, stream: Stream, headers: list[tuple[bytes, bytes]],
                    head: Head) -> None:
        method, path, content_type, timeout, encoding = head
        if method != b"POST":  # gRPC is POST only; grpc-go resets the stream
            self._reset(stream, PROTOCOL_ERROR)
            return
        if not grpc_content_type(content_type):  # gRPC's PROTOCOL-HTTP2: HTTP 415
            self._finish(stream, StatusCode.INTERNAL,
                         f"invalid gRPC request content-type {content_type.decode('latin-1')!r}",
                         http_status=415)
            return
        if encoding and encoding != b"identity":
            self._finish(stream, StatusCode.UNIMPLEMENTED,
                         f"grpc: compression {encoding.decode('latin-1')} is not supported")
            return
        full_name = path.decode("latin-1")
        try:
            handler = self.server.resolve(CallDetails(full_name, headers))
        except Exception:  # a resolver bug must not take the connection down
            log.exception("h2.resolve_failed", method=full_name)
            handler = None
        if handler is None:
            self._finish(stream, StatusCode.UNIMPLEMENTED, "Method not found!")
            return
        stream.handler = handler
        if timeout:
            seconds = parse_timeout(timeout)
            if seconds is not None:
                stream.deadline = time.monotonic() + seconds
                stream.timer = self.loop.call_later(seconds, self._expire, stream)
        if handler.request_streaming:
            stream.task = self.loop.create_task(self._run(stream))

    def _expire(self, stream: Stream) -> None:
        stream.timer = None
        if stream.state not in LOCAL_CLOSED:
            task = stream.task
            self._finish(stream, StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            if task is not None:
                task.cancel()

    def _run(self, stream: Stream) -> Coroutine[Any, Any, Any]:
        """The call's task: the shared runner, with this connection as its ends (below).
        The deadline is the connection's timer (_expire): it also ends calls whose request
        has not arrived yet."""
        handler = stream.handler
        context = CallContext(stream.conn.peer, stream.deadline, stream.headers, metadata,
                              getattr(stream.conn, "auth", None))
        request: Any = (Requests(self, stream, handler.request_deserializer or identity)
                        if handler.request_streaming else None)
        return run_call(handler, request, context,
                        self._stream_sender(stream) if handler.response_streaming else None,
                        self, stream)

    # -- the runner's ends (coord.rpc.handlers.CallEnds) ----------------------------------

    event = "h2.handler_failed"

    def call_name(self, call: Stream) -> str:
        return call_path(call)

    def call_request(self, call: Stream, request: Any) -> Any:
        """A unary request is parsed inside the call; a request stream is the iterator."""
        if request is not None:
            return request
        raw = call.inbox.popleft()
        call.queued = 0
        if call.held:  # the request is all this stream holds
            self._conn_unacked += call.held
            call.held = 0
            if self._conn_unacked >= self._conn_window // 2:
                self._credit(0)
        deserialize = call.handler.request_deserializer
        try:
            return deserialize(raw) if deserialize is not None else raw
        except Exception:  # noqa: BLE001 - any parse failure is the client's
            raise RpcAbort(StatusCode.INTERNAL, "Exception deserializing request!") from None

    def call_done(self, call: Stream, outcome: Outcome) -> None:
        code, details, response = outcome
        if response is not None:
            if call.state not in LOCAL_CLOSED:
                self._send_unary(call, response)
        else:
            self._finish(call, code, details)

    def call_cancelled(self, call: Stream) -> None:
        if call.state not in LOCAL_CLOSED and not call.reset:
            # Cut off by a stopping server: UNAVAILABLE makes etcd's clients retry
            # elsewhere (they give up on a watch that ends CANCELLED).
            if self.server.closing:
                self._finish(call, StatusCode.UNAVAILABLE, "server shutting down")
            else:
                self._finish(call, StatusCode.CANCELLED, "Cancelled")

    def _stream_sender(self, stream: Stream) -> Send:
        """Where a response stream's messages go: queued under flow control, waiting while
        the stream or the connection is full."""
        async def send(data: bytes) -> bool:
            if stream.state in LOCAL_CLOSED or stream.trailer is not None:
                return False
            self._send_message(stream, data)
            if stream.pending or self._paused:
                await self._drained(stream)
            return True
        return send

    async def _drained(self, stream: Stream) -> None:
        while (stream.pending or self._paused) and not stream.reset and not self._closed:
            stream.drain = self.loop.create_future()
            await stream.drain

    # -- the core's hooks ----------------------------------------------------------------

    def _request_complete(self, stream: Stream) -> None:
        stream.task = self.loop.create_task(self._run(stream))

    def _call_reset(self, stream: Stream) -> None:
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        stream.wake()
        drain = stream.drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _call_ended(self, stream: Stream) -> None:
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        task = stream.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()  # the server ended the call (bad request, deadline): stop it
        drain = stream.drain
        if drain is not None and not drain.done():
            drain.set_result(None)
