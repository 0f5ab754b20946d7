"""Job files (YAML) and stored specs (JSON) → :class:`JobSpec`, every problem collected.

The loader works on YAML nodes, so each problem names the file, line and column of the
value at fault (see :mod:`scheduler.spec`); a stored spec's JSON is turned into the same
nodes (without marks) and checked by the same code.
"""

from __future__ import annotations

import difflib
import gc
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from scheduler.errors import SpecError, SpecProblem
from scheduler.limits import exec_problems, store_problems
from scheduler.spec_fields import (
    CONVERTERS,
    MERGE_TAG,
    NULL_TAG,
    VALUE_TAG,
    Bad,
    got,
    node_of,
    runnable_as,
)
from scheduler.spec_model import FIELDS, NAME_RE, REQUIRED, JobSpec


def load_jobs(path: str | Path, *, local_users: bool = False) -> list[JobSpec]:
    """Load and validate a job file; raises :class:`SpecError` listing every problem.

    ``local_users``: also check that every ``user:`` exists on this host and that this
    process may run jobs as it (it is root, or it is that user) — what ``raftcron validate``
    checks, on the host that will run the jobs."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([SpecProblem(str(p), None, None, None, None,
                                     f"cannot read: {exc}")]) from None
    return load_jobs_text(text, str(p), local_users=local_users)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: building many small objects that all stay
    alive (a large file's YAML nodes, thousands of specs) triggers collections that each walk
    every object built so far, most of the cost of loading a large file. Nothing built here
    forms reference cycles that must be freed early; collection resumes on exit (if it was
    on)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def load_jobs_text(text: str, filename: str = "<string>", *,
                   local_users: bool = False) -> list[JobSpec]:
    """Validate job-file text. All problems or all jobs: never a partial list."""
    with gc_paused():
        return _load_jobs_text(text, filename, local_users=local_users)


def _load_jobs_text(text: str, filename: str, *, local_users: bool) -> list[JobSpec]:
    try:
        # libyaml's parser when built in: the same nodes and marks, far faster on big files.
        docs = list(yaml.compose_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = " ".join(x for x in (exc.context, exc.problem) if x)
        raise SpecError([SpecProblem(filename, mark.line + 1 if mark else None,
                                     mark.column + 1 if mark else None, None, None,
                                     f"invalid YAML: {msg}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([SpecProblem(filename, None, None, None, None,
                                     f"invalid YAML: {exc}")]) from None
    checker = _Checker(filename, local_users=local_users, limits=True)
    docs = [d for d in docs if d is not None]
    if not docs:
        checker.add(None, None, None, "is empty; expected a top-level 'jobs:' list")
        raise SpecError(checker.problems)
    if len(docs) > 1:
        checker.add(docs[1], None, None, "holds several YAML documents; put every job under "
                    "one 'jobs:' list")
        raise SpecError(checker.problems)
    specs = checker.file(docs[0])
    if checker.problems:
        raise SpecError(checker.problems)
    return specs


def spec_from_json(text: str | bytes, source: str = "<json>") -> JobSpec:
    """A stored spec (JSON), checked as a job of a file would be."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpecError([SpecProblem(source, None, None, None, None,
                                     f"invalid JSON: {exc}")]) from None
    if not isinstance(data, dict):
        raise SpecError([SpecProblem(source, None, None, None, None,
                                     "a job spec must be a JSON object")])
    fast = _checked_fields(data)
    if fast is not None:
        return fast
    node = node_of(data)  # a problem somewhere: check it all again, to say where
    checker = _Checker(source)
    spec = checker.job(node, 1)
    if checker.problems or spec is None:
        raise SpecError(checker.problems)
    return spec


_FIELD_MEMO_MAX = 4096
_field_memo: dict[tuple[str, object], object] = {}
"""(field, stored JSON value) → its checked value, for the fields that repeat from job to
job (a listing of many stored specs checks the same few schedules, zones and defaults)."""
_UNIQUE_FIELDS = frozenset({"name", "command"})


