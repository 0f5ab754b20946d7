"""Differential harness: the same client command against a real etcd and a target.

The *reference* is always a fresh real etcd 3.4. The *target* is coord (default) or,
with ``COMPAT_TARGET=etcd``, a second fresh real etcd — which must compare equal to
the first, proving that normalisation hides nothing but what it should.

A :class:`Case` runs every step on both servers concurrently, writes each server's
transcript (command, exit code, stdout, stderr) after normalising it, and on exit
fails with a unified diff ``etcd`` vs ``<target>`` if the transcripts differ.

Normalisation (see :class:`Normalizer`) rewrites ONLY:

* revisions, as offsets from the revision the case started at (``R+3``), since two
  servers that have served different histories cannot be at the same revision;
* ids: lease/member/cluster ids become ``<member>``, ``<cluster>``, ``<id1>``, ``<id2>``…
  numbered in order of first appearance (so "the same id appears twice" survives);
* raft terms, timestamps, durations, remaining-TTL seconds (only when plausible:
  1 to 3 s below the granted TTL, as etcd truncates the time left);
* the server's own client and peer ports, and client-side uuids in clientv3 logs;
* the padding of ``-w table`` cells (widths follow the lengths of ids and ports);
* the order of a lease's attached keys (a Go map in etcd: random order), and of the
  members in ``member add``'s ETCD_INITIAL_CLUSTER (member-id order; ids are random);
* ``dbSize``/``dbSizeInUse`` and ``raftIndex``/``raftAppliedIndex`` of
  ``endpoint status`` (storage-engine and raft-log details; only their presence and
  sign are kept).

``COMPAT_CLUSTER=3`` runs both sides as 3-member clusters (``n1``..``n3``, leadership
moved to ``n1``) and sends every command to the follower ``n2``; the other members'
ports and ids become ``<client-port-n1>``, ``<member-n1>``…, and ``member list`` rows
are compared sorted (they come ordered by member id, which differs).

The servers are started by :mod:`tests.compat.harness_servers` and transcripts rewritten by
:mod:`tests.compat.harness_normalize`; their names used by the tests are re-exported here.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.compat.harness_normalize import (
    _CANCELED_WARNING,
    Normalizer,
)
from tests.compat.harness_servers import (
    STEP_TIMEOUT,
    CtlResult,
    Server,
    compat_target,
    ctl_env,
    on_coord,
    start_server,
    wait_ready,
)
from tests.helpers.procs import (
    Proc,
    ProcessGroup,
    wait_until,
)

__all__ = [
    "Background",
    "Case",
    "CompatMismatch",
    "Normalizer",
    "Pair",
    "Rev",
    "Server",
    "Side",
    "Var",
    "compat_target",
    "on_coord",
    "open_pair",
    "render_diff",
    "repo_python",
    "start_pair",
    "wait_ready",
]


@dataclass
class Pair:
    """A reference etcd and a target, both fresh, both single members named ``n1``."""

    ref: Server
    target: Server
    workdir: Path
    groups: list[ProcessGroup] = field(default_factory=list)

    @property
    def servers(self) -> tuple[Server, Server]:
        return (self.ref, self.target)

    def case(self, name: str, absolute: bool = False) -> Case:
        return Case(self, name, absolute=absolute)

    def close(self) -> None:
        for g in self.groups:
            g.close()


def _start_side(kind: str, label: str, workdir: Path, etcd_bin: str, etcdctl_bin: str
                ) -> tuple[Server, ProcessGroup]:
    """Start one side in its own ProcessGroup; one retry in a fresh directory, because
    ``free_port`` can race with another process taking the port before the bind."""
    error: Exception | None = None
    for d in (workdir, workdir.with_name(workdir.name + "-retry")):
        d.mkdir(parents=True, exist_ok=True)
        group = ProcessGroup(d)
        try:
            return start_server(kind, label, group, etcd_bin, etcdctl_bin), group
        except (RuntimeError, TimeoutError) as e:
            group.close()
            error = e
    assert error is not None
    raise error


def open_pair(workdir: Path, etcd_bin: str, etcdctl_bin: str,
              target: str | None = None) -> Pair:
    """Start reference etcd and target concurrently, each in its own ProcessGroup.
    The caller must ``close()`` the pair (its processes are killed then)."""
    target = target or compat_target()
    tlabel = "coord" if target == "coord" else "etcd2"
    with ThreadPoolExecutor(2) as ex:
        fref = ex.submit(_start_side, "etcd", "etcd", workdir / "ref", etcd_bin, etcdctl_bin)
        ftgt = ex.submit(_start_side, target, tlabel, workdir / "target", etcd_bin,
                         etcdctl_bin)
        started, errors = [], []
        for fut in (fref, ftgt):
            try:
                started.append(fut.result())
            except Exception as e:  # noqa: BLE001 - close the other side, then re-raise
                errors.append(e)
    if errors:
        for _, group in started:
            group.close()
        raise errors[0]
    (ref, gref), (tgt, gtgt) = started
    return Pair(ref, tgt, workdir, [gref, gtgt])


@contextlib.contextmanager
def start_pair(workdir: Path, etcd_bin: str, etcdctl_bin: str,
               target: str | None = None) -> Iterator[Pair]:
    pair = open_pair(workdir, etcd_bin, etcdctl_bin, target)
    try:
        yield pair
    finally:
        pair.close()


# --------------------------------------------------------------------------- cases


@dataclass
class Rev:
    """A revision given as an offset from the case's starting revision."""

    offset: int

    def resolve(self, base: int) -> str:
        return str(base + self.offset)


