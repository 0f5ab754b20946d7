"""Run one job attempt as a subprocess, in its own process group.

Invariants:

* The job runs in a new session (``start_new_session``), so its process group id is its pid
  and every signal raftcron sends goes to the **whole group**: grandchildren included.
* A string command runs as ``/bin/sh -c <string>``; a list runs directly (no shell).
* The environment is clean, not the worker's: ``HOME``, ``USER`` and ``LOGNAME`` of the user
  the job runs as (from the password database), then the worker's variables named by the
  job's ``inherit_env`` (names, or prefixes ending in ``*``), then the job's ``env``, then
  ``RAFTCRON_JOB``, ``RAFTCRON_OCCURRENCE``, ``RAFTCRON_RUN_ID``, ``RAFTCRON_FENCING_TOKEN``,
  ``RAFTCRON_ATTEMPT`` and ``RAFTCRON_SUPERVISOR`` (which the job cannot override). stdin
  is ``/dev/null``.
* ``user``: the job runs as that user (its primary group and supplementary groups) when the
  worker runs as root; a worker that is not root refuses a job whose user is not its own.
* The job never outlives the worker process: :mod:`scheduler.supervisor` kills the process
  groups of a dead worker's jobs (the ``RAFTCRON_SUPERVISOR`` mark finds them).
* Log files are created 0600 in directories created 0700.
* stdout and stderr are merged and written by the job straight into the caller's log file
  (appended; an anonymous temporary file when there is none), so no pipe can keep a run
  "open" and raftcron never copies output. When the run ends, the last ``tail_bytes``
  (default 4 KiB) of what this run wrote are read back for the run record.
* ``timeout``: SIGTERM to the group, then SIGKILL after ``kill_grace`` seconds.
  :meth:`JobProcess.kill` SIGKILLs the group at once (deadman, ``replace``, kill requests);
  :meth:`JobProcess.terminate` is the polite SIGTERM-then-SIGKILL form.
* When the job's main process exits, whatever is left of its process group (background
  children) is SIGKILLed, so a finished run leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

import structlog

from coord.aiotools import within
from scheduler.clock import Clock, SystemClock
from scheduler.errors import ExecutorError
from scheduler.spawn import (
    LOG_DIR_MODE,
    LOG_FILE_MODE,
    SPAWN_THREADS,
    inherited,
)
from scheduler.spawn import ExitWatch as _ExitWatch
from scheduler.spawn import discard_spawned as _discard_spawned
from scheduler.spawn import read_tail as _read_tail
from scheduler.spawn import spawn as _spawn
from scheduler.spawn import spawner as _spawner
from scheduler.spec import DEFAULT_INHERIT_ENV

if TYPE_CHECKING:
    from scheduler.spec import JobSpec

# LOG_*_MODE, SPAWN_THREADS and inherited live in scheduler.spawn (the process plumbing);
# they stay importable from here. ``_spawn`` is looked up here at each start, so tests can
# slow it down by patching this module.
__all__ = ["DEFAULT_KILL_GRACE", "DEFAULT_TAIL_BYTES", "LOG_DIR_MODE", "LOG_FILE_MODE",
           "SPAWN_THREADS", "JobProcess", "RunRequest", "RunResult", "inherited", "run_job"]

DEFAULT_TAIL_BYTES = 4096
DEFAULT_KILL_GRACE = 5.0

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RunRequest:
    """Everything needed to start one attempt of one occurrence."""

    job: str
    occurrence: str
    run_id: str
    fencing_token: int
    attempt: int
    command: tuple[str, ...] | str
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    timeout: float | None = None
    inherit_env: tuple[str, ...] = DEFAULT_INHERIT_ENV
    user: str | None = None

    @classmethod
    def from_spec(cls, spec: JobSpec, *, occurrence: str, run_id: str, fencing_token: int,
                  attempt: int = 1) -> RunRequest:
        """The request for one attempt of ``spec``'s occurrence ``occurrence``."""
        return cls(job=spec.name, occurrence=occurrence, run_id=run_id,
                   fencing_token=fencing_token, attempt=attempt, command=spec.command,
                   env=dict(spec.env), workdir=spec.workdir, timeout=spec.timeout,
                   inherit_env=tuple(spec.inherit_env), user=spec.user)

    def argv(self) -> list[str]:
        if isinstance(self.command, str):
            return ["/bin/sh", "-c", self.command]
        return list(self.command)

    def account(self) -> pwd.struct_passwd | None:
        """The password entry the job runs as: ``user`` if set, else the worker's own
        (None if the worker's uid has none). Raises :class:`ExecutorError` for an unknown
        ``user``, or one a worker that is not root cannot switch to."""
        if self.user is None:
            try:
                return pwd.getpwuid(os.geteuid())
            except KeyError:
                return None
        try:
            entry = (pwd.getpwuid(int(self.user)) if self.user.isdigit()
                     else pwd.getpwnam(self.user))
        except KeyError:
            raise ExecutorError(f"job {self.job!r}: user {self.user!r} does not exist on "
                                "this host") from None
        if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
            raise ExecutorError(
                f"job {self.job!r}: user {self.user!r} needs a worker running as root (this "
                f"one runs as uid {os.geteuid()} and cannot switch users)")
        return entry

    def environment(self, base: Mapping[str, str],
                    account: pwd.struct_passwd | None = None) -> dict[str, str]:
        """The job's environment: identity of ``account``, the variables of ``base`` that
        ``inherit_env`` names, the job's ``env``, then raftcron's own."""
        env: dict[str, str] = {}
        if account is not None:
            env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
        env.update(inherited(base, self.inherit_env))
        env.update(self.env)
        env.update({
            "RAFTCRON_JOB": self.job,
            "RAFTCRON_OCCURRENCE": self.occurrence,
            "RAFTCRON_RUN_ID": self.run_id,
            "RAFTCRON_FENCING_TOKEN": str(self.fencing_token),
            "RAFTCRON_ATTEMPT": str(self.attempt),
        })
        return env


