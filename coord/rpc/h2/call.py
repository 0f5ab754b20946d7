"""One call on the server: what its handler sees (:class:`ServicerContext`), its stream's
state (:class:`Stream`) and a request stream as an async iterator (:class:`Requests`)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from coord.rpc.h2.frames import STREAM_WINDOW
from coord.rpc.h2.streams import (
    ENDED,
    HALF_CLOSED_REMOTE,
    LOCAL_CLOSED,
    OPEN,
)
from coord.rpc.handlers import CallContext
from coord.rpc.status import StatusCode

_TIMEOUT_UNITS = {ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0, ord("m"): 1e-3,
                  ord("u"): 1e-6, ord("n"): 1e-9}


class StreamOwner(Protocol):
    """What a stream keeps of its connection (:class:`coord.rpc.h2.core.ServerCore`)."""

    peer: str


class CallOwner(Protocol):
    """What a call needs of its connection (:class:`coord.rpc.h2.connection.Connection`)."""

    loop: asyncio.AbstractEventLoop
    peer: str

    def _release(self, stream: Stream, size: int) -> None: ...

    def _ack_stream(self, stream: Stream) -> None: ...

    def _finish(self, stream: Stream, code: StatusCode, details: str) -> None: ...


class CallDetails:
    """What a handler resolver sees of a call (``grpc.HandlerCallDetails``' two fields).
    The metadata is decoded only if the resolver asks for it."""

    __slots__ = ("_headers", "method")

    def __init__(self, method: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.method = method
        self._headers = headers

    @property
    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return metadata(self._headers)


def metadata(headers: list[tuple[bytes, bytes]]) -> tuple[tuple[str, str | bytes], ...]:
    """Custom metadata from a header list: no pseudo-headers, none of HTTP's or gRPC's own;
    ``-bin`` values base64-decoded as gRPC specifies."""
    out: list[tuple[str, str | bytes]] = []
    for name, value in headers:
        if name[:1] == b":" or name in _RESERVED or name.startswith(b"grpc-"):
            continue
        key = name.decode("latin-1")
        if key.endswith("-bin"):
            try:
                out.append((key, base64.b64decode(value + b"=" * (-len(value) % 4))))
            except binascii.Error:
                continue  # not base64: the entry is left out, the call goes on
        else:
            out.append((key, value.decode("latin-1")))
    return tuple(out)


_RESERVED = frozenset((b"content-type", b"te", b"user-agent"))


ServicerContext = CallContext
"""What the h2 server's handlers receive: the runtime's one context
(:class:`coord.rpc.handlers.CallContext`), under grpc.aio's name for it."""


class Stream:
    """One call: its request headers, the request messages received so far, what waits to
    be sent under flow control, and the handler's task."""

    __slots__ = ("buffer", "closed_how", "conn", "deadline", "drain", "handler",
                 "headers", "headers_sent", "held", "id", "inbox",
                 "pending", "queued", "recv_window", "reset", "send_window", "state",
                 "task", "timer", "trailer", "unacked", "waiter")

    def __init__(self, conn: StreamOwner, stream_id: int, headers: list[tuple[bytes, bytes]],
                 send_window: int) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers = headers
        self.handler: Any = None
        self.task: asyncio.Task[None] | None = None
        self.buffer = bytearray()
        self.inbox: deque[bytes] = deque()
        self.queued = 0
        self.held = 0
        """DATA bytes of this stream not yet given back to the connection's window: those
        of incomplete messages and of messages the handler has not taken."""
        self.recv_window = STREAM_WINDOW
        self.waiter: asyncio.Future[None] | None = None
        self.state = OPEN
        """RFC 9113 5.1 (:mod:`coord.rpc.h2.streams`); a stream in the connection's table
        is open or half-closed, never idle or reserved."""
        self.closed_how = ENDED
        """Once closed: whether by END_STREAM both ways or by whose RST_STREAM."""
        self.reset = False
        """The call was cancelled (RST_STREAM either way, or the connection was lost)."""
        self.headers_sent = False
        self.send_window = send_window
        self.pending: deque[memoryview] = deque()
        self.trailer: bytes | None = None
        self.drain: asyncio.Future[None] | None = None
        self.unacked = 0
        self.deadline: float | None = None
        self.timer: asyncio.TimerHandle | None = None

    @property
    def remote_closed(self) -> bool:
        """The client sent END_STREAM (or the stream was reset)."""
        return self.state >= HALF_CLOSED_REMOTE

    @property
    def local_closed(self) -> bool:
        """This side sent END_STREAM (or the stream was reset)."""
        return self.state in LOCAL_CLOSED

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)



class Requests:
    """A request-streaming call's messages as an async iterator; a message taken out of
    the inbox gives its bytes back to the client's stream window."""

    __slots__ = ("_conn", "_deserialize", "_stream")

    def __init__(self, conn: CallOwner, stream: Stream,
                 deserialize: Callable[[bytes], Any]) -> None:
        self._conn = conn
        self._stream = stream
        self._deserialize = deserialize

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        stream = self._stream
        while not stream.inbox:
            if stream.remote_closed:
                raise StopAsyncIteration
            stream.waiter = self._conn.loop.create_future()
            await stream.waiter
            stream.waiter = None
        raw = stream.inbox.popleft()
        stream.queued -= len(raw)
        self._conn._release(stream, len(raw))
        if stream.unacked >= STREAM_WINDOW // 2 and stream.queued < STREAM_WINDOW:
            self._conn._ack_stream(stream)
        try:
            return self._deserialize(raw)
        except Exception:  # noqa: BLE001 - any parse failure is the client's
            self._conn._finish(stream, StatusCode.INTERNAL,
                               "Exception deserializing request!")
            raise asyncio.CancelledError() from None


def identity(data: Any) -> Any:
    return data


def parse_timeout(value: bytes) -> float | None:
    unit = _TIMEOUT_UNITS.get(value[-1]) if value else None
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


def call_path(stream: Stream) -> str:
    for name, value in stream.headers:
        if name == b":path":
            return value.decode("latin-1")
    return ""
