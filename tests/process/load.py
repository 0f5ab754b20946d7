"""A recorded concurrent client workload (puts, CAS txns, linearizable gets) for cluster tests.

Each client runs one op at a time against its endpoints and records it in a shared
:class:`Recorder`: an answer is OK; an error that proves the request never reached a log
("no leader", refused connection) is FAIL; anything else is UNKNOWN (it may have applied).
Values are unique, so the linearizability checker can tell writes apart.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from coord.client import Client
from coord.client.errors import ClientError, ServerError
from coord.pb import rpc_pb2
from tests.helpers.history import Kind, Op, Recorder, Status

_DEFINITELY_NOT_APPLIED = ("etcdserver: no leader", "etcdserver: server stopped",
                           "etcdserver: not leader")


def _not_applied(err: Exception) -> bool:
    msg = str(err).lower()
    return any(s in msg for s in _DEFINITELY_NOT_APPLIED) or "failed to connect" in msg or (
        "connection refused" in msg)


@dataclass
class Workload:
    endpoints: dict[int, list[str]]  # client number -> its endpoints
    keys: int = 8
    prefix: str = "/lin/"
    pause: float = 0.004
    recorder: Recorder = field(default_factory=Recorder)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    ok_writes: list[tuple[float, float]] = field(default_factory=list)  # (call, ret)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stuck: int = 0
    _last_seen: dict[str, str | None] = field(default_factory=dict)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._client(c, eps))
                       for c, eps in self.endpoints.items()]

    async def finish(self) -> list[Op]:
        self.stop.set()
        await asyncio.gather(*self._tasks)
        return self.recorder.history()

    def first_write_after(self, t: float) -> float | None:
        later = [r for c, r in self.ok_writes if c >= t]
        return min(later) if later else None

    async def _client(self, c: int, endpoints: list[str]) -> None:
        rec = self.recorder
        n = 0
        async with Client(endpoints, timeout=3.0) as cli:
            while not self.stop.is_set():
                n += 1
                key = f"{self.prefix}{(c * 7 + n) % self.keys}"
                kind = (Kind.PUT, Kind.GET, Kind.CAS)[n % 3]
                value = f"c{c}-{n}"
                expected: str | None = None
                if kind is Kind.CAS:
                    # compare with the value this client read last for the key, if any
                    expected = self._last_seen.get(key)
                call = time.monotonic()
                op = rec.invoke(c, kind, key, call, value=None if kind is Kind.GET
                                else value, expected=expected)
                try:
                    async with asyncio.timeout(6.0):  # a client never waits forever
                        await self._one(cli, call, op, kind, key, value, expected)
                except TimeoutError:
                    self.stuck += 1
                    rec.unknown(op)
                except (ClientError, ServerError, OSError) as err:
                    if kind is Kind.GET or _not_applied(err):
                        rec.fail(op, time.monotonic())
                    else:
                        rec.unknown(op)
                    await asyncio.sleep(0.05)
                await asyncio.sleep(self.pause)

    async def _one(self, cli: Client, call: float, op: int, kind: Kind, key: str, value: str,
                   expected: str | None) -> None:
        rec = self.recorder
        if kind is Kind.PUT:
            r = await cli.put(key, value)
            now = time.monotonic()
            rec.ok(op, now, revision=r.header.revision)
            self.ok_writes.append((call, now))
        elif kind is Kind.GET:
            g = await cli.get(key)
            got = g.kvs[0].value.decode() if g.kvs else None
            self._last_seen[key] = got
            rec.ok(op, time.monotonic(), result=got, revision=g.header.revision)
        else:
            if expected is None:
                cmp = rpc_pb2.Compare(key=key.encode(),
                                      target=rpc_pb2.Compare.CREATE,
                                      result=rpc_pb2.Compare.EQUAL, create_revision=0)
            else:
                cmp = rpc_pb2.Compare(key=key.encode(),
                                      target=rpc_pb2.Compare.VALUE,
                                      result=rpc_pb2.Compare.EQUAL,
                                      value=expected.encode())
            put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                key=key.encode(), value=value.encode()))
            t = await cli.txn([cmp], success=[put])
            now = time.monotonic()
            rec.ok(op, now, succeeded=t.succeeded, revision=t.header.revision)
            if t.succeeded:
                self.ok_writes.append((call, now))


def acked_writes(ops: list[Op]) -> list[Op]:
    return [o for o in ops if o.status is Status.OK and o.is_write and o.revision is not None]
