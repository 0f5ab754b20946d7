"""The watch hub: appendix B replay, ids, filters, history, compaction, fragments, slow
streams."""

from __future__ import annotations

from coord.api.watch import (
    DUPLICATE_ID_REASON,
    EMPTY_RANGE_REASON,
    MAX_RESPONSE_BYTES,
    open_stream,
)
from coord.api.watch import RpcWatchStream as WatchStream
from coord.pb import rpc_pb2
from tests.server.reqs import Client, delete, put, txn

W = rpc_pb2.WatchCreateRequest
PUT, DEL = 0, 1


def create(s: WatchStream, key: bytes, end: bytes = b"", **kw: object) -> int:
    return s.create(W(key=key, range_end=end, **kw))  # type: ignore[arg-type]


def drain(s: WatchStream) -> list[rpc_pb2.WatchResponse]:
    out: list[rpc_pb2.WatchResponse] = []
    while batch := s.pending():
        out.extend(batch)
    return out


def events(resps: list[rpc_pb2.WatchResponse], wid: int) -> list[tuple[int, bytes, int]]:
    return [
        (e.type, e.kv.key, e.kv.mod_revision)
        for r in resps
        if r.watch_id == wid
        for e in r.events
    ]


def by_id(resps: list[rpc_pb2.WatchResponse]) -> dict[int, rpc_pb2.WatchResponse]:
    return {r.watch_id: r for r in resps}


def test_appendix_b_watch_probe() -> None:
    c = Client()
    hub = c.a.watch_hub
    c.put(b"wprobe/a", b"0")
    rev0 = c.rev
    s = open_stream(hub)
    assert create(s, b"wprobe/a") == 0
    assert create(s, b"wprobe/", b"wprobe0", prev_kv=True) == 1
    assert create(s, b"wprobe/", b"wprobe0", watch_id=100, filters=[W.NOPUT]) == 100
    assert create(s, b"wprobe/", b"wprobe0", watch_id=100) == -1
    assert create(s, b"wprobe/z", b"wprobe/a") == -1
    assert create(s, b"wprobe/", b"wprobe0") == 2
    assert create(s, b"wprobe/a", start_revision=rev0) == 3
    assert create(s, b"wprobe/a", start_revision=rev0 + 3) == 4
    out = drain(s)
    created = [r for r in out if r.created]
    assert [(r.watch_id, r.canceled, r.cancel_reason) for r in created] == [
        (0, False, ""),
        (1, False, ""),
        (100, False, ""),
        (-1, True, DUPLICATE_ID_REASON),
        (-1, True, EMPTY_RANGE_REASON),
        (2, False, ""),
        (3, False, ""),
        (4, False, ""),
    ]
    assert all(r.header.revision == rev0 for r in created)
    hist = [r for r in out if not r.created]
    assert len(hist) == 1 and hist[0].watch_id == 3 and hist[0].header.revision == rev0
    assert hist[0].events[0].kv.value == b"0" and hist[0].events[0].kv.version == 1

    c.put(b"wprobe/a", b"1")
    got = by_id(drain(s))
    assert sorted(got) == [0, 1, 2, 3]
    assert all(r.header.revision == rev0 + 1 for r in got.values())
    assert got[1].events[0].prev_kv.value == b"0"
    assert not got[0].events[0].HasField("prev_kv")

    c.txn(txn([], [put(b"wprobe/b", b"B"), delete(b"wprobe/a")]))
    out = drain(s)
    assert events(out, 1) == [(PUT, b"wprobe/b", rev0 + 2), (DEL, b"wprobe/a", rev0 + 2)]
    assert events(out, 2) == events(out, 1)
    assert events(out, 100) == [(DEL, b"wprobe/a", rev0 + 2)]
    assert events(out, 0) == [(DEL, b"wprobe/a", rev0 + 2)]
    assert events(out, 3) == [(DEL, b"wprobe/a", rev0 + 2)]
    del_ev = by_id(out)[1].events[1]
    assert del_ev.prev_kv.value == b"1"
    assert (del_ev.kv.create_revision, del_ev.kv.version, del_ev.kv.value) == (0, 0, b"")
    assert 4 not in by_id(out)

    c.put(b"wprobe/a", b"2")
    got = by_id(drain(s))
    assert sorted(got) == [0, 1, 2, 3, 4]
    assert not got[1].events[0].HasField("prev_kv")  # a creation has no prev_kv

    s.request_progress()
    (prog,) = drain(s)
    assert prog.watch_id == -1 and prog.header.revision == rev0 + 3 and not prog.events
    assert s.cancel(100)
    (cancel,) = drain(s)
    assert (cancel.watch_id, cancel.canceled, cancel.header.revision) == (100, True, rev0 + 3)
    assert not s.cancel(100)
    assert drain(s) == []
    assert create(s, b"", b"\0", start_revision=rev0 + 3) == 5
    out = drain(s)
    assert out[0].created and events(out, 5) == [(PUT, b"wprobe/a", rev0 + 3)]

    c.put(b"wprobe/c", b"x")
    c.put(b"wprobe/c", b"y")
    c.compact(c.rev)
    s2 = open_stream(hub)
    create(s2, b"wprobe/c", start_revision=c.rev - 1)
    out = drain(s2)
    assert out[0].created and out[0].header.revision == c.rev
    assert out[1].canceled and out[1].compact_revision == c.rev
    assert out[1].HasField("header") and out[1].header.revision == 0
    assert create(s2, b"wprobe/c", start_revision=c.rev, prev_kv=True) == 1
    out = drain(s2)
    ev = out[1].events[0]
    assert (ev.kv.create_revision, ev.kv.mod_revision, ev.kv.version) == (rev0 + 4, rev0 + 5, 2)
    assert not ev.HasField("prev_kv")  # rev - 1 is compacted


