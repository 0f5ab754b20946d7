"""Start and stop real server processes on loopback for tests and benchmarks.

Every process started here is registered with a :class:`ProcessGroup`, which
kills whatever is still running at teardown (``kill -9`` of the whole process
group), so a failing test never leaks servers.

An interrupted run (Ctrl-C, SIGTERM: see tests/conftest.py) also removes the data the
groups' processes wrote — their WALs are preallocated, 64 MiB a segment — keeping only the
process logs (``*.log``) for a look at what was running. Groups that a fixture never got to
close are closed by :func:`close_all` at session end and at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


# Ports come from a window below the kernel's ephemeral range (32768-60999 here), so an
# outgoing connection's source port never takes a port handed to a server that has not bound
# it yet. Each pytest-xdist worker of one run has its own window (consecutive slots from a
# base derived from the run's id), so two workers never hand out the same port; a run without
# xdist, or another run beside this one, picks a random slot and start.
PORT_LOW = 10000
PORT_WINDOW = 1000
PORT_SLOTS = 22  # 10000..31999


def _window() -> tuple[int, int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")
    rng = random.Random()
    if worker.startswith("gw") and run_id:
        base = int(hashlib.sha256(run_id.encode()).hexdigest(), 16) % PORT_SLOTS
        slot = (base + int(worker[2:])) % PORT_SLOTS
    else:
        slot = rng.randrange(PORT_SLOTS)
    return PORT_LOW + slot * PORT_WINDOW, rng.randrange(PORT_WINDOW)


_WINDOW_START, _cursor = _window()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nothing is bound to, the next one of this process's window: ports are
    handed out in turn, so one just handed out is not handed out again for a thousand calls
    (a test allocating ports for several servers before starting them gets distinct ones)."""
    global _cursor
    for _ in range(PORT_WINDOW):
        port = _WINDOW_START + _cursor
        _cursor = (_cursor + 1) % PORT_WINDOW
        if _bindable(port):
            return port
    last = _WINDOW_START + PORT_WINDOW - 1
    raise RuntimeError(f"no free loopback port in {_WINDOW_START}..{last}")


