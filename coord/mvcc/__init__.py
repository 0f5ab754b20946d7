"""coord's revisioned key-value store and its watch hub (pure, deterministic, no I/O).

* :class:`coord.mvcc.store.KVStore`: key index with generations, revision log, ranges,
  batched writes (one revision per batch), physical compaction, snapshots.
* :class:`coord.mvcc.watch.WatchHub` / :class:`coord.mvcc.watch.WatchStream`: etcd's
  watchable store plus v3rpc's per-stream watch ids; see the module docstring for how a gRPC
  Watch stream drives it.
"""

from coord.mvcc.store import KVStore
from coord.mvcc.watch import WatchHub, WatchStream

__all__ = ["KVStore", "WatchHub", "WatchStream"]
