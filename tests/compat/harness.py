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

from tests.helpers.procs import (
    REPO,
    Proc,
    ProcessGroup,
    coord_argv,
    free_port,
    port_open,
    start_coord,
    start_etcd,
    wait_until,
)

CTL_TIMEOUT = "5s"
STEP_TIMEOUT = 20.0


def on_coord() -> bool:
    """True when the target is coord: known, documented differences are xfail'ed only
    then (``COMPAT_TARGET=etcd`` must stay all green, and a strict xfail would fail)."""
    return compat_target() == "coord"


def compat_target() -> str:
    """``coord`` (default) or ``etcd`` (a second real etcd, for developing the suite)."""
    t = os.environ.get("COMPAT_TARGET", "coord").strip().lower()
    if t not in {"coord", "etcd"}:
        raise ValueError(f"COMPAT_TARGET must be coord or etcd, not {t!r}")
    return t


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    """One server under test and the facts normalisation needs about it."""

    label: str  # "etcd" (reference) or "coord"/"etcd2" (target)
    proc: Proc
    peer_port: int
    etcdctl: str
    cluster_id: int = 0
    member_id: int = 0
    # COMPAT_CLUSTER: the other members, name -> (client port, peer port, member id)
    others: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return self.proc.endpoint

    @property
    def client_port(self) -> int:
        return self.proc.client_port

    def ctl_argv(self, args: Sequence[str]) -> list[str]:
        return [self.etcdctl, f"--endpoints={self.endpoint}", f"--command-timeout={CTL_TIMEOUT}",
                *args]

    def ctl(self, args: Sequence[str], stdin: bytes | None = None,
            timeout: float = STEP_TIMEOUT) -> CtlResult:
        argv = self.ctl_argv(args)
        try:
            cp = subprocess.run(argv, input=stdin if stdin is not None else b"",
                                capture_output=True, timeout=timeout,
                                env=ctl_env(), check=False)
        except subprocess.TimeoutExpired as e:
            return CtlResult(e.stdout or b"", (e.stderr or b"") + b"\n[harness: timed out]", None)
        return CtlResult(cp.stdout, cp.stderr, cp.returncode)

    def learn_ids(self) -> None:
        r = self.ctl(["get", "compat-ids", "-w", "json"])
        hdr = json.loads(r.stdout)["header"]
        self.cluster_id = int(hdr["cluster_id"])
        self.member_id = int(hdr["member_id"])

    def revision(self) -> int:
        r = self.ctl(["get", "compat-revision", "-w", "json"])
        if r.rc != 0:
            raise RuntimeError(f"{self.label}: cannot read revision: {r.stderr!r}")
        return int(json.loads(r.stdout)["header"]["revision"])


def ctl_env() -> dict[str, str]:
    env = dict(os.environ)
    env["ETCDCTL_API"] = "3"
    for k in list(env):
        if k.startswith("ETCDCTL_") and k != "ETCDCTL_API":
            del env[k]
    return env


@dataclass
class CtlResult:
    stdout: bytes
    stderr: bytes
    rc: int | None

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")


def _peer_port(argv: Sequence[str]) -> int:
    for i, a in enumerate(argv):
        if a in ("--listen-peer-urls", "--listen-peer"):
            return int(argv[i + 1].rsplit(":", 1)[1])
    raise ValueError(f"no peer flag in {argv}")


def wait_ready(server: Server) -> None:
    """Wait until ``server`` serves reads (after a start or a restart)."""
    _wait_ready(server)


def _wait_ready(server: Server) -> None:
    def ok() -> bool:
        if not server.proc.alive():
            raise RuntimeError(f"{server.label} exited:\n{server.proc.log()[-4000:]}")
        return server.ctl(["get", "compat-ready"], timeout=10).rc == 0

    wait_until(ok, 60, f"{server.label} at {server.endpoint} to serve reads", step=0.1)
    server.learn_ids()


