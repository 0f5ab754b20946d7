"""A job never outlives its worker: one small supervisor process per worker process.

How it works:

* The first time a process starts a job, the executor starts ``python -m
  scheduler.supervisor TOKEN GRACE`` (:func:`ensure`), in a session of its own, with a pipe on
  its stdin. Only the worker holds the pipe's write end (close-on-exec, and jobs are started
  with every other descriptor closed), so the supervisor reads end-of-file exactly when the
  worker process is gone — however it ended, ``kill -9`` included — or closed it at exit.
* Every job the worker starts carries ``RAFTCRON_SUPERVISOR=TOKEN`` in its environment
  (a random token per worker process). Children inherit it, so at end-of-file the supervisor
  finds the job's processes by scanning ``/proc/*/environ`` — including one started in the
  instant before the worker died, which no registration message could have announced, and a
  double-forked child that left the job's group with ``setsid``.
* For every process found it signals the process **and its whole process group** (a job is
  the leader of its own group, so a child that cleared its environment is still caught by
  the group): SIGTERM first, then SIGKILL to whatever is left after ``GRACE`` seconds
  (default 0.25 s, so a job that ignores SIGTERM is dead about a quarter second after its
  worker), scanning again until nothing carries the token (a job forking while it is being
  killed is caught on the next pass), at most :data:`REAP_DEADLINE` seconds.
* SIGTERM to the supervisor does the same at once (it then exits); SIGINT and SIGHUP are
  ignored, so a Ctrl-C in the worker's terminal lets the worker stop its jobs itself.
* If the supervisor dies, the executor starts a new one with the same token before the next
  job starts (:func:`ensure` checks at every start).

What it does not cover: a process that both leaves the job's process group and clears its
environment, and a supervisor killed together with its worker (the whole host, or a kill of
the worker's cgroup, which then takes the jobs with it anyway).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time

import structlog

from coord.logsetup import configure

__all__ = ["DEFAULT_GRACE", "REAP_DEADLINE", "TOKEN_ENV", "ensure", "find", "reap"]

TOKEN_ENV = "RAFTCRON_SUPERVISOR"
"""The environment variable that marks a job's processes with its worker's token."""
DEFAULT_GRACE = 0.25
"""Seconds between SIGTERM and SIGKILL when the worker is gone."""
REAP_DEADLINE = 10.0
"""Seconds the supervisor keeps scanning and killing before it gives up and exits."""
POLL = 0.05

log = structlog.get_logger(__name__)


# ------------------------------------------------------------------ the supervisor process


def find(token: str) -> dict[int, int]:
    """pid → process group id of every live process whose environment carries ``token``
    (the supervisor itself, its group and pid 1 excluded)."""
    marker = f"{TOKEN_ENV}={token}".encode()
    me, my_group = os.getpid(), os.getpgrp()
    found: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in (1, me):
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
            if marker not in environ.split(b"\0"):
                continue
            pgid = os.getpgid(pid)
        except (OSError, ValueError):
            continue  # gone, a zombie, or not ours to read
        found[pid] = pgid if pgid not in (0, 1, my_group) else -1
    return found


def _signal_all(found: dict[int, int], sig: signal.Signals) -> None:
    for pgid in set(found.values()):
        if pgid > 1:
            with contextlib.suppress(OSError):
                os.killpg(pgid, sig)
    for pid in found:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def reap(token: str, grace: float = DEFAULT_GRACE,
         deadline: float = REAP_DEADLINE) -> list[int]:
    """SIGTERM every process carrying ``token`` and its group, SIGKILL what is left after
    ``grace`` seconds, until none is left or ``deadline`` seconds have passed. Returns the
    pids found on the first scan."""
    first = find(token)
    if not first:
        return []
    log.warning("supervisor.reaping", pids=sorted(first), groups=sorted(set(first.values())))
    t0 = time.monotonic()
    _signal_all(first, signal.SIGTERM)
    found = first
    while found and time.monotonic() - t0 < grace:
        time.sleep(POLL)
        found = find(token)
    while found and time.monotonic() - t0 < deadline:
        _signal_all(found, signal.SIGKILL)
        time.sleep(POLL)
        found = find(token)
    if found:
        log.error("supervisor.survivors", pids=sorted(found))
    else:
        log.info("supervisor.reaped", pids=len(first), seconds=round(time.monotonic() - t0, 3))
    return sorted(first)


def main(argv: list[str]) -> int:
    """``python -m scheduler.supervisor TOKEN [GRACE]``: wait for end-of-file on stdin (or
    SIGTERM), then :func:`reap` the token's processes."""
    configure()
    token = argv[1]
    grace = float(argv[2]) if len(argv) > 2 else DEFAULT_GRACE
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def watch_pipe() -> None:
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        stop.set()

    threading.Thread(target=watch_pipe, daemon=True, name="pipe").start()
    while not stop.wait(3600):
        pass
    reap(token, grace)
    return 0


# ------------------------------------------------------------------ the worker's side


class _Handle:
    """The supervisor of this process: its token and the pipe it watches."""

    def __init__(self, grace: float) -> None:
        self.token = secrets.token_hex(8)
        self.grace = grace
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()

    def ensure(self) -> str:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                if self.proc is not None:
                    log.warning("supervisor.restart", exit_code=self.proc.returncode)
                env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "scheduler.supervisor", self.token,
                     repr(self.grace)],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env,
                    start_new_session=True)
                log.debug("supervisor.started", pid=self.proc.pid)
            return self.token


_HANDLE: _Handle | None = None
_HANDLE_LOCK = threading.Lock()


def ensure(grace: float = DEFAULT_GRACE) -> str:
    """Start this process's supervisor if none is running; the token jobs must carry.

    Called before every job start (on the executor's spawn threads): a ``poll()`` when the
    supervisor is up. Raises :class:`OSError` if it cannot be started."""
    global _HANDLE  # one per process, made on first use
    with _HANDLE_LOCK:
        if _HANDLE is None:
            _HANDLE = _Handle(grace)
        handle = _HANDLE
    return handle.ensure()


def supervisor_pid() -> int | None:
    """The pid of this process's supervisor, if started (tests and logs)."""
    return _HANDLE.proc.pid if _HANDLE is not None and _HANDLE.proc is not None else None


if __name__ == "__main__":
    sys.exit(main(sys.argv))
