"""The servers of the differential harness (:mod:`tests.compat.harness`): the reference etcd
and the target (coord, or a second etcd with ``COMPAT_TARGET=etcd``), single members or
3-member clusters (``COMPAT_CLUSTER=3``), and the etcdctl environment. A pair of them, and
the cases run on a pair, are in :mod:`tests.compat.harness`.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.compat.harness_tls import compat_tls, start_tls_side
from tests.helpers.procs import (
    REPO,
    Proc,
    ProcessGroup,
    coord_argv,
    free_port,
    port_open,
    start_coord,
    start_etcd,
    wait_until,
)

CTL_TIMEOUT = "5s"


STEP_TIMEOUT = 20.0


def on_coord() -> bool:
    """True when the target is coord: known, documented differences are xfail'ed only
    then (``COMPAT_TARGET=etcd`` must stay all green, and a strict xfail would fail)."""
    return compat_target() == "coord"


def compat_target() -> str:
    """``coord`` (default) or ``etcd`` (a second real etcd, for developing the suite)."""
    t = os.environ.get("COMPAT_TARGET", "coord").strip().lower()
    if t not in {"coord", "etcd"}:
        raise ValueError(f"COMPAT_TARGET must be coord or etcd, not {t!r}")
    return t


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    """One server under test and the facts normalisation needs about it."""

    label: str  # "etcd" (reference) or "coord"/"etcd2" (target)
    proc: Proc
    peer_port: int
    etcdctl: str
    cluster_id: int = 0
    member_id: int = 0
    # COMPAT_CLUSTER: the other members, name -> (client port, peer port, member id)
    others: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    # COMPAT_TLS: etcdctl's --cacert/--cert/--key for this server (https:// endpoints)
    tls_flags: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return self.proc.endpoint

    @property
    def client_port(self) -> int:
        return self.proc.client_port

    def ctl_argv(self, args: Sequence[str]) -> list[str]:
        endpoint = f"https://{self.endpoint}" if self.tls_flags else self.endpoint
        return [self.etcdctl, f"--endpoints={endpoint}", *self.tls_flags,
                f"--command-timeout={CTL_TIMEOUT}", *args]

    def ctl(self, args: Sequence[str], stdin: bytes | None = None,
            timeout: float = STEP_TIMEOUT) -> CtlResult:
        argv = self.ctl_argv(args)
        try:
            cp = subprocess.run(argv, input=stdin if stdin is not None else b"",
                                capture_output=True, timeout=timeout,
                                env=ctl_env(), check=False)
        except subprocess.TimeoutExpired as e:
            return CtlResult(e.stdout or b"", (e.stderr or b"") + b"\n[harness: timed out]", None)
        return CtlResult(cp.stdout, cp.stderr, cp.returncode)

    def learn_ids(self) -> None:
        r = self.ctl(["get", "compat-ids", "-w", "json"])
        hdr = json.loads(r.stdout)["header"]
        self.cluster_id = int(hdr["cluster_id"])
        self.member_id = int(hdr["member_id"])

    def revision(self) -> int:
        r = self.ctl(["get", "compat-revision", "-w", "json"])
        if r.rc != 0:
            raise RuntimeError(f"{self.label}: cannot read revision: {r.stderr!r}")
        return int(json.loads(r.stdout)["header"]["revision"])


def ctl_env() -> dict[str, str]:
    env = dict(os.environ)
    env["ETCDCTL_API"] = "3"
    for k in list(env):
        if k.startswith("ETCDCTL_") and k != "ETCDCTL_API":
            del env[k]
    return env


@dataclass
class CtlResult:
    stdout: bytes
    stderr: bytes
    rc: int | None

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")


def _peer_port(argv: Sequence[str]) -> int:
    for i, a in enumerate(argv):
        if a in ("--listen-peer-urls", "--listen-peer"):
            return int(argv[i + 1].rsplit(":", 1)[1])
    raise ValueError(f"no peer flag in {argv}")


def wait_ready(server: Server) -> None:
    """Wait until ``server`` serves reads (after a start or a restart)."""
    _wait_ready(server)


def _wait_ready(server: Server) -> None:
    def ok() -> bool:
        if not server.proc.alive():
            raise RuntimeError(f"{server.label} exited:\n{server.proc.log()[-4000:]}")
        return server.ctl(["get", "compat-ready"], timeout=10).rc == 0

    wait_until(ok, 60, f"{server.label} at {server.endpoint} to serve reads", step=0.1)
    server.learn_ids()


def compat_cluster_size() -> int:
    """``COMPAT_CLUSTER=3``: both sides are 3-member clusters, driven through a follower."""
    size = int(os.environ.get("COMPAT_CLUSTER", "1") or "1")
    if size not in (1, 3, 5):
        raise ValueError(f"COMPAT_CLUSTER must be 1, 3 or 5, not {size}")
    return size


def start_cluster_server(kind: str, label: str, group: ProcessGroup, etcd_bin: str,
                         etcdctl_bin: str, size: int) -> Server:
    """Start ``size`` fresh members n1..nN of ``kind``, move leadership to n1 and return
    the follower n2 as the server under test (it knows the others for normalisation)."""
    names = [f"n{i}" for i in range(1, size + 1)]
    ports = {n: (free_port(), free_port()) for n in names}
    procs: dict[str, Proc] = {}
    if kind == "etcd":
        initial = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in names)
        for n in names:
            c, pp = ports[n]
            argv = [etcd_bin, "--name", n, "--data-dir", str(group.workdir / f"{n}-data"),
                    "--listen-client-urls", f"http://127.0.0.1:{c}",
                    "--advertise-client-urls", f"http://127.0.0.1:{c}",
                    "--listen-peer-urls", f"http://127.0.0.1:{pp}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{pp}",
                    "--initial-cluster", initial, "--log-level", "error"]
            procs[n] = group.spawn(n, argv, c, env={"ETCD_UNSUPPORTED_ARCH": ""})
    else:
        initial = ",".join(f"{n}=127.0.0.1:{ports[n][1]}" for n in names)
        for n in names:
            c, pp = ports[n]
            argv = coord_argv(n, group.workdir / f"{n}-data", c, pp, initial)
            procs[n] = group.spawn(n, argv, c, env={"PYTHONPATH": str(REPO)})
    for n in names:
        proc, cport = procs[n], ports[n][0]

        def listening(proc: Proc = proc, cport: int = cport) -> bool:
            return port_open(cport) or not proc.alive()
        wait_until(listening, 60, f"{label} {n} to listen")
    servers = {n: Server(label, procs[n], ports[n][1], etcdctl_bin) for n in names}
    for srv in servers.values():
        _wait_ready(srv)
    everyone = ",".join(f"127.0.0.1:{ports[n][0]}" for n in names)
    ids: dict[str, int] = {}

    def all_named() -> bool:
        r = servers["n1"].ctl(["member", "list", "-w", "json"], timeout=10)
        if r.rc != 0:
            return False
        ids.clear()
        ids.update({m.get("name", ""): int(m["ID"]) for m in json.loads(r.stdout)["members"]})
        return all(n in ids for n in names)

    wait_until(all_named, 30, f"{label} members to publish their names", step=0.1)

    def n1_leads() -> bool:
        r = servers["n1"].ctl(["endpoint", "status", "-w", "json"], timeout=10)
        if r.rc == 0 and json.loads(r.stdout)[0]["Status"]["leader"] == ids["n1"]:
            return True
        subprocess.run([etcdctl_bin, f"--endpoints={everyone}", "move-leader",
                        f"{ids['n1']:x}"], capture_output=True, env=ctl_env(), timeout=20,
                       check=False)
        return False

    wait_until(n1_leads, 30, f"{label} leadership on n1", step=0.2)
    target = servers["n2"]
    target.others = {n: (ports[n][0], ports[n][1], ids[n]) for n in names if n != "n2"}
    return target


def start_server(kind: str, label: str, group: ProcessGroup, etcd_bin: str,
                 etcdctl_bin: str) -> Server:
    """Start a fresh single-member server of ``kind`` (etcd|coord), ready for reads (with
    ``COMPAT_CLUSTER``: a follower of a fresh cluster)."""
    size = compat_cluster_size()
    if compat_tls():
        if size > 1:
            raise ValueError("COMPAT_TLS runs single members only (no COMPAT_CLUSTER)")
        proc, pport, flags = start_tls_side(kind, "n1", group, etcd_bin)
        server = Server(label, proc, pport, etcdctl_bin, tls_flags=flags)
        _wait_ready(server)
        return server
    if size > 1:
        return start_cluster_server(kind, label, group, etcd_bin, etcdctl_bin, size)
    if kind == "etcd":
        proc = start_etcd(group, name="n1", etcd_bin=etcd_bin)
    else:
        proc = start_coord(group, name="n1")
    server = Server(label, proc, _peer_port(proc.argv), etcdctl_bin)
    _wait_ready(server)
    return server
