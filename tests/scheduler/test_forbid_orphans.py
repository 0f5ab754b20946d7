"""Issue 13's acceptance scenario for promise 7: ``kill -9`` of the agent running a long
``forbid`` job never lets a second run of that job start while a process of the first one
is alive (Dkron #1569), and a later occurrence does run on another agent.

Three real ``raftcron agent`` processes on loopback form the cluster. The job is a shell
that forks ``sleep 30`` and waits for it. Every run first checks, from inside the job, that
no process recorded by an earlier run is still alive (``overlaps`` records it if one is),
then records its own pids: the check is made at the instant the second run starts, so it
cannot miss an overlap the way a test polling from outside could.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from coord.client import Client, ClientError
from scheduler.admin import history, locks
from tests.helpers.procs import REPO, Proc, ProcessGroup, free_port, pid_alive, wait_until

SESSION_TTL = 5

RUN_SH = """\
d="$1"
for f in "$d"/*.pids; do
  [ -e "$f" ] || continue
  for p in $(cat "$f"); do
    if [ -r "/proc/$p/stat" ] && ! grep -q ') [ZX] ' "/proc/$p/stat"; then
      echo "$RAFTCRON_OCCURRENCE found $p of $f alive" >> "$d/overlaps"
    fi
  done
done
sleep 30 &
echo "$$ $!" > "$d/$RAFTCRON_OCCURRENCE.tmp" && mv "$d/$RAFTCRON_OCCURRENCE.tmp" \\
  "$d/$RAFTCRON_OCCURRENCE.pids"
wait
"""


alive = pid_alive


def query(endpoints: list[str], fn: Any) -> Any:
    async def body() -> Any:
        async with Client(endpoints, timeout=3) as c:
            return await fn(c)
    try:
        return asyncio.run(body())
    except ClientError:
        return None


def test_forbid_job_never_overlaps_its_killed_agents_orphan(procs: ProcessGroup) -> None:
    work = procs.workdir
    runs = work / "runs"
    runs.mkdir()
    script = work / "run.sh"
    script.write_text(RUN_SH)
    jobs = work / "jobs.yaml"
    jobs.write_text("jobs:\n  - name: long\n    schedule: '@every 5s'\n"
                    f"    command: [sh, {script}, {runs}]\n    concurrency: forbid\n"
                    "    starting_deadline: 3s\n")
    names = ["a1", "a2", "a3"]
    cports = {n: free_port() for n in names}
    pports = {n: free_port() for n in names}
    initial = ",".join(f"{n}=127.0.0.1:{pports[n]}" for n in names)
    endpoints = [f"127.0.0.1:{cports[n]}" for n in names]
    agents: dict[str, Proc] = {}
    for n in names:
        agents[n] = procs.spawn(n, [
            sys.executable, "-m", "scheduler.cli", "agent", "--name", n,
            "--data-dir", str(work / f"{n}-data"), "--listen-client", f"127.0.0.1:{cports[n]}",
            "--listen-peer", f"127.0.0.1:{pports[n]}", "--initial-cluster", initial,
            "--session-ttl", str(SESSION_TTL), "--log-dir", str(work / "logs" / n)],
            cports[n], env={"PYTHONPATH": str(REPO)})

    def logs() -> str:
        return "\n".join(f"--- {n}\n{p.log()[-3000:]}" for n, p in agents.items())

    # apply once the cluster answers (an apply is compare-and-set: retried until it lands)
    def applied() -> bool:
        r = subprocess.run([sys.executable, "-m", "scheduler.cli", "apply", "-f", str(jobs),
                            "--endpoints", ",".join(endpoints)],
                           env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                           timeout=30, check=False)
        return r.returncode == 0
    wait_until(applied, 60, "the job file to be applied\n" + logs(), step=1.0)

    # the first run: who holds the lock, and its processes
    def holder() -> dict[str, Any] | None:
        rows = query(endpoints, locks) or []
        return next((r for r in rows if r.get("job") == "long"), None)

    def first_pids() -> Path | None:
        return next(iter(sorted(runs.glob("*.pids"))), None)
    wait_until(lambda: first_pids() is not None and holder() is not None, 60,
               "the first run to start\n" + logs(), step=0.2)
    first = first_pids()
    assert first is not None
    lock = holder()
    assert lock is not None and lock["occurrence"] == first.name.removesuffix(".pids"), lock
    victim = lock["worker"]
    assert agents[victim].popen.pid == lock["pid"]
    pids = [int(x) for x in first.read_text().split()]
    assert len(pids) == 2 and all(alive(p) for p in pids)

    # kill -9 the agent holding the lock (its pid only, as a user would)
    t0 = time.monotonic()
    os.kill(agents[victim].popen.pid, signal.SIGKILL)
    agents[victim].popen.wait(timeout=10)
    died: list[float] = []

    def watch_orphans() -> None:  # when the first run's last process died
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not any(alive(p) for p in pids), 60, "the orphans to die")
            died.append(time.monotonic() - t0)
    watcher = threading.Thread(target=watch_orphans, daemon=True)
    watcher.start()

    # a later occurrence runs on another agent; no run started while the first was alive
    def later() -> list[Path]:
        return [p for p in runs.glob("*.pids") if p != first]
    wait_until(lambda: bool(later()), 30 + 2 * SESSION_TTL,
               "a later occurrence to run elsewhere\n" + logs(), step=0.2)
    assert not (runs / "overlaps").exists(), (runs / "overlaps").read_text()
    second = sorted(later())[0].name.removesuffix(".pids")

    survivors = [e for n, e in zip(names, endpoints, strict=True) if n != victim]

    def record_of(occurrence: str) -> Any:
        rows = query(survivors, lambda c: history(c, "long")) or []
        return next((r for r in rows if r.occurrence == occurrence), None)
    wait_until(lambda: record_of(second) is not None, 20, "the second run's record")
    record = record_of(second)
    assert record.worker != victim, record
    first_record = record_of(first.name.removesuffix(".pids"))
    assert first_record.status == "lost", first_record
    watcher.join(timeout=60)
    assert died, f"the killed agent's job processes {pids} are still alive"
    print(json.dumps({"orphan_lived_s": round(died[0], 3), "victim": victim,
                      "second_on": record.worker}))
    assert died[0] < 3.0, f"the killed agent's job lived {died[0]:.2f}s after it"
