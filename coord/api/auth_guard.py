"""The auth guard: every client-port call passes here first while auth is enabled, as
etcd's v3rpc and ``authApplierV3`` check them.

* The ``token`` metadata names the caller (an unknown or expired token: ``invalid auth
  token``, Unauthenticated); without one, under ``--client-cert-auth``, the client
  certificate's common name does; else the caller is empty, which every check refuses
  with ``user name is empty``.
* The caller is put in :data:`coord.auth.caller.caller` for the call: the member stamps
  proposed requests with it and the applier checks Put, DeleteRange, Txn (every op of
  both branches, compares read) and LeaseRevoke at their place in the log.
* Checked here: Range (read on its range), each Watch create (read on its range: a denied
  one is answered created+canceled with etcd's reason, the stream goes on) and every open
  watch again at each auth change (:mod:`coord.api.auth_watch`), LeaseTimeToLive's key
  list (only the keys the caller may read are listed), the admin
  calls of Maintenance and Cluster (root only), as etcd 3.4 checks them.

With auth disabled a call costs one attribute read here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from coord.api.auth import AuthMember
from coord.api.auth_watch import OpenWatches
from coord.api.errors import status_code
from coord.auth import READ, AuthStore, PermissionDenied
from coord.auth.caller import caller
from coord.errors import CoordError
from coord.pb import rpc_pb2
from coord.rpc.handlers import Context, MethodHandler
from coord.rpc.status import StatusCode

ADMIN_ONLY = frozenset({
    "/etcdserverpb.Maintenance/Defragment", "/etcdserverpb.Maintenance/Snapshot",
    "/etcdserverpb.Maintenance/Hash", "/etcdserverpb.Maintenance/HashKV",
    "/etcdserverpb.Cluster/MemberAdd", "/etcdserverpb.Cluster/MemberRemove",
    "/etcdserverpb.Cluster/MemberUpdate", "/etcdserverpb.Cluster/MemberPromote"})
"""etcd 3.4's root-only calls (``authMaintenanceServer``,
``checkMembershipOperationPermission``); MoveLeader and Status are not checked there."""
RAW_ERRORS = frozenset({
    "/etcdserverpb.Maintenance/Defragment", "/etcdserverpb.Maintenance/Snapshot",
    "/etcdserverpb.Maintenance/Hash", "/etcdserverpb.Maintenance/HashKV"})
"""Calls whose auth errors etcd 3.4 returns unmapped: its auth package's own message
("auth: permission denied") with gRPC code Unknown."""
_GRPC_NAMES = {StatusCode.PERMISSION_DENIED: "PermissionDenied",
               StatusCode.INVALID_ARGUMENT: "InvalidArgument",
               StatusCode.UNAUTHENTICATED: "Unauthenticated"}
NO_TOKEN_NEEDED = frozenset({"/etcdserverpb.Auth/Authenticate"})
RANGE = "/etcdserverpb.KV/Range"
WATCH = "/etcdserverpb.Watch/Watch"
LEASE_TTL = "/etcdserverpb.Lease/LeaseTimeToLive"


def _may_read(store: AuthStore, user: str | None, key: bytes) -> bool:
    try:
        store.check(user or "", key, b"", READ)
    except CoordError:
        return False
    return True


def caller_of(store: AuthStore, context: Context, cert_users: bool) -> str:
    """The user a call's ``token`` metadata stands for; raises InvalidAuthToken for a
    token unknown here or expired. Without a token, with ``cert_users``
    (``--client-cert-auth``), the common name of the connection's verified client
    certificate (etcd's AuthInfoFromTLS); '' otherwise."""
    for key, value in context.invocation_metadata():
        if key == "token":
            token = value.decode() if isinstance(value, bytes) else value
            return store.user_of_token(token, time.monotonic())
    if cert_users:
        names = context.auth_context().get("x509_common_name")
        if names:
            return str(names[0].decode(errors="replace"))
    return ""


def guard_handlers(core: AuthMember, table: dict[str, MethodHandler]) -> dict[str, MethodHandler]:
    """``table`` with every handler behind the auth guard."""
    return {method: _guard(core, method, h) for method, h in table.items()}


class Guarded:
    """A service method behind the guard. It still names the method it runs
    (``__self__``, ``__func__``, as a bound method does), so the method table can be
    compared with what grpcio's generated code builds."""

    __slots__ = ("_core", "_fn", "_inner")

    def __init__(self, core: AuthMember, inner: Callable[..., Any],
                 fn: Callable[..., Any]) -> None:
        self._core = core
        self._inner = inner
        self._fn = fn

    def __call__(self, request: Any, context: Context) -> Any:
        if not self._core.auth_store.enabled:  # the method itself: no frame added
            return self._inner(request, context)
        return self._fn(request, context)

    @property
    def __self__(self) -> Any:
        return getattr(self._inner, "__self__", None)

    @property
    def __func__(self) -> Any:
        return getattr(self._inner, "__func__", self._inner)


def _guard(core: AuthMember, method: str, handler: MethodHandler) -> MethodHandler:
    inner = handler.behaviour
    admin = method in ADMIN_ONLY
    raw = method in RAW_ERRORS

    async def refuse(context: Context, err: CoordError) -> None:
        if raw:
            await context.abort(StatusCode.UNKNOWN,
                                err.message.replace("etcdserver: ", "auth: ", 1))
        await context.abort(status_code(err), err.message)

    def check(request: Any) -> None:
        store = core.auth_store
        user = caller.get()
        assert user is not None
        if admin:
            store.check_admin(user)
        elif method == RANGE:
            store.check(user, request.key, request.range_end, READ)

    if method == WATCH:
        return handler.with_behaviour(Guarded(core, inner, _watch_guard(core, inner)))
    if handler.response_streaming:  # Maintenance.Snapshot
        async def guarded_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            store = core.auth_store
            if store.enabled:
                try:
                    caller.set(caller_of(store, context, core.cert_users))
                    check(request)
                except CoordError as err:
                    await refuse(context, err)
            async for resp in inner(request, context):
                yield resp
        return handler.with_behaviour(Guarded(core, inner, guarded_stream))

    async def guarded(request: Any, context: Context) -> Any:
        store = core.auth_store
        if not store.enabled or method in NO_TOKEN_NEEDED:
            return await inner(request, context)
        try:
            reset = caller.set(caller_of(store, context, core.cert_users))
            check(request)
        except CoordError as err:
            await refuse(context, err)
        try:
            resp = await inner(request, context)
            if method == LEASE_TTL and request.keys:
                # Only the keys the caller may read are listed.
                resp.keys[:] = [k for k in resp.keys if _may_read(store, caller.get(), k)]
            return resp
        finally:
            caller.reset(reset)

    return handler.with_behaviour(Guarded(core, inner, guarded))


def _watch_guard(core: AuthMember, inner: Callable[[Any, Any], Any]
                 ) -> Callable[[Any, Context], AsyncIterator[Any]]:
    """A Watch stream whose create requests are checked one by one: a permitted one goes
    to the watch service; a denied one is answered at once, as etcd 3.4 answers it
    (watch id -1, created and canceled, reason ``permission denied``)."""

    async def guarded(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        store = core.auth_store
        if not store.enabled:
            async for resp in inner(requests, context):
                yield resp
            return
        try:
            user = caller_of(store, context, core.cert_users)
        except CoordError as err:
            await context.abort(status_code(err), err.message)
        out: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
        incoming: asyncio.Queue[Any] = asyncio.Queue()
        watches = OpenWatches(store, user, incoming)

        async def read_requests() -> None:
            try:
                async for req in requests:
                    await incoming.put(req)
            finally:
                incoming.put_nowait(None)

        async def allowed() -> AsyncIterator[Any]:
            # The client's requests, and the cancels of revoked watches (OpenWatches).
            while (req := await incoming.get()) is not None:
                if req.HasField("create_request"):
                    c = req.create_request
                    try:
                        store.check(user, c.key, c.range_end, READ)
                    except (PermissionDenied, CoordError) as err:
                        denied = rpc_pb2.WatchResponse(
                            watch_id=-1, created=True, canceled=True,
                            cancel_reason=f"rpc error: code = {_GRPC_NAMES[status_code(err)]}"
                                          f" desc = {err.message}")
                        core.fill_header(denied.header)
                        await out.put(denied)
                        continue
                    watches.creating_watch(c)
                yield req

        async def pump() -> None:
            try:
                async for resp in inner(allowed(), context):
                    if (sent := watches.outgoing(resp)) is not None:
                        await out.put(sent)
            finally:
                await out.put(None)

        reader = asyncio.ensure_future(read_requests())
        task = asyncio.ensure_future(pump())
        try:
            with watches:  # re-checked at every auth change while the stream is open
                while True:
                    resp = await out.get()
                    if resp is None:
                        break
                    yield resp
                await task  # the service's own error, if it ended with one
        finally:
            task.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    return guarded
