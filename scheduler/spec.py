"""Job files (YAML) → validated, immutable :class:`JobSpec` values.

A job file is a mapping with one key, ``jobs:``, holding a list of job mappings (keys
starting with ``x-`` are ignored: a place for YAML anchors that jobs merge with ``<<:``). The loader
works on YAML *nodes* (``yaml.compose``), so every problem names the file, line and column of
the value at fault, the job and the field, and says what is allowed::

    jobs.yaml:12:18: job "backup": field "concurrency": must be one of forbid, allow,
    replace (got "sometimes")

(one line in real output)

Every problem in a file is collected and raised together as one :class:`SpecError`; a file
with any invalid job yields no jobs at all, so a caller never applies half a file.

Invariants of a ``JobSpec``: every field holds a validated value; ``name`` is safe as one
segment of a store key; ``to_json()`` is canonical (sorted keys, no whitespace, durations in
whole seconds), so equal specs give equal bytes, and ``JobSpec.from_json(s.to_json()) == s``.

Defaults: timezone ``UTC``, env ``{}``, inherit_env ``[PATH, LANG, LC_*, TZ]``, user none (the
worker's own), workdir none (the worker's directory), timeout none, retries 0, retry_backoff
10s, concurrency ``forbid``, starting_deadline 60s, on_lost ``record``, tags ``{}``,
history_limit 20, suspend false.
"""

from __future__ import annotations

import difflib
import gc
import io
import json
import os
import pwd
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from scheduler.errors import ScheduleError, SpecError, SpecProblem
from scheduler.limits import exec_problems, store_problems
from scheduler.plan import (
    DURATION_HELP,
    Timetable,
    load_zone,
    parse_duration,
    parse_schedule,
    spread,
)

__all__ = [
    "DEFAULTS",
    "DEFAULT_INHERIT_ENV",
    "FIELDS",
    "JobSpec",
    "SpecError",
    "SpecProblem",
    "load_jobs",
    "load_jobs_text",
]

Concurrency = Literal["forbid", "allow", "replace"]
OnLost = Literal["record", "rerun"]

CONCURRENCY_VALUES: Final = ("forbid", "allow", "replace")
ON_LOST_VALUES: Final = ("record", "rerun")
NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
NAME_HELP: Final = ("must be 1-128 characters of letters, digits, '_', '-' and '.', starting "
                    "with a letter or digit (it becomes part of a store key)")
ENV_KEY_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TAG_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
RESERVED_ENV_PREFIX: Final = "RAFTCRON_"
INHERIT_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?|\*")
USER_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?")
DEFAULT_INHERIT_ENV: Final[tuple[str, ...]] = ("PATH", "LANG", "LC_*", "TZ")
"""What a job inherits from its worker's environment unless it says otherwise: where to find
programs, the locale and the time zone, and nothing that could hold a secret."""
MAX_RETRIES: Final = 100
MAX_HISTORY: Final = 10_000
MAX_RETRY_DELAY: Final = 3600
MAX_DURATION: Final = 366 * 86400

FIELDS: Final = (
    "name", "schedule", "timezone", "command", "env", "inherit_env", "user", "workdir",
    "timeout", "retries", "retry_backoff", "concurrency", "starting_deadline", "on_lost",
    "tags", "history_limit", "suspend",
)
REQUIRED: Final = ("name", "schedule", "command")
DEFAULTS: Final[Mapping[str, object]] = MappingProxyType({
    "timezone": "UTC",
    "env": {},
    "inherit_env": DEFAULT_INHERIT_ENV,
    "user": None,
    "workdir": None,
    "timeout": None,
    "retries": 0,
    "retry_backoff": 10,
    "concurrency": "forbid",
    "starting_deadline": 60,
    "on_lost": "record",
    "tags": {},
    "history_limit": 20,
    "suspend": False,
})


_schedule_of = lru_cache(maxsize=1024)(parse_schedule)
"""parse_schedule, remembered: many jobs share a schedule, and a file of 20,000 jobs (or a
listing of them) would otherwise parse the same few cron expressions 20,000 times. The
schedules are immutable values; an invalid expression raises every time (not cached)."""


