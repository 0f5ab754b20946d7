"""Fault injection over time: crashes and restarts, partitions, membership changes.

Each fault source is a self-rescheduling event with its own sub-RNG; all of them stop
when :meth:`Nemesis.stop` is called (the liveness phase).

* crashes: every ~``crash_every`` ms a random up node crashes and restarts after
  ~``down_ms`` (crash points inside the Ready driver add crashes at precise steps);
* partitions: every ~``partition_every`` ms one of: isolate a node (both ways, or in only,
  or out only), split into two random groups (symmetric or not), cut one directed link;
  healed after ~``partition_len`` ms;
* early campaign (seeds with ``early_campaign``): the member's own reaction to a broken
  leader stream (``MemberCore.leader_stream_lost``, its timers woken at
  ``MemberCore.next_wake``), started by a crash of the leader: each follower that
  heard nothing more from it for ``CONFIRM_LOSS_TICKS`` ticks
  forgets it and campaigns within ``EARLY_CAMPAIGN_TICKS`` ticks; with
  ``false_alarm_every``, a random follower of a live leader forgets it (a stream that
  broke while the leader lives);
* membership (seeds with spares/removals): add each spare as a learner, promote it, then
  remove random voters (never below 3), re-proposing until the change shows up in the
  most advanced node's configuration.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from coord.raft import ConfChange, ConfChangeType, StateRole
from coord.server.member_ready import LeaderLost
from tests.sim.cluster import Call, Cluster
from tests.sim.eventloop import sub_rng
from tests.sim.kv import Request
from tests.sim.workload import NEMESIS_CLIENT


class Nemesis:
    def __init__(self, cluster: Cluster, new_request_id: Callable[[], int]) -> None:
        self.new_request_id = new_request_id
        self.c = cluster
        self.o = cluster.opts
        self.loop = cluster.loop
        self.crash_rng = sub_rng(self.o.seed, "nemesis.crash")
        self.part_rng = sub_rng(self.o.seed, "nemesis.partition")
        self.member_rng = sub_rng(self.o.seed, "nemesis.membership")
        self.churn_rng = sub_rng(self.o.seed, "nemesis.churn")
        self.transfer_rng = sub_rng(self.o.seed, "nemesis.transfer")
        self.early_rng = cluster.early_rng  # also the members' early campaign's
        self.stopped = False
        self.spares = [nid for nid in cluster.ids if nid not in cluster.founders]
        self.removals_left = self.o.removals
        self.removed: list[int] = []
        self.removing: int | None = None
        self.demotions_left = self.o.demotions
        self.stats = {
            "partitions": 0, "cc_proposed": 0, "transfers": 0, "leader_forgotten": 0,
            "early_campaigns": 0,
        }  # fmt: skip
        self._armed: set[tuple[int, int, int]] = set()  # (node, incarnation, time)
        cluster.on_crash = self._crashed

    def start(self) -> None:
        if self.o.crash_every:
            self.loop.after(self._exp(self.crash_rng, self.o.crash_every), self._crash)
        if self.o.partition_every:
            self.loop.after(self._exp(self.part_rng, self.o.partition_every), self._partition)
        if self.o.transfer_every:
            self.loop.after(self._exp(self.transfer_rng, self.o.transfer_every), self._transfer)
        if self.o.churn_every:
            self.loop.after(self._exp(self.churn_rng, self.o.churn_every), self._churn)
        if self.spares or self.removals_left or self.demotions_left:
            self.loop.after(50 + self.member_rng.randrange(200), self._membership)
        if self.o.false_alarm_every:
            self.loop.after(self._exp(self.early_rng, self.o.false_alarm_every), self._false_alarm)

    def stop(self) -> None:
        self.stopped = True

    @staticmethod
    def _exp(rng: random.Random, mean: float) -> int:
        return 1 + int(rng.expovariate(1.0 / mean))

    # -- crashes -----------------------------------------------------------------------
    def _crash(self) -> None:
        if self.stopped:
            return
        up = [nid for nid in self.c.ids if self.c.nodes[nid].up]
        leaders = [n.id for n in self.c.leaders()]
        if leaders and self.crash_rng.random() < self.o.target_leader:
            self.c.crash(leaders[0], "nemesis, leader")
        elif up:
            self.c.crash(self.crash_rng.choice(up), "nemesis")
        self.loop.after(self._exp(self.crash_rng, self.o.crash_every), self._crash)

    def _crashed(self, nid: int) -> None:
        if not self.stopped:
            self.loop.after(self._exp(self.crash_rng, self.o.down_ms), self._restart, nid)
        if self.o.early_campaign:
            for fid in self.c.ids:
                n = self.c.nodes[fid]
                if n.core is not None and n.core.rn.lead == nid:
                    n.core.leader_stream_lost(nid, self.loop.now)
                    self._arm(fid)

    def _restart(self, nid: int) -> None:
        if not self.stopped:
            self.c.restart(nid)

    # -- the member's timers (the early campaign: coord.server.member_core) --------------
    def _arm(self, nid: int) -> None:
        """Wake node ``nid``'s member at its next timer (``MemberCore.next_wake``), as the
        server's ``_arm_timer`` does; a crash drops its timers with the process."""
        n = self.c.nodes[nid]
        due = n.core.next_wake() if n.core is not None else None
        if due is None:
            return
        key = (nid, n.incarnation, max(math.ceil(due), self.loop.now))
        if key not in self._armed:
            self._armed.add(key)
            self.loop.at(key[2], self._fire, *key)

    def _fire(self, nid: int, inc: int, at: int) -> None:
        self._armed.discard((nid, inc, at))
        n = self.c.nodes[nid]
        if n.incarnation != inc or n.core is None:
            return
        happened = n.core.wake(self.loop.now, lambda peer: self.c.last_heard.get((nid, peer), -1))
        for what in happened:
            if isinstance(what, LeaderLost):
                self._forgot(nid, "leader stream lost")
            else:
                self.stats["early_campaigns"] += 1
                self.c.trace.log(f"n{nid} campaigns early")
        if happened:
            self.c.drive(n)  # may crash the node (crash points): _arm checks
        self._arm(nid)

    def _forgot(self, nid: int, why: str) -> None:
        self.stats["leader_forgotten"] += 1
        self.c.trace.log(f"n{nid} forgets its leader ({why})")

    def _false_alarm(self) -> None:
        if self.stopped:
            return
        r = self.early_rng
        followers = [
            nid for nid in self.c.ids
            if (raw := self.c.nodes[nid].raw) is not None
            and raw.role == StateRole.FOLLOWER and raw.lead
            and self.c.nodes[raw.lead].up
        ]  # fmt: skip
        if followers:
            nid = r.choice(followers)
            core = self.c.nodes[nid].core
            assert core is not None
            core.forget_leader(self.loop.now)
            self._forgot(nid, "false alarm: the leader is alive")
            self.c.drive(self.c.nodes[nid])  # may crash the node (crash points)
            self._arm(nid)
        self.loop.after(self._exp(r, self.o.false_alarm_every), self._false_alarm)

    # -- partitions ----------------------------------------------------------------------
    def _partition(self) -> None:
        if self.stopped:
            return
        r = self.part_rng
        ids = [nid for nid in self.c.ids if self.c.nodes[nid].created]
        net = self.c.net
        net.heal()
        mode = r.choice(("isolate", "isolate", "split", "link"))
        if mode == "isolate":
            leaders = [n.id for n in self.c.leaders()]
            hit_leader = leaders and r.random() < self.o.target_leader
            victim = leaders[0] if hit_leader else r.choice(ids)
            direction = r.choice(("both", "in", "out")) if self.o.asymmetric else "both"
            net.isolate(victim, ids, inbound=direction != "out", outbound=direction != "in")
            what = f"isolate n{victim} ({direction})"
        elif mode == "split":
            shuffled = list(ids)
            r.shuffle(shuffled)
            k = r.randint(1, len(shuffled) - 1)
            groups = [sorted(shuffled[:k]), sorted(shuffled[k:])]
            symmetric = not (self.o.asymmetric and r.random() < 0.5)
            net.split(groups, symmetric=symmetric)
            what = f"split {groups} {'symmetric' if symmetric else 'one-way'}"
        else:
            a, b = r.sample(ids, 2)
            net.block(a, b)
            what = f"cut link {a}->{b}"
        self.stats["partitions"] += 1
        self.c.trace.log(f"PARTITION {what}")
        self.loop.after(self._exp(r, self.o.partition_len), self._heal)

    def _heal(self) -> None:
        if self.stopped:
            return
        self.c.net.heal()
        self.c.trace.log("HEAL")
        self.loop.after(self._exp(self.part_rng, self.o.partition_every), self._partition)

    # -- leadership transfer -----------------------------------------------------------
    def _transfer(self) -> None:
        if self.stopped:
            return
        r = self.transfer_rng
        leaders = self.c.leaders()
        if leaders:
            lead = leaders[0]
            others = [v for v in lead.conf_state.voters if v != lead.id]
            if others:
                self.c.transfer_leader(lead.id, r.choice(others))
                self.stats["transfers"] += 1
        self.loop.after(self._exp(r, self.o.transfer_every), self._transfer)

    # -- leader churn ------------------------------------------------------------------
    def _churn(self) -> None:
        """Cut the leader off, make it append entries nobody else gets, then kill it:
        logs diverge at the same indexes with different terms (Raft paper, Figure 8)."""
        if self.stopped:
            return
        r = self.churn_rng
        leaders = self.c.leaders()
        if leaders:
            lead = leaders[0].id
            ids = [nid for nid in self.c.ids if self.c.nodes[nid].created]
            self.c.net.isolate(lead, ids, inbound=True, outbound=True)
            for _ in range(r.randint(1, 3)):
                req = Request(self.new_request_id(), "noop")
                self.c.propose(lead, Call(NEMESIS_CLIENT, 0, req))
            self.c.trace.log(f"CHURN: cut off leader n{lead}")
            self.loop.after(r.randint(2, 30), self._churn_kill, lead)
        self.loop.after(self._exp(r, self.o.churn_every), self._churn)

    def _churn_kill(self, nid: int) -> None:
        if self.stopped:
            return
        self.c.crash(nid, "churn")
        self.c.net.heal()

    # -- membership ----------------------------------------------------------------------
    def view(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(voters, learners) as the up node with the highest applied index sees them."""
        best = None
        for nid in self.c.ids:
            n = self.c.nodes[nid]
            if n.up and (best is None or n.applied > best.applied):
                best = n
        if best is None:
            return (), ()
        return best.conf_state.voters, best.conf_state.learners

    def _membership(self) -> None:
        if self.stopped:
            return
        r = self.member_rng
        voters, learners = self.view()
        cc: ConfChange | None = None
        if voters:
            learner = next((s for s in learners if s not in self.removed), None)
            joining = next((s for s in self.spares if s not in voters and s not in learners), None)
            if learner is not None:
                cc = ConfChange(ConfChangeType.ADD_NODE, learner)
            elif joining is not None:
                if not self.c.nodes[joining].created:
                    self.c.start(joining)
                cc = ConfChange(ConfChangeType.ADD_LEARNER_NODE, joining)
            elif self.removing is not None:
                if self.removing not in voters:
                    self.removed.append(self.removing)
                    self.removing = None
                    self.removals_left -= 1
                else:
                    cc = ConfChange(ConfChangeType.REMOVE_NODE, self.removing)
            elif self.removals_left and len(voters) > 3:
                self.removing = r.choice(voters)
                cc = ConfChange(ConfChangeType.REMOVE_NODE, self.removing)
            elif self.demotions_left and len(voters) >= 3:
                # demote a voter to learner; the learner branch above promotes it back
                self.demotions_left -= 1
                cc = ConfChange(ConfChangeType.ADD_LEARNER_NODE, r.choice(voters))
        if cc is not None:
            leaders = [n.id for n in self.c.leaders()]
            ups = [nid for nid in self.c.ids if self.c.nodes[nid].up]
            # mostly the leader; otherwise a follower forwards it (or drops it: no leader)
            via_leader = bool(leaders) and r.random() < 0.7
            target = leaders[0] if via_leader else (r.choice(ups) if ups else 0)
            if target and self.c.propose_conf_change(target, cc):
                self.stats["cc_proposed"] += 1
                self.c.trace.log(f"propose conf change {cc.type.name} {cc.node_id} at n{target}")
        self.loop.after(100 + r.randrange(300), self._membership)