def compat_cluster_size() -> int:
    """``COMPAT_CLUSTER=3``: both sides are 3-member clusters, driven through a follower."""
    size = int(os.environ.get("COMPAT_CLUSTER", "1") or "1")
    if size not in (1, 3, 5):
        raise ValueError(f"COMPAT_CLUSTER must be 1, 3 or 5, not {size}")
    return size


def start_cluster_server(kind: str, label: str, group: ProcessGroup, etcd_bin: str,
                         etcdctl_bin: str, size: int) -> Server:
    """Start ``size`` fresh members n1..nN of ``kind``, move leadership to n1 and return
    the follower n2 as the server under test (it knows the others for normalisation)."""
    names = [f"n{i}" for i in range(1, size + 1)]
    ports = {n: (free_port(), free_port()) for n in names}
    procs: dict[str, Proc] = {}
    if kind == "etcd":
        initial = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in names)
        for n in names:
            c, pp = ports[n]
            argv = [etcd_bin, "--name", n, "--data-dir", str(group.workdir / f"{n}-data"),
                    "--listen-client-urls", f"http://127.0.0.1:{c}",
                    "--advertise-client-urls", f"http://127.0.0.1:{c}",
                    "--listen-peer-urls", f"http://127.0.0.1:{pp}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{pp}",
                    "--initial-cluster", initial, "--log-level", "error"]
            procs[n] = group.spawn(n, argv, c, env={"ETCD_UNSUPPORTED_ARCH": ""})
    else:
        initial = ",".join(f"{n}=127.0.0.1:{ports[n][1]}" for n in names)
        for n in names:
            c, pp = ports[n]
            argv = coord_argv(n, group.workdir / f"{n}-data", c, pp, initial)
            procs[n] = group.spawn(n, argv, c, env={"PYTHONPATH": str(REPO)})
    for n in names:
        proc, cport = procs[n], ports[n][0]

        def listening(proc: Proc = proc, cport: int = cport) -> bool:
            return port_open(cport) or not proc.alive()
        wait_until(listening, 60, f"{label} {n} to listen")
    servers = {n: Server(label, procs[n], ports[n][1], etcdctl_bin) for n in names}
    for srv in servers.values():
        _wait_ready(srv)
    everyone = ",".join(f"127.0.0.1:{ports[n][0]}" for n in names)
    ids: dict[str, int] = {}

    def all_named() -> bool:
        r = servers["n1"].ctl(["member", "list", "-w", "json"], timeout=10)
        if r.rc != 0:
            return False
        ids.clear()
        ids.update({m.get("name", ""): int(m["ID"]) for m in json.loads(r.stdout)["members"]})
        return all(n in ids for n in names)

    wait_until(all_named, 30, f"{label} members to publish their names", step=0.1)

    def n1_leads() -> bool:
        r = servers["n1"].ctl(["endpoint", "status", "-w", "json"], timeout=10)
        if r.rc == 0 and json.loads(r.stdout)[0]["Status"]["leader"] == ids["n1"]:
            return True
        subprocess.run([etcdctl_bin, f"--endpoints={everyone}", "move-leader",
                        f"{ids['n1']:x}"], capture_output=True, env=ctl_env(), timeout=20,
                       check=False)
        return False

    wait_until(n1_leads, 30, f"{label} leadership on n1", step=0.2)
    target = servers["n2"]
    target.others = {n: (ports[n][0], ports[n][1], ids[n]) for n in names if n != "n2"}
    return target


def start_server(kind: str, label: str, group: ProcessGroup, etcd_bin: str,
                 etcdctl_bin: str) -> Server:
    """Start a fresh single-member server of ``kind`` (etcd|coord), ready for reads (with
    ``COMPAT_CLUSTER``: a follower of a fresh cluster)."""
    size = compat_cluster_size()
    if size > 1:
        return start_cluster_server(kind, label, group, etcd_bin, etcdctl_bin, size)
    if kind == "etcd":
        proc = start_etcd(group, name="n1", etcd_bin=etcd_bin)
    else:
        proc = start_coord(group, name="n1")
    server = Server(label, proc, _peer_port(proc.argv), etcdctl_bin)
    _wait_ready(server)
    return server


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


