"""Simulated job processes and per-worker clocks.

A job's command is ``"sim LOW HIGH FAIL"``: the process "runs" ``uniform(LOW, HIGH)``
simulated seconds and exits 1 in ``FAIL`` percent of runs. :class:`SimProcess` stands in
for :class:`scheduler.executor.JobProcess` (the runner puts it where the worker's running
part looks the class up, see
:func:`tests.schedsim.runner.patched_worker`). ``kill`` ends it at once; once its worker
has crashed, the supervisor (``scheduler.supervisor``) ends it ``SUPERVISOR_GRACE`` later
— a kill call from the dead worker's own code does nothing, as a dead process cannot act.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler.executor import RunRequest, RunResult
from tests.schedsim.vtime import EPOCH, VirtualClock

SUPERVISOR_GRACE = 0.25
"""Seconds after its worker dies that the supervisor has killed a job (SIGTERM, SIGKILL)."""

_pids = itertools.count(1000)


class SimClock:
    """One worker's clock: the virtual clock plus a constant skew on wall time."""

    def __init__(self, base: VirtualClock, skew: float, owner: Incarnation) -> None:
        self.base = base
        self.skew = skew
        self.owner = owner

    def now(self) -> datetime:
        return datetime.fromtimestamp(EPOCH + self.base.now + self.skew, UTC)

    def monotonic(self) -> float:
        return self.base.now


@dataclass
class ProcEvent:
    at: float
    kind: str
    """``start`` or ``end``."""
    job: str
    occurrence: str
    worker: str
    incarnation: int
    token: int
    pid: int
    note: str = ""


@dataclass
class Incarnation:
    """One life of a named worker (a restart is a new incarnation)."""

    name: str
    number: int
    log: list[ProcEvent]
    alive: bool = True
    procs: list[SimProcess] = field(default_factory=list)
    skip_kill_prefix: str | None = None
    """Bug injection: kills whose reason starts with this are ignored."""

    @property
    def tag(self) -> str:
        return f"{self.name}#{self.number}"


class SimProcess:
    def __init__(self, request: RunRequest, *, log_path: str | Path | None = None,
                 clock: Any = None, base_env: Any = None, **_kw: Any) -> None:
        assert isinstance(clock, SimClock), "a simulated worker's clock"
        self.request = request
        self.clock = clock
        self.owner = clock.owner
        self.pid: int | None = None
        self._done: asyncio.Future[RunResult] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.started = 0.0
        # "sim LOW HIGH FAIL%": a duration and an exit code drawn from the run itself, so
        # every worker (and every replay) draws the same for the same attempt.
        _, low, high, fail = str(request.command).split()
        rng = random.Random(f"{request.job}|{request.occurrence}|{request.attempt}")
        self.duration = rng.uniform(float(low), float(high))
        self.exit_code = 1 if rng.uniform(0, 100) < float(fail) else 0

    @property
    def done(self) -> bool:
        return self._done is not None and self._done.done()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.pid = next(_pids)
        self.started = self.clock.base.now
        self._done = loop.create_future()
        self.owner.procs.append(self)
        self._event("start")
        limit = self.request.timeout
        if limit is not None and limit < self.duration:
            self._timer = loop.call_later(limit, self._end, None, True, True, "timeout")
        else:
            self._timer = loop.call_later(self.duration, self._end, self.exit_code, False,
                                          False, None)

    def _event(self, kind: str, note: str = "") -> None:
        r = self.request
        self.owner.log.append(ProcEvent(self.clock.base.now, kind, r.job, r.occurrence,
                                        self.owner.name, self.owner.number, r.fencing_token,
                                        self.pid or 0, note))

    def _end(self, code: int | None, timed_out: bool, killed: bool,
             reason: str | None) -> None:
        if self._done is None or self._done.done():
            return
        if self._timer is not None:
            self._timer.cancel()
        self._event("end", reason or f"exit {code}")
        now = self.clock.base.now
        t0 = datetime.fromtimestamp(EPOCH + self.started, UTC)
        self._done.set_result(RunResult(
            pid=self.pid or 0, exit_code=code, signal=None if code is not None else 9,
            timed_out=timed_out, killed=killed, kill_reason=reason, started_at=t0,
            finished_at=t0 + timedelta(seconds=now - self.started),
            duration=now - self.started, output_tail="", output_bytes=0,
            output_truncated=False))

    async def wait(self) -> RunResult:
        assert self._done is not None
        return await asyncio.shield(self._done)

    def current_tail(self) -> str:
        return ""

    def kill(self, reason: str = "killed") -> None:
        if not self.owner.alive:
            return  # a dead worker runs no code; the supervisor does (see supervise)
        prefix = self.owner.skip_kill_prefix
        if prefix is not None and reason.startswith(prefix):
            return
        self._end(None, False, True, reason)

    def terminate(self, reason: str = "terminated", grace: float | None = None) -> None:
        self.kill(reason)

    def supervise(self) -> None:
        """The worker died: the supervisor kills the job a moment later."""
        if self._done is not None and not self._done.done():
            asyncio.get_running_loop().call_later(SUPERVISOR_GRACE, self._end, None, False,
                                                  True, "supervisor: worker died")
