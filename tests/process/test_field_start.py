"""Starting and stopping as users do (issue #13 items 1, 2, 3, 12).

- The README's "Running a cluster" command, for three hosts, started in the same second
  with one --jobs file: all three agents keep running and every occurrence runs once. (The
  second and third used to die with "the stored jobs changed while applying".)
- Restarting an agent with the same file writes nothing.
- Hosts boot in any order: a member alone waits for its peers, saying who it waits for,
  past the 30 s after which it used to exit, and the cluster forms when they come.
- SIGTERM and SIGINT stop a process in every state: a worker whose store is unreachable,
  an agent waiting for its peers, a member looking for the cluster it should join; a second
  signal cuts a graceful stop short (exit 130).
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from coord.client import Client
from scheduler import keys
from scheduler.claim import RunRecord
from tests.helpers.procs import REPO, Proc, ProcessGroup, free_port, port_open, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
ENV = {"PYTHONPATH": str(REPO), "RAFTCRON_LOG_LEVEL": "info"}
CLI = [sys.executable, "-m", "scheduler.cli"]


def readme_cluster_commands() -> list[list[str]]:
    """The commands of the README's "Running a cluster" section, each as one argv (line
    continuations joined): the agent command, then the status check."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Running a cluster"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [shlex.split(b.replace("\\\n", " ")) for b in blocks]


def readme_cluster_argv() -> list[str]:
    """The README's cluster command (an agent, as host 1 runs it)."""
    return readme_cluster_commands()[0]


def readme_status_argv(ports: dict[int, tuple[int, int]]) -> list[str]:
    """The README's status check, pointed at the loopback cluster."""
    words = readme_cluster_commands()[1]
    assert words[:3] == ["raftcron", "cluster", "status"], words
    out = []
    for word in words[1:]:
        arg = word
        for h, (cport, _) in ports.items():
            arg = arg.replace(f"10.0.0.{h}:2379", f"127.0.0.1:{cport}")
        out.append(arg)
    return [*CLI, *out]


def host_argv(readme: list[str], i: int, ports: dict[int, tuple[int, int]], data: Path,
              jobs: Path) -> list[str]:
    """Host ``i``'s copy of the README's command: its name, its data dir, loopback ports."""
    out = []
    for n, word in enumerate(readme):
        arg = word
        if n and readme[n - 1] in ("--listen-client", "--listen-peer"):
            arg = arg.replace("10.0.0.1:", f"10.0.0.{i}:")  # host i listens on its own address
        for h, (cport, pport) in ports.items():
            arg = arg.replace(f"10.0.0.{h}:2379", f"127.0.0.1:{cport}")
            arg = arg.replace(f"10.0.0.{h}:2380", f"127.0.0.1:{pport}")
        out.append(arg.replace("/var/lib/raftcron", str(data)).replace("jobs.yaml", str(jobs)))
    assert out[0] == "raftcron" and out[1] == "agent", readme
    argv = [*CLI, *out[1:]]
    argv[argv.index("--name") + 1] = f"n{i}"
    return argv


def jobs_file(workdir: Path, out: Path) -> Path:
    jobs = workdir / "jobs.yaml"
    jobs.write_text(
        "jobs:\n"
        "  - name: every-second\n    schedule: '* * * * * *'\n    history_limit: 500\n"
        f"    command: 'echo $RAFTCRON_JOB $RAFTCRON_OCCURRENCE $RAFTCRON_RUN_ID >> {out}'\n"
        "  - name: every-2s\n    schedule: '@every 2s'\n    history_limit: 500\n"
        f"    command: 'echo $RAFTCRON_JOB $RAFTCRON_OCCURRENCE $RAFTCRON_RUN_ID >> {out}'\n")
    return jobs


def start_cluster(procs: ProcessGroup, hosts: list[int], jobs: Path,
                  ports: dict[int, tuple[int, int]]) -> dict[int, Proc]:
    readme = readme_cluster_argv()
    started = {}
    for i in hosts:
        argv = host_argv(readme, i, ports, procs.workdir / f"n{i}", jobs)
        started[i] = procs.spawn(f"n{i}", argv, ports[i][0], env=ENV)
    return started


