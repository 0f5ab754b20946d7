"""The executor with real subprocesses: env, argv/shell, workdir, timeout, kill, output."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog

from scheduler import executor
from scheduler.clock import ManualClock, SystemClock
from scheduler.errors import ExecutorError
from scheduler.executor import JobProcess, RunRequest, RunResult, run_job
from scheduler.spec import load_jobs, load_jobs_text
from tests.helpers.procs import pid_alive

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 20))


def request(command: tuple[str, ...] | str, **kw: Any) -> RunRequest:
    base: dict[str, Any] = {"job": "j", "occurrence": "20261122T013000Z", "run_id": "r-1",
                            "fencing_token": 42, "attempt": 1, "command": command}
    base.update(kw)
    return RunRequest(**base)


alive = pid_alive


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll a condition (SIGKILL delivery is asynchronous); never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def read_pid(path: Path) -> int:
    assert wait_until(lambda: path.exists() and path.read_text().strip() != "")
    return int(path.read_text())


# ------------------------------------------------------------------ environment and command


def test_env_and_raftcron_variables_are_passed() -> None:
    req = request(
        'echo "$RAFTCRON_JOB|$RAFTCRON_OCCURRENCE|$RAFTCRON_RUN_ID|$RAFTCRON_FENCING_TOKEN|'
        '$RAFTCRON_ATTEMPT|$FOO|$BASE"',
        env={"FOO": "bar baz", "RAFTCRON_JOB": "spoofed"}, attempt=3,
        inherit_env=("PATH", "BASE"))
    result = run(run_job(req, base_env={"BASE": "b", "PATH": os.environ["PATH"]}))
    assert result.ok
    assert result.exit_code == 0
    assert result.output_tail == "j|20261122T013000Z|r-1|42|3|bar baz|b\n"


def test_path_is_inherited_by_default() -> None:
    result = run(run_job(request('echo "$PATH"')))
    assert result.output_tail.strip() == os.environ["PATH"]


def test_argv_runs_without_shell_and_string_runs_with_sh() -> None:
    result = run(run_job(request(("echo", "a  b", "$HOME", ";", "exit 3"))))
    assert result.output_tail == "a  b $HOME ; exit 3\n"
    assert result.exit_code == 0
    result = run(run_job(request("echo one; echo two >&2; exit 3")))
    assert result.output_tail == "one\ntwo\n"
    assert result.exit_code == 3
    assert not result.ok


def test_workdir_and_stdin_is_dev_null(tmp_path: Path) -> None:
    result = run(run_job(request("pwd; cat; echo done", workdir=str(tmp_path))))
    assert result.output_tail == f"{tmp_path}\ndone\n"


def test_from_spec() -> None:
    (spec,) = load_jobs_text("jobs:\n  - name: hello\n    schedule: '@every 5s'\n"
                             "    command: [sh, -c, 'echo $X']\n    env: {X: '1'}\n"
                             "    timeout: 7s\n    workdir: /tmp\n")
    req = RunRequest.from_spec(spec, occurrence="20261122T013000Z", run_id="r", fencing_token=9,
                               attempt=2)
    assert req.argv() == ["sh", "-c", "echo $X"]
    assert req.timeout == 7
    assert req.workdir == "/tmp"
    assert req.environment({})["RAFTCRON_FENCING_TOKEN"] == "9"
    assert run(run_job(req)).output_tail == "1\n"


def test_example_jobs_run_on_a_bare_machine() -> None:
    specs = load_jobs(Path(__file__).resolve().parents[2] / "jobs.example.yaml")
    quick = [s for s in specs if s.timeout is None and "/tmp" not in str(s.command)]
    assert len(quick) >= 2
    for spec in quick:
        req = RunRequest.from_spec(spec, occurrence="20261122T013000Z", run_id="r",
                                   fencing_token=1)
        result = run(run_job(req))
        assert result.ok, (spec.name, result)
        assert result.output_tail


def test_spawn_failures_raise_executor_error(tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match="cannot start job 'j'"):
        run(run_job(request(("/nonexistent/program",))))
    with pytest.raises(ExecutorError):
        run(run_job(request("true", workdir=str(tmp_path / "missing"))))
    with pytest.raises(ExecutorError):
        run(run_job(request(("echo", "a\0b"))))


# ------------------------------------------------------------------ output


def test_output_tail_is_bounded_and_log_file_has_everything(tmp_path: Path) -> None:
    logf = tmp_path / "logs" / "j" / "20261122T013000Z.log"
    result = run(run_job(
        request("head -c 100000 /dev/zero | tr '\\0' a; echo; echo END"), log_path=logf))
    assert result.output_bytes == 100000 + 1 + 4
    assert len(result.output_tail.encode()) == 4096
    assert result.output_tail.endswith("a\nEND\n")
    assert result.output_truncated
    assert logf.stat().st_size == result.output_bytes
    # appended, not overwritten (one log per run id is the caller's choice)
    run(run_job(request("echo again"), log_path=logf))
    assert logf.read_bytes().endswith(b"END\nagain\n")


def test_small_tail_and_invalid_utf8() -> None:
    result = run(run_job(request("printf 'abc\\377def'"), tail_bytes=5))
    assert result.output_tail == "c\ufffddef"
    assert result.output_bytes == 7
    result = run(run_job(request("true")))
    assert (result.output_tail, result.output_bytes, result.output_truncated) == ("", 0, False)


# ------------------------------------------------------------------ timeout and kill


def test_timeout_kills_the_whole_group_including_a_grandchild(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    req = request(f"sleep 60 & echo $! > {pidfile}; echo started; wait", timeout=0.5)
    result = run(run_job(req, kill_grace=0.5))
    gc = read_pid(pidfile)
    assert result.timed_out
    assert not result.ok
    assert result.exit_code is None
    assert result.signal == 15  # sh died of the SIGTERM sent to the group
    assert result.output_tail == "started\n"
    assert 0.5 <= result.duration < 5
    assert wait_until(lambda: not alive(gc))


def test_timeout_escalates_to_sigkill_after_grace(tmp_path: Path) -> None:
    pidfile = tmp_path / "gc.pid"
    req = request(f"trap '' TERM; sh -c 'trap \"\" TERM; sleep 60' & echo $! > {pidfile}; "
                  "sleep 60", timeout=0.3)
    started = time.monotonic()
    result = run(run_job(req, kill_grace=0.3))
    gc = read_pid(pidfile)
    assert result.timed_out
    assert result.signal == 9
    assert 0.6 <= time.monotonic() - started < 5
    assert wait_until(lambda: not alive(gc))


def test_kill_stops_group_at_once(tmp_path: Path) -> None:
    pidfile = tmp_path / "gc.pid"

    async def scenario() -> tuple[RunResult, int]:
        proc = JobProcess(request(f"sleep 60 & echo $! > {pidfile}; sleep 60"))
        await proc.start()
        assert proc.pid is not None
        gc = await asyncio.to_thread(read_pid, pidfile)
        proc.kill("replace")
        proc.kill("again")  # idempotent; the first reason sticks
        result = await proc.wait()
        proc.kill("after the end")  # no-op
        return result, gc

    result, gc = run(scenario())
    assert result.killed
    assert result.kill_reason == "replace"
    assert result.signal == 9
    assert not result.timed_out
    assert not result.ok
    assert wait_until(lambda: not alive(gc))


def test_terminate_is_polite_first(tmp_path: Path) -> None:
    logf = tmp_path / "out.log"

    async def scenario() -> RunResult:
        proc = JobProcess(request("trap 'echo got TERM; exit 7' TERM; echo ready; "
                                  "while :; do sleep 0.05; done"), log_path=logf)
        await proc.start()
        # wait until the trap is installed (the job says so), then terminate
        await asyncio.to_thread(wait_until, lambda: logf.exists() and logf.stat().st_size > 0)
        assert proc.current_tail() == "ready\n"
        proc.terminate("deadman", grace=5)
        return await proc.wait()

    result = run(scenario())
    assert result.exit_code == 7
    assert result.output_tail.startswith("ready\n")  # sh may also report "Terminated"
    assert result.output_tail.endswith("got TERM\n")
    assert result.killed
    assert result.kill_reason == "deadman"


def test_background_leftovers_die_when_the_job_exits(tmp_path: Path) -> None:
    # the background sleep keeps stdout open; the run still ends, and the sleep dies
    pidfile = tmp_path / "bg.pid"
    result = run(run_job(request(f"sleep 60 & echo $! > {pidfile}; echo bye")))
    assert result.exit_code == 0
    assert result.output_tail == "bye\n"
    bg = read_pid(pidfile)
    assert wait_until(lambda: not alive(bg))


def test_wait_before_start_and_double_start() -> None:
    async def scenario() -> None:
        proc = JobProcess(request("true"))
        with pytest.raises(ExecutorError):
            await proc.wait()
        proc.kill()  # no-op before start
        await proc.start()
        with pytest.raises(ExecutorError):
            await proc.start()
        assert (await proc.wait()).ok
        assert proc.done

    run(scenario())


# ------------------------------------------------------------------ clock and logs


def test_clock_is_injected_and_logs_are_structured(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ManualClock(datetime(2026, 11, 22, 1, 30, tzinfo=UTC))
    # job.start/job.end are debug lines (the worker's run.started/run.finished are the ones
    # at info): capture every level, whatever level an earlier test configured.
    cap = structlog.testing.LogCapture()
    monkeypatch.setattr(executor, "log", structlog.wrap_logger(
        structlog.ReturnLogger(), processors=[cap],
        wrapper_class=structlog.make_filtering_bound_logger(0)))
    logs = cap.entries
    result = run(run_job(request("exit 0"), clock=clock))
    assert result.started_at == datetime(2026, 11, 22, 1, 30, tzinfo=UTC)
    assert result.finished_at == result.started_at
    events = [e["event"] for e in logs]
    assert events == ["job.start", "job.end"]
    assert logs[0]["job"] == "j"
    assert logs[0]["fencing_token"] == 42
    assert logs[1]["exit_code"] == 0


def test_clocks() -> None:
    skewed = SystemClock(offset=3600)
    assert (skewed.now() - datetime.now(UTC)).total_seconds() > 3590
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    clock.advance(1.5)
    assert clock.monotonic() == 1.5
    clock.set(datetime(2026, 1, 1, 0, 1, tzinfo=UTC))
    assert clock.monotonic() == 60
    clock.offset = -10
    assert clock.now() == datetime(2026, 1, 1, 0, 0, 50, tzinfo=UTC)
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        ManualClock(datetime(2026, 1, 1))


def test_kill_while_starting_is_applied_once_the_process_exists() -> None:
    async def scenario() -> RunResult:
        proc = JobProcess(request(("sleep", "30")))
        starting = asyncio.create_task(proc.start())
        await asyncio.sleep(0)  # one loop turn: the spawn is now under way on its thread
        proc.kill("deadman")
        await starting
        return await proc.wait()

    result = run(scenario())
    assert result.killed and result.kill_reason == "deadman"
    assert result.signal == 9
