"""Normalisation of the differential harness (:mod:`tests.compat.harness`, whose module doc
lists exactly what it rewrites): revisions as offsets, ids numbered by first appearance,
terms, times, ports, table padding and the orders etcd leaves random.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.compat.harness_servers import (
    Server,
)

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