def wait_until(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> None:
    """Poll ``cond`` until it is true; raise ``TimeoutError`` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Proc:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    client_port: int

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        """Kill the process (and its group) with SIGKILL and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def terminate(self, timeout: float = 10.0) -> int:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return -9

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


INTERRUPTED = False
"""Set when the run was interrupted (SIGINT/SIGTERM): closing a group then removes its data."""

_OPEN: list[ProcessGroup] = []
"""Every group of this process not closed yet."""


def mark_interrupted() -> None:
    global INTERRUPTED
    INTERRUPTED = True


def close_all() -> None:
    """Close every group still open (kill -9 its processes; its data too if interrupted)."""
    for group in list(_OPEN):
        group.close()


atexit.register(close_all)


def remove_data(workdir: Path) -> None:
    """Remove everything under ``workdir`` but the process logs."""
    if not workdir.is_dir():
        return
    for entry in workdir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        elif not entry.name.endswith(".log"):
            with contextlib.suppress(OSError):
                entry.unlink()


@dataclass
class ProcessGroup:
    """Owns every process a test starts; ``close()`` kills the survivors."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        _OPEN.append(self)

    def spawn(
        self, name: str, argv: Sequence[str], client_port: int, env: dict[str, str] | None = None
    ) -> Proc:
        log_path = self.workdir / f"{name}.{len(self.procs)}.log"
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with log_path.open("wb") as logf:
            popen = subprocess.Popen(
                list(argv),
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                start_new_session=True,
                cwd=str(self.workdir),
            )
        proc = Proc(name, list(argv), log_path, popen, client_port)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for p in self.procs:
            if p.alive():
                p.kill9()
        _OPEN[:] = [g for g in _OPEN if g is not self]
        if INTERRUPTED:
            remove_data(self.workdir)


@contextlib.contextmanager
def process_group(workdir: Path) -> Iterator[ProcessGroup]:
    group = ProcessGroup(workdir)
    try:
        yield group
    finally:
        group.close()


def start_etcd(group: ProcessGroup, name: str = "etcd", etcd_bin: str = "etcd",
               flags: Sequence[str] = ()) -> Proc:
    """Start a fresh single-member real etcd on loopback (``flags`` added to its command
    line) and wait until it listens."""
    cport, pport = free_port(), free_port()
    data = group.workdir / f"{name}-data"
    argv = [
        etcd_bin,
        "--name", name,
        "--data-dir", str(data),
        "--listen-client-urls", f"http://127.0.0.1:{cport}",
        "--advertise-client-urls", f"http://127.0.0.1:{cport}",
        "--listen-peer-urls", f"http://127.0.0.1:{pport}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
        "--initial-cluster", f"{name}=http://127.0.0.1:{pport}",
        "--log-level", "error",
        *flags,
    ]
    proc = group.spawn(name, argv, cport, env={"ETCD_UNSUPPORTED_ARCH": "", "ETCDCTL_API": "3"})
    wait_until(lambda: port_open(cport) or not proc.alive(), 30, f"etcd on :{cport}")
    if not proc.alive():
        raise RuntimeError(f"etcd exited early:\n{proc.log()}")
    return proc


def coord_argv(name: str, data_dir: Path, cport: int, pport: int,
               initial_cluster: str | None = None) -> list[str]:
    return [
        sys.executable, "-m", "scheduler.cli", "coord", "serve",
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client", f"127.0.0.1:{cport}",
        "--listen-peer", f"127.0.0.1:{pport}",
        "--initial-cluster", initial_cluster or f"{name}=127.0.0.1:{pport}",
    ]


def start_coord(group: ProcessGroup, name: str = "n1", data_dir: Path | None = None,
                cport: int | None = None, pport: int | None = None,
                flags: Sequence[str] = ()) -> Proc:
    """Start ``raftcron coord serve`` as a single member (``flags`` added to its command
    line) and wait until it listens."""
    cport = cport or free_port()
    pport = pport or free_port()
    data = data_dir or (group.workdir / f"{name}-data")
    proc = group.spawn(name, [*coord_argv(name, data, cport, pport), *flags], cport,
                       env={"PYTHONPATH": str(REPO)})
    wait_until(lambda: port_open(cport) or not proc.alive(), 30, f"coord on :{cport}")
    if not proc.alive():
        raise RuntimeError(f"coord exited early:\n{proc.log()}")
    return proc


def start_etcd_cluster(group: ProcessGroup, size: int = 3, etcd_bin: str = "etcd",
                       prefix: str = "etcd") -> list[Proc]:
    """Start a fresh ``size``-member real etcd cluster on loopback; wait for a leader."""
    names = [f"{prefix}{i}" for i in range(1, size + 1)]
    cports = {n: free_port() for n in names}
    pports = {n: free_port() for n in names}
    initial = ",".join(f"{n}=http://127.0.0.1:{pports[n]}" for n in names)
    procs = []
    for n in names:
        argv = [
            etcd_bin, "--name", n, "--data-dir", str(group.workdir / f"{n}-data"),
            "--listen-client-urls", f"http://127.0.0.1:{cports[n]}",
            "--advertise-client-urls", f"http://127.0.0.1:{cports[n]}",
            "--listen-peer-urls", f"http://127.0.0.1:{pports[n]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{pports[n]}",
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"tok-{group.workdir.name}",
            "--log-level", "error",
        ]
        procs.append(group.spawn(n, argv, cports[n], env={"ETCDCTL_API": "3"}))
    for p in procs:
        wait_until(lambda p=p: port_open(p.client_port) or not p.alive(), 30,  # type: ignore[misc]
                   f"etcd member {p.name}")
        if not p.alive():
            raise RuntimeError(f"etcd member {p.name} exited early:\n{p.log()}")
    return procs


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (PID 1 here may not reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
