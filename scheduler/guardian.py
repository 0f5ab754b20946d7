"""A job never outlives its worker: the guardian process.

Jobs run in sessions of their own (so that a signal reaches a job's whole process group),
which also means nothing kills them when the worker dies: after ``kill -9`` of a worker,
its jobs kept running, the run was marked lost, and the next occurrence of a ``forbid`` job
started elsewhere while the orphan still ran (Dkron #1569). ``PR_SET_PDEATHSIG`` would reach
only the job's first process, not its children.

So each worker process starts one small guardian: a separate Python process, in its own
session, whose stdin is a pipe from the worker. The worker writes ``+PGID`` when it spawns a
job and ``-PGID`` once the job's group is dead (before the job's main process is reaped, so
the id cannot have been reused). When the worker exits — normally, by a crash, or by
``kill -9`` — the kernel closes the pipe; the guardian reads EOF, SIGKILLs every process
group still registered, and exits. It runs with ``-I -S`` and imports only ``os``, so it
starts in a few milliseconds and holds a few MB.

If the guardian itself dies (someone killed it), the next write fails: a new guardian is
started and every live group registered with it again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import structlog

log = structlog.get_logger(__name__)

GUARDIAN_CODE = """
import os, signal
groups, buf = set(), b""
while True:
    try:
        chunk = os.read(0, 65536)
    except InterruptedError:
        continue
    if not chunk:
        break
    buf += chunk
    *lines, buf = buf.split(b"\\n")
    for line in lines:
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""


class Guardian:
    """The worker side: register and release job process groups (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._live: set[int] = set()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def watch(self, pgid: int) -> None:
        """Kill group ``pgid`` if this process dies before :meth:`release` is called."""
        with self._lock:
            self._live.add(pgid)
            self._send(f"+{pgid}\n".encode())

    def release(self, pgid: int) -> None:
        """The group is dead (its leader exited and is not yet reaped): forget it."""
        with self._lock:
            if pgid in self._live:
                self._live.discard(pgid)
                self._send(f"-{pgid}\n".encode())

    def _send(self, line: bytes) -> None:
        for _ in range(2):
            if self._proc is None or self._proc.poll() is not None:
                self._start()
                if line.startswith(b"-"):
                    return  # a new guardian was given the live set only
            assert self._proc is not None and self._proc.stdin is not None
            try:
                os.write(self._proc.stdin.fileno(), line)
                return
            except OSError as err:  # the guardian died: start another
                log.error("guardian.lost", pid=self._proc.pid, error=str(err))
                self._proc = None
        log.error("guardian.unavailable", hint="jobs may outlive this worker if it dies")

    def _start(self) -> None:
        if self._proc is not None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            self._proc.wait()
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", GUARDIAN_CODE], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        assert self._proc.stdin is not None
        if self._live:
            os.write(self._proc.stdin.fileno(),
                     b"".join(f"+{g}\n".encode() for g in sorted(self._live)))
        log.info("guardian.started", pid=self._proc.pid, watching=len(self._live))


_GUARDIAN = Guardian()


def guardian() -> Guardian:
    """This process's guardian (started on the first job)."""
    return _GUARDIAN