def test_fragment_split_matches_etcd() -> None:
    """6 x 500 KiB keys deleted in one revision, watched with prev_kv and NOPUT: 4 + 2."""
    c = Client()
    hub = c.a.watch_hub
    s = open_stream(hub)
    create(s, b"f/", b"f0", prev_kv=True, filters=[W.NOPUT], fragment=True)
    create(s, b"f/", b"f0", prev_kv=True, filters=[W.NOPUT])
    drain(s)
    for i in range(6):
        c.put(b"f/%d" % i, bytes([65 + i]) * (500 * 1024))
    assert drain(s) == []
    c.delete(b"f/", b"f0")
    out = drain(s)
    frag = [r for r in out if r.watch_id == 0]
    whole = [r for r in out if r.watch_id == 1]
    assert [(len(r.events), r.fragment) for r in frag] == [(4, True), (2, False)]
    assert all(r.ByteSize() < MAX_RESPONSE_BYTES for r in frag)
    assert [(len(r.events), r.fragment) for r in whole] == [(6, False)]
    assert whole[0].ByteSize() > 3_000_000
    assert all(r.header.revision == c.rev for r in out)


def test_no_fragment_for_small_or_single_event() -> None:
    c = Client()
    s = open_stream(c.a.watch_hub)
    create(s, b"k", fragment=True)
    drain(s)
    c.put(b"k", b"x" * (2 * 1024 * 1024 + 10))
    (r,) = drain(s)
    assert len(r.events) == 1 and not r.fragment


def test_filters() -> None:
    c = Client()
    s = open_stream(c.a.watch_hub)
    np = create(s, b"k", filters=[W.NOPUT])
    nd = create(s, b"k", filters=[W.NODELETE])
    both = create(s, b"k", filters=[W.NOPUT, W.NODELETE])
    drain(s)
    c.put(b"k", b"1")
    c.delete(b"k")
    out = drain(s)
    assert events(out, np) == [(DEL, b"k", 3)]
    assert events(out, nd) == [(PUT, b"k", 2)]
    assert [r for r in out if r.watch_id == both] == []


def test_history_replay_groups_revisions_and_keeps_txn_order() -> None:
    c = Client()
    c.put(b"a", b"1")
    c.txn(txn([], [put(b"c", b"1"), put(b"b", b"1"), delete(b"a")]))
    c.put(b"b", b"2")
    s = open_stream(c.a.watch_hub)
    create(s, b"\0", b"\0", start_revision=1)
    out = drain(s)
    assert out[0].created
    assert events(out, 0) == [
        (PUT, b"a", 2),
        (PUT, b"c", 3),
        (PUT, b"b", 3),
        (DEL, b"a", 3),
        (PUT, b"b", 4),
    ]
    assert out[1].header.revision == 4