async def _run_records(endpoint: str) -> dict[tuple[str, str], RunRecord]:
    async with Client([endpoint], timeout=5) as c:
        r = await c.get(keys.RUNS, prefix=True)
        out = {}
        for kv in r.kvs:
            rec = RunRecord.decode(kv.value)
            out[rec.job, rec.occurrence] = rec
        return out


def check_once_per_occurrence(out: Path, endpoint: str) -> list[tuple[str, str]]:
    """Every occurrence ran at most once (the job's own output), and the run records tell
    the same story: each run that wrote a line has its record, succeeded, with its run id;
    each succeeded record has its line. Returns the (job, occurrence) pairs that ran."""
    runs = [tuple(ln.split()) for ln in out.read_text().splitlines()]
    ran = [(job, occ) for job, occ, _ in runs]
    assert len(ran) == len(set(ran)), "an occurrence ran twice: " + repr(
        sorted(r for r in ran if ran.count(r) > 1))
    records = asyncio.run(_run_records(endpoint))
    for job, occ, run_id in runs:
        rec = records.get((job, occ))
        assert rec is not None, f"{job} {occ} ran but has no run record"
        assert rec.run_id == run_id, (job, occ, rec)
        # A run that just wrote its line may not be recorded finished yet.
        assert rec.status in ("succeeded", "claimed", "running"), (job, occ, rec)
    succeeded = {k for k, rec in records.items() if rec.status == "succeeded"}
    assert succeeded <= set(ran), f"recorded as run but never ran: {succeeded - set(ran)}"
    return ran


async def _job_revisions(endpoint: str) -> dict[bytes, int]:
    async with Client([endpoint], timeout=5) as c:
        r = await c.get("/cron/jobs/", prefix=True)
        return {kv.key: kv.mod_revision for kv in r.kvs}


