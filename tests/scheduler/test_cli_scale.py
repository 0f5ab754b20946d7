"""The CLI on large and many jobs (#13 items 14 and 16): limits found by `validate`, `apply`
split into transactions that fit the store, summaries of large files, and `jobs list` reading
in a few paged requests rather than one per job — counted, not timed."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from coord.client import Client
from scheduler import keys, limits
from scheduler.claim import RunRecord
from tests.helpers.procs import process_group, start_coord
from tests.scheduler.test_cli import raftcron, stored


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with process_group(Path(tmp_path_factory.mktemp("cliscale"))) as group:
        yield start_coord(group).endpoint


def job_yaml(name: str, *, command: str = "echo hi", env: dict[str, str] | None = None,
             tags: dict[str, str] | None = None) -> str:
    lines = [f"  - name: {name}", '    schedule: "@every 1h"',
             f"    command: {json.dumps(command)}"]
    if env:
        lines.append("    env:")
        lines += [f"      {k}: {json.dumps(v)}" for k, v in env.items()]
    if tags:
        lines.append("    tags:")
        lines += [f"      {k}: {v}" for k, v in tags.items()]
    return "\n".join(lines) + "\n"


def write(path: Path, jobs: list[str]) -> Path:
    path.write_text("jobs:\n" + "".join(jobs))
    return path


def test_validate_refuses_a_command_linux_cannot_exec(tmp_path: Path) -> None:
    f = write(tmp_path / "big.yaml", [job_yaml("ok"), job_yaml("huge", command="x" * 140_000)])
    res = raftcron(None, "validate", str(f))
    assert res.returncode == 2, res.stdout + res.stderr
    err = res.stderr + res.stdout
    assert "huge" in err and "MAX_ARG_STRLEN" in err and "Traceback" not in err, err
    assert "big.yaml:5:" in err, err  # where the job starts


def test_validate_refuses_an_env_string_over_the_exec_limit(tmp_path: Path) -> None:
    f = write(tmp_path / "env.yaml", [job_yaml("envy", env={"BLOB": "y" * 131_072})])
    res = raftcron(None, "validate", str(f))
    assert res.returncode == 2 and "variable BLOB" in res.stderr + res.stdout, res.stderr


def test_validate_refuses_a_job_larger_than_a_store_request(tmp_path: Path) -> None:
    # 14 variables of 117 KiB: each fits exec, all together fit ARG_MAX (2 MiB), but the job's
    # JSON is 1.6 MiB: more than etcd's and coord's --max-request-bytes.
    env = {f"V{i}": "z" * 120_000 for i in range(14)}
    f = write(tmp_path / "fat.yaml", [job_yaml("fat", env=env)])
    res = raftcron(None, "validate", str(f))
    err = res.stderr + res.stdout
    assert res.returncode == 2 and "--max-request-bytes" in err and "fat" in err, err


def test_exec_limits_hold_against_a_real_exec(tmp_path: Path) -> None:
    """The figures are Linux's: what the check lets through execs, what it refuses fails."""
    import subprocess

    fits = "a" * (limits.MAX_ARG_STRLEN - 1)
    assert limits.exec_problems(["/bin/true", fits], {}) == []
    subprocess.run(["/bin/true", fits], check=True)
    over = fits + "a"
    assert limits.exec_problems(["/bin/true", over], {})
    with pytest.raises(OSError, match="Argument list too long"):
        subprocess.run(["/bin/true", over], check=True)


def test_apply_of_many_large_jobs_splits_transactions_and_says_so(coord: str,
                                                                  tmp_path: Path) -> None:
    # 200 jobs of ~30 KiB: 6 MiB in all; one txn of 100 of them would be over the 1.5 MiB
    # request limit, so the split is by bytes as well as by count.
    jobs = [job_yaml(f"big-{i:03d}", env={"PAYLOAD": "p" * 30_000}) for i in range(200)]
    f = write(tmp_path / "many.yaml", jobs)
    res = raftcron(coord, "apply", "-f", str(f))
    assert res.returncode == 0, res.stdout + res.stderr
    expected = len(limits.split_batches([30_200] * 200))
    assert expected > 2
    assert (f"200 job(s) changed, 0 unchanged; applied in {expected} transaction(s)"
            in res.stdout), res.stdout[-2000:]
    assert len([n for n in stored(coord) if n.startswith("big-")]) == 200
    # A summary, not 200 diffs: the first 20 changes in full, then counts.
    assert res.stdout.count("(add)") == 20, res.stdout[-2000:]
    assert "... and 180 more change(s) not shown (200 added, 0 changed, 0 deleted" in res.stdout
    verbose = raftcron(coord, "apply", "-f", str(f), "--dry-run", "--verbose")
    lines = verbose.stdout.splitlines()
    assert len([x for x in lines if x.startswith("= big-")]) == 200, verbose.stdout[-500:]


