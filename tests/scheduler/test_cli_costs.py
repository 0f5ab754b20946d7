"""What keeps the client commands fast at 20,000 jobs (#13 item 16), checked by counting the
work done rather than timing it: loading a file runs no garbage collection, apply pretty-prints
only the diffs it shows, `jobs list --tag` decodes only the specs that may match, and stored
specs are checked through nodes built the way PyYAML's representer builds them."""

from __future__ import annotations

import asyncio
import gc
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from coord.client import Client
from scheduler import admin, joblist, keys
from scheduler.errors import SpecError
from scheduler.spec import JobSpec, gc_paused, load_jobs_text, spec_from_json
from scheduler.spec_fields import node_of
from scheduler.spec_load import _checked_fields, _Checker
from tests.helpers.procs import process_group, start_coord
from tests.scheduler.test_cli import stored


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with process_group(Path(tmp_path_factory.mktemp("clicosts"))) as group:
        yield start_coord(group).endpoint


def jobs_text(prefix: str, n: int, tag: str = "a") -> str:
    return "jobs:\n" + "".join(
        f"  - name: {prefix}{i:04d}\n    schedule: \"{i % 60} * * * *\"\n"
        f"    command: [echo, '{i}']\n    tags: {{shard: {tag}}}\n" for i in range(n))


def test_loading_a_job_file_runs_no_garbage_collection() -> None:
    """Each collection walks every object built so far: at 20,000 jobs they were 90% of
    composing the file."""
    text = jobs_text("gc-", 3000)
    collections: list[int] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collections.append(info["generation"])
    gc.callbacks.append(count)
    try:
        specs = load_jobs_text(text, "gc.yaml")
        # At most the one collection that runs as soon as collection resumes.
        assert len(specs) == 3000 and len(collections) <= 1, collections
        assert gc.isenabled()
        # Without the pause, composing the same file alone collects again and again.
        gc.collect()
        collections.clear()
        yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        assert len(collections) > 10, collections
        gc.disable()
        with gc_paused():
            pass
        assert not gc.isenabled()  # a caller that had disabled collection keeps it so
    finally:
        gc.enable()
        gc.callbacks.remove(count)