def test_three_agents_started_at_once_all_run_and_a_restart_writes_nothing(
        procs: ProcessGroup) -> None:
    out = procs.workdir / "runs.txt"
    jobs = jobs_file(procs.workdir, out)
    ports = {i: (free_port(), free_port()) for i in (1, 2, 3)}
    agents = start_cluster(procs, [1, 2, 3], jobs, ports)  # in the same second
    t0 = time.monotonic()
    wait_until(lambda: out.exists() and {ln.split()[0] for ln in out.read_text().splitlines()}
               == {"every-second", "every-2s"}, 60, "both jobs to run")
    wait_until(lambda: time.monotonic() - t0 > 20, 30, "20 s of running")
    logs = "\n".join(a.log() for a in agents.values())
    assert all(a.alive() for a in agents.values()), logs[-5000:]
    assert "AdminError" not in logs and "Traceback" not in logs, logs[-5000:]
    status = subprocess.run(readme_status_argv(ports), capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", **ENV}, timeout=60, check=False)
    assert status.returncode == 0, status.stderr
    for cport, _ in ports.values():
        assert f"127.0.0.1:{cport}" in status.stdout, status.stdout
    ran = check_once_per_occurrence(out, agents[1].endpoint)
    assert sum(job == "every-second" for job, _ in ran) >= 10, ran
    assert sum(job == "every-2s" for job, _ in ran) >= 5, ran

    # Restart one agent with the same command and file: the jobs are not rewritten.
    before = asyncio.run(_job_revisions(agents[1].endpoint))
    assert len(before) == 2
    agents[2].popen.send_signal(signal.SIGTERM)
    assert agents[2].popen.wait(timeout=60) == 0, agents[2].log()[-3000:]
    again = start_cluster(procs, [2], jobs, ports)[2]
    wait_until(lambda: '"event": "agent.jobs_applied"' in again.log(), 60,
               "the restarted agent to apply its file\n" + again.log()[-3000:])
    assert '"changed": 0' in again.log()
    assert asyncio.run(_job_revisions(agents[1].endpoint)) == before


def test_a_member_started_alone_waits_for_its_peers(procs: ProcessGroup) -> None:
    out = procs.workdir / "runs.txt"
    jobs = jobs_file(procs.workdir, out)
    ports = {i: (free_port(), free_port()) for i in (1, 2, 3)}
    first = start_cluster(procs, [3], jobs, ports)[3]  # the last host boots first
    t_start = time.monotonic()
    wait_until(lambda: "member.waiting_for_peers" in first.log(), 30,
               "the member to say it waits\n" + first.log()[-3000:])
    assert "n1@127.0.0.1" in first.log() and "n2@127.0.0.1" in first.log()
    # Past the 30 s after which a lone agent used to exit (its --jobs apply timed out).
    wait_until(lambda: not first.alive() or time.monotonic() - t_start > 35, 60, "35 s alone")
    assert first.alive(), first.log()[-3000:]
    # It kept saying so (every 5 s), and nothing failed meanwhile.
    assert first.log().count('"event": "member.waiting_for_peers"') >= 3, first.log()[-3000:]
    assert "Traceback" not in first.log() and '"level": "error"' not in first.log()
    start_cluster(procs, [1, 2], jobs, ports)
    wait_until(lambda: out.exists() and "every-second" in out.read_text(), 60,
               "jobs to run once the peers are up\n" + first.log()[-3000:])
    assert first.alive()


def _stops_on(proc: Proc, sig: signal.Signals, what: str) -> None:
    proc.popen.send_signal(sig)
    try:
        code = proc.popen.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what}: still running 15 s after {sig.name}\n{proc.log()[-3000:]}")
    assert code == 0, f"{what}: exit {code}\n{proc.log()[-3000:]}"
    assert "Traceback" not in proc.log()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_a_worker_whose_store_is_unreachable(procs: ProcessGroup,
                                                          sig: signal.Signals) -> None:
    dead = free_port()  # nothing listens there
    w = procs.spawn("w", [*CLI, "worker", "--endpoints", f"127.0.0.1:{dead}", "--name", "w"],
                    dead, env=ENV)
    wait_until(lambda: "worker.session_failed" in w.log(), 30, "the worker to try the store")
    _stops_on(w, sig, "a worker with no store")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_an_agent_waiting_for_peers(procs: ProcessGroup,
                                                 sig: signal.Signals) -> None:
    ports = {i: (free_port(), free_port()) for i in (1, 2, 3)}
    jobs = jobs_file(procs.workdir, procs.workdir / "runs.txt")
    a = start_cluster(procs, [1], jobs, ports)[1]
    wait_until(lambda: port_open(ports[1][0]), 30, "the agent to listen")
    wait_until(lambda: "agent.jobs_apply_waiting" in a.log(), 30, "the apply to wait")
    _stops_on(a, sig, "an agent waiting for its peers")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_a_member_waiting_for_its_peers(procs: ProcessGroup,
                                                     sig: signal.Signals) -> None:
    cport, pport = free_port(), free_port()
    peers = f"m=127.0.0.1:{pport},x=127.0.0.1:{free_port()},y=127.0.0.1:{free_port()}"
    m = procs.spawn("m", [*CLI, "coord", "serve", "--name", "m", "--data-dir",
                          str(procs.workdir / "m"), "--listen-client", f"127.0.0.1:{cport}",
                          "--listen-peer", f"127.0.0.1:{pport}", "--initial-cluster", peers],
                    cport, env=ENV)
    wait_until(lambda: "member.waiting_for_peers" in m.log() or not m.alive(), 30,
               "the member to wait for its peers")
    _stops_on(m, sig, "a member waiting for its peers")


