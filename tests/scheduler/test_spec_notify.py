"""Job files: ``notify:`` entries, ``expect:`` and the top-level ``defaults:`` block."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.notify_model import NotifyEntry
from scheduler.spec import spec_from_json
from tests.scheduler.spec_util import REPO, load, one_problem

FILE = """\
defaults:
  notify:
    - on: [failure, timeout, lost]
      webhook: http://127.0.0.1:9000/cron
      secret: s3cret
jobs:
  - name: a
    schedule: "@hourly"
    command: [true]
    expect: {succeed_within: 26h}
  - name: b
    schedule: "@hourly"
    command: [true]
    notify:
      - on: [overdue, recovered]
        command: ["/usr/local/bin/page-oncall", "--team", "ops"]
"""


def test_notify_defaults_and_expect_load_and_round_trip() -> None:
    a, b = load(FILE)
    hook = NotifyEntry(on=("failure", "timeout", "lost"), webhook="http://127.0.0.1:9000/cron",
                       secret="s3cret")
    assert a.notify == (hook,) and a.expect == 26 * 3600
    # A job's own notify: replaces the default (it is not merged with it).
    assert b.notify == (NotifyEntry(on=("overdue", "recovered"),
                                    command=("/usr/local/bin/page-oncall", "--team", "ops")),)
    assert b.expect is None
    for spec in (a, b):
        assert spec_from_json(spec.to_json()) == spec


def test_jobs_without_notify_keep_their_stored_bytes() -> None:
    (spec,) = load('jobs:\n  - {name: a, schedule: "@hourly", command: "true"}\n')
    assert "notify" not in spec.to_json() and "expect" not in spec.to_json()


BASE = 'jobs:\n  - name: a\n    schedule: "@hourly"\n    command: "true"\n'


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    notify: yes\n", 'field "notify": must be a list of entries'),
        ("    notify: [{webhook: 'http://x/'}]\n", "needs 'on: [events]'"),
        ("    notify: [{on: [], webhook: 'http://x/'}]\n", "'on' must be a non-empty list"),
        ("    notify: [{on: [fail], webhook: 'http://x/'}]\n",
         'field "notify": must be one of failure, timeout, lost, missed, skipped, success, '
         'overdue, recovered (got "fail")'),
        ("    notify: [{on: [failure, failure], webhook: 'http://x/'}]\n", "listed twice"),
        ("    notify: [{on: [failure]}]\n", "exactly one target"),
        ("    notify: [{on: [failure], webhook: 'http://x/', command: [a]}]\n",
         "exactly one target, 'webhook: URL' or 'command: [argv]' (got webhook and command)"),
        ("    notify: [{on: [failure], webhook: 'ftp://x/'}]\n", "http:// or https:// URL"),
        ("    notify: [{on: [failure], webhook: 'http:///path'}]\n", "with a host"),
        ("    notify: [{on: [failure], command: 'page me'}]\n", "list of arguments"),
        ("    notify: [{on: [failure], command: []}]\n", "empty list"),
        ("    notify: [{on: [failure], command: [a], secret: x}]\n", "it needs 'webhook:'"),
        ("    notify: [{on: [failure], webhook: 'http://x/', sekret: x}]\n",
         'unknown key "sekret"; allowed: on, webhook, command, secret'),
        ("    expect: 26h\n", "must be a mapping like {succeed_within: 26h}"),
        ("    expect: {}\n", "needs 'succeed_within: DURATION'"),
        ("    expect: {succeed_within: soon}\n", "must be a duration"),
        ("    expect: {within: 1h}\n", 'unknown key "within"'),
    ],
)
def test_bad_notify_and_expect(extra: str, expected: str) -> None:
    msg = one_problem(BASE + extra)
    assert msg.startswith("jobs.yaml:5:") and 'job "a"' in msg, msg
    assert expected in msg, msg


def test_bad_defaults() -> None:
    assert 'field "defaults": "name" cannot be a default' in one_problem(
        "defaults: {name: x}\n" + BASE)
    assert '"notfy" cannot be a default (did you mean "notify"?)' in one_problem(
        "defaults: {notfy: []}\n" + BASE)
    assert 'field "defaults": must be a mapping of job fields (got 5)' in one_problem(
        "defaults: 5\n" + BASE)


def test_validate_command_reports_notify_errors_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "jobs.yaml"
    f.write_text(BASE + "    notify: [{on: [failure], webhook: 'ftp://x/'}]\n")
    res = subprocess.run([sys.executable, "-m", "scheduler.cli", "validate", str(f)],
                         capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert res.returncode == 2
    assert res.stderr.startswith(f"Error: {f}:5:") and "http:// or https:// URL" in res.stderr
    assert "Traceback" not in res.stderr
    f.write_text(FILE)
    res = subprocess.run([sys.executable, "-m", "scheduler.cli", "validate", str(f)],
                         capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert res.returncode == 0, res.stderr


def test_the_readme_notify_example_validates() -> None:
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Operating raftcron"):]
    section = section[:section.index("\n## ", 1)]
    blocks = [b.split("```")[0] for b in section.split("```yaml\n")[1:]]
    (example,) = [b for b in blocks if "notify:" in b]
    (backup,) = load(example)
    assert backup.expect == 26 * 3600
    assert [n.on for n in backup.notify] == [("failure", "timeout", "lost"),
                                             ("overdue", "recovered")]
    assert backup.notify[0].secret == "change-me"