@dataclass
class Var:
    """A per-server value captured from an earlier step (e.g. a lease id)."""

    name: str


Arg = str | Rev | Var


@dataclass
class Side:
    """One server's half of a case: raw helpers plus its transcript."""

    server: Server
    base: int
    norm: Normalizer
    workdir: Path
    group: ProcessGroup
    vars: dict[str, str] = field(default_factory=dict)
    transcript: list[str] = field(default_factory=list)
    server_group: ProcessGroup | None = None  # the group the server runs in (restarts)

    def resolve(self, args: Sequence[Arg]) -> list[str]:
        out = []
        for a in args:
            if isinstance(a, Rev):
                out.append(a.resolve(self.base))
            elif isinstance(a, Var):
                out.append(self.vars[a.name])
            else:
                out.append(a)
        return out

    @staticmethod
    def show_args(args: Sequence[Arg]) -> str:
        shown = []
        for a in args:
            if isinstance(a, Rev):
                shown.append(f"R{a.offset:+d}")
            elif isinstance(a, Var):
                shown.append(f"${a.name}")
            else:
                shown.append(a if len(a) < 80 else a[:60] + f"...({len(a)} chars)")
        return " ".join(shown)

    def record(self, label: str, text: str) -> None:
        self.transcript.append(f"{label}\n{self.norm.text(text)}" if text else label)

    def record_result(self, title: str, r: CtlResult) -> None:
        self.transcript.append(f"$ {title}")
        self.transcript.append(f"  exit={r.rc}")
        if r.stdout:
            out = self.norm.text(_dec(r.stdout))
            if self.server.others and (title.startswith("etcdctl member list")
                                       or "--cluster" in title):
                out = _sort_member_rows(out)
            self.transcript.append("  stdout:\n" + _indent(out))
        if r.stderr:
            err = self.norm.text(_dec(r.stderr))
            if self.server.others and "--cluster" in title:
                err = _sort_member_rows(err)
            self.transcript.append("  stderr:\n" + _indent(err))

    def ctl(self, args: Sequence[Arg], stdin: bytes | None = None, record: bool = True,
            timeout: float = STEP_TIMEOUT) -> CtlResult:
        r = self.server.ctl(self.resolve(args), stdin=stdin, timeout=timeout)
        if record:
            title = "etcdctl " + self.show_args(args)
            if stdin is not None:
                title += f"   <<stdin {len(stdin)} bytes"
            self.record_result(title, r)
        return r

    # -- long-running etcdctl (watch, lock, elect)
    def spawn(self, name: str, args: Sequence[Arg], stdin_text: str | None = None
              ) -> Background:
        """Start a long-running etcdctl. With ``stdin_text`` its stdin gets that text and
        then stays open (``watch -i`` exits at EOF) until the process is stopped."""
        err = self.workdir / f"{self.server.label}-{name}.err"
        argv = self.server.ctl_argv(self.resolve(args))
        # The group's log captures stdout; stderr is redirected separately by the shell.
        shell = 'exec "$@" 2>"$COMPAT_ERR"'
        if stdin_text is not None:
            shell = ('{ printf "%s" "$COMPAT_STDIN"; exec tail -f /dev/null; } | '
                     'exec "$@" 2>"$COMPAT_ERR"')
        proc = self.group.spawn(f"{self.server.label}-{name}", ["sh", "-c", shell, "sh", *argv],
                                self.server.client_port,
                                env={**ctl_env(), "COMPAT_ERR": str(err),
                                     "COMPAT_STDIN": stdin_text or ""})
        return Background(self, "etcdctl " + self.show_args(args), proc, err)


