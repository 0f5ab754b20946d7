"""coord's revisioned key-value store and its watch hub (pure, deterministic, no I/O).

* :class:`coord.mvcc.store.KVStore`: key index with generations, revision log, ranges,
  batched writes (one revision per batch), physical compaction, snapshots
  (:mod:`coord.mvcc.snapshot`); records are :class:`coord.mvcc.record.Rec`.
* :class:`coord.mvcc.watch.WatchHub` / :class:`coord.mvcc.watch.WatchStream`: etcd's
  watchable store plus v3rpc's per-stream watch ids, on top of the store as its commit
  observer; it takes and produces the plain types of :mod:`coord.mvcc.watch_types` (the API
  layer maps them to and from protobuf).
"""

from coord.mvcc.record import Rec
from coord.mvcc.store import KVStore
from coord.mvcc.watch import WatchHub, WatchStream

__all__ = ["KVStore", "Rec", "WatchHub", "WatchStream"]