def test_start_revision_zero_is_now_and_future_waits() -> None:
    c = Client()
    c.put(b"k", b"1")
    s = open_stream(c.a.watch_hub)
    now = create(s, b"k")
    fut = create(s, b"k", start_revision=c.rev + 2)
    drain(s)
    c.put(b"k", b"2")
    out = drain(s)
    assert events(out, now) == [(PUT, b"k", 3)] and events(out, fut) == []
    c.put(b"k", b"3")
    out = drain(s)
    assert events(out, now) == [(PUT, b"k", 4)] and events(out, fut) == [(PUT, b"k", 4)]


def test_auto_ids_skip_explicit_ones() -> None:
    c = Client()
    s = open_stream(c.a.watch_hub)
    assert create(s, b"k", watch_id=1) == 1
    assert create(s, b"k") == 0
    assert create(s, b"k") == 2
    s2 = open_stream(c.a.watch_hub)
    assert create(s2, b"k") == 0  # ids are per stream


def test_cancel_drops_queued_events_and_close_unregisters() -> None:
    c = Client()
    hub = c.a.watch_hub
    s = open_stream(hub)
    wid = create(s, b"k")
    drain(s)
    c.put(b"k", b"1")
    s.cancel(wid)
    out = drain(s)
    assert [(r.watch_id, r.canceled, len(r.events)) for r in out] == [(wid, True, 0)]
    create(s, b"k")
    create(s, b"a", b"z", start_revision=1)
    hub.close_stream(s.stream)
    assert hub.watcher_count() == (0, 0)
    assert not hub.active
    c.put(b"k", b"2")


def test_wake_called_on_output() -> None:
    c = Client()
    calls: list[int] = []
    s = open_stream(c.a.watch_hub, wake=lambda: calls.append(1))
    create(s, b"k")
    assert calls
    drain(s)
    calls.clear()
    c.put(b"other", b"1")
    assert not calls
    c.put(b"k", b"1")
    assert calls


def test_slow_stream_never_blocks_writes_and_catches_up_in_order() -> None:
    c = Client()
    hub = c.a.watch_hub
    hub.max_queued = 8
    hub.catch_up_revisions = 7
    slow = open_stream(hub)
    fast = open_stream(hub)
    create(slow, b"k", prev_kv=True)
    create(fast, b"k")
    drain(slow)
    drain(fast)
    for i in range(100):
        c.put(b"k", b"%d" % i)
        drain(fast)  # the fast reader keeps up
    assert hub.watcher_count() == (1, 1)
    out = drain(slow)
    revs = [e.kv.mod_revision for r in out for e in r.events]
    assert revs == list(range(2, 102))
    assert all(e.prev_kv.version == e.kv.version - 1 for r in out for e in r.events[1:])
    assert max(len(r.events) for r in out) <= 8
    assert hub.watcher_count() == (2, 0)
    c.put(b"k", b"again")
    assert [e.kv.mod_revision for r in drain(slow) for e in r.events] == [102]


def test_slow_watcher_compacted_while_behind() -> None:
    c = Client()
    hub = c.a.watch_hub
    hub.max_queued = 2
    s = open_stream(hub)
    create(s, b"k")
    drain(s)
    for i in range(10):
        c.put(b"k", b"%d" % i)
    c.compact(c.rev)
    out = drain(s)
    assert [e.kv.mod_revision for r in out for e in r.events] == [2, 3]
    assert out[-1].canceled and out[-1].compact_revision == c.rev
    assert s.watchers == {}


def test_progress_waits_for_unsynced_watchers() -> None:
    """etcd #15220: a progress notify must not overtake pending events."""
    c = Client()
    for i in range(5):
        c.put(b"k", b"%d" % i)
    s = open_stream(c.a.watch_hub)
    create(s, b"k", start_revision=2)
    s.request_progress()
    out = drain(s)
    kinds = ["created" if r.created else "progress" if r.watch_id == -1 else "events" for r in out]
    assert kinds == ["created", "events", "progress"]
    assert out[-1].header.revision == c.rev
    assert max(e.kv.mod_revision for e in out[1].events) <= out[-1].header.revision


