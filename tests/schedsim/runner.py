"""One simulated run: production workers over the simulated store, with faults.

Each worker is the production :class:`scheduler.worker.Worker` — every part, every task —
given a :class:`~tests.schedsim.procs.SimClock` (``WorkerConfig.clock``, skewed) and a
channel into :class:`~tests.schedsim.store.SimStore` (``WorkerConfig.channels``). The one
thing swapped without a configuration seam is the job process: while a run is active,
``scheduler.worker.running.JobProcess`` is :class:`~tests.schedsim.procs.SimProcess`.

Everything runs on one asyncio loop in simulated time (:mod:`tests.schedsim.vtime`), so a
seed replays exactly — given the same ``PYTHONHASHSEED`` (``sweep`` pins it), since
iteration over sets of names follows string hashes.

A crash cancels every task the incarnation created (tracked through a context variable
that each task inherits), makes its store calls hang forever and hands its processes to
the supervisor model; the lease it held expires on the store after its TTL, as in life.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import random
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

import scheduler.worker.running as running_mod
from coord.client import Client, ClientError
from scheduler import keys, suspension
from scheduler.plan import MANUAL_SUFFIX, occurrence_id
from scheduler.worker import Worker, WorkerConfig
from tests.schedsim.bugs import injected
from tests.schedsim.operators import Applied, apply_file, canonical
from tests.schedsim.options import Fault, Options, draw
from tests.schedsim.procs import Incarnation, ProcEvent, SimClock, SimProcess
from tests.schedsim.store import Commit, SimStore, Slow
from tests.schedsim.vtime import VirtualClock, new_loop, virtual_time

_owner: contextvars.ContextVar[str | None] = contextvars.ContextVar("schedsim_owner",
                                                                   default=None)


@dataclass
class Window:
    """A fault or an operator's request as it happened: [start, end) in simulated seconds.
    ``worker``: the worker it hit ("" = all), or for a request (``suspend`` — then
    ``suspended`` once acknowledged —, ``resuming`` from the first resume sent to the one
    answered, ``trigger``, ``kill``) the job."""

    kind: str
    worker: str
    start: float
    end: float


@dataclass
class History:
    """What a run recorded, for the checkers."""

    options: Options
    procs: list[ProcEvent]
    commits: list[Commit]
    windows: list[Window]
    end: float
    starts_by_worker: dict[str, int] = field(default_factory=dict)
    applies: list[Applied] = field(default_factory=list)


class World:
    def __init__(self, options: Options, bugs: frozenset[str] = frozenset()) -> None:
        self.o = options
        self.bugs = bugs
        self.clock = VirtualClock()
        self.store = SimStore(self.clock, random.Random(options.seed * 7919 + 1))
        self.procs: list[ProcEvent] = []
        self.windows: list[Window] = []
        self.current: dict[str, Incarnation] = {}
        self.lives: dict[str, int] = {}
        self.stops: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, set[asyncio.Task[Any]]] = {}
        self.requests: set[asyncio.Task[None]] = set()
        self.suspending: set[str] = set()
        self.applies: list[Applied] = []

    # ------------------------------------------------------------------ tasks
    def task_factory(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                     context: contextvars.Context | None = None) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, context=context)
        owner = (context.get(_owner) if context is not None else _owner.get())
        if owner is not None:
            if owner in self.store.dead:
                task.cancel()  # a dead incarnation runs nothing more
            else:
                self.tasks.setdefault(owner, set()).add(task)
                task.add_done_callback(self.tasks[owner].discard)
        return task

    # ------------------------------------------------------------------ workers
    def start_worker(self, name: str) -> None:
        n = self.lives[name] = self.lives.get(name, 0) + 1
        inc = Incarnation(name, n, self.procs)
        if "skip_deadman" in self.bugs:
            inc.skip_kill_prefix = "deadman"
        self.current[name] = inc
        config = WorkerConfig(
            name=name, endpoints=["sim:2379"], session_ttl=self.o.session_ttl,
            clock=SimClock(self.clock, self.o.skew[name], inc), host=name,
            log_dir=Path("/nonexistent/schedsim"), stop_timeout=5.0, sweep_interval=5.0,
            compact_retention=20.0, channels=self.store.channels(inc.tag))
        stop = self.stops[name] = asyncio.Event()
        token = _owner.set(inc.tag)
        try:
            worker = Worker(config)
            asyncio.get_running_loop().create_task(worker.run(stop), name=f"worker:{inc.tag}")
        finally:
            _owner.reset(token)

    def crash(self, name: str) -> None:
        inc = self.current[name]
        inc.alive = False
        self.store.dead.add(inc.tag)
        for p in inc.procs:
            p.supervise()
        for t in list(self.tasks.get(inc.tag, ())):
            t.cancel()
        self.store.notify()

    # ------------------------------------------------------------------ the run
    async def operator(self, f: Fault) -> None:
        """An operator's request through its own client (``raftcron jobs ...``): suspend
        and resume with :mod:`scheduler.suspension`; trigger and kill write the request keys
        as :mod:`scheduler.admin` does, with simulated instants (admin reads the real clock)."""
        client = Client(["sim:2379"], timeout=5.0, channels=self.store.channels("operator"))
        now = self.clock.now
        try:
            if f.kind == "suspend":
                if f.job in self.suspending:
                    return  # one operator at a time: a second resume would end the first
                self.suspending.add(f.job)
                self.windows.append(Window("suspend", f.job, now, float("inf")))
                window = self.windows[-1]
                with contextlib.suppress(ClientError):  # unanswered: it may have landed
                    if await suspension.suspend(client, f.job, "schedsim"):
                        window.kind = "suspended"
                        window.start = self.clock.now  # acknowledged: workers must see it
                await asyncio.sleep(f.length)
                window.end = self.clock.now  # from here a resume may land
                while True:  # the operator retries until the store answers
                    try:
                        await suspension.resume(client, f.job)
                        break
                    except ClientError:
                        await asyncio.sleep(1.0)
                self.windows.append(Window("resuming", f.job, window.end, self.clock.now))
                self.suspending.discard(f.job)
            elif f.kind == "trigger":
                at = datetime.fromtimestamp(self.clock.wall(), UTC)
                occ = f"{occurrence_id(at)}{MANUAL_SUFFIX}-{f.at:.0f}"
                grant = await client.grant(60)
                await client.put(keys.trigger_key(f.job, occ), json.dumps({"at": now}),
                                 lease=grant.id)
                self.windows.append(Window("trigger", f.job, now, now))
            elif f.kind == "kill":
                grant = await client.grant(10)
                await client.put(keys.killer_key(f.job),
                                 json.dumps({"occurrence": None, "reason": "schedsim"}),
                                 lease=grant.id)
                self.windows.append(Window("kill", f.job, now, now))
        except ClientError:
            pass  # the store was out: the request may or may not have landed
        finally:
            await client.close()

    async def faults(self) -> None:
        loop = asyncio.get_running_loop()
        for f in self.o.faults:
            await asyncio.sleep(max(f.at - self.clock.now, 0.0))
            now = self.clock.now
            if f.kind in ("suspend", "trigger", "kill"):
                self.requests.add(loop.create_task(self.operator(f)))
            elif f.kind == "apply":
                self.requests.add(loop.create_task(apply_file(self, f)))
            elif f.kind == "slow":
                self.store.slow.setdefault(self.current[f.worker].tag, []).append(
                    Slow(now, now + f.length, f.delay_in, f.delay_out, f.scope))
                # Its effects last until the last delayed call has landed and answered.
                self.windows.append(Window("slow", f.worker, now,
                                           now + f.length + f.delay_in + f.delay_out))
            elif f.kind == "crash":
                self.crash(f.worker)
                self.windows.append(Window("crash", f.worker, now, now + f.length))
                loop.call_later(f.length, self.start_worker, f.worker)
            elif f.kind == "cut":
                tag = self.current[f.worker].tag
                self.store.cut[tag] = now + f.length
                self.windows.append(Window("cut", f.worker, now, now + f.length))
            elif f.kind == "outage":
                self.store.down_until = max(self.store.down_until, now + f.length)
                self.windows.append(Window("outage", "", now, now + f.length))
            elif f.kind == "compact":
                self.store.compact_now()
                self.windows.append(Window("compact", "", now, now))
            self.store.notify()

    async def ticks(self) -> None:
        while True:
            self.store.tick()
            await asyncio.sleep(0.05)

    async def main(self) -> None:
        for job in self.o.jobs:
            # With operators applying files, the jobs are stored as apply stores them.
            spec = canonical(job) if self.o.files else job.spec_json()
            self.store.applier.store.put_commit(keys.job_key(job.name).encode(),
                                                spec.encode(), 0)
        for job in self.o.files[0] if self.o.files else []:
            self.store.applier.store.put_commit(keys.job_key(job.name).encode(),
                                                canonical(job).encode(), 0)
        ticker = asyncio.get_running_loop().create_task(self.ticks())
        for name in self.o.workers:
            self.start_worker(name)
        await self.faults()
        await asyncio.sleep(max(self.o.duration + self.o.settle - self.clock.now, 0.0))
        ticker.cancel()


    async def teardown(self) -> None:
        """The end: every worker stops dead, every task left is cancelled."""
        for name in list(self.current):
            self.crash(name)
        me = asyncio.current_task()
        for _ in range(3):
            pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
            if not pending:
                return
            for t in pending:
                t.cancel()
            await asyncio.wait(pending, timeout=1.0)


def _quiet() -> dict[str, Any]:
    """Silence the workers' logs (``SCHEDSIM_LOG=warning`` etc. keeps that level and up)."""
    saved = structlog.get_config()
    level = os.environ.get("SCHEDSIM_LOG", "critical").upper()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(
        logging.getLevelName(level)), cache_logger_on_first_use=False)
    return saved


@contextlib.contextmanager
def patched_worker() -> Iterator[None]:
    saved = running_mod.__dict__["JobProcess"]
    setattr(running_mod, "JobProcess", SimProcess)  # noqa: B010 - not exported, patched
    try:
        yield
    finally:
        setattr(running_mod, "JobProcess", saved)  # noqa: B010


def run(options: Options, bugs: frozenset[str] = frozenset()) -> History:
    """Run one simulation; returns its history (the checkers judge it)."""
    world = World(options, bugs)
    loop = new_loop(world.clock)
    loop.set_task_factory(world.task_factory)  # type: ignore[arg-type]
    saved = _quiet()
    try:
        with virtual_time(world.clock), patched_worker(), injected(bugs):
            loop.run_until_complete(world.main())
            end = world.clock.now
            loop.run_until_complete(world.teardown())
    finally:
        structlog.configure(**saved)
        loop.close()
    return History(options, world.procs, world.store.commits, world.windows, end,
                   applies=world.applies)


def run_seed(seed: int, bugs: frozenset[str] = frozenset(), extras: bool = True) -> History:
    return run(draw(seed, extras), bugs)
