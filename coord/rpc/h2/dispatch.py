"""Server dispatch: a call's handler resolved, started and run, its responses sent under
flow control and its status in trailers (or a trailers-only response), its deadline kept.
The frames-in half of the connection is :class:`coord.rpc.h2.connection.Connection`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import structlog

from coord.rpc.h2 import hpack
from coord.rpc.h2.call import (
    CallDetails,
    Requests,
    Stream,
    call_path,
    identity,
    metadata,
    parse_timeout,
)
from coord.rpc.h2.frames import (
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLUSH_AT,
    HEADERS,
    NO_ERROR,
    PROTOCOL_ERROR,
    RESPONSE_HEADERS,
    RST_STREAM,
    TRAILERS_OK,
    U32,
    frame,
    grpc_message,
    status_block,
)
from coord.rpc.h2.limits import (
    PENDING_RESPONSE_LIMIT,
)
from coord.rpc.h2.protocol import FrameHandler
from coord.rpc.h2.streams import SENT_END, Closed, State
from coord.rpc.h2.tls import ServerTLS
from coord.rpc.h2.validate import grpc_content_type
from coord.rpc.handlers import CallContext, Outcome, RpcAbort, Send, run_call
from coord.rpc.status import StatusCode

log = structlog.get_logger("coord.rpc.h2")


class ServerState(Protocol):
    """What a connection needs of its server (:class:`coord.rpc.h2.server.H2Server`)."""

    resolve: Callable[[CallDetails], Any]
    max_receive: int
    closing: bool
    idle: asyncio.Event
    connections: set[Any]
    tls: ServerTLS | None


class CallDispatch(FrameHandler):
    """The calls of one server connection: everything from a complete request header block
    to the call's last frame. Its state lives on the connection, which also provides the
    stream bookkeeping hooks below."""

    server: ServerState
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport | None
    peer: str
    streams: dict[int, Stream]
    _out: list[bytes]
    _out_size: int
    _closed: bool
    _paused: bool
    _pending_bytes: int
    _blocked: dict[int, Stream]
    _conn_unacked: int
    _conn_window: int

    def _credit(self, size: int) -> None:
        raise NotImplementedError

    def _release(self, stream: Stream, size: int) -> None:
        raise NotImplementedError

    def _forget(self, stream: Stream) -> None:
        raise NotImplementedError

    def _ack_stream(self, stream: Stream) -> None:
        raise NotImplementedError

    def _reset(self, stream: Stream, code: int) -> None:
        raise NotImplementedError

    # -- calls ---------------------------------------------------------------------------

    def _start_call(self, stream: Stream, headers: list[tuple[bytes, bytes]]) -> None:
        path = b""
        timeout = b""
        method = content_type = b""
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b":method":
                method = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                timeout = value
            elif name == b"grpc-encoding" and value != b"identity":
                self._finish(stream, StatusCode.UNIMPLEMENTED,
                             f"grpc: compression {value.decode('latin-1')} is not supported")
                return
        if method != b"POST":  # gRPC is POST only; grpc-go resets the stream
            self._reset(stream, PROTOCOL_ERROR)
            return
        if not grpc_content_type(content_type):  # gRPC's PROTOCOL-HTTP2: HTTP 415
            self._finish(stream, StatusCode.INTERNAL,
                         f"invalid gRPC request content-type {content_type.decode('latin-1')!r}",
                         http_status=415)
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
        if not stream.local_closed:
            task = stream.task
            self._finish(stream, StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            if task is not None:
                task.cancel()

    def _run(self, stream: Stream) -> Coroutine[Any, Any, Any]:
        """The call's task: the shared runner, with this connection as its ends (below).
        The deadline is the connection's timer (_expire): it also ends calls whose request
        has not arrived yet."""
        handler = stream.handler
        context = CallContext(stream.conn.peer, stream.deadline, stream.headers, metadata)
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
            if not call.local_closed:
                self._send_unary(call, response)
        else:
            self._finish(call, code, details)

    def call_cancelled(self, call: Stream) -> None:
        if not call.local_closed and not call.reset:
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
            if stream.local_closed or stream.trailer is not None:
                return False
            self._send_message(stream, data)
            if stream.pending or self._paused:
                await self._drained(stream)
            return True
        return send

    # -- frames out ----------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if not self._out:
            self.loop.call_soon(self._flush)
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= FLUSH_AT:
            self._flush()  # the transport sees the volume now (pause_writing)

    def _flush(self) -> None:
        if self._out and not self._closed and self.transport is not None:
            self.transport.write(b"".join(self._out))
        self._out.clear()
        self._out_size = 0

    def _send_unary(self, stream: Stream, data: bytes) -> None:
        """A whole unary response: headers, the message, trailers — one write when the
        windows allow it."""
        message = grpc_message(data)
        size = len(message)
        if (not stream.pending and size <= stream.send_window and size <= self._send_window
                and size <= self._peer_max_frame):
            stream.send_window -= size
            self._send_window -= size
            stream.headers_sent = True
            stream.state = SENT_END.get(stream.state, stream.state)
            self._write(frame(HEADERS, END_HEADERS, stream.id, RESPONSE_HEADERS)
                        + frame(DATA, 0, stream.id, message)
                        + frame(HEADERS, END_HEADERS | END_STREAM, stream.id, TRAILERS_OK))
            self._closed_locally(stream)
            return
        self._send_message(stream, data)
        self._finish(stream, StatusCode.OK, "")

    def _send_message(self, stream: Stream, data: bytes) -> None:
        if not stream.headers_sent:
            stream.headers_sent = True
            self._write(frame(HEADERS, END_HEADERS, stream.id, RESPONSE_HEADERS))
        message = memoryview(grpc_message(data))
        if (self._pending_bytes and self._pending_bytes + len(message) > PENDING_RESPONSE_LIMIT
                and (stream.pending or len(message) > min(stream.send_window,
                                                          self._send_window))):
            # The client does not take what it asked for: drop this response rather than
            # hold it (one response of any size may wait when nothing else does).
            log.info("h2.response_dropped", peer=self.peer, stream=stream.id,
                     pending=self._pending_bytes)
            self._reset(stream, ENHANCE_YOUR_CALM)
            return
        stream.pending.append(message)
        self._pending_bytes += len(message)
        self._send_pending(stream)

    def _send_pending(self, stream: Stream) -> None:
        """Send what flow control allows of the stream's queued data, then its trailers."""
        pending = stream.pending
        while pending:
            chunk = pending[0]
            n = min(len(chunk), stream.send_window, self._send_window, self._peer_max_frame)
            if n <= 0:
                self._blocked[stream.id] = stream
                return
            stream.send_window -= n
            self._send_window -= n
            self._pending_bytes -= n
            if n == len(chunk):
                pending.popleft()
                self._write(frame(DATA, 0, stream.id, chunk))
            else:
                pending[0] = chunk[n:]  # a view: no copy of the rest
                self._write(frame(DATA, 0, stream.id, chunk[:n]))
        self._blocked.pop(stream.id, None)
        if stream.trailer is not None:
            self._write(stream.trailer)
            stream.trailer = None
            self._closed_locally(stream)
        self._wake_drain(stream)

    def _unblock(self) -> None:
        for stream in list(self._blocked.values()):
            if self._send_window <= 0:
                return
            self._send_pending(stream)

    async def _drained(self, stream: Stream) -> None:
        while (stream.pending or self._paused) and not stream.reset and not self._closed:
            stream.drain = self.loop.create_future()
            await stream.drain

    def _wake_drain(self, stream: Stream) -> None:
        drain = stream.drain
        if drain is not None and not drain.done() and not self._paused:
            drain.set_result(None)

    def _finish(self, stream: Stream, code: StatusCode, details: str,
                http_status: int = 200) -> None:
        """End the call with a status: trailers after any queued data, or a trailers-only
        response when nothing was sent yet (with ``http_status`` as its ``:status``)."""
        if stream.local_closed or stream.trailer is not None or stream.reset:
            return
        if not stream.headers_sent:
            stream.headers_sent = True
            head = (RESPONSE_HEADERS if http_status == 200 else
                    hpack.encode_literal_indexed_name(8, str(http_status).encode())
                    + RESPONSE_HEADERS[1:])
            block = head + (TRAILERS_OK if code is StatusCode.OK
                            else status_block(code, details))
            stream.state = SENT_END.get(stream.state, stream.state)
            self._write(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block))
            self._closed_locally(stream)
            return
        block = TRAILERS_OK if code is StatusCode.OK else status_block(code, details)
        stream.trailer = frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block)
        self._send_pending(stream)

    def _closed_locally(self, stream: Stream) -> None:
        stream.state = SENT_END.get(stream.state, stream.state)
        if stream.held:
            self._release(stream, stream.held)
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        task = stream.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()  # the server ended the call (bad request, deadline): stop it
        drain = stream.drain
        if drain is not None and not drain.done():
            drain.set_result(None)
        if not stream.remote_closed:
            # The response is complete; the client need not send the rest (RFC 9113 8.1).
            self._write(frame(RST_STREAM, 0, stream.id, U32.pack(NO_ERROR)))
            stream.state = State.CLOSED
            stream.closed_how = Closed.RESET_SENT
            stream.wake()
        self._forget(stream)
