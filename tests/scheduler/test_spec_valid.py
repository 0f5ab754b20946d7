"""Job files → JobSpec: every field and its default, and the canonical JSON form."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.errors import SpecError
from scheduler.spec import DEFAULTS, FIELDS, JobSpec, load_jobs, spec_from_json
from tests.scheduler.spec_util import MINIMAL, REPO, job_with, load

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
        # notify/expect only when set: stored specs of jobs without them keep their bytes
        assert set(data) <= set(FIELDS) and set(FIELDS) - set(data) <= {"notify", "expect"}
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
