"""Hypothesis state machine: the applier/store against a naive model (dict of version lists).

The model keeps every version forever; compaction only moves the readable floor. Each step
also checks a live watcher's event stream and a snapshot/restore round trip.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from coord.api.watch import open_stream
from coord.errors import Compacted, DuplicateKey, FutureRevision
from coord.pb import rpc_pb2
from coord.server import validate
from coord.server.apply import Applier
from tests.server.reqs import RR, Client, cmp, delete, put, rng, txn

KEYS = [b"a", b"b", b"c", b"d"]
ENDS = [b"", b"\0", b"b", b"c", b"e"]
# model version: (mod_rev, value or None, create_rev, version)
Ver = tuple[int, bytes | None, int, int]

keys = st.sampled_from(KEYS)
ends = st.sampled_from(ENDS)
values = st.sampled_from([b"", b"x", b"y", b"zz"])


def in_range(k: bytes, key: bytes, end: bytes) -> bool:
    if not end:
        return k == key
    if end == b"\0":
        return k >= key
    return key <= k < end


class Model:
    def __init__(self) -> None:
        self.hist: dict[bytes, list[Ver]] = {}
        self.rev = 1
        self.compact = -1
        self.log: list[tuple[int, int, bytes]] = []  # (rev, type, key) in op order
        self.staged = False

    def at(self, k: bytes, rev: int) -> Ver | None:
        found = None
        for v in self.hist.get(k, []):
            if v[0] <= rev:
                found = v
        if found is None or found[1] is None:
            return None
        return found

    def live(self, key: bytes, end: bytes, rev: int) -> list[tuple[bytes, Ver]]:
        return [
            (k, v)
            for k in sorted(self.hist)
            if in_range(k, key, end) and (v := self.at(k, rev)) is not None
        ]

    def put(self, k: bytes, value: bytes) -> None:
        nrev = self.rev + 1
        cur = self.at(k, nrev)
        ver = (nrev, value, cur[2], cur[3] + 1) if cur else (nrev, value, nrev, 1)
        self.hist.setdefault(k, []).append(ver)
        self.log.append((nrev, 0, k))
        self.staged = True

    def delete(self, key: bytes, end: bytes) -> int:
        nrev = self.rev + 1
        items = self.live(key, end, nrev)
        for k, _ in items:
            self.hist[k].append((nrev, None, 0, 0))
            self.log.append((nrev, 1, k))
            self.staged = True
        return len(items)

    def commit(self) -> None:
        if self.staged:
            self.rev += 1
        self.staged = False


class MVCCMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.c = Client()
        self.m = Model()
        self.stream = open_stream(self.c.a.watch_hub)
        self.stream.create(rpc_pb2.WatchCreateRequest(key=b"\0", range_end=b"\0"))
        self.seen: list[tuple[int, int, bytes]] = []
        # a slow stream (tiny queue, drained only now and then) watching from revision 1
        self.c.a.watch_hub.max_queued = 2
        self.slow = open_stream(self.c.a.watch_hub)
        self.slow.create(rpc_pb2.WatchCreateRequest(key=b"b", range_end=b"\0", start_revision=1))
        self.slow_seen: list[tuple[int, int, bytes]] = []
        self.slow_cancelled_at = 0

    @rule(k=keys, v=values)
    def do_put(self, k: bytes, v: bytes) -> None:
        r = self.c.put(k, v, prev_kv=True)
        prev = self.m.at(k, self.m.rev)
        self.m.put(k, v)
        self.m.commit()
        assert r.header.revision == self.m.rev
        assert r.HasField("prev_kv") == (prev is not None)

    @rule(k=keys, end=ends)
    def do_delete(self, k: bytes, end: bytes) -> None:
        r = self.c.delete(k, end)
        n = self.m.delete(k, end)
        self.m.commit()
        assert r.deleted == n and r.header.revision == self.m.rev

    @rule(
        ck=keys,
        ctarget=st.sampled_from(["VALUE", "VERSION", "CREATE", "MOD"]),
        result=st.sampled_from(["EQUAL", "NOT_EQUAL", "GREATER", "LESS"]),
        n=st.integers(min_value=0, max_value=4),
        vbytes=values,
        ops=st.lists(
            st.tuples(st.sampled_from(["put", "del", "rng"]), keys, ends, values), max_size=4
        ),
        fops=st.lists(
            st.tuples(st.sampled_from(["put", "del", "rng"]), keys, ends, values), max_size=3
        ),
    )
    def do_txn(
        self,
        ck: bytes,
        ctarget: str,
        result: str,
        n: int,
        vbytes: bytes,
        ops: list[tuple[str, bytes, bytes, bytes]],
        fops: list[tuple[str, bytes, bytes, bytes]],
    ) -> None:
        def build(lst: list[tuple[str, bytes, bytes, bytes]]) -> list[rpc_pb2.RequestOp]:
            out = []
            for kind, k, e, v in lst:
                out.append(
                    put(k, v) if kind == "put" else delete(k, e) if kind == "del" else rng(k, e)
                )
            return out

        target = ctarget
        c = cmp(ck, target, result, vbytes if target == "VALUE" else n)
        t = txn([c], build(ops), build(fops))
        try:
            validate.check_txn(t)
        except DuplicateKey:
            return
        # model: evaluate the compare on the start state
        cur = self.m.at(ck, self.m.rev)
        if cur is None:
            have: Any = None if target == "VALUE" else 0
        else:
            have = {"VALUE": cur[1], "VERSION": cur[3], "CREATE": cur[2], "MOD": cur[0]}[target]
        want: Any = vbytes if target == "VALUE" else n
        if have is None:
            ok = False
        else:
            ok = {
                "EQUAL": have == want,
                "NOT_EQUAL": have != want,
                "GREATER": have > want,
                "LESS": have < want,
            }[result]
        resp = self.c.txn(t)
        assert resp.succeeded == ok
        chosen = ops if ok else fops
        for (kind, k, e, v), r in zip(chosen, resp.responses, strict=True):
            if kind == "put":
                self.m.put(k, v)
            elif kind == "del":
                assert r.response_delete_range.deleted == self.m.delete(k, e)
            else:
                view = self.m.rev + (1 if self.m.staged else 0)
                want_keys = [kk for kk, _ in self.m.live(k, e, view)]
                assert [kv.key for kv in r.response_range.kvs] == want_keys
                assert r.response_range.header.revision == view
        self.m.commit()
        assert resp.header.revision == self.m.rev

    @rule(data=st.data())
    def do_compact(self, data: st.DataObject) -> None:
        lo = max(self.m.compact + 1, 0)
        if lo > self.m.rev:
            return
        rev = data.draw(st.integers(min_value=lo, max_value=self.m.rev))
        self.c.compact(rev)
        self.m.compact = rev

    @rule(rev=st.integers(min_value=-1, max_value=60), k=keys, end=ends)
    def bad_compact_or_future(self, rev: int, k: bytes, end: bytes) -> None:
        if rev <= self.m.compact:
            with pytest.raises(Compacted):
                self.c.compact(rev)
        if rev > self.m.rev:
            with pytest.raises(FutureRevision):
                self.c.get(k, end, revision=rev)
        elif 0 < rev < self.m.compact:
            with pytest.raises(Compacted):
                self.c.get(k, end, revision=rev)

    @rule(
        k=keys,
        end=ends,
        data=st.data(),
        limit=st.integers(min_value=0, max_value=3),
        starget=st.sampled_from([RR.KEY, RR.VERSION, RR.CREATE, RR.MOD, RR.VALUE]),
        order=st.sampled_from([RR.NONE, RR.ASCEND, RR.DESCEND]),
        min_mod=st.integers(min_value=0, max_value=10),
    )
    def do_range(
        self, k: bytes, end: bytes, data: st.DataObject, limit: int, starget: int, order: int,
        min_mod: int,
    ) -> None:
        target = starget
        lo = max(self.m.compact, 1)
        rev = data.draw(st.integers(min_value=lo, max_value=self.m.rev))
        r = self.c.get(
            k, end, revision=rev, limit=limit, sort_target=target, sort_order=order,
            min_mod_revision=min_mod,
        )
        items = self.m.live(k, end, rev)
        assert r.count == len(items)
        assert r.header.revision == self.m.rev
        if order == RR.NONE and limit and not min_mod:
            items = items[: limit + 1]  # etcd fetches limit+1 in key order first
        items = [kv for kv in items if kv[1][0] >= min_mod] if min_mod else items
        eff = order if (order != RR.NONE or target == RR.KEY) else RR.ASCEND
        if eff != RR.NONE and target != RR.KEY:
            idx = {RR.VERSION: 3, RR.CREATE: 2, RR.MOD: 0, RR.VALUE: 1}[target]
            items = sorted(items, key=lambda kv: kv[1][idx], reverse=eff == RR.DESCEND)
        elif eff == RR.DESCEND:
            items = items[::-1]
        more = bool(limit) and len(items) > limit
        if limit:
            items = items[:limit]
        got = [(kv.key, kv.mod_revision, kv.create_revision, kv.version, kv.value) for kv in r.kvs]
        assert got == [(kk, v[0], v[2], v[3], v[1]) for kk, v in items]
        assert r.more == more

    @rule()
    def snapshot_roundtrip(self) -> None:
        snap = self.c.a.snapshot()
        other = Applier()
        other.restore(snap)
        assert other.snapshot() == snap
        assert other.hash_kv(0) == self.c.a.hash_kv(0)

    @rule()
    def drain_slow(self) -> None:
        while batch := self.slow.pending():
            for r in batch:
                if r.canceled:
                    assert r.compact_revision == self.m.compact
                    self.slow_cancelled_at = r.compact_revision
                for e in r.events:
                    self.slow_seen.append((e.kv.mod_revision, e.type, e.kv.key))
        want = [ev for ev in self.m.log if ev[2] >= b"b"]
        if self.slow_cancelled_at:
            # a prefix of the history, then the cancel (and nothing after it)
            assert self.slow_seen == want[: len(self.slow_seen)]
            assert not self.slow.watchers
        else:
            assert self.slow_seen == want

    @rule()
    def restore_own_snapshot(self) -> None:
        snap = self.c.a.snapshot()
        self.c.a.restore(snap)
        assert self.c.a.snapshot() == snap

    @invariant()
    def watcher_sees_every_change_in_order(self) -> None:
        while batch := self.stream.pending():
            for r in batch:
                for e in r.events:
                    self.seen.append((e.kv.mod_revision, e.type, e.kv.key))
        assert self.seen == self.m.log

    @invariant()
    def latest_matches(self) -> None:
        r = self.c.get(b"\0", b"\0")
        want = [(k, v[1]) for k, v in self.m.live(b"\0", b"\0", self.m.rev)]
        assert [(kv.key, kv.value) for kv in r.kvs] == want
        assert self.c.rev == self.m.rev


TestMVCCMachine = MVCCMachine.TestCase
TestMVCCMachine.settings = settings(max_examples=50, stateful_step_count=40, deadline=None)
