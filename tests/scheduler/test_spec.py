"""Job files → JobSpec: every error path, messages with file:line:column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.errors import SpecError
from scheduler.spec import load_jobs
from tests.scheduler.spec_util import MINIMAL, job_with, one_problem, problems

# ------------------------------------------------------------------------ errors


def test_error_message_format_names_file_line_column_job_field() -> None:
    msg = one_problem(job_with("concurrency: sometimes\n"))
    assert msg == ('jobs.yaml:5:18: job "hello": field "concurrency": must be one of forbid, '
                   'allow, replace (got "sometimes")')


def test_bad_yaml_syntax() -> None:
    msg = one_problem("jobs:\n  - name: a\n    command: [echo\n")
    assert msg.startswith("jobs.yaml:4:")
    assert "invalid YAML" in msg
    msg = one_problem("jobs:\n  - name: a\n\tschedule: x\n")
    assert msg.startswith("jobs.yaml:3:1: invalid YAML")


def test_unknown_field_suggests() -> None:
    msg = one_problem(job_with("timout: 5m\n"))
    assert msg.startswith('jobs.yaml:5:5: job "hello": field "timout": unknown field '
                          '(did you mean "timeout"?)')
    assert "allowed: name, schedule" in msg
    msg = one_problem(job_with("zzz: 1\n"))
    assert "did you mean" not in msg


def test_unknown_top_level_key() -> None:
    found = problems("job:\n  - name: a\n")
    assert 'jobs.yaml:1:1: unknown top-level key "job" (did you mean "jobs"?)' in str(found[0])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "jobs.yaml: is empty"),
        ("- a\n", "jobs.yaml:1:1: must be a mapping with a top-level 'jobs:' list (got a list)"),
        ("jobs: 5\n", 'jobs.yaml:1:7: field "jobs": must be a list of jobs (got 5)'),
        ("jobs: [5]\n", "jobs.yaml:1:8: job #1: a job must be a mapping of fields (got 5)"),
        ("a: 1\n---\nb: 2\n", "jobs.yaml:3:1: holds several YAML documents"),
        ("other: 1\n", 'unknown top-level key "other"'),
    ],
)
def test_file_shape_errors(text: str, expected: str) -> None:
    assert expected in str(problems(text)[0])


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        ("61 * * * *", 'minute field "61": 61 is out of range 0-59'),
        ("* 24 * * *", 'hour field "24": 24 is out of range 0-23'),
        ("* * 0 * *", 'day-of-month field "0": 0 is out of range 1-31'),
        ("* * * 13 *", "month field"),
        ("* * * * 8", 'day-of-week field "8": 8 is out of range 0-7'),
        ("* * * * foo", '"foo" is not a number 0-7 or a name like mon'),
        ("*/0 * * * *", 'step "0" must be a positive number'),
        ("5-2 * * * *", "range 5-2 is backwards"),
        ("1,,2 * * * *", "empty list item"),
        ("* * * *", "(got 4 fields)"),
        ("* * * * * * *", "(got 7 fields)"),
        ("@fortnightly", 'unknown macro "@fortnightly"'),
        ("@reboot", "not supported"),
        ("@every", "needs a duration"),
        ("@every 0s", "at least 1s"),
        ("@every soon", '"@every": must be a duration like 30s'),
        ("0 0 30 2 *", "never fires"),
        ("@daily 5", "unknown macro"),
    ],
)
def test_bad_cron_gives_reason(schedule: str, reason: str) -> None:
    msg = one_problem(MINIMAL.replace('"* * * * *"', json.dumps(schedule)))
    assert msg.startswith('jobs.yaml:3:15: job "hello": field "schedule": invalid schedule')
    assert reason in msg, msg


def test_bad_zone_with_suggestion() -> None:
    msg = one_problem(job_with("timezone: Europe/Berln\n"))
    assert msg == ('jobs.yaml:5:15: job "hello": field "timezone": unknown time zone '
                   '"Europe/Berln" (did you mean "Europe/Berlin"?)')
    msg = one_problem(job_with("timezone: europe/berlin\n"))
    assert 'did you mean "Europe/Berlin"' in msg
    msg = one_problem(job_with("timezone: ../../etc/passwd\n"))
    assert "unknown time zone" in msg
    msg = one_problem(job_with("timezone: Mars/Olympus_Mons_Base\n"))
    assert "unknown time zone" in msg


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("timeout: 5 minutes",
         'field "timeout": must be a duration like 30s, 5m, 1h30m, 2d or a whole number of '
         'seconds (got "5 minutes")'),
        ("timeout: 0", 'field "timeout": must be at least 1s (got 0)'),
        ("timeout: 1.5", 'field "timeout": must be a duration'),
        ("retry_backoff: 5m1h", 'field "retry_backoff": must be a duration'),
        ("starting_deadline: -5", 'field "starting_deadline": must be at least 1s (got -5)'),
        ("starting_deadline: [1]", "(got a list)"),
        ("timeout: 367d", 'field "timeout": must be at most 366d (got "367d")'),
    ],
)
def test_bad_durations(line: str, expected: str) -> None:
    assert expected in one_problem(job_with(line + "\n"))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("retries: -1", 'field "retries": must be a whole number from 0 to 100 (got -1)'),
        ("retries: many", 'field "retries": must be a whole number from 0 to 100 (got "many")'),
        ("retries: true", "(got true)"),
        ("history_limit: 0", 'field "history_limit": must be a whole number from 1 to 10000'),
        ("suspend: \"yes\"", 'field "suspend": must be true or false (got "yes")'),
        ("suspend: 1", 'field "suspend": must be true or false (got 1)'),
        ("on_lost: retry", 'field "on_lost": must be one of record, rerun (got "retry")'),
        ("concurrency: [forbid]", 'must be one of forbid, allow, replace (got a list)'),
        ("env: [A]", 'field "env": must be a mapping of a variable name'),
        ("env: {1A: x}", 'key "1A" is not a variable name'),
        ("env: {A: ~}", 'write "" for an empty value (got null)'),
        ("env: {A: [x]}", "must be a string (got a list)"),
        ("env: {RAFTCRON_JOB: x}", "names starting with RAFTCRON_ are set by raftcron itself"),
        ("tags: {disk: 'a b'}", 'tag value "a b" must be'),
        ("tags: {'a=b': x}", 'key "a=b" is not a tag name'),
        ("tags: [ssd]", 'field "tags": must be a mapping'),
        ("workdir: ''", 'field "workdir": must be a directory path (got an empty string)'),
        ("workdir: {a: 1}", 'field "workdir": must be a directory path (got a mapping)'),
        ("name: x", 'field "name": is given twice (first at line 2)'),
    ],
)
def test_wrong_types_and_values(line: str, expected: str) -> None:
    msg = one_problem(job_with(line + "\n"))
    assert expected in msg, msg
    assert msg.startswith("jobs.yaml:5:") or msg.startswith("jobs.yaml:2:"), msg


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("[]", "must be a shell string or a non-empty list of arguments (got an empty list)"),
        ("''", "(got an empty string)"),
        ("5", "(got 5)"),
        ("{a: b}", "(got a mapping)"),
        ("['', x]", "the program (first argument) must not be empty"),
        ("[echo, [x]]", "must be a string (each argument) (got a list)"),
        ("[echo, ~]", "(got null)"),
        ('[echo, "a\\0b"]', "must not contain NUL characters"),
    ],
)
def test_bad_command(command: str, expected: str) -> None:
    msg = one_problem(MINIMAL.replace("command: echo hi", f"command: {command}"))
    assert 'job "hello": field "command": ' in msg
    assert expected in msg, msg


@pytest.mark.parametrize(
    "name", ["a/b", "-x", ".hidden", "..", "has space", "é", "x" * 129, "a\\b", ""])
def test_bad_names(name: str) -> None:
    msg = one_problem(MINIMAL.replace("name: hello", f"name: {json.dumps(name)}"))
    assert 'field "name": must be 1-128 characters' in msg, msg
    assert msg.startswith("jobs.yaml:2:11: job #1:"), msg


def test_missing_required_fields() -> None:
    found = problems("jobs:\n  - name: a\n  - schedule: '@daily'\n    command: ~\n")
    msgs = [str(p) for p in found]
    assert msgs == [
        'jobs.yaml:2:5: job "a": field "schedule": is required',
        'jobs.yaml:2:5: job "a": field "command": is required',
        'jobs.yaml:4:14: job #2: field "command": is required (got null)',
        'jobs.yaml:3:5: job #2: field "name": is required',
    ]


def test_duplicate_names_point_at_both_lines() -> None:
    found = problems("""\
        jobs:
          - name: dup
            schedule: "@daily"
            command: echo 1
          - name: other
            schedule: "@daily"
            command: echo 2
          - name: dup
            schedule: "@hourly"
            command: echo 3
        """)
    assert [str(p) for p in found] == [
        'jobs.yaml:8:11: job "dup": field "name": duplicate job name (first defined at line 2)'
    ]


def test_all_errors_collected_and_nothing_returned() -> None:
    found = problems("""\
        jobs:
          - name: good
            schedule: "@every 5s"
            command: echo ok
          - name: backup
            schedule: "61 * * * *"
            command: echo
            concurrency: sometimes
            timout: 5m
          - name: backup
            schedule: "@daily"
            command: [true]
            retries: x
        """)
    fields = [(p.line, p.job, p.field) for p in found]
    assert fields == [
        (6, "backup", "schedule"),
        (8, "backup", "concurrency"),
        (9, "backup", "timout"),
        (13, "backup", "retries"),
        (10, "backup", "name"),
    ]
    err = SpecError(found)
    assert str(err).startswith("5 problems:\n")


def test_load_jobs_reads_file_and_reports_its_path(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(job_with("retries: x\n"))
    with pytest.raises(SpecError) as info:
        load_jobs(path)
    assert str(info.value).startswith(f"{path}:5:14: ")
    with pytest.raises(SpecError, match="cannot read"):
        load_jobs(tmp_path / "missing.yaml")