def _memo_key(value: object) -> object:
    """A hashable stand-in for a JSON value (its type included: ``1`` is not ``true``), or
    None when it is not worth one."""
    kind = type(value)
    if kind in (str, int, bool):
        return (kind, value)
    if isinstance(value, list) and all(type(v) is str for v in value):
        return (list, tuple(value))
    if isinstance(value, dict) and all(type(v) is str for v in value.values()):
        return (dict, tuple(sorted(value.items())))
    return None


def _checked_fields(data: dict[str, object]) -> JobSpec | None:
    """The spec a stored JSON object holds when every field passes its check, each field
    converted as :meth:`_Checker.job` would (same converters, null optional fields left
    to their default), repeated values from a memo; None at the first doubt, so that the
    caller checks it all again and reports exactly what is wrong, and where."""
    if any(k not in CONVERTERS for k in data) or any(data.get(k) is None for k in REQUIRED):
        return None
    values: dict[str, object] = {}
    try:
        for key, value in data.items():
            if value is None:
                continue
            memo = None if key in _UNIQUE_FIELDS else _memo_key(value)
            if memo is None:
                values[key] = CONVERTERS[key](node_of(value))
                continue
            try:
                values[key] = _field_memo[key, memo]
            except KeyError:
                checked = CONVERTERS[key](node_of(value))
                if len(_field_memo) >= _FIELD_MEMO_MAX:
                    _field_memo.clear()
                _field_memo[key, memo] = values[key] = checked
    except Bad:
        return None
    return JobSpec(**values)  # type: ignore[arg-type]