# --------------------------------------------------------------------------- normalisation

REV_KEYS = {"revision", "createrevision", "modrevision", "compactrevision"}
ID_KEYS = {"id", "lease", "leader", "memberid", "clusterid"}
TERM_KEYS = {"raftterm"}
SIZE_KEYS = {"dbsize", "dbsizeinuse"}
INDEX_KEYS = {"raftindex", "raftappliedindex"}

_HEX16 = re.compile(r"\b[0-9a-f]{16}\b")
_MEMBER_X = re.compile(r"(^Member +|^|^\| +)([0-9a-f]{1,16})"
                       r"(?=(?: (?:added|removed|updated|promoted)"
                       r"|, (?:un)?started,| +\| (?:un)?started))", re.M)
_FIELDS_LINE = re.compile(r'^"(\w+)" : (-?\d+)$', re.M)
_UUID = re.compile(r"client-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TS = re.compile(r'"ts":"[^"]*"')
_TOOK = re.compile(r"took = [0-9.]+[a-zµ]+")
_COMPACTED = re.compile(r"^compacted revision (\d+)$", re.M)
_PROGRESS = re.compile(r"^progress notify: (\d+)$", re.M)
_ATTACHED = re.compile(r"attached keys\(\[([^\]]*)\]\)")
_CANCELED_WARNING = re.compile(
    r'^\{"level":\s?"warn".*code = Canceled desc = context canceled"\}\n?', re.M)
_REMAINING = re.compile(r"granted with TTL\((\d+)s\), remaining\((-?\d+)s\)")


def _canon(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


class Normalizer:
    """Per-server, per-case rewriting of output into a comparable form."""

    def __init__(self, server: Server, base: int, absolute: bool = False) -> None:
        self.server = server
        self.base = 0 if absolute else base
        self.absolute = absolute
        self.ids: dict[int, str] = {}
        self.id_prefixes: list[re.Pattern[str]] = []
        if server.cluster_id:
            self.ids[server.cluster_id] = "<cluster>"
        if server.member_id:
            self.ids[server.member_id] = "<member>"
        for name, (_, _, mid) in server.others.items():
            self.ids[mid] = f"<member-{name}>"

    # -- scalar rules
    def rev(self, v: int) -> str | int:
        if v == 0:
            return 0
        if self.absolute:
            return v
        d = v - self.base
        return f"R{d:+d}"

    def ident(self, v: int) -> str | int:
        if v == 0:
            return 0
        if v not in self.ids:
            self.ids[v] = f"<id{sum(1 for s in self.ids.values() if s.startswith('<id')) + 1}>"
        return self.ids[v]

    def scalar(self, key: str, v: Any, parent: dict[str, Any] | None = None) -> Any:
        k = _canon(key)
        if k == "took" and isinstance(v, str):
            return "<duration>"
        if not isinstance(v, int) or isinstance(v, bool):
            return v
        if k in REV_KEYS:
            return self.rev(v)
        if k in ID_KEYS:
            return self.ident(v)
        if k in TERM_KEYS:
            return "<term>" if v > 0 else v
        if k in SIZE_KEYS:
            return "<size>" if v > 0 else v
        if k in INDEX_KEYS:
            return "<index>" if v > 0 else v
        if k == "ttl" and parent is not None and "granted-ttl" in parent:
            granted = parent["granted-ttl"]
            if isinstance(granted, int) and 0 < granted - v <= 3 and v > 0:
                return "<remaining>"
        return v

    def tree(self, node: Any, key: str = "", parent: dict[str, Any] | None = None) -> Any:
        if (key == "keys" and isinstance(node, list) and parent is not None
                and "granted-ttl" in parent):
            # a lease's keys are a set in etcd (Go map order); compare them sorted
            return sorted(node, key=str)
        if isinstance(node, dict):
            return {k: self.tree(v, k, node) for k, v in node.items()}
        if isinstance(node, list):
            return [self.tree(v, key, parent) for v in node]
        return self.scalar(key, node, parent)

    # -- text
    def scrub(self, s: str) -> str:
        """The server's own ports and clientv3's per-process uuids."""
        srv = self.server
        s = s.replace(f"127.0.0.1:{srv.client_port}", "127.0.0.1:<client-port>")
        s = s.replace(f"127.0.0.1:{srv.peer_port}", "127.0.0.1:<peer-port>")
        for name, (cport, pport, _) in srv.others.items():
            s = s.replace(f"127.0.0.1:{cport}", f"127.0.0.1:<client-port-{name}>")
            s = s.replace(f"127.0.0.1:{pport}", f"127.0.0.1:<peer-port-{name}>")
        return _UUID.sub("client-<uuid>", s)

    def text(self, s: str) -> str:
        s = self.scrub(s)
        s = _TS.sub('"ts":"<ts>"', s)
        s = _TOOK.sub("took = <duration>", s)
        out = []
        for line in s.split("\n"):
            stripped = line.strip()
            if stripped[:1] in "{[" and stripped:
                try:
                    parsed = json.loads(stripped)
                except ValueError:
                    out.append(self._text_line(line))
                    continue
                out.append(json.dumps(self.tree(parsed), ensure_ascii=False))
            else:
                out.append(self._text_line(line))
        return "\n".join(out)

    def id_after(self, prefix: str) -> None:
        """Treat ``<prefix>/<hex>`` as a lease id printed with %x (lock/elect keys)."""
        self.id_prefixes.append(re.compile(re.escape(prefix) + r"/([0-9a-f]{1,16})\b"))

    def _text_line(self, line: str) -> str:
        srv = self.server
        for pat in self.id_prefixes:
            line = pat.sub(lambda m: m.group(0)[: m.start(1) - m.start(0)]
                           + str(self.ident(int(m.group(1), 16))), line)
        if line.startswith(("+-", "|")):
            # -w table: column widths follow the (id, port) text lengths; keep the cells
            line = re.sub(r"-{2,}", "--", re.sub(r" {2,}", " ", line))
        line = _ATTACHED.sub(lambda m: "attached keys([" + " ".join(sorted(m.group(1).split()))
                             + "])", line)
        if line.startswith('ETCD_INITIAL_CLUSTER="'):
            # "member add" prints the members in member-id order (ids are random)
            inner = line[len('ETCD_INITIAL_CLUSTER="'):].rstrip('"')
            line = 'ETCD_INITIAL_CLUSTER="' + ",".join(sorted(inner.split(","))) + '"'
        if line.startswith("Member "):
            # "Member %16x added to cluster %16x": space padding follows the id lengths
            line = re.sub(r" {2,}", " ", line)
        if srv.member_id:
            # member list prints the member id with %x (no zero padding)
            line = re.sub(rf"\b{srv.member_id:x}\b", "<member>", line)
        if srv.cluster_id:
            line = re.sub(rf"\b{srv.cluster_id:x}\b", "<cluster>", line)
        # other members' ids printed with %x: "Member <id> added ...", "<id>, unstarted, ..."
        line = _MEMBER_X.sub(lambda m: m.group(1) + str(self.ident(int(m.group(2), 16))), line)
        for name, (_, _, mid) in srv.others.items():
            line = re.sub(rf"\b{mid:x}\b", f"<member-{name}>", line)
        line = _HEX16.sub(lambda m: str(self.ident(int(m.group(0), 16))), line)
        line = _FIELDS_LINE.sub(
            lambda m: f'"{m.group(1)}" : {self.scalar(m.group(1), int(m.group(2)))}', line)
        line = _COMPACTED.sub(lambda m: f"compacted revision {self.rev(int(m.group(1)))}", line)
        line = _PROGRESS.sub(lambda m: f"progress notify: {self.rev(int(m.group(1)))}", line)

        def remaining(m: re.Match[str]) -> str:
            granted, rem = int(m.group(1)), int(m.group(2))
            plausible = 0 < rem < granted and granted - rem <= 3
            shown = "<remaining>" if plausible else f"{rem}s"
            return f"granted with TTL({granted}s), remaining({shown})"

        return _REMAINING.sub(remaining, line)


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
