"""Logging in to an etcd-v3 store with auth enabled: etcd's simple tokens, as etcdctl uses
them. The client authenticates with a user name and password (the Auth service's
``Authenticate``), sends the token as the ``token`` metadata of every call, and logs in
again when a member answers ``invalid auth token`` (the token expired after its TTL of
idleness, or the member restarted: tokens are not replicated into snapshots).

The password is held only here and never formatted: the dataclass hides it from ``repr``
and no log line or error names it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc

from coord.pb import rpc_pb2, rpc_pb2_grpc

INVALID_TOKEN = "invalid auth token"
"""What etcd (and coord) answer, with Unauthenticated, for an unknown or expired token."""
USER_EMPTY = "user name is empty"
"""The answer to a call without a token once auth is on (it was off at login)."""
NOT_ENABLED = "authentication is not enabled"
"""``Authenticate``'s answer while auth is off: the client then sends no token, as
etcd's clientv3 does, and logs in at the first ``user name is empty``."""

STREAMS = frozenset({"Watch", "LeaseKeepAlive", "Snapshot"})
"""The stub methods that return a stream call at once instead of an awaitable."""


@dataclass(frozen=True)
class ClientAuth:
    """A user's credentials (``--user NAME:PASSWORD``)."""

    user: str
    password: str = field(repr=False)


def stale_token(err: BaseException) -> bool:
    """Whether ``err`` says the token this client sent (or its lack) is no longer valid."""
    if not isinstance(err, grpc.aio.AioRpcError):
        return False
    details = err.details() or ""
    return ((err.code() == grpc.StatusCode.UNAUTHENTICATED and INVALID_TOKEN in details)
            or (err.code() == grpc.StatusCode.INVALID_ARGUMENT and USER_EMPTY in details))


class TokenSource:
    """One client's token, shared by all its endpoints (a simple token is replicated, so
    every member accepts it); fetched on first use and after :meth:`invalidate`."""

    def __init__(self, auth: ClientAuth) -> None:
        self.auth = auth
        self.token: str | None = None
        self._lock = asyncio.Lock()

    async def get(self, channel: Any, timeout: float | None = None) -> str:
        """The token ("" while auth is off), logging in first if there is none."""
        async with self._lock:
            if self.token is None:
                stub: Any = rpc_pb2_grpc.AuthStub(channel)
                req = rpc_pb2.AuthenticateRequest(name=self.auth.user,
                                                  password=self.auth.password)
                try:
                    resp = await stub.Authenticate(req, timeout=timeout)
                except grpc.aio.AioRpcError as err:
                    if NOT_ENABLED not in (err.details() or ""):
                        raise
                    self.token = ""  # auth is off: no token until it is on
                else:
                    self.token = str(resp.token)
            return self.token

    def invalidate(self, token: str | None) -> None:
        if token is not None and self.token == token:
            self.token = None


class _AuthedStub:
    """A generated stub whose calls carry the token: unary calls log in first and once
    more after ``invalid auth token``; stream calls use the token already fetched (the
    client calls :meth:`TokenSource.get` before opening one)."""

    def __init__(self, stub: Any, tokens: TokenSource, channel: Any) -> None:
        self._stub = stub
        self._tokens = tokens
        self._channel = channel

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)
        tokens, channel = self._tokens, self._channel
        if name in STREAMS:
            def stream(*args: Any, metadata: Any = (), **kw: Any) -> Any:
                md = tuple(metadata)
                if tokens.token:
                    md += (("token", tokens.token),)
                return method(*args, metadata=md, **kw)
            return stream

        async def unary(req: Any, *, timeout: float | None = None, metadata: Any = (),
                        **kw: Any) -> Any:
            for attempt in (0, 1):
                token = await tokens.get(channel, timeout)
                md = (*metadata, ("token", token)) if token else tuple(metadata)
                try:
                    return await method(req, timeout=timeout, metadata=md, **kw)
                except grpc.aio.AioRpcError as err:
                    if attempt or not stale_token(err):
                        raise
                    tokens.invalidate(token)
            raise AssertionError("unreachable")
        return unary


def authed(stub: Any, tokens: TokenSource | None, channel: Any) -> Any:
    """``stub`` as is without credentials, else wrapped to send the token."""
    return stub if tokens is None else _AuthedStub(stub, tokens, channel)