@dataclass(frozen=True)
class RunResult:
    """How an attempt ended.

    ``exit_code`` is the main process's exit status, or None when a signal ended it (then
    ``signal`` holds the signal number). ``timed_out`` and ``killed`` say raftcron ended it
    (``kill_reason`` says why). ``output_tail`` is the last ``tail_bytes`` of the merged
    output, decoded as UTF-8 with replacement; ``output_bytes`` counts all of it.
    """

    pid: int
    exit_code: int | None
    signal: int | None
    timed_out: bool
    killed: bool
    kill_reason: str | None
    started_at: datetime
    finished_at: datetime
    duration: float
    output_tail: str
    output_bytes: int
    output_truncated: bool

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.killed


class JobProcess:
    """One running attempt. ``await start()``, then ``await wait()``; ``kill()`` any time."""

    def __init__(self, request: RunRequest, *, log_path: str | Path | None = None,
                 tail_bytes: int = DEFAULT_TAIL_BYTES, kill_grace: float = DEFAULT_KILL_GRACE,
                 clock: Clock | None = None, base_env: Mapping[str, str] | None = None) -> None:
        self.request = request
        self.log_path = Path(log_path) if log_path is not None else None
        self.tail_bytes = tail_bytes
        self.kill_grace = kill_grace
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.base_env: Mapping[str, str] = os.environ if base_env is None else base_env
        self._proc: subprocess.Popen[bytes] | None = None
        self._exit: _ExitWatch | None = None
        self._starting = False
        self._pending_signal: tuple[str, str, float | None] | None = None
        self._task: asyncio.Task[RunResult] | None = None
        self._timed_out = False
        self._kill_reason: str | None = None
        self._terminator: asyncio.Task[None] | None = None
        self._out: IO[bytes] | None = None
        self._start_offset = 0
        self._log = log.bind(job=request.job, occurrence=request.occurrence,
                             run_id=request.run_id, attempt=request.attempt)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def start(self) -> None:
        """Spawn the process; raises :class:`ExecutorError` if it cannot be started.

        Creating the log file and the fork/exec run on a small thread pool, so a burst of
        starts does not stall the event loop (file creation can wait on the filesystem
        journal; the parent waits in vfork until the child has exec'd). A kill or terminate
        requested while the spawn is under way is applied as soon as it returns, and a
        cancelled start kills what it started: no process is ever left untracked.
        """
        if self._proc is not None or self._starting:
            raise ExecutorError("already started")
        self._starting = True
        req = self.request
        try:
            account = req.account()
        except ExecutorError as exc:
            self._log.warning("job.spawn_failed", error=str(exc))
            raise
        argv, env = req.argv(), req.environment(self.base_env, account)
        switch = account if req.user is not None and account is not None \
            and account.pw_uid != os.geteuid() else None
        spawn = asyncio.get_running_loop().run_in_executor(
            _spawner(), _spawn, argv, env, req.workdir, self.log_path, switch)
        try:
            proc, out, start_offset = await asyncio.shield(spawn)
        except asyncio.CancelledError:
            # Whatever the spawn thread starts is killed, its file closed and the process
            # reaped once it returns, by a callback: awaiting it here could be cancelled
            # again and leave the process running untracked.
            spawn.add_done_callback(_discard_spawned)
            raise
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            # ValueError: NUL in an argument (unvalidated)
            self._log.warning("job.spawn_failed", error=str(exc))
            raise ExecutorError(f"cannot start job {req.job!r}: {exc}") from exc
        self._proc = proc
        self._exit = _ExitWatch(proc)
        started_at = self.clock.now()
        t0 = self.clock.monotonic()
        self._log.debug("job.start", pid=proc.pid, argv=argv, workdir=req.workdir,
                       timeout=req.timeout, fencing_token=req.fencing_token)
        self._out, self._start_offset = out, start_offset
        self._task = asyncio.create_task(
            self._supervise(proc, out, start_offset, started_at, t0))
        if self._pending_signal is not None:  # asked for while the spawn was under way
            how, reason, grace = self._pending_signal
            if how == "kill":
                self.kill(reason)
            else:
                self.terminate(reason, grace)

    def current_tail(self) -> str:
        """The last ``tail_bytes`` of output so far (live view of a running attempt)."""
        if self._out is None or self._out.closed:
            return ""
        _, tail = _read_tail(self._out, self._start_offset, self.tail_bytes)
        return tail.decode("utf-8", errors="replace")

    async def wait(self) -> RunResult:
        """Wait for the attempt to end (normally, by timeout or by kill)."""
        if self._task is None:
            raise ExecutorError("not started")
        return await asyncio.shield(self._task)

    def kill(self, reason: str = "killed") -> None:
        """SIGKILL the whole process group now. No-op if not started or already finished;
        during :meth:`start`, done as soon as the process exists."""
        if self._proc is None and self._starting:
            self._pending_signal = ("kill", reason, None)
            return
        if self._proc is None or self._exited:
            return
        if self._kill_reason is None:
            self._kill_reason = reason
        self._log.info("job.kill", pid=self._proc.pid, reason=reason)
        self._signal_group(signal.SIGKILL)

    def terminate(self, reason: str = "terminated", grace: float | None = None) -> None:
        """SIGTERM the group, SIGKILL it after ``grace`` (default ``kill_grace``) seconds."""
        if self._proc is None and self._starting:
            if self._pending_signal is None:
                self._pending_signal = ("terminate", reason, grace)
            return
        if self._proc is None or self._exited:
            return
        if self._kill_reason is None:
            self._kill_reason = reason
        self._log.info("job.terminate", pid=self._proc.pid, reason=reason)
        if self._terminator is None:
            self._terminator = asyncio.create_task(
                self._term_then_kill(self.kill_grace if grace is None else grace))

    # ------------------------------------------------------------------ internals

    @property
    def _exited(self) -> bool:
        """The main process has exited and may be reaped: its pid (the group id) is no
        longer ours to signal (the exit watch killed the group while it still was)."""
        return self._exit is not None and self._exit.done.done()

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._proc is None or self._exited:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def _term_then_kill(self, grace: float) -> None:
        assert self._proc is not None
        assert self._exit is not None
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await within(asyncio.shield(self._exit.done), grace)
        self._signal_group(signal.SIGKILL)

    async def _supervise(self, proc: subprocess.Popen[bytes], out: IO[bytes],
                         start_offset: int, started_at: datetime, t0: float) -> RunResult:
        assert self._exit is not None
        exit_watch = self._exit
        try:
            timeout = self.request.timeout
            waiter = exit_watch.done
            if timeout is not None:
                with contextlib.suppress(TimeoutError):
                    await within(asyncio.shield(waiter), timeout)
            if timeout is not None and not waiter.done():
                self._timed_out = True
                self._log.warning("job.timeout", pid=proc.pid, timeout=timeout)
                if self._terminator is None:
                    self._terminator = asyncio.create_task(self._term_then_kill(self.kill_grace))
            # Leftovers of the group (background children) die with the run: the exit
            # watch SIGKILLs the group before it reaps the main process.
            returncode = await waiter
            if self._terminator is not None:
                self._terminator.cancel()
            total, tail = _read_tail(out, start_offset, self.tail_bytes)
        finally:
            exit_watch.close()
            out.close()
        duration = self.clock.monotonic() - t0
        result = RunResult(
            pid=proc.pid,
            exit_code=returncode if returncode >= 0 else None,
            signal=-returncode if returncode < 0 else None,
            timed_out=self._timed_out,
            killed=self._kill_reason is not None,
            kill_reason=self._kill_reason,
            started_at=started_at,
            finished_at=self.clock.now(),
            duration=duration,
            output_tail=tail.decode("utf-8", errors="replace"),
            output_bytes=total,
            output_truncated=total > len(tail),
        )
        self._log.debug("job.end", pid=proc.pid, exit_code=result.exit_code,
                       signal=result.signal, timed_out=result.timed_out, killed=result.killed,
                       kill_reason=result.kill_reason, duration=round(duration, 3),
                       output_bytes=result.output_bytes)
        return result




async def run_job(request: RunRequest, *, log_path: str | Path | None = None,
                  tail_bytes: int = DEFAULT_TAIL_BYTES, kill_grace: float = DEFAULT_KILL_GRACE,
                  clock: Clock | None = None,
                  base_env: Mapping[str, str] | None = None) -> RunResult:
    """Start ``request`` and wait for it; raises :class:`ExecutorError` if it can't start."""
    proc = JobProcess(request, log_path=log_path, tail_bytes=tail_bytes, kill_grace=kill_grace,
                      clock=clock, base_env=base_env)
    await proc.start()
    return await proc.wait()
