"""The field checks of a job: YAML node → validated value, or :class:`Bad` saying what is
allowed and where (the node). Shared by job files and stored specs (:mod:`scheduler.spec_load`).
"""

from __future__ import annotations

import io
import json
import os
import pwd
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from scheduler.errors import ScheduleError
from scheduler.notify_model import ENTRY_KEYS, EVENTS, NotifyEntry
from scheduler.plan import DURATION_HELP, load_zone, parse_duration
from scheduler.spec_model import (
    CONCURRENCY_VALUES,
    ENV_KEY_RE,
    INHERIT_RE,
    MAX_DURATION,
    MAX_HISTORY,
    MAX_RETRIES,
    NAME_HELP,
    NAME_RE,
    ON_LOST_VALUES,
    RESERVED_ENV_PREFIX,
    TAG_RE,
    USER_RE,
    schedule_of,
)


class Bad(Exception):
    """One field's problem, raised by a converter and recorded by the checker."""

    def __init__(self, message: str, node: Node | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.node = node


STR_TAG = "tag:yaml.org,2002:str"
INT_TAG = "tag:yaml.org,2002:int"
BOOL_TAG = "tag:yaml.org,2002:bool"
NULL_TAG = "tag:yaml.org,2002:null"
MERGE_TAG = "tag:yaml.org,2002:merge"
VALUE_TAG = "tag:yaml.org,2002:value"
SEQ_TAG = "tag:yaml.org,2002:seq"
MAP_TAG = "tag:yaml.org,2002:map"


def _describe(node: Node) -> str:
    """How a value reads in an error message: ``"sometimes"``, ``5``, ``a list``..."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    assert isinstance(node, ScalarNode)
    if node.tag == NULL_TAG:
        return "null"
    if node.tag == STR_TAG:
        return json.dumps(node.value, ensure_ascii=False)
    return str(node.value)


def got(node: Node) -> str:
    return f"(got {_describe(node)})"


def _text(node: Node, what: str) -> str:
    """A scalar taken as the text written (``5`` → ``"5"``, ``yes`` → ``"yes"``)."""
    if not isinstance(node, ScalarNode) or node.tag == NULL_TAG:
        raise Bad(f"must be {what} {got(node)}", node)
    if "\0" in str(node.value):
        raise Bad("must not contain NUL characters", node)
    return str(node.value)


def _nonempty_text(node: Node, what: str) -> str:
    s = _text(node, what)
    if not s.strip():
        raise Bad(f"must be {what} (got an empty string)", node)
    return s


def _name(node: Node) -> str:
    s = _text(node, "a string")
    if not NAME_RE.fullmatch(s):
        raise Bad(f"{NAME_HELP} {got(node)}", node)
    return s


def _schedule(node: Node) -> str:
    s = _nonempty_text(node, "a cron expression, a macro like @daily or @every <duration>")
    text = " ".join(s.split())
    try:
        schedule_of(text)
    except ScheduleError as exc:
        raise Bad(f"invalid schedule {json.dumps(text)}: {exc}", node) from None
    return text


def _timezone(node: Node) -> str:
    s = _nonempty_text(node, "an IANA time zone name like Europe/Berlin")
    try:
        load_zone(s)
    except ValueError as exc:
        raise Bad(str(exc), node) from None
    return s


def _command(node: Node) -> tuple[str, ...] | str:
    what = "a shell string or a non-empty list of arguments"
    if isinstance(node, SequenceNode):
        if not node.value:
            raise Bad(f"must be {what} (got an empty list)", node)
        argv = tuple(_text(item, "a string (each argument)") for item in node.value)
        if not argv[0].strip():
            raise Bad("the program (first argument) must not be empty", node.value[0])
        return argv
    if isinstance(node, ScalarNode) and node.tag == STR_TAG:
        return _nonempty_text(node, what)
    raise Bad(f"must be {what} {got(node)}", node)


def _str_map(node: Node, key_re: re.Pattern[str], key_help: str,
             value_check: Callable[[Node], str]) -> dict[str, str]:
    if not isinstance(node, MappingNode):
        raise Bad(f"must be a mapping of {key_help} to values {got(node)}", node)
    out: dict[str, str] = {}
    seen: dict[str, Node] = {}
    for k, v in node.value:
        key = _text(k, "a string key")
        if not key_re.fullmatch(key):
            raise Bad(f"key {json.dumps(key)} is not {key_help}", k)
        if key in seen:
            raise Bad(f"duplicate key {json.dumps(key)} (first at line "
                       f"{seen[key].start_mark.line + 1})", k)
        seen[key] = k
        out[key] = value_check(v)
    return out


def _env(node: Node) -> dict[str, str]:
    def value(v: Node) -> str:
        if isinstance(v, ScalarNode) and v.tag == NULL_TAG:
            raise Bad('values must be strings; write "" for an empty value (got null)', v)
        return _text(v, "a string")

    env = _str_map(node, ENV_KEY_RE, "a variable name (letters, digits, '_')", value)
    for key, k in zip(env, (k for k, _ in node.value), strict=False):
        if key.upper().startswith(RESERVED_ENV_PREFIX):
            raise Bad(f"{json.dumps(key)}: names starting with {RESERVED_ENV_PREFIX} are set "
                       "by raftcron itself", k)
    return env


def _inherit_env(node: Node) -> tuple[str, ...]:
    what = ("a list of variable names to take from the worker's environment (a trailing '*' "
            "takes every name with that prefix, e.g. LC_*)")
    if not isinstance(node, SequenceNode):
        raise Bad(f"must be {what} {got(node)}", node)
    names: list[str] = []
    for item in node.value:
        name = _text(item, "a variable name")
        if not INHERIT_RE.fullmatch(name):
            raise Bad(f"{json.dumps(name)} is not a variable name (letters, digits, '_', "
                       "optionally ending in '*')", item)
        if name.upper().startswith(RESERVED_ENV_PREFIX):
            raise Bad(f"{json.dumps(name)}: names starting with {RESERVED_ENV_PREFIX} are "
                       "set by raftcron itself", item)
        if name in names:
            raise Bad(f"{json.dumps(name)} is listed twice", item)
        names.append(name)
    return tuple(names)


def _user(node: Node) -> str:
    s = _nonempty_text(node, "a user name or numeric uid")
    if not USER_RE.fullmatch(s):
        raise Bad(f"must be a user name or numeric uid (letters, digits, '_', '-', '.', at "
                   f"most 32) {got(node)}", node)
    return s


def runnable_as(user: str, node: Node) -> None:
    """This process can start a job as ``user``: the user exists here, and this process is
    root or is that user (the executor makes the same check before every start)."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise Bad(f"no user {json.dumps(user)} on this host", node) from None
    euid = os.geteuid()
    if euid not in (0, entry.pw_uid):
        me = pwd.getpwuid(euid).pw_name if _has_uid(euid) else str(euid)
        raise Bad(f"raftcron runs as {json.dumps(me)}, not root, so it cannot run a job as "
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
            raise Bad(f"tag value {json.dumps(s)} must be 1-64 letters, digits, '_', '-', '.'",
                       v)
        return s

    return _str_map(node, TAG_RE, "a tag name (1-64 letters, digits, '_', '-', '.')", value)


def _duration(node: Node, *, minimum: int = 0) -> int:
    if isinstance(node, ScalarNode) and node.tag == INT_TAG:
        n = _yaml_int(node)
    elif isinstance(node, ScalarNode) and node.tag == STR_TAG:
        try:
            n = parse_duration(node.value)
        except ValueError:
            raise Bad(f"must be {DURATION_HELP} {got(node)}", node) from None
    else:
        raise Bad(f"must be {DURATION_HELP} {got(node)}", node)
    if n < minimum:
        raise Bad(f"must be at least {minimum}s {got(node)}", node)
    if n > MAX_DURATION:
        raise Bad(f"must be at most 366d {got(node)}", node)
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
    if not (isinstance(node, ScalarNode) and node.tag == INT_TAG):
        raise Bad(f"must be a whole number from {lo} to {hi} {got(node)}", node)
    n = _yaml_int(node)
    if not lo <= n <= hi:
        raise Bad(f"must be a whole number from {lo} to {hi} {got(node)}", node)
    return n


def _choice(node: Node, allowed: Sequence[str]) -> str:
    s = _text(node, "one of " + ", ".join(allowed))
    if s not in allowed:
        raise Bad(f"must be one of {', '.join(allowed)} {got(node)}", node)
    return s


def _bool(node: Node) -> bool:
    if not (isinstance(node, ScalarNode) and node.tag == BOOL_TAG):
        raise Bad(f"must be true or false {got(node)}", node)
    return bool(SafeConstructor().construct_yaml_bool(node))


def _fields_of(node: Node, allowed: Sequence[str], what: str) -> dict[str, Node]:
    """A small mapping's values by key: only ``allowed`` keys, each once."""
    if not isinstance(node, MappingNode):
        raise Bad(f"must be {what} {got(node)}", node)
    out: dict[str, Node] = {}
    for k, v in node.value:
        key = _text(k, "a string key")
        if key not in allowed:
            raise Bad(f"unknown key {json.dumps(key)}; allowed: {', '.join(allowed)}", k)
        if key in out:
            raise Bad(f"{json.dumps(key)} is given twice", k)
        out[key] = v
    return out


def _notify_entry(node: Node) -> NotifyEntry:
    f = _fields_of(node, ENTRY_KEYS, "a mapping with 'on:' and a 'webhook:' or 'command:'")
    if "on" not in f:
        raise Bad("each notify entry needs 'on: [events]' (events: " + ", ".join(EVENTS) + ")",
                  node)
    on_node = f["on"]
    if not isinstance(on_node, SequenceNode) or not on_node.value:
        raise Bad(f"'on' must be a non-empty list of events ({', '.join(EVENTS)}) "
                  f"{got(on_node)}", on_node)
    events: list[str] = []
    for item in on_node.value:
        ev = _choice(item, EVENTS)
        if ev in events:
            raise Bad(f"event {json.dumps(ev)} is listed twice", item)
        events.append(ev)
    targets = [t for t in ("webhook", "command") if t in f]
    if len(targets) != 1:
        raise Bad("each notify entry needs exactly one target, 'webhook: URL' or "
                  f"'command: [argv]' (got {' and '.join(targets) or 'none'})", node)
    webhook = command = secret = None
    if "webhook" in f:
        webhook = _nonempty_text(f["webhook"], "an http:// or https:// URL")
        parts = urllib.parse.urlsplit(webhook)
        if parts.scheme not in ("http", "https") or not parts.hostname or any(
                c.isspace() for c in webhook):
            raise Bad(f"'webhook' must be an http:// or https:// URL with a host "
                      f"{got(f['webhook'])}", f["webhook"])
    else:
        cmd = f["command"]
        if not isinstance(cmd, SequenceNode):
            raise Bad(f"'command' must be a list of arguments (argv) {got(cmd)}", cmd)
        argv = _command(cmd)
        assert isinstance(argv, tuple)
        command = argv
    if "secret" in f:
        if webhook is None:
            raise Bad("'secret' signs a webhook's body: it needs 'webhook:'", f["secret"])
        secret = _nonempty_text(f["secret"], "a string (the HMAC-SHA256 key)")
    return NotifyEntry(on=tuple(events), webhook=webhook, command=command, secret=secret)


def _notify(node: Node) -> tuple[NotifyEntry, ...]:
    if not isinstance(node, SequenceNode):
        raise Bad(f"must be a list of entries (on: [events] and a webhook: or command:) "
                  f"{got(node)}", node)
    return tuple(_notify_entry(item) for item in node.value)


def _expect(node: Node) -> int:
    f = _fields_of(node, ("succeed_within",), "a mapping like {succeed_within: 26h}")
    if "succeed_within" not in f:
        raise Bad("needs 'succeed_within: DURATION' (e.g. 26h)", node)
    return _duration(f["succeed_within"], minimum=1)


CONVERTERS: Final[Mapping[str, Callable[[Node], object]]] = {
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
    "notify": _notify,
    "expect": _expect,
}


def node_of(value: Any) -> Node:
    """The YAML node PyYAML's SafeDumper represents a JSON value as (mappings sorted by
    key, no marks), built directly because the generic representer is most of the cost of
    checking many stored specs. Anything but str, bool, int, None, list and a dict with
    string keys (a float) goes to the representer, so a value reads in a message as the
    representer writes it."""
    kind = type(value)
    if kind is str:
        return ScalarNode(STR_TAG, value)
    if kind is bool:
        return ScalarNode(BOOL_TAG, "true" if value else "false")
    if kind is int:
        return ScalarNode(INT_TAG, str(value))
    if value is None:
        return ScalarNode(NULL_TAG, "null")
    if kind is list:
        return SequenceNode(SEQ_TAG, [node_of(v) for v in value])
    if kind is dict and all(type(k) is str for k in value):
        return MappingNode(MAP_TAG, [(ScalarNode(STR_TAG, k), node_of(v))
                                     for k, v in sorted(value.items())])
    node: Node = yaml.SafeDumper(io.StringIO()).represent_data(value)
    return node