class _Checker:
    """Walks a composed document, collecting problems instead of stopping at the first."""

    def __init__(self, filename: str, *, local_users: bool = False,
                 limits: bool = False) -> None:
        self.filename = filename
        self.local_users = local_users
        self.problems: list[SpecProblem] = []
        self.check_limits = limits
        self.defaults: list[tuple[str, Node, Node]] = []
        """(field, key node, value node) of the file's ``defaults:`` block."""
        """Also check exec and store limits (for files: a stored spec already fit the store,
        and a worker that cannot exec a command records that run as failed)."""

    def add(self, node: Node | None, job: str | None, fld: str | None, message: str) -> None:
        mark = node.start_mark if node is not None else None
        self.problems.append(SpecProblem(
            self.filename, mark.line + 1 if mark else None, mark.column + 1 if mark else None,
            job, fld, message))

    def _pairs(self, node: MappingNode, job: str | None) -> list[tuple[str, Node, Node]]:
        """(key, key node, value node), ``<<`` merges applied, duplicate keys reported."""
        seen: dict[str, Node] = {}
        special = False  # a '<<' merge key or a '=' value key, which flatten_mapping resolves
        for k, _ in node.value:
            if isinstance(k, ScalarNode) and k.tag != MERGE_TAG:
                if k.value in seen:
                    self.add(k, job, str(k.value), "is given twice (first at line "
                             f"{seen[k.value].start_mark.line + 1})")
                seen.setdefault(k.value, k)
            special = special or k.tag in (MERGE_TAG, VALUE_TAG)
        try:
            if special:
                SafeConstructor().flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            self.add(node, job, None, f"bad '<<' merge: {exc.problem}")
            return []
        out: dict[str, tuple[str, Node, Node]] = {}
        for k, v in node.value:
            if not isinstance(k, ScalarNode) or k.tag == NULL_TAG:
                self.add(k, job, None, f"field names must be strings {got(k)}")
                continue
            out[str(k.value)] = (str(k.value), k, v)  # later wins (explicit over merged)
        return list(out.values())

    def file(self, root: Node) -> list[JobSpec]:
        if not isinstance(root, MappingNode):
            self.add(root, None, None, f"must be a mapping with a top-level 'jobs:' list "
                     f"{got(root)}")
            return []
        jobs_node: Node | None = None
        for key, k, v in self._pairs(root, None):
            if key == "jobs":
                jobs_node = v
            elif key == "defaults":
                self.defaults = self._defaults(v)
            elif key.startswith("x-"):
                continue  # free space for YAML anchors shared by jobs (``<<: *defaults``)
            else:
                self.add(k, None, None, f"unknown top-level key {json.dumps(key)}"
                         f"{_suggest(key, ('jobs', 'defaults'))}; a job file holds 'jobs:', "
                         "'defaults:' and 'x-' keys")
        if jobs_node is None:
            if not self.problems:
                self.add(root, None, None, "has no top-level 'jobs:' list")
            return []
        if isinstance(jobs_node, ScalarNode) and jobs_node.tag == NULL_TAG:
            return []
        if not isinstance(jobs_node, SequenceNode):
            self.add(jobs_node, None, "jobs", f"must be a list of jobs {got(jobs_node)}")
            return []
        specs: list[JobSpec] = []
        first: dict[str, Node] = {}
        for i, item in enumerate(jobs_node.value, start=1):
            spec = self.job(item, i)
            name_node = _name_node(item)
            if name_node is not None:
                name = str(name_node.value)
                if name in first:
                    self.add(name_node, name, "name", "duplicate job name (first defined at "
                             f"line {first[name].start_mark.line + 1})")
                    continue
                first[name] = name_node
            if spec is not None:
                specs.append(spec)
        return specs

    def _defaults(self, node: Node) -> list[tuple[str, Node, Node]]:
        """The ``defaults:`` block: fields every job takes unless it sets them itself."""
        if not isinstance(node, MappingNode):
            self.add(node, None, "defaults", f"must be a mapping of job fields {got(node)}")
            return []
        out = []
        for key, k, v in self._pairs(node, None):
            if key not in CONVERTERS or key == "name":
                self.add(k, None, "defaults", f"{json.dumps(key)} cannot be a default"
                         f"{_suggest(key, FIELDS)}; allowed: "
                         + ", ".join(f for f in FIELDS if f != "name"))
            else:
                out.append((key, k, v))
        return out

    def job(self, node: Node, index: int) -> JobSpec | None:
        label = f"#{index}"
        if not isinstance(node, MappingNode):
            self.add(node, label, None, f"a job must be a mapping of fields {got(node)}")
            return None
        before = len(self.problems)
        pairs = self._pairs(node, label)
        own = {key for key, _, _ in pairs}
        pairs += [d for d in self.defaults if d[0] not in own]
        # Name first, so every other problem can say which job it is about.
        for key, _, v in pairs:
            if key == "name" and isinstance(v, ScalarNode) and NAME_RE.fullmatch(str(v.value)):
                label = str(v.value)
        values: dict[str, object] = {}
        for key, k, v in pairs:
            conv = CONVERTERS.get(key)
            if conv is None:
                self.add(k, label, key, f"unknown field{_suggest(key, FIELDS)}; allowed: "
                         + ", ".join(FIELDS))
                continue
            if isinstance(v, ScalarNode) and v.tag == NULL_TAG:
                if key in REQUIRED:
                    self.add(v, label, key, "is required (got null)")
                continue  # an optional field left empty takes its default
            try:
                values[key] = conv(v)
                if key == "user" and self.local_users:
                    runnable_as(str(values[key]), v)
            except Bad as bad:
                self.add(bad.node or v, label, key, bad.message)
        for key in REQUIRED:
            if key not in values and not any(p == key for p, _, _ in pairs):
                self.add(node, label, key, "is required")
        if len(self.problems) > before:
            return None
        spec = JobSpec(**values)  # type: ignore[arg-type]
        return spec if not self.check_limits or self.limits(node, label, spec) else None

    def limits(self, node: Node, label: str, spec: JobSpec) -> bool:
        """Record what would fail only at run time (exec or store limits); True if none."""
        argv = (["/bin/sh", "-c", spec.command] if isinstance(spec.command, str)
                else list(spec.command))
        found = exec_problems(argv, dict(spec.env)) + store_problems(spec.to_json())
        for fld, message in found:
            self.add(node, label, fld or None, message)
        return not found


def _name_node(item: Node) -> ScalarNode | None:
    """The node of a job's ``name`` if it is a well-formed name (for duplicate detection)."""
    if isinstance(item, MappingNode):
        for k, v in item.value:
            if (isinstance(k, ScalarNode) and k.value == "name" and isinstance(v, ScalarNode)
                    and v.tag != NULL_TAG and NAME_RE.fullmatch(str(v.value))):
                return v
    return None


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""
