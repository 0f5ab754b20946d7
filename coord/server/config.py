"""ServerConfig: everything a coord member needs to start, validated up front."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from coord import netaddr
from coord.auth.store import DEFAULT_TOKEN_TTL
from coord.netaddr import is_loopback
from coord.rpc.h2.tls import ServerTLS

DEFAULT_CLIENT = "127.0.0.1:2379"
DEFAULT_PEER = "127.0.0.1:2380"


class ConfigError(ValueError):
    """A flag or combination of flags that cannot work; the message says which and why."""


def parse_hostport(value: str, flag: str) -> tuple[str, int]:
    """:func:`coord.netaddr.parse_hostport`, a host and a port (not 0) required, errors
    naming ``flag``."""
    try:
        host, port = netaddr.parse_hostport(value)
    except ValueError:
        host, port = "", 0
    if not host or not port:
        raise ConfigError(f"{flag}: expected HOST:PORT, got {value!r}")
    return host, port


def parse_initial_cluster(value: str) -> dict[str, str]:
    """``n1=127.0.0.1:2380,n2=...`` → ordered ``{name: host:port}``."""
    members: dict[str, str] = {}
    for raw in value.split(","):
        part = raw.strip()
        if not part:
            continue
        name, sep, addr = part.partition("=")
        if not sep or not name:
            raise ConfigError(f"--initial-cluster: expected NAME=HOST:PORT, got {part!r}")
        if name in members:
            raise ConfigError(f"--initial-cluster: member {name!r} listed twice")
        host, port = parse_hostport(addr, "--initial-cluster")
        members[name] = netaddr.join_hostport(host, port)
    if not members:
        raise ConfigError("--initial-cluster: no members given")
    return members


def member_id_for(name: str, peer: str, cluster_token: str) -> int:
    """A stable, non-zero 64-bit member id derived from the member's peer address.

    Like etcd, the id depends on the peer URL (and the cluster token), not on the name:
    ``MemberAdd`` only knows the peer URL, and the new member must derive the same id.
    """
    del name
    digest = hashlib.sha256(f"{cluster_token}/{peer}".encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


@dataclass
class ServerConfig:
    name: str = "default"
    data_dir: Path = field(default_factory=lambda: Path("raftcron-data"))
    listen_client: str = DEFAULT_CLIENT
    listen_peer: str = DEFAULT_PEER
    initial_cluster: dict[str, str] = field(default_factory=dict)
    cluster_token: str = "raftcron"
    snapshot_count: int = 10_000
    """Applied entries between snapshots (the WAL is truncated behind each one)."""
    snapshot_bytes: int = 8 * 2**20
    """A snapshot is also taken once the entries applied since the last one hold this many
    bytes (or the last snapshot's size, if larger): large txns would otherwise keep many
    MB of values in the in-memory log a second time."""
    tick_ms: int = 100
    election_ticks: int = 10
    inline_sync: bool = True
    """Whether a lone entry's WAL write and fsync may run on the event loop instead of the
    WAL thread (``coord.storage.wal_writer``)."""
    initial_cluster_state: str = "new"
    """``new``: bootstrap the cluster from ``initial_cluster``; ``existing``: join a running
    cluster that already added this member (``etcdctl member add``)."""
    client_tls: ServerTLS | None = None
    """TLS on the client port (``--cert-file`` ...; :mod:`coord.rpc.h2.tls`); None: h2c."""
    peer_tls: ServerTLS | None = None
    """TLS on the peer port (``--peer-cert-file`` ...); None: h2c."""
    tls_watch_interval: float = 2.0
    """Seconds between two looks at the certificate files for a reload
    (:mod:`coord.server.tls_reload`); 0: no watch (SIGHUP still reloads)."""
    auth_token_ttl: int = DEFAULT_TOKEN_TTL
    """``--auth-token-ttl``: seconds an idle simple auth token lives (each use renews it)."""
    insecure_listen: bool = False
    """``--insecure-listen``: serve plaintext on an address other hosts can reach. Without
    it such a config is refused (:meth:`plaintext_exposed`); with it the member logs a
    warning at every start."""

    def __post_init__(self) -> None:
        parse_hostport(self.listen_client, "--listen-client")
        parse_hostport(self.listen_peer, "--listen-peer")
        if not self.initial_cluster:
            self.initial_cluster = {self.name: self.listen_peer}
        if self.name not in self.initial_cluster:
            raise ConfigError(
                f"--initial-cluster does not name this member ({self.name!r}); "
                f"it lists {', '.join(self.initial_cluster)}"
            )
        if self.initial_cluster_state not in ("new", "existing"):
            raise ConfigError("--initial-cluster-state: expected 'new' or 'existing'")
        if self.snapshot_count < 1:
            raise ConfigError("snapshot count must be positive")
        if self.snapshot_bytes < 1:
            raise ConfigError("snapshot bytes must be positive")
        if self.auth_token_ttl < 1:
            raise ConfigError(f"--auth-token-ttl: expected at least 1 second, got "
                              f"{self.auth_token_ttl}")
        exposed = self.plaintext_exposed()
        if exposed and not self.insecure_listen:
            raise ConfigError(
                f"refusing to serve plaintext on {' and '.join(exposed)}, reachable from "
                "other hosts: anyone there could write jobs (commands every worker runs). "
                "Give the port TLS (--cert-file/--key-file, --peer-cert-file/--peer-key-file; "
                "docs/security.md), listen on 127.0.0.1, or pass --insecure-listen")

    def plaintext_exposed(self) -> list[str]:
        """The listeners (``--listen-client H:P``...) that are plaintext on an address
        other hosts can reach."""
        out = []
        for flag, address, tls in (("--listen-client", self.listen_client, self.client_tls),
                                   ("--listen-peer", self.listen_peer, self.peer_tls)):
            if tls is None and not is_loopback(parse_hostport(address, flag)[0]):
                out.append(f"{flag} {address}")
        return out

    @property
    def client_url(self) -> str:
        """This member's client URL as ``member list`` shows it: ``https://`` with TLS."""
        return f"{'https' if self.client_tls is not None else 'http'}://{self.listen_client}"

    @property
    def peer_scheme(self) -> str:
        """The scheme of the members' peer URLs (every member is assumed to share this
        member's peer TLS setting: they could not talk otherwise)."""
        return "https" if self.peer_tls is not None else "http"

    @property
    def member_ids(self) -> dict[str, int]:
        return {n: member_id_for(n, p, self.cluster_token)
                for n, p in self.initial_cluster.items()}

    @property
    def member_id(self) -> int:
        return self.member_ids[self.name]

    @property
    def cluster_id(self) -> int:
        ids = sorted(self.member_ids.values())
        digest = hashlib.sha256(
            (self.cluster_token + "".join(f"{i:016x}" for i in ids)).encode()).digest()
        return int.from_bytes(digest[:8], "big") or 1
