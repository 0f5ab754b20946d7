"""The frames-out half of a server connection's sans-I/O core: a call's response
headers, messages under flow control and trailers (or a trailers-only response), appended
to an output list that the I/O layer takes (:meth:`StreamSender.data_to_send`). No
transport and no event loop here: what the asyncio side must do is asked through the hooks
at the end (:class:`coord.rpc.h2.dispatch.CallDispatch`, :class:`~coord.rpc.h2.connection.
Connection` implement them)."""

from __future__ import annotations

import structlog

from coord.rpc.h2 import hpack
from coord.rpc.h2.call import Stream
from coord.rpc.h2.frames import (
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    HEADERS,
    NO_ERROR,
    RESPONSE_HEADERS,
    RST_STREAM,
    TRAILERS_OK,
    U32,
    frame,
    grpc_message,
    status_block,
)
from coord.rpc.h2.limits import PENDING_RESPONSE_LIMIT
from coord.rpc.h2.output import FrameOutput
from coord.rpc.h2.protocol import FrameHandler
from coord.rpc.h2.streams import (
    CLOSED,
    HALF_CLOSED_REMOTE,
    LOCAL_CLOSED,
    RESET_SENT,
    SENT_END,
)
from coord.rpc.status import StatusCode

log = structlog.get_logger("coord.rpc.h2")


class StreamSender(FrameOutput, FrameHandler):
    """Responses out, under the peer's flow control. The state is the connection's
    (:class:`coord.rpc.h2.core.ServerCore`)."""

    peer: str
    streams: dict[int, Stream]
    _paused: bool
    _pending_bytes: int
    _blocked: dict[int, Stream]

    def _reset(self, stream: Stream, code: int) -> None:
        raise NotImplementedError

    def _release(self, stream: Stream, size: int) -> None:
        raise NotImplementedError

    def _forget(self, stream: Stream) -> None:
        raise NotImplementedError

    # -- what the I/O side provides (no-ops for a bare core; the output list's hooks are
    # FrameOutput's) ---------------------------------------------------------------------

    def _call_ended(self, stream: Stream) -> None:
        """This side ended the stream: stop its handler, timer and waiters (unless it is
        the handler ending itself)."""

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

    def _wake_drain(self, stream: Stream) -> None:
        drain = stream.drain
        if drain is not None and not drain.done() and not self._paused:
            drain.set_result(None)

    def _finish(self, stream: Stream, code: StatusCode, details: str,
                http_status: int = 200) -> None:
        """End the call with a status: trailers after any queued data, or a trailers-only
        response when nothing was sent yet (with ``http_status`` as its ``:status``)."""
        if stream.state in LOCAL_CLOSED or stream.trailer is not None or stream.reset:
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
        self._call_ended(stream)
        if stream.state < HALF_CLOSED_REMOTE:
            # The response is complete; the client need not send the rest (RFC 9113 8.1).
            self._write(frame(RST_STREAM, 0, stream.id, U32.pack(NO_ERROR)))
            stream.state = CLOSED
            stream.closed_how = RESET_SENT
            stream.wake()
        self._forget(stream)
