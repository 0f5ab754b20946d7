"""etcd's metric series over a coord member, under etcd's names, types, labels and help
texts (etcd 3.4's ``etcdserver/metrics.go``, ``wal/metrics.go``, ``mvcc/metrics.go``,
``rafthttp/metrics.go``, go-grpc-prometheus), so that etcd's dashboards and alert rules
work unchanged.

Gauges are read from the member at scrape time (:class:`MemberCollector`); the few
counters that cannot be are kept by :class:`coord.ops.node.MeteredRaftNode` (proposals,
leader changes), by the fsync hook of the WAL writer (a histogram), by the peer
transport's unreachable report and by the client-port wrapper of
:mod:`coord.ops.grpc_metrics`. Everything goes into the registry the caller passes in:
several members may share one process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

FSYNC_BUCKETS = tuple(0.001 * 2**i for i in range(14))
"""etcd's buckets for wal_fsync_duration_seconds: ExponentialBuckets(0.001, 2, 14),
1 ms to 8.192 s."""


class MeteredMember(Protocol):
    """What the collector reads of a member (``MeteredRaftNode`` and its ``Core``)."""

    @property
    def leader_id(self) -> int: ...
    @property
    def is_leader(self) -> bool: ...
    @property
    def committed_index(self) -> int: ...
    @property
    def applied_index(self) -> int: ...
    proposals_pending: int
    proposals_failed: int
    leader_changes: int


class MemberCollector(Collector):
    """The member's etcd_server_* and etcd_mvcc_* series, read at scrape time."""

    def __init__(self, node: MeteredMember, db_size: Callable[[], int],
                 keys: Callable[[], int]) -> None:
        self.node = node
        self.db_size = db_size
        self.keys = keys

    def collect(self) -> Iterator[Metric]:
        n = self.node
        yield GaugeMetricFamily("etcd_server_has_leader",
                                "Whether or not a leader exists. 1 is existence, 0 is not.",
                                value=1 if n.leader_id else 0)
        yield GaugeMetricFamily("etcd_server_is_leader",
                                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
                                value=1 if n.is_leader else 0)
        yield CounterMetricFamily("etcd_server_leader_changes_seen",
                                  "The number of leader changes seen.", value=n.leader_changes)
        # etcd exports these two as gauges despite the _total suffix.
        yield GaugeMetricFamily("etcd_server_proposals_committed_total",
                                "The total number of consensus proposals committed.",
                                value=n.committed_index)
        yield GaugeMetricFamily("etcd_server_proposals_applied_total",
                                "The total number of consensus proposals applied.",
                                value=n.applied_index)
        yield GaugeMetricFamily("etcd_server_proposals_pending",
                                "The current number of pending proposals to commit.",
                                value=n.proposals_pending)
        yield CounterMetricFamily("etcd_server_proposals_failed",
                                  "The total number of failed proposals seen.",
                                  value=n.proposals_failed)
        yield GaugeMetricFamily("etcd_mvcc_db_total_size_in_bytes",
                                "Total size of the underlying database physically allocated "
                                "in bytes.", value=self.db_size())
        yield GaugeMetricFamily("etcd_debugging_mvcc_keys_total", "Total number of keys.",
                                value=self.keys())


class EtcdMetrics:
    """A member's metrics in ``registry``: the collector over ``node`` plus the hooks the
    composition root hands to the node (``fsync``, ``peer_send_failed``)."""

    def __init__(self, registry: CollectorRegistry, node: MeteredMember,
                 db_size: Callable[[], int], keys: Callable[[], int]) -> None:
        registry.register(MemberCollector(node, db_size, keys))
        self.wal_fsync = Histogram(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
            buckets=FSYNC_BUCKETS, registry=registry)
        self.peer_sent_failures = Counter(
            "etcd_network_peer_sent_failures_total",
            "The total number of send failures from peers.", ["To"], registry=registry)
        self.registry = registry

    def fsync(self, seconds: float) -> None:
        self.wal_fsync.observe(seconds)

    def peer_send_failed(self, peer_id: int) -> None:
        self.peer_sent_failures.labels(format(peer_id, "x")).inc()
