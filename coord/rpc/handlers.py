"""Method handlers for coord's gRPC services, built from the protobuf service descriptors.

The h2 server (``coord.rpc.h2.server``) and in-process calls (``coord.rpc.local``) look a
call's path up in a table of :class:`MethodHandler` — the same fields as grpcio's
``RpcMethodHandler``, so either kind of handler serves there — and never need grpcio's
generated ``*_pb2_grpc`` modules, whose import loads the whole ``grpc`` package
(docs/grpc-server.md). Both run the handler with :func:`run_call` and one
:class:`CallContext`, so a call ends with the same status on either transport.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, NoReturn, Protocol

import structlog
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass

from coord.rpc.status import StatusCode

Behaviour = Callable[[Any, Any], Any]
"""``(request or request iterator, context)`` → an awaitable response, or an async
iterator of responses for a response-streaming method."""


class RpcAbort(Exception):
    """Raised by a context's ``abort``: ends the call with this status (on either
    transport: the h2 server's trailers, or the in-process caller's error)."""

    def __init__(self, code: StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Context(Protocol):
    """What a service method may use of its per-call context: the h2 server's and the
    in-process one provide it."""

    async def abort(self, code: StatusCode, details: str = "",
                    trailing_metadata: Sequence[tuple[str, str]] = ()) -> NoReturn:
        """End the call with ``code`` and ``details`` (raises)."""

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]]: ...

    def peer(self) -> str: ...

    def auth_context(self) -> dict[str, list[bytes]]:
        """The connection's verified client certificate (grpc's form,
        :data:`coord.rpc.h2.tls.AuthContext`); empty without one."""

    def time_remaining(self) -> float | None: ...

    def set_code(self, code: StatusCode) -> None: ...

    def set_details(self, details: str) -> None: ...


Metadata = tuple[tuple[str, str | bytes], ...]


class CallContext:
    """The one per-call context both transports give a handler (:class:`Context`): the
    h2 server's calls (``peer`` the client's address, metadata decoded from the request
    headers on first use) and in-process calls (``peer`` "local"). ``deadline`` is on
    ``time.monotonic()``'s clock; ``code`` and ``details`` are what the handler set."""

    __slots__ = ("_decode", "_metadata", "auth", "code", "deadline", "details", "peer_address")

    def __init__(self, peer: str, deadline: float | None, metadata: Any = (),
                 decode: Callable[[Any], Metadata] | None = None,
                 auth: dict[str, list[bytes]] | None = None) -> None:
        self.peer_address = peer
        self.auth = auth or {}
        self.deadline = deadline
        self._metadata = metadata
        self._decode = decode
        self.code = StatusCode.OK
        self.details = ""

    async def abort(self, code: StatusCode, details: str = "",
                    trailing_metadata: Sequence[tuple[str, str]] = ()) -> NoReturn:
        raise RpcAbort(code, details)

    def invocation_metadata(self) -> Metadata:
        decode = self._decode
        return decode(self._metadata) if decode is not None else tuple(self._metadata)

    def peer(self) -> str:
        return self.peer_address

    def auth_context(self) -> dict[str, list[bytes]]:
        return self.auth

    def time_remaining(self) -> float | None:
        deadline = self.deadline
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def set_code(self, code: StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


class MethodHandler(NamedTuple):
    """One method: how to parse its requests, serialise its responses, and which of the
    four call shapes it has (exactly one behaviour is set), as in grpcio."""

    request_streaming: bool
    response_streaming: bool
    request_deserializer: Callable[[bytes], Any] | None
    response_serializer: Callable[[Any], bytes] | None
    unary_unary: Behaviour | None
    unary_stream: Behaviour | None
    stream_unary: Behaviour | None
    stream_stream: Behaviour | None

    @property
    def behaviour(self) -> Behaviour:
        fn = self.unary_unary or self.unary_stream or self.stream_unary or self.stream_stream
        assert fn is not None
        return fn

    def with_behaviour(self, fn: Behaviour) -> MethodHandler:
        """The same method (shape, parsing, serialisation) run by ``fn``."""
        return method_handler(fn, self.request_streaming, self.response_streaming,
                              self.request_deserializer, self.response_serializer)


def method_handler(fn: Behaviour, request_streaming: bool, response_streaming: bool,
                   request_deserializer: Callable[[bytes], Any] | None = None,
                   response_serializer: Callable[[Any], bytes] | None = None) -> MethodHandler:
    shape = (request_streaming, response_streaming)
    return MethodHandler(request_streaming, response_streaming, request_deserializer,
                         response_serializer,
                         fn if shape == (False, False) else None,
                         fn if shape == (False, True) else None,
                         fn if shape == (True, False) else None,
                         fn if shape == (True, True) else None)


def service_handlers(service: ServiceDescriptor, servicer: object) -> dict[str, MethodHandler]:
    """Every method of ``service`` (e.g. ``rpc_pb2.DESCRIPTOR.services_by_name["KV"]``),
    served by the servicer's method of the same name: ``/package.Service/Method`` →
    handler. What grpcio's generated ``add_*Servicer_to_server`` builds, from the same
    descriptor. A servicer lacking a method is an error here, not at call time."""
    handlers: dict[str, MethodHandler] = {}
    for method in service.methods:
        handlers[f"/{service.full_name}/{method.name}"] = method_handler(
            getattr(servicer, method.name), method.client_streaming, method.server_streaming,
            GetMessageClass(method.input_type).FromString,
            GetMessageClass(method.output_type).SerializeToString)
    return handlers


# --------------------------------------------------------------------------- running a call

log = structlog.get_logger("coord.rpc")

NO_RESPONSE = "the method handler returned no response"
DEADLINE_EXCEEDED = "Deadline Exceeded"

Send = Callable[[bytes], Awaitable[bool]]
"""Hands one serialised response of a stream to the transport (waiting while it is full);
False when the call has already ended and the handler should stop."""


Outcome = tuple[StatusCode, str, bytes | None]
"""How a call ended: its status code and details, and for a unary-response call that
succeeded, the serialised response (None otherwise). A plain tuple: one per call."""

_OK: Outcome = (StatusCode.OK, "", None)


def _identity(raw: Any) -> Any:
    return raw


class CallEnds(Protocol):
    """What a transport gives :func:`run_call` for one of its calls (``call``, the
    transport's own record of it): no object is made per call for these."""

    event: str
    """The log event of a handler failure (``h2.handler_failed``)."""

    def call_name(self, call: Any) -> str:
        """The call's method, for the log."""

    def call_request(self, call: Any, request: Any) -> Any:
        """The request as the handler gets it (parsed here, inside the call, if the
        transport has not parsed it yet; raise :class:`RpcAbort` if it cannot be)."""

    def call_done(self, call: Any, outcome: Outcome) -> None:
        """Write how the call ended (its status, and a unary call's response)."""

    def call_cancelled(self, call: Any) -> None:
        """The call's task is being cancelled: say so to the caller if it still listens."""


async def run_call(handler: MethodHandler, request: Any, context: CallContext,
                   send: Send | None, ends: CallEnds, call: Any) -> Outcome:
    """Run ``handler`` on ``request`` (a message, or an async iterator of them for a
    request-streaming method) and map how it ended to a status, the same way for every
    transport: an abort (:class:`RpcAbort`) or the code the handler set ends the call with
    that status; a unary handler that returns None is UNKNOWN; any other exception is
    logged and ends only this call, UNKNOWN. A stream's responses go to ``send``; the
    outcome goes to ``ends.call_done`` and is returned. On cancellation
    ``ends.call_cancelled`` says what it means, and the cancellation propagates. The
    deadline is the transport's (:func:`run_call_until` keeps one on the loop's clock).
    A transport can make this coroutine its call's task (no frame of its own around it)."""
    serialize = handler.response_serializer or _identity
    outcome: Outcome
    try:
        request = ends.call_request(call, request)
        if handler.response_streaming:
            assert send is not None, "a response stream needs somewhere to go"
            fn = handler.stream_stream if handler.request_streaming else handler.unary_stream
            assert fn is not None
            responses = fn(request, context)
            try:
                async for response in responses:
                    if not await send(serialize(response)):
                        break
            finally:
                aclose = getattr(responses, "aclose", None)
                if aclose is not None:
                    await aclose()
            outcome = _OK if context.code is StatusCode.OK else (
                context.code, context.details, None)
        else:
            fn = handler.stream_unary if handler.request_streaming else handler.unary_unary
            assert fn is not None
            response = await fn(request, context)
            if context.code is not StatusCode.OK:
                outcome = context.code, context.details, None
            elif response is None:
                outcome = StatusCode.UNKNOWN, NO_RESPONSE, None
            else:
                outcome = StatusCode.OK, "", serialize(response)
    except RpcAbort as abort:
        outcome = abort.code, abort.details, None
    except asyncio.CancelledError:
        ends.call_cancelled(call)
        raise
    except Exception as err:  # noqa: BLE001 - a handler bug fails its call only (logged)
        outcome = _failure(ends.call_name(call), ends.event, err)
    ends.call_done(call, outcome)
    return outcome


async def run_call_until(deadline: float | None, handler: MethodHandler, request: Any,
                         context: CallContext, send: Send | None, ends: CallEnds,
                         call: Any) -> Outcome:
    """:func:`run_call` under ``deadline`` (on the event loop's clock, None for none):
    when it passes, the handler is cancelled (``ends.call_cancelled``) and the call ends
    DEADLINE_EXCEEDED (``ends.call_done``)."""
    if deadline is None:
        return await run_call(handler, request, context, send, ends, call)
    timer = asyncio.timeout_at(deadline)
    try:
        async with timer:
            return await run_call(handler, request, context, send, ends, call)
    except TimeoutError as err:
        outcome: Outcome = (
            (StatusCode.DEADLINE_EXCEEDED, DEADLINE_EXCEEDED, None) if timer.expired()
            else _failure(ends.call_name(call), ends.event, err))
        ends.call_done(call, outcome)
        return outcome


def _failure(method: str, event: str, err: Exception) -> Outcome:
    log.error(event, method=method, error=repr(err), exc_info=err)
    return StatusCode.UNKNOWN, f"Unexpected {type(err)}: {err}", None