def _sort_member_rows(text: str) -> str:
    """Per-member rows sorted in place (other lines stay put); JSON member arrays by name,
    JSON per-endpoint arrays (``endpoint ... --cluster``) by their text."""
    lines = text.split("\n")
    rows = [i for i, ln in enumerate(lines)
            if ("<member" in ln or "<client-port" in ln) and ln.lstrip()[:1] not in "{["]
    for i, row in zip(rows, sorted(lines[i] for i in rows), strict=True):
        lines[i] = row
    for i, ln in enumerate(lines):
        if ln.lstrip().startswith("["):
            with contextlib.suppress(ValueError, TypeError):
                arr = json.loads(ln)
                if isinstance(arr, list):
                    arr.sort(key=lambda x: json.dumps(x, sort_keys=True))
                    lines[i] = json.dumps(arr, ensure_ascii=False)
        if ln.lstrip().startswith("{") and '"members"' in ln:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                obj = json.loads(ln)
                obj["members"].sort(key=lambda m: str(m.get("name", "")))
                lines[i] = json.dumps(obj, ensure_ascii=False)
    return "\n".join(lines)


class Background:
    """A long-running etcdctl whose stdout/stderr are polled from files."""

    def __init__(self, side: Side, title: str, proc: Proc, err: Path) -> None:
        # stdout goes to the ProcessGroup's log file, stderr to ``err``
        self.side, self.title, self.proc, self.err = side, title, proc, err
        self.stopped = False

    def stdout(self) -> str:
        return self.proc.log()

    def stderr(self) -> str:
        try:
            return self.err.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_output(self, cond: Callable[[str], bool], what: str, timeout: float = 10.0) -> bool:
        try:
            wait_until(lambda: cond(self.stdout()) or not self.proc.alive(), timeout, what)
        except TimeoutError:
            return False
        return cond(self.stdout())

    def wait_lines(self, n: int, timeout: float = 10.0) -> bool:
        return self.wait_output(lambda s: s.count("\n") >= n, f"{n} lines from {self.title}",
                                timeout)

    def send(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.popen.pid, sig)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int | None:
        self.stopped = True
        if self.proc.alive():
            self.send(sig)
        try:
            return self.proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill9()
            return None

    def wait_exit(self, timeout: float = 10.0) -> int | None:
        try:
            return self.proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def record(self, rc: int | None, stdout: str | None = None) -> None:
        out = stdout if stdout is not None else self.stdout()
        err = self.stderr()
        if self.stopped:
            # clientv3 may or may not log its in-flight call being cancelled by Ctrl-C:
            # a client-side race at shutdown, seen on real etcd too
            err = _CANCELED_WARNING.sub("", err)
        self.side.record_result(self.title + "   (background)",
                                CtlResult(out.encode(), err.encode(), rc))


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _indent(s: str) -> str:
    return "\n".join("    " + line for line in s.split("\n"))


class CompatMismatch(AssertionError):
    pass


