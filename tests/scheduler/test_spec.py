"""Job files → JobSpec: every field, every error path, messages with file:line:column."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.errors import SpecError, SpecProblem
from scheduler.spec import DEFAULTS, FIELDS, JobSpec, load_jobs, load_jobs_text, spec_from_json

REPO = Path(__file__).resolve().parents[2]


def load(text: str, filename: str = "jobs.yaml") -> list[JobSpec]:
    return load_jobs_text(textwrap.dedent(text), filename)


def problems(text: str, filename: str = "jobs.yaml") -> list[SpecProblem]:
    with pytest.raises(SpecError) as info:
        load(text, filename)
    return list(info.value.problems)


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, [str(p) for p in found]
    return str(found[0])


MINIMAL = """\
jobs:
  - name: hello
    schedule: "* * * * *"
    command: echo hi
"""


def job_with(extra: str) -> str:
    """A one-job file whose 4th line onwards is ``extra`` (indented as job fields)."""
    return MINIMAL + textwrap.indent(textwrap.dedent(extra), "    ")


# ------------------------------------------------------------------------ valid input


def test_minimal_job_gets_documented_defaults() -> None:
    (spec,) = load(MINIMAL)
    assert spec.name == "hello"
    assert spec.schedule == "* * * * *"
    assert spec.command == "echo hi"
    for key, value in DEFAULTS.items():
        got = getattr(spec, key)
        assert (dict(got) if key in ("env", "tags") else got) == value, key
    assert spec.timezone == "UTC"
    assert spec.concurrency == "forbid"
    assert spec.starting_deadline == 60
    assert spec.on_lost == "record"
    assert spec.history_limit == 20
    assert spec.timeout is None
    assert spec.suspend is False


def test_dataclass_defaults_match_documented_defaults() -> None:
    spec = JobSpec(name="x", schedule="@daily", command="true")
    for key, value in DEFAULTS.items():
        got = getattr(spec, key)
        assert (dict(got) if key in ("env", "tags") else got) == value, key
    assert set(DEFAULTS) | {"name", "schedule", "command"} == set(FIELDS)


def test_every_field_parsed() -> None:
    (spec,) = load("""\
        jobs:
          - name: backup.db-1_x
            schedule: "0 30 2 * * mon-fri"
            timezone: Europe/Berlin
            command: [tar, -czf, /tmp/x.tgz, 5, yes]
            env: {A: "1", B: 2, C: ""}
            workdir: /tmp
            timeout: 1h30m
            retries: 3
            retry_backoff: 15s
            concurrency: replace
            starting_deadline: 2m
            on_lost: rerun
            tags: {region: eu-1, disk: ssd}
            history_limit: 7
            suspend: true
        """)
    assert spec.name == "backup.db-1_x"
    assert spec.schedule == "0 30 2 * * mon-fri"
    assert spec.timezone == "Europe/Berlin"
    # argv scalars are taken as written: 5 stays "5", yes stays "yes" (not True)
    assert spec.command == ("tar", "-czf", "/tmp/x.tgz", "5", "yes")
    assert dict(spec.env) == {"A": "1", "B": "2", "C": ""}
    assert spec.workdir == "/tmp"
    assert spec.timeout == 5400
    assert spec.retries == 3
    assert spec.retry_backoff == 15
    assert spec.concurrency == "replace"
    assert spec.starting_deadline == 120
    assert spec.on_lost == "rerun"
    assert dict(spec.tags) == {"disk": "ssd", "region": "eu-1"}
    assert spec.history_limit == 7
    assert spec.suspend is True


@pytest.mark.parametrize(
    ("schedule", "kind"),
    [
        ("*/15 * * * *", "cron"),
        ("0 */10 * * * *", "cron"),
        ("@hourly", "cron"),
        ("@daily", "cron"),
        ("@weekly", "cron"),
        ("@monthly", "cron"),
        ("@yearly", "cron"),
        ("@annually", "cron"),
        ("@midnight", "cron"),
        ("@every 30s", "every"),
        ("@every 1h30m", "every"),
        ("@every 90", "every"),
        ("0 9 * jan-mar MON-FRI", "cron"),
        ("0 0 ? * 7", "cron"),
    ],
)
def test_schedule_forms_accepted(schedule: str, kind: str) -> None:
    (spec,) = load(MINIMAL.replace('"* * * * *"', json.dumps(schedule)))
    assert spec.schedule == schedule
    assert spec.timetable().schedule.__class__.__name__.lower().startswith(kind)


def test_schedule_whitespace_is_normalised() -> None:
    (spec,) = load(MINIMAL.replace('"* * * * *"', '"  0   3 *  * *  "'))
    assert spec.schedule == "0 3 * * *"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("1d1h1m1s", 90061),
     ("90", 90), (90, 90), ("0s", 0)],
)
def test_durations(text: object, seconds: int) -> None:
    value = json.dumps(text) if isinstance(text, str) else str(text)
    (spec,) = load(job_with(f"retry_backoff: {value}\n"))
    assert spec.retry_backoff == seconds


def test_command_string_and_list() -> None:
    (a,) = load(job_with(""))
    assert a.command == "echo hi"
    (b,) = load(MINIMAL.replace("command: echo hi", "command: [sleep, 1]"))
    assert b.command == ("sleep", "1")


def test_null_optional_field_takes_default() -> None:
    (spec,) = load(job_with("workdir:\ntimeout: ~\nenv:\n"))
    assert spec.workdir is None
    assert spec.timeout is None
    assert dict(spec.env) == {}


def test_merge_keys_and_anchors_work() -> None:
    specs = load("""\
        x-defaults: &d
          retries: 2
          tags: {disk: ssd}
        jobs:
          - <<: *d
            name: a
            schedule: "@every 5s"
            command: [echo, a]
          - <<: *d
            name: b
            schedule: "@daily"
            command: [echo, b]
            retries: 5
        """)
    assert [(s.name, s.retries, dict(s.tags)) for s in specs] == [
        ("a", 2, {"disk": "ssd"}), ("b", 5, {"disk": "ssd"})]


def test_empty_jobs_list_is_valid() -> None:
    assert load("jobs: []\n") == []
    assert load("jobs:\n") == []


def test_example_file_validates() -> None:
    specs = load_jobs(REPO / "jobs.example.yaml")
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    # every field appears in the example, and at least one job fires every few seconds
    text = (REPO / "jobs.example.yaml").read_text()
    for name in FIELDS:
        assert f"{name}:" in text, name
    every = [s.timetable().schedule for s in specs if s.schedule.startswith("@every")]
    assert any(getattr(e, "interval", 99) <= 10 for e in every)


# ------------------------------------------------------------------------ JSON


def test_json_is_canonical_and_round_trips() -> None:
    specs = load_jobs(REPO / "jobs.example.yaml")
    for spec in specs:
        text = spec.to_json()
        data = json.loads(text)
        assert list(data) == sorted(data)
        assert set(data) == set(FIELDS)
        assert " " not in text.replace(spec.schedule, "").split('"command"')[0]
        back = spec_from_json(text)
        assert back == spec
        assert back.to_json() == text
        assert hash(back) == hash(spec)


def test_json_is_independent_of_yaml_key_order() -> None:
    (a,) = load(job_with("env: {B: x, A: y}\ntags: {z: '1', a: '2'}\n"))
    (b,) = load("""\
        jobs:
          - tags: {a: '2', z: '1'}
            env: {A: y, B: x}
            command: echo hi
            schedule: "* * * * *"
            name: hello
        """)
    assert a.to_json() == b.to_json()
    assert a == b


def test_from_json_validates() -> None:
    good = json.loads(load(MINIMAL)[0].to_json())
    bad = dict(good, concurrency="sometimes", retries=-1, bogus=1)
    with pytest.raises(SpecError) as info:
        spec_from_json(json.dumps(bad), source="/cron/jobs/hello")
    text = str(info.value)
    assert '/cron/jobs/hello: job "hello": field "concurrency": must be one of' in text
    assert 'field "retries"' in text
    assert 'field "bogus": unknown field' in text
    with pytest.raises(SpecError, match="invalid JSON"):
        spec_from_json("{nope")
    with pytest.raises(SpecError, match="must be a JSON object"):
        spec_from_json("[1]")


def test_spec_is_immutable() -> None:
    (spec,) = load(job_with("env: {A: b}\n"))
    with pytest.raises(AttributeError):
        spec.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.env["A"] = "c"  # type: ignore[index]


def test_retry_delay_doubles_and_caps() -> None:
    (spec,) = load(job_with("retries: 5\nretry_backoff: 10s\n"))
    assert [spec.retry_delay(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert spec.retry_delay(30) == 3600
    with pytest.raises(ValueError):
        spec.retry_delay(0)


_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)


@given(
    name=_names,
    command=st.one_of(_text.filter(lambda s: s.strip() != ""),
                      st.lists(_text, min_size=1, max_size=4).filter(lambda a: a[0].strip())),
    env=st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True).filter(
        lambda k: not k.startswith("RAFTCRON_")), _text, max_size=3),
    retries=st.integers(0, 100),
    timeout=st.one_of(st.none(), st.integers(1, 10**6)),
    suspend=st.booleans(),
)
def test_json_round_trip_property(
    name: str, command: str | list[str], env: dict[str, str], *, retries: int,
    timeout: int | None, suspend: bool,
) -> None:
    spec = JobSpec(name=name, schedule="*/5 * * * *",
                   command=command if isinstance(command, str) else tuple(command), env=env,
                   retries=retries, timeout=timeout, suspend=suspend)
    back = spec_from_json(spec.to_json())
    assert back == spec
    assert back.to_json() == spec.to_json()


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