@dataclass(frozen=True)
class JobSpec:
    """One validated job. Durations are whole seconds; ``timeout`` None means no limit.

    ``command`` is an argv tuple (run directly) or a string (run by ``/bin/sh -c``).
    """

    name: str
    schedule: str
    command: tuple[str, ...] | str
    timezone: str = "UTC"
    env: Mapping[str, str] = field(default_factory=dict)
    inherit_env: tuple[str, ...] = DEFAULT_INHERIT_ENV
    user: str | None = None
    workdir: str | None = None
    timeout: int | None = None
    retries: int = 0
    retry_backoff: int = 10
    concurrency: Concurrency = "forbid"
    starting_deadline: int = 60
    on_lost: OnLost = "record"
    tags: Mapping[str, str] = field(default_factory=dict)
    history_limit: int = 20
    suspend: bool = False

    def __post_init__(self) -> None:
        # Freeze the maps (sorted, read-only) so a spec can't change after validation.
        object.__setattr__(self, "env", MappingProxyType(dict(sorted(self.env.items()))))
        object.__setattr__(self, "tags", MappingProxyType(dict(sorted(self.tags.items()))))
        if isinstance(self.command, list):
            object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "inherit_env", tuple(self.inherit_env))

    def __hash__(self) -> int:
        return hash(self.to_json())

    # ------------------------------------------------------------------ derived

    def timetable(self) -> Timetable:
        """The job's schedule in its zone (see :mod:`scheduler.plan`)."""
        return Timetable(spread(_schedule_of(self.schedule), self.name),
                         load_zone(self.timezone))

    def retry_delay(self, attempt: int) -> int:
        """Seconds to wait before attempt ``attempt + 1`` after attempt ``attempt`` (1-based)
        failed: ``retry_backoff * 2**(attempt-1)``, capped at one hour."""
        if attempt < 1:
            raise ValueError("attempts are numbered from 1")
        delay: int = self.retry_backoff * 2 ** min(attempt - 1, 32)
        return min(delay, MAX_RETRY_DELAY)

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, every field present."""
        return {
            "name": self.name,
            "schedule": self.schedule,
            "timezone": self.timezone,
            "command": self.command if isinstance(self.command, str) else list(self.command),
            "env": dict(self.env),
            "inherit_env": list(self.inherit_env),
            "user": self.user,
            "workdir": self.workdir,
            "timeout": self.timeout,
            "retries": self.retries,
            "retry_backoff": self.retry_backoff,
            "concurrency": self.concurrency,
            "starting_deadline": self.starting_deadline,
            "on_lost": self.on_lost,
            "tags": dict(self.tags),
            "history_limit": self.history_limit,
            "suspend": self.suspend,
        }

    def to_json(self) -> str:
        """Canonical JSON (the value of ``/cron/jobs/<name>``): sorted keys, no spaces."""
        return self._json

    @cached_property
    def _json(self) -> str:
        # Computed once: the limits check, apply and hashing each want it (the spec is
        # immutable, so the text cannot go stale).
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<json>") -> JobSpec:
        """Parse and re-validate a stored spec; raises :class:`SpecError`."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SpecError([SpecProblem(source, None, None, None, None,
                                         f"invalid JSON: {exc}")]) from None
        if not isinstance(data, dict):
            raise SpecError([SpecProblem(source, None, None, None, None,
                                         "a job spec must be a JSON object")])
        node = _node_of(data)
        checker = _Checker(source)
        spec = checker.job(node, 1)
        if checker.problems or spec is None:
            raise SpecError(checker.problems)
        return spec


def _node_of(value: Any) -> Node:
    """The YAML node PyYAML's SafeDumper represents a JSON value as (mappings sorted by
    key, no marks), built directly: the generic representer cost ~0.1 ms a spec, most of
    `jobs list` at 20,000 jobs. Anything but str, bool, int, None, list and a dict with
    string keys (a float) goes to the representer, so every value reads in a message as
    before."""
    kind = type(value)
    if kind is str:
        return ScalarNode(_STR, value)
    if kind is bool:
        return ScalarNode(_BOOL, "true" if value else "false")
    if kind is int:
        return ScalarNode(_INT, str(value))
    if value is None:
        return ScalarNode(_NULL, "null")
    if kind is list:
        return SequenceNode(_SEQ, [_node_of(v) for v in value])
    if kind is dict and all(type(k) is str for k in value):
        return MappingNode(_MAP, [(ScalarNode(_STR, k), _node_of(v))
                                  for k, v in sorted(value.items())])
    node: Node = yaml.SafeDumper(io.StringIO()).represent_data(value)
    return node