def test_progress_notify_only_for_synced_opted_in() -> None:
    c = Client()
    hub = c.a.watch_hub
    s = open_stream(hub)
    a = create(s, b"k", progress_notify=True)
    create(s, b"j")
    drain(s)
    hub.progress_notify()
    out = drain(s)
    assert [(r.watch_id, r.header.revision) for r in out] == [(a, 1)]


def test_restore_makes_watchers_catch_up() -> None:
    src = Client()
    src.put(b"k", b"1")
    dst = Client()
    s = open_stream(dst.a.watch_hub)
    create(s, b"k", start_revision=1)
    drain(s)
    src.put(b"k", b"2")
    src.put(b"j", b"2")
    dst.a.restore(src.a.snapshot())
    out = drain(s)
    assert events(out, 0) == [(PUT, b"k", 2), (PUT, b"k", 3)]
    dst.put(b"k", b"3")
    assert events(drain(s), 0) == [(PUT, b"k", 5)]


def test_handle_dispatch() -> None:
    c = Client()
    s = open_stream(c.a.watch_hub)
    s.handle(rpc_pb2.WatchRequest(create_request=W(key=b"k")))
    s.handle(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
    s.handle(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=0)))
    out = drain(s)
    assert [(r.created, r.watch_id, r.canceled) for r in out] == [
        (True, 0, False),
        (False, -1, False),
        (False, 0, True),
    ]


def test_many_watchers_on_one_prefix_across_streams() -> None:
    c = Client()
    hub = c.a.watch_hub
    streams = [open_stream(hub) for _ in range(3)]
    for s in streams:
        create(s, b"/cron/jobs/", b"/cron/jobs0")
        create(s, b"/cron/jobs/", b"/cron/jobs0", filters=[W.NOPUT])
        create(s, b"/cron/", b"/cron0")
        drain(s)
    streams[1].cancel(0)
    hub.close_stream(streams[2].stream)
    c.put(b"/cron/jobs/a", b"1")
    c.put(b"/cron/lock/a", b"1")
    out0, out1 = drain(streams[0]), drain(streams[1])
    assert events(out0, 0) == [(PUT, b"/cron/jobs/a", 2)]
    assert events(out0, 1) == []
    assert events(out0, 2) == [(PUT, b"/cron/jobs/a", 2), (PUT, b"/cron/lock/a", 3)]
    assert events(out1, 0) == [] and events(out1, 2) == events(out0, 2)
    assert hub.watcher_count() == (5, 0)


def test_catch_up_batches_like_etcd() -> None:
    """etcd's watchBatchMaxRevs: 1100 revisions behind -> 1000 + 100 events, header = current
    (the compat scenario aetcd:watch_catchup_batches)."""
    c = Client()
    base = c.rev
    for i in range(1100):
        c.put(b"p/k%d" % (i % 7), b"%d" % i)
    s = open_stream(c.a.watch_hub)
    create(s, b"p/", b"p0", start_revision=base + 1)
    out = drain(s)
    shapes = [(r.created, len(r.events), r.header.revision) for r in out]
    assert shapes == [(True, 0, c.rev), (False, 1000, c.rev), (False, 100, c.rev)]
    assert out[1].events[0].kv.mod_revision == base + 1
    assert out[2].events[0].kv.mod_revision == base + 1001


def test_catch_up_batch_counts_revisions_before_filtering() -> None:
    c = Client()
    hub = c.a.watch_hub
    hub.catch_up_revisions = 3
    for i in range(4):
        c.put(b"k", b"%d" % i)
        c.delete(b"k")
    s = open_stream(hub)
    create(s, b"k", start_revision=1, filters=[W.NOPUT])
    out = drain(s)
    # 8 revisions with events: batches of 3 revisions (put, del, put | del, put, del | ...),
    # each holding only the deletes that survive the filter
    assert [len(r.events) for r in out if not r.created] == [1, 2, 1]
    assert events(out, 0) == [(DEL, b"k", 3), (DEL, b"k", 5), (DEL, b"k", 7), (DEL, b"k", 9)]
