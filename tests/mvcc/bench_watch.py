"""Watch micro-benchmark (not collected by pytest): N watchers x M puts through the hub and
the API layer's WatchResponse building, CPU time per delivered event, best of 3. After each
put the streams that were woken are drained, as the server's writer tasks do.

Run: ``.venv/bin/python -m tests.mvcc.bench_watch``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from coord.api.watch import RpcWatchStream, open_stream
from coord.pb import internal_pb2, rpc_pb2
from coord.server.apply import Applier

M = 5_000
VALUE = b"x" * 64


def _run(watchers: int, same_key: bool, prefix: bool) -> float:
    a = Applier()
    woken: dict[RpcWatchStream, None] = {}
    for i in range(watchers):
        s = open_stream(a.watch_hub)
        s.stream.wake = lambda s=s: woken.__setitem__(s, None)
        key = b"/w/k" if same_key else b"/w/k%d" % i
        if prefix:
            s.create(rpc_pb2.WatchCreateRequest(key=b"/w/", range_end=b"/w0", prev_kv=True))
        else:
            s.create(rpc_pb2.WatchCreateRequest(key=key))
        s.pending()
    reqs = [
        internal_pb2.InternalRequest(
            id=i, put=rpc_pb2.PutRequest(key=b"/w/k" if same_key else b"/w/k%d" % (i % watchers),
                                         value=VALUE))
        for i in range(M)
    ]
    gc.disable()
    t0 = time.process_time()
    n = 0
    woken.clear()
    for q in reqs:
        a.apply(q, 0.0)
        for s in woken:  # as the server's writer tasks do: drain the streams that were woken
            for resp in s.pending():
                n += len(resp.events)
        woken.clear()
    t = time.process_time() - t0
    gc.enable()
    return t / max(n, 1)


def _best(fn: Callable[[], float], reps: int = 3) -> float:
    return min(fn() for _ in range(reps))


def main() -> None:
    for name, fn in [
        ("1 key watcher x 1 key", lambda: _run(1, True, False)),
        ("100 key watchers x 1 key", lambda: _run(100, True, False)),
        ("100 watchers x 100 keys", lambda: _run(100, False, False)),
        ("20 prefix+prev_kv watchers", lambda: _run(20, True, True)),
    ]:
        t = _best(fn)
        print(f"{name:28s} {t * 1e6:6.2f} us/event")


if __name__ == "__main__":
    main()