def test_validate_summarises_a_large_file(tmp_path: Path) -> None:
    f = write(tmp_path / "sixty.yaml", [job_yaml(f"j{i:02d}") for i in range(60)])
    res = raftcron(None, "validate", str(f))
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("@every 1h") == 20, res.stdout
    assert "... and 40 more job(s) (--verbose lists them all)" in res.stdout
    assert "60 job(s) OK" in res.stdout
    full = raftcron(None, "validate", str(f), "--verbose")
    assert full.stdout.count("@every 1h") == 60


def test_jobs_list_reads_in_pages_and_filters(coord: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    n = 130
    jobs = [job_yaml(f"page-{i:03d}", tags={"disk": "ssd" if i % 2 else "hdd"})
            for i in range(n)]
    res = raftcron(coord, "apply", "-f", str(write(tmp_path / "p.yaml", jobs)))
    assert res.returncode == 0, res.stderr

    async def add_runs() -> None:  # history for every job: two occurrences each
        async with Client([coord]) as c:
            for i in range(n):
                for occ, status in (("20261122T013000Z", "failed"),
                                    ("20261122T023000Z", "succeeded")):
                    rec = RunRecord(job=f"page-{i:03d}", occurrence=occ, status=status)
                    await c.put(keys.run_key(f"page-{i:03d}", occ), rec.encode())
    asyncio.run(add_runs())

    from scheduler import joblist
    from scheduler.cli import app

    monkeypatch.setattr(joblist, "PAGE", 50)
    calls: dict[str, int] = {"range": 0, "txn": 0}
    real_range, real_txn = Client.range, Client.txn

    async def range_(self: Client, req: Any) -> Any:
        calls["range"] += 1
        return await real_range(self, req)

    async def txn(self: Client, *a: Any, **kw: Any) -> Any:
        calls["txn"] += 1
        return await real_txn(self, *a, **kw)
    monkeypatch.setattr(Client, "range", range_)
    monkeypatch.setattr(Client, "txn", txn)

    def listing(*args: str) -> list[dict[str, Any]]:
        calls.update(range=0, txn=0)
        out = CliRunner().invoke(app, ["jobs", "list", "--endpoints", coord, "-o", "json",
                                       *args])
        assert out.exit_code == 0, out.output
        rows: list[dict[str, Any]] = json.loads(out.output)
        return rows

    rows = [r for r in listing() if r["name"].startswith("page-")]
    assert len(rows) == n  # -o json returns every job
    assert all(r["last"] == "20261122T023000Z succeeded" for r in rows), rows[:3]
    total_jobs = len(stored(coord))
    # One paged pass over the specs and one keys-only pass over the run keys, then the
    # latest run records 100 per txn: a handful of requests, not one per job (plus one
    # read each of the runtime suspensions and the live workers).
    pages = math.ceil((total_jobs + 1) / 50) + math.ceil((2 * n + 1) / 50)
    assert calls["range"] <= pages + 4
    assert calls["txn"] == math.ceil(n / 100), calls
    assert calls["range"] + calls["txn"] < 20, calls

    only = listing("--prefix", "page-01")
    assert [r["name"] for r in only] == [f"page-{i:03d}" for i in range(10, 20)]
    ssd = listing("--prefix", "page-", "--tag", "disk=ssd")
    assert len(ssd) == n // 2 and all(int(r["name"][5:]) % 2 for r in ssd)
    assert listing("--tag", "disk=nvme") == []
    bad = CliRunner().invoke(app, ["jobs", "list", "--endpoints", coord, "--tag", "nokv"])
    assert bad.exit_code == 2 and "--tag must be k=v" in bad.output


def test_a_large_table_prints_every_row_as_plain_aligned_columns(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Beyond PLAIN_TABLE_OVER rows, `emit` skips rich's per-cell layout (20,000 jobs took
    11-20 s to render) and prints plain columns: every row, aligned, nothing truncated."""
    from scheduler.cli import PLAIN_TABLE_OVER, emit

    n = PLAIN_TABLE_OVER * 5
    rows = [{"name": f"job-{i:05d}", "schedule": "* * * * *", "last": None if i % 2 else "ok"}
            for i in range(n)]
    emit("table", rows, ["name", "schedule", "last"], "jobs")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"jobs ({n})"
    assert lines[1].split() == ["name", "schedule", "last"]
    body = lines[2:]
    assert [ln.split()[0] for ln in body] == [r["name"] for r in rows]
    assert {ln.index("* * * * *") for ln in body} == {lines[1].index("schedule")}
    assert body[0].endswith("ok") and body[1].endswith("*")
