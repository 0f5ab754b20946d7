"""Simulated clients: put / get / CAS on a few keys, one op in flight per client.

Each client sends its op to one node (sticky, switching after a failure or timeout, or at
random), records the call in a :class:`~tests.helpers.history.Recorder` and waits:

* the node refuses at once (down, no leader: ``ProposalDropped``) → ``FAIL`` — it was
  never appended, so it never takes effect;
* the node answers after applying the entry (or serving a ReadIndex read) → ``OK`` with
  the store revision;
* no answer within ``client_timeout`` → ``UNKNOWN`` (the client moves on).

Every written value is unique (``c<client>.<n>``), as the checkers assume. Request ids are
unique across the run.
"""

from __future__ import annotations

import random

from tests.helpers.history import Kind, Recorder
from tests.sim.cluster import Call, Cluster
from tests.sim.eventloop import sub_rng
from tests.sim.kv import Request, Result

PROBE_CLIENT = -1  # liveness probes
NEMESIS_CLIENT = -2  # no-op entries the nemesis makes a cut-off leader append


class Workload:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.opts = cluster.opts
        self.loop = cluster.loop
        self.rng: random.Random = sub_rng(self.opts.seed, "workload")
        self.history = Recorder()
        self.keys = [f"k{i}" for i in range(self.opts.keys)]
        self.next_req = 1
        self.counter = [0] * self.opts.clients
        self.node_of = [self.rng.choice(cluster.founders) for _ in range(self.opts.clients)]
        self.seen: dict[str, list[str | None]] = {k: [None] for k in self.keys}
        self.stopped = False
        self.issued = 0
        self.stats = {"ok": 0, "fail": 0, "unknown": 0}
        cluster.respond = self._respond
        cluster.refuse = self._refused

    def start(self) -> None:
        for c in range(self.opts.clients):
            self.loop.after(self.rng.randint(0, 20), self._next, c)

    def stop(self) -> None:
        """No new ops (ops in flight may still complete)."""
        self.stopped = True

    def new_request_id(self) -> int:
        self.next_req += 1
        return self.next_req

    # -- one op ------------------------------------------------------------------------
    def _next(self, c: int) -> None:
        if self.stopped or self.issued >= self.opts.max_ops:
            return
        self.issued += 1
        r = self.rng
        key = r.choice(self.keys)
        self.counter[c] += 1
        value = f"c{c}.{self.counter[c]}"
        roll = r.random()
        if roll < 0.35:
            kind, req = Kind.PUT, Request(self.new_request_id(), "put", key, value)
            op = self.history.invoke(c, kind, key, self.loop.now, value=value)
        elif roll < 0.7:
            kind, req = Kind.GET, Request(self.new_request_id(), "get", key)
            op = self.history.invoke(c, kind, key, self.loop.now)
        else:
            seen = self.seen[key]
            expected = seen[-1] if r.random() < 0.7 else r.choice(seen)
            kind = Kind.CAS
            req = Request(self.new_request_id(), "cas", key, value, expected)
            op = self.history.invoke(c, kind, key, self.loop.now, value=value, expected=expected)
        if r.random() < 0.1:
            self.node_of[c] = r.choice(self._known_nodes())
        nid = self.node_of[c]
        call = Call(c, op, req)
        bugs = self.opts.sim_bugs
        if kind is Kind.GET and "stale_local_read" in bugs:
            accepted = self.cluster.local_read(nid, call)
        elif kind is Kind.GET and self.opts.read_index:
            accepted = self.cluster.read_index(nid, call)
        else:
            accepted = self.cluster.propose(nid, call)
        if self.history.in_flight(c) != op:
            return  # already answered (a synchronous local read)
        if not accepted:
            self.history.fail(op, self.loop.now)
            self.stats["fail"] += 1
            self.node_of[c] = r.choice(self._known_nodes())
            self._schedule_next(c)
            return
        self.loop.after(self.opts.client_timeout, self._timeout, c, op)

    def _known_nodes(self) -> list[int]:
        return [nid for nid in self.cluster.ids if self.cluster.nodes[nid].created]

    def _schedule_next(self, c: int) -> None:
        o = self.opts
        # spread the op budget over the safety phase
        mean = max(o.think_ms, o.clients * o.safety_ms // max(1, o.max_ops))
        self.loop.after(1 + int(self.rng.expovariate(1.0 / mean)), self._next, c)

    def _refused(self, call: Call) -> None:
        """A batched proposal was refused when the batch was proposed: not appended."""
        if self.history.in_flight(call.client) != call.op_id:
            return
        self.history.fail(call.op_id, self.loop.now)
        self.stats["fail"] += 1
        self._schedule_next(call.client)

    def _timeout(self, c: int, op: int) -> None:
        if self.history.in_flight(c) != op:
            return
        self.history.unknown(op)
        self.stats["unknown"] += 1
        self.node_of[c] = self.rng.choice(self._known_nodes())
        self._schedule_next(c)

    def _respond(self, call: Call, res: Result | None, index: int) -> None:
        if call.client == PROBE_CLIENT:
            self.cluster_probe_applied(call, index)
            return
        if call.client < 0:
            return  # the nemesis's own no-op proposals
        if self.history.in_flight(call.client) != call.op_id:
            return  # timed out already
        req = call.req
        now = self.loop.now
        assert res is not None
        if req.kind == "get":
            self.history.ok(call.op_id, now, result=res.value, revision=res.revision)
            self.seen[req.key].append(res.value)
        elif req.kind == "cas":
            self.history.ok(call.op_id, now, succeeded=res.succeeded, revision=res.revision)
            if res.succeeded:
                self.seen[req.key].append(req.value)
        else:
            self.history.ok(call.op_id, now, revision=res.revision)
            self.seen[req.key].append(req.value)
        if index and req.kind != "get":
            self.cluster.inv.on_ack(index)
        self.stats["ok"] += 1
        self._schedule_next(call.client)

    # -- liveness probes (client id -1, op_id = the proposing node) ---------------------
    probe_applied_at: int | None = None
    probe_applied_by: int = 0

    def cluster_probe_applied(self, call: Call, index: int) -> None:
        if self.probe_applied_at is None:
            self.probe_applied_at = index
            self.probe_applied_by = call.op_id
