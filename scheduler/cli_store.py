"""The store flags of ``coord serve`` and ``agent`` (whose store is the same member): one
definition of each option and its default (coord.server.config's), and the member's
:class:`~coord.server.config.ServerConfig` made from them."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from coord.server import config as store_config
from scheduler.cli_app import fail
from scheduler.cli_tls import ServerTLSFlags

NameOpt = Annotated[str, typer.Option("--name", help="Member name, unique in the cluster "
                                      "(an agent's worker has the same name).",
                                      show_default="the host name")]
DataDirOpt = Annotated[Path, typer.Option("--data-dir", help="Where the WAL and snapshots live.")]
ClientOpt = Annotated[str, typer.Option("--listen-client",
                                        help="HOST:PORT for etcd-v3 clients (etcdctl, workers).")]
PeerOpt = Annotated[str, typer.Option("--listen-peer", help="HOST:PORT for Raft peer traffic.")]
ClusterOpt = Annotated[str | None, typer.Option(
    "--initial-cluster", help="NAME=HOST:PORT,... of every member's peer address "
    "(default: this member alone).")]
ClusterStateOpt = Annotated[str, typer.Option(
    "--initial-cluster-state",
    help="'new' bootstraps a cluster from --initial-cluster; 'existing' joins a running "
    "cluster after `etcdctl member add`.")]
SnapshotCountOpt = Annotated[int, typer.Option(
    "--snapshot-count", help="Applied entries between snapshots (log compaction).")]
SnapshotBytesOpt = Annotated[int, typer.Option(
    "--snapshot-bytes", help="Also snapshot once the entries applied since the last "
    "snapshot hold this many bytes (or the last snapshot's size, if larger).")]
DEFAULT_NAME = ""  # the host name
DEFAULT_DATA_DIR = Path("raftcron-data")
DEFAULT_CLIENT = store_config.DEFAULT_CLIENT
DEFAULT_PEER = store_config.DEFAULT_PEER
DEFAULT_CLUSTER_STATE = store_config.ServerConfig.initial_cluster_state
DEFAULT_SNAPSHOT_COUNT = store_config.ServerConfig.snapshot_count
DEFAULT_SNAPSHOT_BYTES = store_config.ServerConfig.snapshot_bytes
DEFAULT_TOKEN_TTL = store_config.ServerConfig.auth_token_ttl
AuthTokenTTLOpt = Annotated[int, typer.Option(
    "--auth-token-ttl", help="Seconds an idle auth token lives (etcd's flag; each use "
    "renews it).")]


def store_config_from_flags(name: str, data_dir: Path, listen_client: str, listen_peer: str,
                            initial_cluster: str | None, initial_cluster_state: str,
                            snapshot_count: int, snapshot_bytes: int,
                            client_tls: ServerTLSFlags | None = None,
                            auth_token_ttl: int = DEFAULT_TOKEN_TTL) -> Any:
    """The member's ServerConfig from the store flags (``coord serve`` and ``agent``); a
    bad flag is exit 2, before anything touches the data dir."""
    from coord.rpc.h2.tls import TLSConfigError, server_tls

    c = client_tls or ServerTLSFlags()
    try:
        cluster = (store_config.parse_initial_cluster(initial_cluster)
                   if initial_cluster else {})
        tls = server_tls("--", c.cert_file, c.key_file, c.trusted_ca_file,
                         c.client_cert_auth, c.min_version)
        name = name or socket.gethostname()
        peer_tls = server_tls("--peer-", c.peer_cert_file, c.peer_key_file,
                              c.peer_trusted_ca_file, c.peer_client_cert_auth, c.min_version,
                              c.peer_allowed_cn, member_name=name)
        return store_config.ServerConfig(
            name=name, data_dir=data_dir, listen_client=listen_client,
            listen_peer=listen_peer, initial_cluster=cluster,
            initial_cluster_state=initial_cluster_state, snapshot_count=snapshot_count,
            snapshot_bytes=snapshot_bytes, client_tls=tls, insecure_listen=c.insecure_listen,
            peer_tls=peer_tls,
            inline_sync=os.environ.get("RAFTCRON_INLINE_SYNC", "1") != "0",
            tls_watch_interval=tls_watch_interval(), auth_token_ttl=auth_token_ttl)
    except (store_config.ConfigError, TLSConfigError) as err:
        fail(str(err), 2)


def tls_watch_interval() -> float:
    """Seconds between looks at the certificate files: 2, or ``RAFTCRON_TLS_WATCH_INTERVAL``
    (0 turns the watch off; SIGHUP still reloads)."""
    raw = os.environ.get("RAFTCRON_TLS_WATCH_INTERVAL", "")
    try:
        return max(0.0, float(raw)) if raw else 2.0
    except ValueError:
        fail(f"RAFTCRON_TLS_WATCH_INTERVAL: expected seconds, got {raw!r}", 2)
        raise  # fail() exits
