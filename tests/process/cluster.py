"""A coord cluster of real processes on loopback for the process tests and the bench.

``CoordCluster`` starts ``raftcron coord serve`` members with ``--initial-cluster``,
restarts and kill -9's them, and cuts links through the peer-port fault RPC (members run
through ``tests.helpers.fault_member``, which installs the test fault hook). Every process
belongs to the test's :class:`ProcessGroup`, which kill -9's the survivors at teardown.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from coord.pb import raft_pb2, raft_pb2_grpc, rpc_pb2, rpc_pb2_grpc
from tests.helpers.procs import REPO, Proc, ProcessGroup, coord_argv, free_port, port_open


@dataclass
class Member:
    name: str
    cport: int
    pport: int
    data: Path
    proc: Proc | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.cport}"

    @property
    def peer(self) -> str:
        return f"127.0.0.1:{self.pport}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()


@dataclass
class CoordCluster:
    group: ProcessGroup
    size: int = 3
    snapshot_count: int = 10_000
    faults: bool = True
    members: dict[str, Member] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i in range(1, self.size + 1):
            name = f"n{i}"
            self.members[name] = Member(name, free_port(), free_port(),
                                        self.group.workdir / f"{name}-data")

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer}" for m in self.members.values())

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members.values()]

    def env(self) -> dict[str, str]:
        env = {"PYTHONPATH": str(REPO)}
        env.update(self.extra_env)
        return env

    def spawn(self, name: str, *, state: str = "new", initial_cluster: str | None = None) -> Proc:
        m = self.members[name]
        argv = coord_argv(name, m.data, m.cport, m.pport, initial_cluster or self.initial_cluster)
        if self.faults:  # the CLI with the test fault hook installed
            argv[1:3] = ["-m", "tests.helpers.fault_member"]
        argv += ["--snapshot-count", str(self.snapshot_count)]
        if state != "new":
            argv += ["--initial-cluster-state", state]
        m.proc = self.group.spawn(name, argv, m.cport, env=self.env())
        return m.proc

    def start(self, *names: str) -> None:
        for n in names or tuple(self.members):
            self.spawn(n)
        for n in names or tuple(self.members):
            self.wait_listening(n)

    def run(self, scenario: Callable[[CoordCluster], Awaitable[None]]) -> None:
        """Run an async scenario against the cluster; on failure print every member's log
        (pytest shows it with the failure)."""
        try:
            asyncio.run(scenario(self))
        except BaseException:
            print(self.logs())
            raise

    def wait_listening(self, name: str, timeout: float = 30.0) -> None:
        m = self.members[name]
        deadline = time.monotonic() + timeout
        while not port_open(m.cport):
            assert m.proc is not None
            if not m.proc.alive():
                raise RuntimeError(f"{name} exited early:\n{m.proc.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not listening after {timeout}s")
            time.sleep(0.02)

    def kill9(self, name: str) -> None:
        proc = self.members[name].proc
        assert proc is not None
        proc.kill9()

    def logs(self) -> str:
        out = []
        for m in self.members.values():
            if m.proc is not None:
                out.append(f"===== {m.name}\n{m.proc.log()[-3000:]}")
        return "\n".join(out)

    # ------------------------------------------------------------------ queries (async)
    async def status(self, name: str, timeout: float = 1.0) -> rpc_pb2.StatusResponse | None:
        m = self.members[name]
        if not m.alive():
            return None
        async with grpc.aio.insecure_channel(m.endpoint) as ch:
            stub: Any = rpc_pb2_grpc.MaintenanceStub(ch)
            try:
                resp: rpc_pb2.StatusResponse = await stub.Status(rpc_pb2.StatusRequest(),
                                                                 timeout=timeout)
                return resp
            except grpc.aio.AioRpcError:
                return None

    async def leader(self, among: list[str] | None = None) -> str | None:
        """The name of the member all of ``among`` (default: the live ones) agree leads."""
        names = among or [n for n, m in self.members.items() if m.alive()]
        ids = self.ids()
        seen = set()
        for n in names:
            st = await self.status(n)
            if st is None or st.leader == 0:
                return None
            seen.add(st.leader)
        if len(seen) != 1:
            return None
        lid = seen.pop()
        for n, i in ids.items():
            if i == lid and n in names and self.members[n].alive():
                return n
        return None

    def ids(self) -> dict[str, int]:
        from coord.server.config import member_id_for
        return {n: member_id_for(n, m.peer, "raftcron") for n, m in self.members.items()}

    async def wait_leader(self, among: list[str] | None = None, timeout: float = 20.0) -> str:
        found: list[str] = []

        async def cond() -> bool:
            lead = await self.leader(among)
            if lead is not None:
                found.append(lead)
            return lead is not None
        await await_until(cond, timeout, "a leader")
        return found[-1]

    async def wait_caught_up(self, names: list[str] | None = None, timeout: float = 30.0) -> None:
        names = names or [n for n, m in self.members.items() if m.alive()]

        async def cond() -> bool:
            sts = [await self.status(n) for n in names]
            if any(s is None for s in sts):
                return False
            applied = {s.raftAppliedIndex for s in sts if s is not None}
            return len(applied) == 1
        await await_until(cond, timeout, f"{names} to apply the same index")

    async def fault(self, name: str, cut: list[str], delay_ms: int = 0) -> None:
        m = self.members[name]
        async with grpc.aio.insecure_channel(m.peer) as ch:
            stub: Any = raft_pb2_grpc.PeerStub(ch)
            await stub.Fault(raft_pb2.FaultRequest(cut=cut, delay_ms=delay_ms), timeout=5)


async def await_until(cond: Callable[[], Awaitable[bool]], timeout: float, what: str,
                      step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(step)


def etcdctl(bin_: str, endpoints: list[str] | str, *args: str,
            timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    eps = endpoints if isinstance(endpoints, str) else ",".join(endpoints)
    return subprocess.run([bin_, f"--endpoints={eps}", "--command-timeout=5s", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}, check=False)


def start_etcd_members(group: ProcessGroup, size: int = 3,
                       etcd_bin: str = "etcd") -> dict[str, Member]:
    """A fresh ``size``-member real etcd cluster on loopback (for differential tests and
    the bench); waits until every member listens."""
    members = {f"e{i}": Member(f"e{i}", free_port(), free_port(), group.workdir / f"e{i}-data")
               for i in range(1, size + 1)}
    initial = ",".join(f"{m.name}=http://{m.peer}" for m in members.values())
    for m in members.values():
        argv = [
            etcd_bin, "--name", m.name, "--data-dir", str(m.data),
            "--listen-client-urls", f"http://{m.endpoint}",
            "--advertise-client-urls", f"http://{m.endpoint}",
            "--listen-peer-urls", f"http://{m.peer}",
            "--initial-advertise-peer-urls", f"http://{m.peer}",
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--log-level", "error",
        ]
        m.proc = group.spawn(m.name, argv, m.cport, env={"ETCD_UNSUPPORTED_ARCH": ""})
    for m in members.values():
        deadline = time.monotonic() + 30
        while not port_open(m.cport):
            assert m.proc is not None
            if not m.proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"etcd {m.name} did not start:\n{m.proc.log()}")
            time.sleep(0.02)
    return members
