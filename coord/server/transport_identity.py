"""Peer identity: which member a peer-port connection's certificate proves it is.

With peer TLS and a CA to verify peers against (``--peer-trusted-ca-file``), a member
accepts Raft messages (``Send``, ``SendSnapshot``) and the peer-side calls (``LeaseRenew``,
``LeaseTimeToLive``, ``Join``) only from a connection whose verified certificate matches
the member the call speaks for. "Matches" (docs/security.md, "Peer identity"):

* with ``--peer-cert-allowed-cn``: the certificate's common name is that one (the
  connection is refused otherwise); as in etcd, every member's certificate then carries
  that name, so any of them may speak for any member: the CN is the cluster's identity;
* else the certificate's common name is the member's name (``--name``; the name in
  ``--initial-cluster``, ``raftcron certs member NAME`` makes such a certificate). Names
  are unique in a cluster; hosts are not (several members may share one), so a host alone
  could not tell two members apart;
* a member added by ``member add`` has no name until it publishes one: until then, one of
  the certificate's subject alternative names is the host of the member's peer URL (what
  its peers check when they dial it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from coord import netaddr
from coord.rpc.h2.tls import AuthContext
from coord.server.membership import MemberInfo, Membership
from coord.server.transport_intake import PeerRejected


def _host(value: str) -> str:
    """A host name or address in a form two spellings of one address compare equal in."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value.lower().rstrip(".")


class PeerIdentity:
    """Checks a connection's :data:`AuthContext` against the member it claims to be."""

    def __init__(self, membership: Callable[[], Membership], allowed_cn: str = "") -> None:
        self.membership = membership
        self.allowed_cn = allowed_cn

    def matches(self, info: MemberInfo, auth: AuthContext) -> bool:
        """Whether the certificate of ``auth`` is member ``info``'s (module docstring)."""
        names = auth.get("x509_common_name") or [b""]
        cn = names[0].decode(errors="replace")
        if self.allowed_cn:
            return cn == self.allowed_cn
        if info.name:
            return cn == info.name
        try:
            host, _ = netaddr.parse_hostport(info.peer)
        except ValueError:
            return False
        sans = {_host(s.decode(errors="replace"))
                for s in auth.get("x509_subject_alternative_name", [])}
        return bool(host) and _host(host) in sans

    def verify(self, member_id: int, auth: AuthContext) -> None:
        """Raises :class:`PeerRejected` unless ``auth`` proves it is member ``member_id``."""
        if not auth:
            raise PeerRejected("no certificate", "peer connection without a verified "
                               f"certificate speaking for member {member_id:x}")
        info = self.membership().members.get(member_id)
        if info is None or not self.matches(info, auth):
            raise PeerRejected("identity mismatch", self._mismatch(member_id, info, auth))

    def verify_any(self, auth: AuthContext) -> None:
        """Raises :class:`PeerRejected` unless ``auth`` is some current member's."""
        if not auth:
            raise PeerRejected("no certificate", "peer call without a verified certificate")
        members = self.membership().members.values()
        if not any(self.matches(info, auth) for info in members):
            cn = (auth.get("x509_common_name") or [b""])[0].decode(errors="replace")
            raise PeerRejected("identity mismatch",
                               f"certificate CN={cn!r} is not a member's")

    def _mismatch(self, member_id: int, info: MemberInfo | None, auth: AuthContext) -> str:
        cn = (auth.get("x509_common_name") or [b""])[0].decode(errors="replace")
        if info is None:
            return f"certificate CN={cn!r} speaking for {member_id:x}, not a member"
        if self.allowed_cn:
            return f"certificate CN={cn!r} is not --peer-cert-allowed-cn"
        if info.name:
            return (f"certificate CN={cn!r} speaking for member {info.name!r} "
                    f"({member_id:x}): its certificate must have CN={info.name!r}")
        return (f"certificate CN={cn!r} speaking for member {member_id:x} (no name yet): "
                f"its certificate must name the host of {info.peer}")