class Case:
    """A named differential case over a :class:`Pair` (use as a context manager)."""

    def __init__(self, pair: Pair, name: str, absolute: bool = False) -> None:
        self.pair = pair
        self.name = name
        self.p = f"{name}/"
        workdir = pair.workdir / "cases" / re.sub(r"[^\w.-]", "_", name)
        workdir.mkdir(parents=True, exist_ok=True)
        self.groups = [ProcessGroup(workdir / s.label) for s in pair.servers]
        for g in self.groups:
            g.workdir.mkdir(exist_ok=True)
        bases = self.both(lambda s: s.revision())
        self.sides = [
            Side(s, b, Normalizer(s, b, absolute), g.workdir, g)
            for s, b, g in zip(pair.servers, bases, self.groups, strict=True)
        ]

    # -- running steps on both servers at once
    def both(self, fn: Callable[[Server], Any]) -> list[Any]:
        with ThreadPoolExecutor(2) as ex:
            futs = [ex.submit(fn, s) for s in self.pair.servers]
            return [f.result() for f in futs]

    def each(self, fn: Callable[[Side], Any]) -> list[Any]:
        """Run ``fn(side)`` for both servers concurrently; returns both results."""
        with ThreadPoolExecutor(2) as ex:
            futs = [ex.submit(fn, side) for side in self.sides]
            return [f.result() for f in futs]

    def ctl(self, *args: Arg, stdin: bytes | None = None) -> list[CtlResult]:
        return self.each(lambda side: side.ctl(args, stdin=stdin))

    def ctls(self, *commands: Sequence[Arg]) -> None:
        for c in commands:
            self.ctl(*c)

    def note(self, label: str, values: Sequence[Any] | Callable[[Side], Any]) -> None:
        """Record a derived fact (e.g. "waiter was blocked: True") on each side."""
        if callable(values):
            values = self.each(values)
        for side, v in zip(self.sides, values, strict=True):
            side.transcript.append(f"# {label}: {v}")

    def id_after(self, prefix: str) -> None:
        """Lock/elect keys are ``<name>/<lease id in %x>``: normalise that id."""
        for side in self.sides:
            side.norm.id_after(prefix)

    def capture(self, results: Sequence[CtlResult], pattern: str, var: str) -> None:
        """Store regex group 1 of each side's stdout as ``Var(var)`` for later steps."""
        for side, r in zip(self.sides, results, strict=True):
            m = re.search(pattern, r.out)
            side.vars[var] = m.group(1) if m else f"<no match for {pattern!r}>"

    def txn(self, script: str, *flags: Arg) -> list[CtlResult]:
        return self.ctl("txn", *flags, stdin=script.encode())

    # -- comparison
    def transcripts(self) -> tuple[str, str]:
        a, b = ("\n".join(s.transcript) + "\n" for s in self.sides)
        return a, b

    def check(self) -> None:
        a, b = self.transcripts()
        if os.environ.get("COMPAT_SHOW"):  # debugging aid: pytest -s shows the transcripts
            print(f"\n===== {self.name} [{self.pair.ref.label}]\n{a}")
        if a != b:
            raise CompatMismatch(render_diff(self.name, self.pair.ref.label, a,
                                             self.pair.target.label, b))

    def close(self) -> None:
        for g in self.groups:
            g.close()

    def __enter__(self) -> Case:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self.check()
        finally:
            self.close()


def render_diff(name: str, la: str, a: str, lb: str, b: str, *, width: int = 400) -> str:
    """A readable unified diff of two transcripts (long lines clipped)."""

    def clip(text: str) -> list[str]:
        return [ln if len(ln) <= width else ln[:width] + f"…(+{len(ln) - width} chars)"
                for ln in text.splitlines()]

    diff = "\n".join(difflib.unified_diff(clip(a), clip(b), fromfile=la, tofile=lb,
                                          lineterm="", n=6))
    return (f"compat case {name!r}: {la} and {lb} differ (- {la}, + {lb}):\n{diff}\n"
            f"\n--- full {la} transcript ---\n" + "\n".join(clip(a)))


def repo_python() -> str:
    """The interpreter running the tests (the venv's, where aetcd is installed)."""
    return sys.executable
