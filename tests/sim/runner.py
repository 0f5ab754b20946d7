"""One simulation run: a seed (or explicit options) in, a verdict out.

Phases:

1. *Safety* (``safety_ms`` of virtual time): clients run their workload while the nemesis
   crashes nodes, partitions the network and changes membership; the network loses,
   duplicates and reorders; crash points fire inside the Ready driver. Invariants are
   checked at every state change (see :mod:`tests.sim.invariants`).
2. *Liveness* (at most ``liveness_ms``): faults stop, the network heals and calms, every
   crashed node restarts; within the bound a leader (a voter of its own configuration)
   must commit and apply a new probe entry — and its log must hold every acknowledged write.
3. *History*: the client history is checked with both linearizability checkers.

Any exception, core or simulator, fails the run with its traceback. Re-running the same
options with ``trace=True`` gives the same run, with a line per transition.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field

from tests.helpers.history import Op, format_history
from tests.helpers.linearizability import check_revisions, check_wgl
from tests.sim.cluster import Call, Cluster
from tests.sim.eventloop import EventLoop
from tests.sim.invariants import Violation
from tests.sim.kv import INITIAL_REVISION, Request
from tests.sim.nemesis import Nemesis
from tests.sim.options import SimOptions, draw_options
from tests.sim.workload import PROBE_CLIENT, Workload

WGL_BUDGET = 100_000


@dataclass
class SimResult:
    options: SimOptions
    ok: bool
    failure: str = ""
    stats: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    history: list[Op] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    virtual_ms: int = 0

    @property
    def seed(self) -> int:
        return self.options.seed

    def replay_command(self) -> str:
        extra = ""
        if self.options.bugs or self.options.sim_bugs:
            bugs = ",".join(sorted(self.options.bugs | self.options.sim_bugs))
            extra = f" SIM_BUGS={bugs}"
        return (
            f"SIM_SEED={self.seed}{extra} PYTHONHASHSEED=0 "
            ".venv/bin/pytest -q tests/sim/test_sim.py"
        )

    def summary(self) -> str:
        lines = [
            f"seed {self.seed}: {'ok' if self.ok else 'FAILED'}"
            + (f" — {self.failure.splitlines()[0]}" if self.failure else ""),
            f"  options: {self.options.describe()}",
        ]
        if not self.ok:
            lines.append(f"  replay:  {self.replay_command()}")
        return "\n".join(lines)

    def report(self, trace_lines: int = 400) -> str:
        out = [self.summary(), "failure:", self.failure, "nodes at the end:", *self.nodes]
        out.append("stats: " + " ".join(f"{k}={v}" for k, v in sorted(self.stats.items())))
        out.extend(self.notes)
        if self.trace:
            shown = self.trace[-trace_lines:] if trace_lines else self.trace
            out.append(f"trace (last {len(shown)} of {len(self.trace)} lines):")
            out.extend(shown)
        if self.history and not self.ok and "linearizab" in self.failure:
            out.append("history:")
            out.append(format_history(self.history))
        return "\n".join(out)


def run_seed(
    seed: int,
    *,
    bugs: frozenset[str] = frozenset(),
    sim_bugs: frozenset[str] = frozenset(),
    trace: bool = False,
) -> SimResult:
    return run(draw_options(seed).with_bugs(bugs, sim_bugs), trace=trace)


def run(opts: SimOptions, *, trace: bool = False) -> SimResult:
    t0 = time.perf_counter()
    loop = EventLoop(trace=trace)
    res = SimResult(options=opts, ok=True)
    cluster: Cluster | None = None
    wl: Workload | None = None
    nem: Nemesis | None = None
    try:
        cluster = Cluster(opts, loop)
        wl = Workload(cluster)
        nem = Nemesis(cluster, wl.new_request_id)
        wl.start()
        nem.start()
        loop.run_until(opts.safety_ms)
        _liveness(cluster, wl, nem, res)
        if res.ok:
            _check_history(wl, res)
    except Violation as v:
        res.ok = False
        res.failure = f"invariant violated at t={loop.now}ms: {v}"
    except Exception:  # noqa: BLE001 - any crash of the core or the simulator fails the seed
        res.ok = False
        res.failure = f"exception at t={loop.now}ms:\n{traceback.format_exc()}"
    res.elapsed = time.perf_counter() - t0
    res.virtual_ms = loop.now
    res.trace = loop.trace.lines
    res.stats["events"] = loop.events_run
    if cluster is not None:
        res.stats.update(cluster.stats)
        res.stats.update({f"net_{k}": v for k, v in vars(cluster.net.stats).items()})
        res.stats["invariant_checks"] = cluster.inv.checks
        disks = [n.disk.stats for n in cluster.nodes.values()]
        res.stats["wal_cuts"] = sum(d.cuts for d in disks)
        res.stats["wal_segments_released"] = sum(d.segments_released for d in disks)
        res.nodes = cluster.describe_nodes()
    if wl is not None:
        res.stats.update({f"ops_{k}": v for k, v in wl.stats.items()})
        res.history = wl.history.history()
    if nem is not None:
        res.stats.update(nem.stats)
    return res


def _liveness(cluster: Cluster, wl: Workload, nem: Nemesis, res: SimResult) -> None:
    loop = cluster.loop
    opts = cluster.opts
    nem.stop()
    wl.stop()
    cluster.calm = True
    cluster.net.heal()
    cluster.net.calm()
    cluster.trace.log("LIVENESS: heal, calm, restart all")
    for nid in cluster.ids:
        n = cluster.nodes[nid]
        if n.created and not n.up:
            cluster.restart(nid)
    start = loop.now
    proposed: set[tuple[int, int]] = set()
    probe_node: list[int] = []

    def probe() -> None:
        if wl.probe_applied_at is not None:
            return
        for n in sorted(cluster.leaders(), key=lambda n: n.id):
            if n.id in n.conf_state.voters and (n.id, n.hs.term) not in proposed:
                call = Call(PROBE_CLIENT, n.id, Request(wl.new_request_id(), "noop"))
                if cluster.propose(n.id, call):
                    proposed.add((n.id, n.hs.term))
                    probe_node.append(n.id)
                    cluster.trace.log(f"LIVENESS: probe proposed at n{n.id} term {n.hs.term}")
        loop.after(20, probe)

    loop.after(0, probe)
    loop.run_until(start + opts.liveness_ms, stop=lambda: wl.probe_applied_at is not None)
    if wl.probe_applied_at is None:
        res.ok = False
        res.failure = (
            f"liveness: no leader committed a new entry within {opts.liveness_ms}ms "
            "after healing and restarting everything"
        )
        return
    res.stats["liveness_ms"] = loop.now - start
    # The final leader: the leader of the highest term at the end. The node that proposed
    # the probe and applied it first may have lost its leadership since (the probe then
    # committed in a later term) and, applying during a write, may not hold the newest
    # committed entries yet; it is checked only while it still leads.
    leaders = sorted(cluster.leaders(), key=lambda n: n.hs.term)
    proposer = wl.probe_applied_by if wl.probe_applied_by else probe_node[-1]
    checked = [leaders[-1].id] if leaders else [proposer]
    if proposer not in checked and any(n.id == proposer for n in leaders):
        checked.append(proposer)
    for leader in checked:
        cluster.inv.check_complete(leader, "final leader")
        cluster.inv.check_acked_in(leader)


def _check_history(wl: Workload, res: SimResult) -> None:
    ops = wl.history.history()
    rev = check_revisions(ops, initial_revision=INITIAL_REVISION)
    if rev.ok is False:
        res.ok = False
        res.failure = "not linearizable (revision check):\n" + "\n".join(rev.violations)
        return
    wgl = check_wgl(ops, max_steps=WGL_BUDGET)
    if wgl.ok is False:
        res.ok = False
        res.failure = "not linearizable (WGL):\n" + "\n".join(wgl.violations)
        return
    if wgl.ok is None:
        res.notes.extend(wgl.notes)
        res.stats["wgl_inconclusive"] = 1
