"""Starting and reaping a job's process: the spawn pool, the pidfd exit watch, log files.

The plumbing under :class:`scheduler.executor.JobProcess`: a job is forked and exec'd on a
small thread pool (the kernel work never blocks the event loop), its exit is awaited on a
pidfd, what is left of its process group is SIGKILLed when its main process exits, and its
output goes straight into a 0600 log file whose tail is read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from scheduler import supervisor

__all__ = ["LOG_DIR_MODE", "LOG_FILE_MODE", "SPAWN_THREADS", "ExitWatch", "discard_spawned",
           "inherited", "kill_group", "open_log", "read_tail", "spawn", "spawner"]


class ExitWatch:
    """Resolves ``done`` with the exit status of ``proc`` (Popen's ``returncode``: negative
    for a signal) once it has exited and been reaped.

    On Linux a pidfd becomes readable when the process exits: the event loop watches it,
    so waiting costs no thread (asyncio's default child watcher on 3.11 starts a thread per
    child). Elsewhere, or if pidfds are unavailable, a daemon thread waits instead.
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[int] = self.loop.create_future()
        self.fd: int | None = None
        try:
            self.fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            threading.Thread(target=self._wait_thread, daemon=True,
                             name=f"wait-{proc.pid}").start()
            return
        self.loop.add_reader(self.fd, self._readable)
        self._readable()  # it may have exited already

    def _readable(self) -> None:
        if self.done.done():
            return
        try:
            if os.waitid(os.P_PID, self.proc.pid,
                         os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                return  # still running
            kill_group(self.proc.pid)  # exited, not reaped: the group id is still its own
        except ChildProcessError:
            pass  # reaped already: poll() says how it ended; the group id is not ours now
        code = self.proc.poll()
        if code is not None:
            self.close()
            self.done.set_result(code)

    def _wait_thread(self) -> None:
        try:
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
            kill_group(self.proc.pid)  # exited, not reaped: the group id is still its own
        except ChildProcessError:
            pass
        code = self.proc.wait()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self.loop.call_soon_threadsafe(self._resolve, code)

    def _resolve(self, code: int) -> None:
        if not self.done.done():
            self.done.set_result(code)

    def close(self) -> None:
        if self.fd is not None:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = None


def kill_group(pgid: int) -> None:
    """SIGKILL what is left of the process group of a main process that has exited but
    is not reaped yet: while its zombie exists the group id cannot be reused."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


_SPAWNER: ThreadPoolExecutor | None = None
SPAWN_THREADS = 4
"""Threads that create log files and fork/exec jobs (they wait on the kernel, mostly)."""


def spawner() -> ThreadPoolExecutor:
    global _SPAWNER  # one pool per process, made on first use
    if _SPAWNER is None:
        _SPAWNER = ThreadPoolExecutor(SPAWN_THREADS, thread_name_prefix="raftcron-spawn")
    return _SPAWNER


def spawn(argv: list[str], env: dict[str, str], workdir: str | None,
           log_path: Path | None, account: pwd.struct_passwd | None = None,
           ) -> tuple[subprocess.Popen[bytes], IO[bytes], int]:
    """Open the output file and start the process (runs on the spawn thread pool). A plain
    Popen (vfork + exec, no asyncio transport): the exit is awaited on a pidfd in the event
    loop (see ExitWatch), not by a thread per child. The process carries this worker
    process's supervisor token (started here if needed), so it dies with the worker.
    ``account``: switch to that user, its primary and supplementary groups."""
    env = dict(env)
    env[supervisor.TOKEN_ENV] = supervisor.ensure()
    ids: dict[str, object] = {}
    if account is not None:
        ids = {"user": account.pw_uid, "group": account.pw_gid,
               "extra_groups": os.getgrouplist(account.pw_name, account.pw_gid)}
    out = open_log(log_path) if log_path is not None else tempfile.TemporaryFile()  # noqa: SIM115
    try:
        start_offset = out.seek(0, os.SEEK_END)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,  # type: ignore[call-overload]
                                stderr=subprocess.STDOUT, env=env, cwd=workdir,
                                start_new_session=True, **ids)
    except BaseException:
        out.close()
        raise
    return proc, out, start_offset


def discard_spawned(
        spawn: asyncio.Future[tuple[subprocess.Popen[bytes], IO[bytes], int]]) -> None:
    """Done-callback of a spawn whose start was cancelled: kill the group, close the
    output file and reap the process (on the spawn pool: the loop must not block)."""
    if spawn.cancelled() or spawn.exception() is not None:
        return
    proc, out, _ = spawn.result()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # not reaped yet: the group id is still its own
    out.close()
    spawner().submit(proc.wait)


LOG_FILE_MODE = 0o600
LOG_DIR_MODE = 0o700


def open_log(path: Path) -> IO[bytes]:
    """Open (append) a job's log file, 0600; missing directories (the job's and the log
    root) are created 0700: output may hold secrets. Unbuffered: the job writes to the
    file directly, raftcron only reads the tail back."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, LOG_FILE_MODE)
    except FileNotFoundError:
        for d in (path.parent.parent, path.parent):
            with contextlib.suppress(FileExistsError):
                d.mkdir(mode=LOG_DIR_MODE, parents=True)
                os.chmod(d, LOG_DIR_MODE)  # mkdir's mode is cut by the umask
        fd = os.open(path, flags, LOG_FILE_MODE)
    os.fchmod(fd, LOG_FILE_MODE)  # the umask may have cut it; an old file may be wider
    return open(fd, "a+b", buffering=0)


def inherited(base: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """The variables of ``base`` that ``names`` allows: exact names, or prefixes written
    with a trailing ``*`` (``LC_*``)."""
    exact = {n for n in names if not n.endswith("*")}
    prefixes = tuple(n[:-1] for n in names if n.endswith("*"))
    return {k: v for k, v in base.items()
            if k in exact or (prefixes and k.startswith(prefixes))}


def read_tail(out: IO[bytes], start: int, limit: int) -> tuple[int, bytes]:
    """(bytes written since ``start``, the last ``limit`` of them)."""
    out.flush()
    end = os.fstat(out.fileno()).st_size
    total = max(0, end - start)
    n = min(total, limit)
    if n == 0:
        return total, b""
    return total, os.pread(out.fileno(), n, end - n)
