"""docs/migrate-to-etcd.md, followed literally (#13 item 17): a job runs on coord; the worker
stops; `etcdctl make-mirror` copies /cron/jobs/ and /cron/runs/ into a real etcd; coord stops;
a worker started against etcd runs the job. Also what `etcdctl snapshot restore` says about a
coord snapshot. Every command run here through bash is checked to be in the doc as written."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess

import pytest

from coord.client import Client
from scheduler import keys
from tests.helpers.procs import (
    REPO,
    ProcessGroup,
    coord_argv,
    free_port,
    start_coord,
    start_etcd,
    wait_until,
)

pytestmark = [pytest.mark.timeout(240), pytest.mark.etcd]

DOC = (REPO / "docs" / "migrate-to-etcd.md").read_text()
BIN = str(REPO / ".venv" / "bin")


def documented(cmd: str) -> str:
    """``cmd`` if it is one of the doc's lines, verbatim (else fail: the doc and test differ)."""
    lines = {line.strip() for line in DOC.splitlines()}
    assert cmd in lines, f"not in docs/migrate-to-etcd.md as written: {cmd}"
    return cmd


def shell_env(coord: str, etcd: str) -> dict[str, str]:
    return {"COORD": coord, "ETCD": etcd, "ETCDCTL_API": "3", "PYTHONPATH": str(REPO),
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}


def sh(cmd: str, env: dict[str, str]) -> str:
    res = subprocess.run(["bash", "-c", documented(cmd)], capture_output=True, text=True,
                         timeout=60, check=False, env=dict(os.environ, **env))
    assert res.returncode == 0, f"{cmd}: {res.stdout}{res.stderr}"
    return res.stdout


async def runs_by(endpoint: str, job: str) -> list[dict[str, object]]:
    async with Client([endpoint]) as c:
        r = await c.get(keys.runs_prefix(job), prefix=True)
    return [json.loads(kv.value) for kv in r.kvs]


def test_documented_migration_from_coord_to_etcd(procs: ProcessGroup, etcd_bin: str,
                                                 etcdctl_bin: str) -> None:
    out = procs.workdir / "ticks.txt"
    jobs = procs.workdir / "jobs.yaml"
    jobs.write_text("jobs:\n  - name: tick\n    schedule: \"@every 1s\"\n"
                    f"    command: 'echo \"$RAFTCRON_OCCURRENCE\" >> {out}'\n")
    etcd = start_etcd(procs, etcd_bin=etcd_bin)
    cport, pport, data = free_port(), free_port(), procs.workdir / "n1-data"
    member_flags = coord_argv("n1", data, cport, pport)[5:]  # the flags after `coord serve`

    # Before: an agent (a coord member and a worker) runs the job.
    agent = procs.spawn("agent", [f"{BIN}/raftcron", "agent", *member_flags, "--jobs", str(jobs)],
                        cport, {"PYTHONPATH": str(REPO)})
    wait_until(lambda: out.exists() and len(out.read_text().split()) >= 2, 90, "runs on coord")

    # 1. Stop scheduling: SIGTERM the agent (its lock and worker keys go with its lease), and
    # start the member again with no worker, with the same flags.
    assert agent.terminate(timeout=60) == 0, agent.log()
    coord = start_coord(procs, "n1", data_dir=data, cport=cport, pport=pport)
    assert coord.argv[3:5] == ["coord", "serve"] and coord.argv[5:] == member_flags
    # The doc's own example (other hosts' addresses) restarts with these same flags.
    example = DOC[DOC.index("raftcron coord serve"):].split("```")[0].replace("\\\n", " ")
    assert example.split()[3::2] == member_flags[0::2], example
    env = shell_env(coord.endpoint, etcd.endpoint)

    # 2. Copy /cron/jobs/ and /cron/runs/; stop make-mirror once the counts match.
    mirrors = [procs.spawn(f"mirror-{p}", ["bash", "-c", documented(
        f"etcdctl --endpoints $COORD make-mirror --prefix /cron/{p}/ $ETCD")], 0, env)
        for p in ("jobs", "runs")]
    count = "get /cron/jobs/ --prefix --keys-only | grep -c ^/cron/"
    count_coord, count_etcd = (f"etcdctl --endpoints ${ep} {count}" for ep in ("COORD", "ETCD"))
    wait_until(lambda: subprocess.run(["bash", "-c", documented(count_etcd)], env=dict(
        os.environ, **env), capture_output=True, text=True, check=False).stdout.strip() == "1",
        60, "make-mirror to copy the job")
    assert sh(count_coord, env).strip() == sh(count_etcd, env).strip() == "1"
    coord_runs = asyncio.run(runs_by(coord.endpoint, "tick"))
    wait_until(lambda: len(asyncio.run(runs_by(etcd.endpoint, "tick"))) == len(coord_runs), 60,
               "make-mirror to copy the history")
    for m in mirrors:
        assert m.alive(), m.log()
        os.killpg(m.popen.pid, signal.SIGINT)  # Ctrl-C
        m.popen.wait(timeout=30)

    async def leased() -> int:  # nothing leased was copied
        async with Client([etcd.endpoint]) as c:
            return (len((await c.get(keys.LOCKS, prefix=True)).kvs)
                    + len((await c.get(keys.WORKERS, prefix=True)).kvs))
    assert asyncio.run(leased()) == 0

    # 3. Stop coord, start the worker against etcd: the job runs there.
    assert coord.terminate(timeout=60) == 0, coord.log()
    before = len(coord_runs)
    w1 = procs.spawn("w1", ["bash", "-c", documented(
        "raftcron worker --endpoints $ETCD --name w1")], 0, env)
    wait_until(lambda: sum(1 for r in asyncio.run(runs_by(etcd.endpoint, "tick"))
                           if r.get("worker") == "w1" and r.get("status") == "succeeded") >= 2
               or not w1.alive(), 90, "runs on etcd by w1")
    assert w1.alive(), w1.log()
    assert len(asyncio.run(runs_by(etcd.endpoint, "tick"))) > before
    listing = subprocess.run(["bash", "-c", "raftcron jobs list --endpoints $ETCD -o json"],
                             env=dict(os.environ, **env), capture_output=True, text=True,
                             check=False, timeout=60)
    assert "raftcron jobs list --endpoints $ETCD" in DOC
    assert [r["name"] for r in json.loads(listing.stdout)] == ["tick"], listing.stderr


def test_coord_snapshot_is_not_an_etcd_snapshot(procs: ProcessGroup, etcdctl_bin: str) -> None:
    coord = start_coord(procs)
    env = dict(os.environ, ETCDCTL_API="3")
    snap = procs.workdir / "coord.snap"
    saved = subprocess.run([etcdctl_bin, "--endpoints", coord.endpoint, "snapshot", "save",
                            str(snap)], env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert saved.returncode == 0 and snap.stat().st_size > 0, saved.stderr
    restored = subprocess.run([etcdctl_bin, "snapshot", "restore", str(snap), "--data-dir",
                               str(procs.workdir / "restored")], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
    said = restored.stdout + restored.stderr
    assert restored.returncode == 2, said
    assert re.search(r"cannot open database at .*/member/snap/db \(invalid database\)", said)
    assert "cannot open database at <data-dir>/member/snap/db (invalid database)" in DOC