# ---------------------------------------------------------------------------- loading


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
    """No cyclic garbage collection inside: building many small objects that all stay alive
    (a file's YAML nodes, 20,000 specs) triggers collections that each walk every object
    built so far: at 20,000 jobs that was 90% of composing the file. Nothing built here
    forms reference cycles that must be freed early; collection resumes on exit."""
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
        # libyaml's parser when built in: the same nodes and marks, ~10x faster on big files.
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


class _Bad(Exception):
    """One field's problem, raised by a converter and recorded by the checker."""

    def __init__(self, message: str, node: Node | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.node = node


_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_VALUE = "tag:yaml.org,2002:value"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"


def _describe(node: Node) -> str:
    """How a value reads in an error message: ``"sometimes"``, ``5``, ``a list``..."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    assert isinstance(node, ScalarNode)
    if node.tag == _NULL:
        return "null"
    if node.tag == _STR:
        return json.dumps(node.value, ensure_ascii=False)
    return str(node.value)


def _got(node: Node) -> str:
    return f"(got {_describe(node)})"


def _text(node: Node, what: str) -> str:
    """A scalar taken as the text written (``5`` → ``"5"``, ``yes`` → ``"yes"``)."""
    if not isinstance(node, ScalarNode) or node.tag == _NULL:
        raise _Bad(f"must be {what} {_got(node)}", node)
    if "\0" in str(node.value):
        raise _Bad("must not contain NUL characters", node)
    return str(node.value)


def _nonempty_text(node: Node, what: str) -> str:
    s = _text(node, what)
    if not s.strip():
        raise _Bad(f"must be {what} (got an empty string)", node)
    return s


def _name(node: Node) -> str:
    s = _text(node, "a string")
    if not NAME_RE.fullmatch(s):
        raise _Bad(f"{NAME_HELP} {_got(node)}", node)
    return s


def _schedule(node: Node) -> str:
    s = _nonempty_text(node, "a cron expression, a macro like @daily or @every <duration>")
    text = " ".join(s.split())
    try:
        _schedule_of(text)
    except ScheduleError as exc:
        raise _Bad(f"invalid schedule {json.dumps(text)}: {exc}", node) from None
    return text


def _timezone(node: Node) -> str:
    s = _nonempty_text(node, "an IANA time zone name like Europe/Berlin")
    try:
        load_zone(s)
    except ValueError as exc:
        raise _Bad(str(exc), node) from None
    return s


def _command(node: Node) -> tuple[str, ...] | str:
    what = "a shell string or a non-empty list of arguments"
    if isinstance(node, SequenceNode):
        if not node.value:
            raise _Bad(f"must be {what} (got an empty list)", node)
        argv = tuple(_text(item, "a string (each argument)") for item in node.value)
        if not argv[0].strip():
            raise _Bad("the program (first argument) must not be empty", node.value[0])
        return argv
    if isinstance(node, ScalarNode) and node.tag == _STR:
        return _nonempty_text(node, what)
    raise _Bad(f"must be {what} {_got(node)}", node)


def _str_map(node: Node, key_re: re.Pattern[str], key_help: str,
             value_check: Callable[[Node], str]) -> dict[str, str]:
    if not isinstance(node, MappingNode):
        raise _Bad(f"must be a mapping of {key_help} to values {_got(node)}", node)
    out: dict[str, str] = {}
    seen: dict[str, Node] = {}
    for k, v in node.value:
        key = _text(k, "a string key")
        if not key_re.fullmatch(key):
            raise _Bad(f"key {json.dumps(key)} is not {key_help}", k)
        if key in seen:
            raise _Bad(f"duplicate key {json.dumps(key)} (first at line "
                       f"{seen[key].start_mark.line + 1})", k)
        seen[key] = k
        out[key] = value_check(v)
    return out


def _env(node: Node) -> dict[str, str]:
    def value(v: Node) -> str:
        if isinstance(v, ScalarNode) and v.tag == _NULL:
            raise _Bad('values must be strings; write "" for an empty value (got null)', v)
        return _text(v, "a string")

    env = _str_map(node, ENV_KEY_RE, "a variable name (letters, digits, '_')", value)
    for key, k in zip(env, (k for k, _ in node.value), strict=False):
        if key.upper().startswith(RESERVED_ENV_PREFIX):
            raise _Bad(f"{json.dumps(key)}: names starting with {RESERVED_ENV_PREFIX} are set "
                       "by raftcron itself", k)
    return env


def _inherit_env(node: Node) -> tuple[str, ...]:
    what = ("a list of variable names to take from the worker's environment (a trailing '*' "
            "takes every name with that prefix, e.g. LC_*)")
    if not isinstance(node, SequenceNode):
        raise _Bad(f"must be {what} {_got(node)}", node)
    names: list[str] = []
    for item in node.value:
        name = _text(item, "a variable name")
        if not INHERIT_RE.fullmatch(name):
            raise _Bad(f"{json.dumps(name)} is not a variable name (letters, digits, '_', "
                       "optionally ending in '*')", item)
        if name.upper().startswith(RESERVED_ENV_PREFIX):
            raise _Bad(f"{json.dumps(name)}: names starting with {RESERVED_ENV_PREFIX} are "
                       "set by raftcron itself", item)
        if name in names:
            raise _Bad(f"{json.dumps(name)} is listed twice", item)
        names.append(name)
    return tuple(names)


def _user(node: Node) -> str:
    s = _nonempty_text(node, "a user name or numeric uid")
    if not USER_RE.fullmatch(s):
        raise _Bad(f"must be a user name or numeric uid (letters, digits, '_', '-', '.', at "
                   f"most 32) {_got(node)}", node)
    return s


def _runnable_as(user: str, node: Node) -> None:
    """This process can start a job as ``user``: the user exists here, and this process is
    root or is that user (the executor makes the same check before every start)."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise _Bad(f"no user {json.dumps(user)} on this host", node) from None
    euid = os.geteuid()
    if euid not in (0, entry.pw_uid):
        me = pwd.getpwuid(euid).pw_name if _has_uid(euid) else str(euid)
        raise _Bad(f"raftcron runs as {json.dumps(me)}, not root, so it cannot run a job as "
                   f"{json.dumps(user)}: run the agent as root, or remove 'user:'", node)


def _has_uid(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _tags(node: Node) -> dict[str, str]:
    def value(v: Node) -> str:
        s = _text(v, "a string")
        if not TAG_RE.fullmatch(s):
            raise _Bad(f"tag value {json.dumps(s)} must be 1-64 letters, digits, '_', '-', '.'",
                       v)
        return s

    return _str_map(node, TAG_RE, "a tag name (1-64 letters, digits, '_', '-', '.')", value)


def _duration(node: Node, *, minimum: int = 0) -> int:
    if isinstance(node, ScalarNode) and node.tag == _INT:
        n = _yaml_int(node)
    elif isinstance(node, ScalarNode) and node.tag == _STR:
        try:
            n = parse_duration(node.value)
        except ValueError:
            raise _Bad(f"must be {DURATION_HELP} {_got(node)}", node) from None
    else:
        raise _Bad(f"must be {DURATION_HELP} {_got(node)}", node)
    if n < minimum:
        raise _Bad(f"must be at least {minimum}s {_got(node)}", node)
    if n > MAX_DURATION:
        raise _Bad(f"must be at most 366d {_got(node)}", node)
    return n


_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")


def _yaml_int(node: ScalarNode) -> int:
    """The value of a YAML int: plain decimal at once, other forms (0x1f, 1_000, 1:30)
    as PyYAML reads them."""
    text = str(node.value)
    if _DECIMAL.fullmatch(text):
        return int(text)
    return int(SafeConstructor().construct_yaml_int(node))


def _int(node: Node, lo: int, hi: int) -> int:
    if not (isinstance(node, ScalarNode) and node.tag == _INT):
        raise _Bad(f"must be a whole number from {lo} to {hi} {_got(node)}", node)
    n = _yaml_int(node)
    if not lo <= n <= hi:
        raise _Bad(f"must be a whole number from {lo} to {hi} {_got(node)}", node)
    return n


def _choice(node: Node, allowed: Sequence[str]) -> str:
    s = _text(node, "one of " + ", ".join(allowed))
    if s not in allowed:
        raise _Bad(f"must be one of {', '.join(allowed)} {_got(node)}", node)
    return s


def _bool(node: Node) -> bool:
    if not (isinstance(node, ScalarNode) and node.tag == _BOOL):
        raise _Bad(f"must be true or false {_got(node)}", node)
    return bool(SafeConstructor().construct_yaml_bool(node))


_CONVERTERS: Final[Mapping[str, Callable[[Node], object]]] = {
    "name": _name,
    "schedule": _schedule,
    "timezone": _timezone,
    "command": _command,
    "env": _env,
    "inherit_env": _inherit_env,
    "user": _user,
    "workdir": lambda n: _nonempty_text(n, "a directory path"),
    "timeout": lambda n: _duration(n, minimum=1),
    "retries": lambda n: _int(n, 0, MAX_RETRIES),
    "retry_backoff": _duration,
    "concurrency": lambda n: _choice(n, CONCURRENCY_VALUES),
    "starting_deadline": lambda n: _duration(n, minimum=1),
    "on_lost": lambda n: _choice(n, ON_LOST_VALUES),
    "tags": _tags,
    "history_limit": lambda n: _int(n, 1, MAX_HISTORY),
    "suspend": _bool,
}


class _Checker:
    """Walks a composed document, collecting problems instead of stopping at the first."""

    def __init__(self, filename: str, *, local_users: bool = False,
                 limits: bool = False) -> None:
        self.filename = filename
        self.local_users = local_users
        self.problems: list[SpecProblem] = []
        self.check_limits = limits
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
            if isinstance(k, ScalarNode) and k.tag != _MERGE:
                if k.value in seen:
                    self.add(k, job, str(k.value), "is given twice (first at line "
                             f"{seen[k.value].start_mark.line + 1})")
                seen.setdefault(k.value, k)
            special = special or k.tag in (_MERGE, _VALUE)
        try:
            if special:
                SafeConstructor().flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            self.add(node, job, None, f"bad '<<' merge: {exc.problem}")
            return []
        out: dict[str, tuple[str, Node, Node]] = {}
        for k, v in node.value:
            if not isinstance(k, ScalarNode) or k.tag == _NULL:
                self.add(k, job, None, f"field names must be strings {_got(k)}")
                continue
            out[str(k.value)] = (str(k.value), k, v)  # later wins (explicit over merged)
        return list(out.values())

    def file(self, root: Node) -> list[JobSpec]:
        if not isinstance(root, MappingNode):
            self.add(root, None, None, f"must be a mapping with a top-level 'jobs:' list "
                     f"{_got(root)}")
            return []
        jobs_node: Node | None = None
        for key, k, v in self._pairs(root, None):
            if key == "jobs":
                jobs_node = v
            elif key.startswith("x-"):
                continue  # free space for YAML anchors shared by jobs (``<<: *defaults``)
            else:
                self.add(k, None, None, f"unknown top-level key {json.dumps(key)}"
                         f"{_suggest(key, ('jobs',))}; a job file holds 'jobs:' and 'x-' keys")
        if jobs_node is None:
            if not self.problems:
                self.add(root, None, None, "has no top-level 'jobs:' list")
            return []
        if isinstance(jobs_node, ScalarNode) and jobs_node.tag == _NULL:
            return []
        if not isinstance(jobs_node, SequenceNode):
            self.add(jobs_node, None, "jobs", f"must be a list of jobs {_got(jobs_node)}")
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

    def job(self, node: Node, index: int) -> JobSpec | None:
        label = f"#{index}"
        if not isinstance(node, MappingNode):
            self.add(node, label, None, f"a job must be a mapping of fields {_got(node)}")
            return None
        before = len(self.problems)
        pairs = self._pairs(node, label)
        # Name first, so every other problem can say which job it is about.
        for key, _, v in pairs:
            if key == "name" and isinstance(v, ScalarNode) and NAME_RE.fullmatch(str(v.value)):
                label = str(v.value)
        values: dict[str, object] = {}
        for key, k, v in pairs:
            conv = _CONVERTERS.get(key)
            if conv is None:
                self.add(k, label, key, f"unknown field{_suggest(key, FIELDS)}; allowed: "
                         + ", ".join(FIELDS))
                continue
            if isinstance(v, ScalarNode) and v.tag == _NULL:
                if key in REQUIRED:
                    self.add(v, label, key, "is required (got null)")
                continue  # an optional field left empty takes its default
            try:
                values[key] = conv(v)
                if key == "user" and self.local_users:
                    _runnable_as(str(values[key]), v)
            except _Bad as bad:
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
                    and v.tag != _NULL and NAME_RE.fullmatch(str(v.value))):
                return v
    return None


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""