def test_apply_pretty_prints_only_the_diffs_it_shows(coord: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler.cli import app
    from scheduler.cli_files import SUMMARY_SHOWN

    f = tmp_path / "many.yaml"
    f.write_text(jobs_text("diff-", 150))
    pretty: list[str] = []
    real = admin._pretty

    def counted(spec_json: str) -> list[str]:
        pretty.append(spec_json)
        return real(spec_json)
    monkeypatch.setattr(admin, "_pretty", counted)
    res = CliRunner().invoke(app, ["apply", "-f", str(f), "--endpoints", coord])
    assert res.exit_code == 0, res.output
    assert "150 job(s) changed, 0 unchanged" in res.output
    assert res.output.count("(add)") == SUMMARY_SHOWN
    assert len(pretty) == SUMMARY_SHOWN  # one per diff shown, not one per job
    assert len([n for n in stored(coord) if n.startswith("diff-")]) == 150
    f.write_text(jobs_text("diff-", 150).replace("[echo,", "[/bin/echo,"))
    pretty.clear()
    every = CliRunner().invoke(app, ["apply", "-f", str(f), "--endpoints", coord,
                                     "--dry-run", "--verbose"])
    assert every.exit_code == 0 and every.output.count("(change)") == 150, every.output[-500:]
    assert '-    "echo",' in every.output and '+    "/bin/echo",' in every.output
    assert len(pretty) == 2 * 150  # old and new of each change, printed in full


def test_jobs_list_tag_decodes_only_the_specs_that_may_match(
        coord: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler.cli import app

    (tmp_path / "a.yaml").write_text(jobs_text("tag-a-", 30, "a"))
    (tmp_path / "b.yaml").write_text(jobs_text("tag-b-", 90, "b"))
    for f in ("a.yaml", "b.yaml"):
        res = CliRunner().invoke(app, ["apply", "-f", str(tmp_path / f), "--endpoints", coord])
        assert res.exit_code == 0, res.output
    # Written by hand: a tag value that is a JSON number (valid: the spec reads it as "5"),
    # and a spec with matching tags but an invalid schedule (listed by no tag filter).
    odd = json.loads(JobSpec(name="tag-num", schedule="@daily", command="true",
                             tags={"shard": "5"}).to_json())
    odd["tags"] = {"shard": 5}
    bad = dict(odd, name="tag-bad", schedule="no such schedule", tags={"shard": "a"})

    async def put() -> None:
        async with Client([coord]) as c:
            await c.put(keys.job_key("tag-num"), json.dumps(odd))
            await c.put(keys.job_key("tag-bad"), json.dumps(bad))
    asyncio.run(put())
    decoded: list[bytes] = []
    real = joblist.decode_spec

    def counted(key: bytes, raw: bytes) -> JobSpec:
        decoded.append(key)
        return real(key, raw)
    monkeypatch.setattr(joblist, "decode_spec", counted)

    def names(*args: str) -> list[str]:
        decoded.clear()
        res = CliRunner().invoke(app, ["jobs", "list", "--endpoints", coord, "-o", "json",
                                       "--prefix", "tag-", *args])
        assert res.exit_code == 0, res.output
        return [r["name"] for r in json.loads(res.output)]

    assert names("--tag", "shard=a") == [f"tag-a-{i:04d}" for i in range(30)]
    # The 30, the invalid one and the numeric one (its tag decodes to "5", but the cheap
    # filter does not say so); none of the 90 others.
    assert len(decoded) == 32
    assert names("--tag", "shard=5") == ["tag-num"]
    assert len(decoded) == 1
    listed = names()
    assert len(listed) == 122 and len(decoded) == 122  # no filter: every spec decoded
    assert "tag-bad" in listed


@pytest.mark.parametrize("value", [
    {"b": 1, "a": [True, False, None, "x", -5, 10**30, 1.5, float("inf")]},
    {"name": "j", "env": {"B": "1", "A": "ü"}, "nested": {"z": {"y": []}}},
    "", 0, [], {}, -0.0, [[{"k": [1]}]],
])
def test_stored_spec_nodes_are_the_representers(value: Any) -> None:
    """`from_json` builds its nodes directly (the generic representer was most of `jobs list`);
    they must be the nodes the representer built, so every check and message is unchanged."""
    value = json.loads(json.dumps(value))

    def shape(n: yaml.Node) -> Any:
        if isinstance(n, yaml.ScalarNode):
            return (n.tag, n.value)
        if isinstance(n, yaml.SequenceNode):
            return (n.tag, [shape(v) for v in n.value])
        return (n.tag, [(shape(k), shape(v)) for k, v in n.value])
    assert shape(node_of(value)) == shape(yaml.SafeDumper(io.StringIO()).represent_data(value))


def test_a_stored_float_is_reported_as_written() -> None:
    spec = json.loads(JobSpec(name="f", schedule="@daily", command="true").to_json())
    spec["retries"] = 1.5
    with pytest.raises(SpecError, match=r'"retries": must be a whole number from 0 to 100 '
                                        r"\(got 1.5\)"):
        spec_from_json(json.dumps(spec))


def test_the_memoised_check_of_stored_specs_agrees_with_the_full_check() -> None:
    """`from_json` checks a stored spec's fields with a memo of repeated values and falls back
    to the full checker at the first doubt: for every value, good or bad, both say the same."""
    base = json.loads(JobSpec(name="m", schedule="*/5 * * * *", command=("echo", "x"),
                              env={"A": "1"}, tags={"k": "v"}, timeout=30).to_json())
    variants: list[dict[str, Any]] = [base]
    odd_values: list[Any] = [None, "", "x", "forbid", "rerun", "UTC", "Mars/Base", "@daily",
                             "1h", "0", 0, 1, -1, 5, 10**6, True, False, 1.5, [], ["a"],
                             ["PATH", "PATH"], {}, {"A": "1"}, {"A": None}, {"RAFTCRON_X": "1"},
                             {"k": 5}, {"bad key": "v"}]
    for key in base:
        variants += [dict(base, **{key: v}) for v in odd_values]
    variants += [{k: v for k, v in base.items() if k != "schedule"}, dict(base, nope=1)]
    agreed = 0
    for data in variants:
        checker = _Checker("<json>")
        full = checker.job(node_of(data), 1)
        for _ in range(2):  # the second time from the memo
            fast = _checked_fields(data)
            assert fast is None or (full is not None and fast == full
                                    and fast.to_json() == full.to_json()), data
        if full is not None and fast is not None:
            agreed += 1
        if full is not None and not checker.problems:
            assert fast is not None, data  # a valid spec takes the memoised path
    assert agreed > 50  # the comparison above compared specs, not only failures