def test_sigterm_stops_a_member_looking_for_the_cluster_it_joins(procs: ProcessGroup) -> None:
    cport, pport, nobody = free_port(), free_port(), free_port()
    m = procs.spawn("j", [*CLI, "coord", "serve", "--name", "j", "--data-dir",
                          str(procs.workdir / "j"), "--listen-client", f"127.0.0.1:{cport}",
                          "--listen-peer", f"127.0.0.1:{pport}", "--initial-cluster",
                          f"x=127.0.0.1:{nobody},j=127.0.0.1:{pport}",
                          "--initial-cluster-state", "existing"], cport, env=ENV)
    wait_until(lambda: len(m.log()) > 0 or not m.alive(), 30, "the member to start")
    assert m.alive(), m.log()
    _stops_on(m, signal.SIGTERM, "a joining member")


def test_a_second_signal_cuts_a_graceful_stop_short(procs: ProcessGroup) -> None:
    started = procs.workdir / "started"
    jobs = procs.workdir / "jobs.yaml"
    jobs.write_text("jobs:\n  - name: long\n    schedule: '@every 1s'\n"
                    f"    command: 'touch {started}; sleep 120'\n")
    cport = free_port()
    a = procs.spawn("a", [*CLI, "agent", "--name", "a", "--data-dir", str(procs.workdir / "d"),
                          "--listen-client", f"127.0.0.1:{cport}",
                          "--listen-peer", f"127.0.0.1:{free_port()}",
                          "--jobs", str(jobs), "--stop-timeout", "100"], cport, env=ENV)
    wait_until(started.exists, 60, "the long job to start\n" + a.log()[-3000:])
    a.popen.send_signal(signal.SIGTERM)
    # It says what it waits for, and again every few seconds with the time left.
    wait_until(lambda: a.log().count('"event": "worker.stop_waiting"') >= 2, 30,
               "the stop to say twice what it waits for\n" + a.log()[-3000:])
    waiting = [json.loads(ln) for ln in a.log().splitlines()
               if '"event": "worker.stop_waiting"' in ln]
    assert all(w["runs"] and w["runs"][0].startswith("long@") for w in waiting), waiting
    assert waiting[1]["timeout_left_s"] < waiting[0]["timeout_left_s"] <= 100, waiting
    assert a.alive()  # waiting for the job, as --stop-timeout allows
    a.popen.send_signal(signal.SIGTERM)
    assert a.popen.wait(timeout=20) == 130, a.log()[-3000:]


def test_agent_and_coord_serve_take_the_same_store_flags() -> None:
    """Every flag of `coord serve` is an `agent` flag too, with the same default, type and
    help (one definition); `--help` shows the same default for each."""
    import typer.main

    from scheduler.cli import app

    root: Any = typer.main.get_command(app)
    serve, agent = root.commands["coord"].commands["serve"], root.commands["agent"]

    def options(cmd: Any) -> dict[str, Any]:
        return {p.opts[0]: p for p in cmd.params
                if p.param_type_name == "option" and p.opts[0] != "--help"}

    serve_opts, agent_opts = options(serve), options(agent)
    assert {"--name", "--data-dir", "--listen-client", "--listen-peer", "--initial-cluster",
            "--initial-cluster-state", "--snapshot-count", "--snapshot-bytes"} <= set(serve_opts)
    for flag, opt in serve_opts.items():
        assert flag in agent_opts, f"agent lacks {flag}"
        other = agent_opts[flag]
        assert (other.default, other.type_descriptor.annotation, other.help,
                other.show_default, other.hidden) == \
            (opt.default, opt.type_descriptor.annotation, opt.help, opt.show_default,
             opt.hidden), flag

    def help_text(*cmd: str) -> str:
        return " ".join(subprocess.run([*CLI, *cmd, "--help"], capture_output=True, text=True,
                                       env={"TERM": "dumb", "PATH": "/usr/bin:/bin", **ENV},
                                       check=True, timeout=60).stdout.split())

    serve_help, agent_help = help_text("coord", "serve"), help_text("agent")
    for shown in ["[default: raftcron-data]", "[default: 127.0.0.1:2379]",
                  "[default: 127.0.0.1:2380]", "[default: new]", "[default: 10000]",
                  "[default: 8388608]", "[default: (the host name)]"]:
        assert shown in serve_help and shown in agent_help, shown
