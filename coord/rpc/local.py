"""Calls to a coord member that runs in the same process, without a socket.

An agent (``raftcron agent``) is a coord member and a worker in one process. Over its client
port, every call the worker makes costs a grpc.aio client call, HTTP/2 framing both ways
and the server's frame handling — more CPU than the request itself, on the same event loop
that serves the member. :class:`LocalTarget` hands the worker's calls to the member's
handlers directly instead; :class:`coord.client.Client` uses it for the endpoints it is
given one for.

What stays the same as over the network: requests and responses are serialised and parsed
(no object is shared between client and server), the member's size limit on requests, the
call deadline (``DEADLINE_EXCEEDED``), the resolver (etcd's ``hasleader`` metadata), and
errors reach the client as ``grpc.aio.AioRpcError`` with the server's code and message.
Response streams are bounded (``STREAM_BUFFER`` messages), as HTTP/2 flow control bounds
them over the network.

This module is the client's side (it speaks ``grpc.aio``'s types, so it imports grpc):
a member loads it only when asked for a local target (``CoordServer.local_target``), so
that a member without an in-process client never loads grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import structlog

from coord.rpc.handlers import CallContext, Outcome, run_call_until
from coord.rpc.status import StatusCode, grpc_code

log = structlog.get_logger(__name__)

STREAM_BUFFER = 64
"""Response messages a stream buffers before its handler waits for the client to read."""

Resolver = Callable[[Any], Any]
"""``CallDetails`` (``.method``, ``.invocation_metadata``) → a method handler
(:class:`coord.rpc.handlers.MethodHandler`) or None."""

Metadata = Sequence[tuple[str, str]]


class LocalTarget:
    """A member's client-port handlers, callable in-process (see the module doc).
    :meth:`close` (the member is stopping) ends its open streams with UNAVAILABLE, as the
    network server does, and refuses new calls."""

    def __init__(self, resolve: Resolver, max_receive: int) -> None:
        self.resolve = resolve
        self.max_receive = max_receive
        self.closing = False
        self._streams: set[LocalStreamCall] = set()

    def channel(self) -> LocalChannel:
        return LocalChannel(self)

    def close(self) -> None:
        self.closing = True
        for s in list(self._streams):
            s._end_with(_error(StatusCode.UNAVAILABLE, "server shutting down"))


class _Ends:
    """The runner's ends for in-process calls (``call`` is the method's path): requests
    arrive parsed, and the caller reads the outcome :func:`run_call_until` returns (a
    cancelled call's status is set by whoever cancelled it)."""

    event = "local.handler_failed"

    def call_name(self, call: str) -> str:
        return call

    def call_request(self, call: str, request: Any) -> Any:
        return request

    def call_done(self, call: str, outcome: Outcome) -> None:
        pass

    def call_cancelled(self, call: str) -> None:
        pass


_ENDS = _Ends()


def _error(code: StatusCode, details: str) -> grpc.aio.AioRpcError:
    """The status as the client sees it: grpcio's error and code (the boundary between
    the member's own status codes and grpcio's)."""
    return grpc.aio.AioRpcError(grpc_code(code), grpc.aio.Metadata(), grpc.aio.Metadata(),
                                details=details, debug_error_string="")


class _Details:
    __slots__ = ("invocation_metadata", "method")

    def __init__(self, method: str, metadata: Metadata | None) -> None:
        self.method = method
        self.invocation_metadata = tuple(metadata or ())


class LocalChannel:
    """The parts of ``grpc.aio.Channel`` the generated stubs and the client use."""

    def __init__(self, target: LocalTarget) -> None:
        self.target = target
        self.closed = False
        self._streams: set[LocalStreamCall] = set()

    def unary_unary(self, method: str, request_serializer: Callable[[Any], bytes],
                    response_deserializer: Callable[[bytes], Any],
                    **_: Any) -> Callable[..., Any]:
        async def call(request: Any, *, timeout: float | None = None,
                       metadata: Metadata | None = None, **_kw: Any) -> Any:
            return await self._unary(method, request_serializer(request),
                                     response_deserializer, timeout, metadata)
        return call

    def stream_stream(self, method: str, request_serializer: Callable[[Any], bytes],
                      response_deserializer: Callable[[bytes], Any],
                      **_: Any) -> Callable[..., LocalStreamCall]:
        def call(*, timeout: float | None = None, metadata: Metadata | None = None,
                 **_kw: Any) -> LocalStreamCall:
            return LocalStreamCall(self, method, request_serializer, response_deserializer,
                                   timeout, metadata)
        return call

    def unary_stream(self, method: str, **_: Any) -> Callable[..., Any]:
        return self._unsupported(method)

    def stream_unary(self, method: str, **_: Any) -> Callable[..., Any]:
        return self._unsupported(method)

    @staticmethod
    def _unsupported(method: str) -> Callable[..., Any]:
        def call(*_a: Any, **_kw: Any) -> Any:
            raise _error(StatusCode.UNIMPLEMENTED,
                         f"{method}: not available in-process (coord.rpc.local)")
        return call

    async def close(self, grace: float | None = None) -> None:
        """Refuse new calls; cancel the open streams after ``grace`` seconds (at once
        without one), as ``grpc.aio.Channel.close`` does."""
        self.closed = True
        if grace:
            asyncio.get_running_loop().call_later(grace, self._cancel_streams)
        else:
            self._cancel_streams()

    def _cancel_streams(self) -> None:
        for s in list(self._streams):
            s.cancel()

    def _handler(self, method: str, metadata: Metadata | None) -> Any:
        if self.closed or self.target.closing:
            # Nothing was handed to the member: the client may retry it elsewhere.
            raise _error(StatusCode.UNAVAILABLE,
                         "failed to connect: the in-process member is stopping")
        try:
            handler = self.target.resolve(_Details(method, metadata))
        except Exception:  # a resolver bug fails this call only
            log.exception("local.resolve_failed", method=method)
            handler = None
        if handler is None:
            raise _error(StatusCode.UNIMPLEMENTED, "Method not found!")
        return handler

    def _parse(self, handler: Any, raw: bytes) -> Any:
        limit = self.target.max_receive
        if len(raw) > limit:
            raise _error(StatusCode.RESOURCE_EXHAUSTED,
                         f"grpc: received message larger than max ({len(raw)} vs. {limit})")
        deserialize = handler.request_deserializer
        return deserialize(raw) if deserialize is not None else raw

    async def _unary(self, method: str, raw: bytes, parse: Callable[[bytes], Any],
                     timeout: float | None, metadata: Metadata | None) -> Any:
        handler = self._handler(method, metadata)
        if handler.request_streaming or handler.response_streaming:
            raise _error(StatusCode.UNIMPLEMENTED, f"{method} is a streaming method")
        request = self._parse(handler, raw)
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        context = CallContext("local", None if timeout is None else time.monotonic() + timeout,
                              metadata or ())
        code, details, response = await run_call_until(
            deadline, handler, request, context, None, _ENDS, method)
        if response is None:
            raise _error(code, details)
        return parse(response)


_END = object()


class LocalStreamCall:
    """A bidirectional call (Watch, LeaseKeepAlive): ``write``, ``read`` (``grpc.aio.EOF``
    at the end), ``done_writing``, ``cancel`` — the handler runs in its own task, as it
    does in a server."""

    def __init__(self, channel: LocalChannel, method: str,
                 serialize: Callable[[Any], bytes], parse: Callable[[bytes], Any],
                 timeout: float | None, metadata: Metadata | None) -> None:
        self._channel = channel
        self._method = method
        self._serialize = serialize
        self._parse = parse
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self._responses: asyncio.Queue[Any] = asyncio.Queue(STREAM_BUFFER)
        self._status: grpc.aio.AioRpcError | None = None  # set when the call ended
        self._cancelled = False
        self._done_writing = False
        self._task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self._deadline = None if timeout is None else loop.time() + timeout
        self._context_deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._handler: Any = channel._handler(method, metadata)
        except grpc.aio.AioRpcError as err:
            self._status = err
            return
        channel._streams.add(self)
        channel.target._streams.add(self)
        self._task = loop.create_task(self._run(metadata))

    async def _incoming(self) -> AsyncIterator[Any]:
        while True:
            raw = await self._requests.get()
            if raw is _END:
                return
            try:
                request = self._channel._parse(self._handler, raw)
            except grpc.aio.AioRpcError as err:  # over the size limit: the call ends
                self._end_with(err)
                return
            yield request

    async def _run(self, metadata: Metadata | None) -> None:
        handler = self._handler
        status = _error(StatusCode.OK, "")
        try:
            if not (handler.request_streaming and handler.response_streaming):
                status = _error(StatusCode.UNIMPLEMENTED,
                                "only bidirectional streams are served in-process")
                return
            context = CallContext("local", self._context_deadline, metadata or ())
            code, details, _ = await run_call_until(
                self._deadline, handler, self._incoming(), context, self._send,
                _ENDS, self._method)
            if code is not StatusCode.OK:
                status = _error(code, details)
        except asyncio.CancelledError:
            # By cancel(), the member stopping (their status is set already), or the loop.
            status = _error(StatusCode.CANCELLED, "Cancelled")
            raise
        finally:
            self._finish(status)

    async def _send(self, raw: bytes) -> bool:
        await self._responses.put(raw)
        return True

    def _finish(self, status: grpc.aio.AioRpcError) -> None:
        if self._status is None:
            self._status = status
        self._channel._streams.discard(self)
        self._channel.target._streams.discard(self)
        with contextlib.suppress(asyncio.QueueFull):
            self._responses.put_nowait(_END)

    def _end_with(self, status: grpc.aio.AioRpcError) -> None:
        """End the call with ``status`` (its handler is cancelled)."""
        if self._status is not None:
            return
        self._finish(status)
        if self._task is not None:
            self._task.cancel()

    async def write(self, request: Any) -> None:
        if self._status is not None or self._done_writing:
            if self._status is not None and self._status.code() is not grpc.StatusCode.OK:
                raise self._status
            raise asyncio.InvalidStateError("RPC already finished")
        self._requests.put_nowait(self._serialize(request))

    async def done_writing(self) -> None:
        if not self._done_writing:
            self._done_writing = True
            self._requests.put_nowait(_END)

    async def read(self) -> Any:
        if self._cancelled:
            raise asyncio.CancelledError()
        if self._responses.empty() and self._status is not None:
            return self._end()
        raw = await self._responses.get()
        if raw is _END:
            self._responses.put_nowait(_END)  # every later read ends the same way
            return self._end()
        return self._parse(raw)

    def _end(self) -> Any:
        assert self._status is not None
        if self._cancelled:
            raise asyncio.CancelledError()
        if self._status.code() is grpc.StatusCode.OK:
            return grpc.aio.EOF  # type: ignore[attr-defined]  # missing from the stubs
        raise self._status

    def cancel(self) -> bool:
        """Cancel the call (its handler too); False if it had already ended."""
        if self._status is not None:
            return False
        self._cancelled = True
        self._end_with(_error(StatusCode.CANCELLED, "Locally cancelled by application!"))
        return True

    def done(self) -> bool:
        return self._status is not None


if TYPE_CHECKING:
    from coord.rpc.handlers import Context

    def _is_a_context(context: CallContext) -> Context:
        """mypy checks that the services can be given this context."""
        return context
