"""The cluster's membership table: who the members are, their peer and client URLs.

Replicated state: every member changes it only while applying log entries (a conf change
entry, or a member publishing its name and client URLs, as etcd's ``publish`` does), and it
travels inside snapshots (see :func:`encode_snapshot_data`). So every member ends up with
the same table and can answer MemberList with every member's client URLs.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field

from coord.pb import rpc_pb2
from coord.raft import ConfChange, ConfChangeType

_SNAP_MAGIC = b"RCSNAP1\n"
_LEN = struct.Struct("<I")


@dataclass
class MemberInfo:
    id: int
    name: str = ""
    peer: str = ""  # host:port
    clients: list[str] = field(default_factory=list)  # http(s)://host:port
    learner: bool = False


@dataclass
class Membership:
    cluster_id: int = 0
    members: dict[int, MemberInfo] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)

    @classmethod
    def bootstrap(cls, cluster_id: int, peers: dict[str, str], ids: dict[str, int]) -> Membership:
        m = cls(cluster_id)
        for name, peer in peers.items():
            m.members[ids[name]] = MemberInfo(ids[name], name, peer)
        return m

    # ------------------------------------------------------------------ changes
    def apply_conf_change(self, cc: ConfChange) -> None:
        ctx: dict[str, object] = json.loads(cc.context) if cc.context else {}
        if cc.type == ConfChangeType.REMOVE_NODE:
            self.members.pop(cc.node_id, None)
            self.removed.add(cc.node_id)
            return
        learner = cc.type == ConfChangeType.ADD_LEARNER_NODE
        info = self.members.get(cc.node_id)
        if info is None:
            info = MemberInfo(cc.node_id)
            self.members[cc.node_id] = info
        info.learner = learner
        peer = ctx.get("peer")
        if isinstance(peer, str) and peer:
            info.peer = peer
        name = ctx.get("name")
        if isinstance(name, str) and name:
            info.name = name

    def apply_attributes(self, data: bytes) -> None:
        attrs = json.loads(data)
        info = self.members.get(int(attrs["id"]))
        if info is None:
            return
        info.name = str(attrs.get("name", info.name))
        info.clients = [str(c) for c in attrs.get("clients", [])]

    # ------------------------------------------------------------------ views
    def peer_of(self, member_id: int) -> str | None:
        info = self.members.get(member_id)
        return info.peer if info else None

    def name_of(self, member_id: int) -> str:
        info = self.members.get(member_id)
        return info.name if info and info.name else f"{member_id:x}"

    def by_peer(self, peer: str) -> MemberInfo | None:
        for info in self.members.values():
            if info.peer == peer:
                return info
        return None

    def to_pb(self, peer_scheme: str = "http") -> list[rpc_pb2.Member]:
        """The table as MemberList answers it; peer URLs with ``peer_scheme``."""
        return [rpc_pb2.Member(ID=i.id, name=i.name, peerURLs=[f"{peer_scheme}://{i.peer}"],
                               clientURLs=list(i.clients), isLearner=i.learner)
                for i in sorted(self.members.values(), key=lambda x: x.id)]

    # ------------------------------------------------------------------ encoding
    def to_json(self) -> dict[str, object]:
        return {"cluster_id": self.cluster_id,
                "members": [asdict(i) for i in self.members.values()],
                "removed": sorted(self.removed)}

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> Membership:
        members_raw = obj.get("members", [])
        removed_raw = obj.get("removed", [])
        assert isinstance(members_raw, list) and isinstance(removed_raw, list)
        cid = obj.get("cluster_id", 0)
        assert isinstance(cid, int)
        m = cls(cid)
        for raw in members_raw:
            info = MemberInfo(**raw)
            m.members[info.id] = info
        m.removed = {int(x) for x in removed_raw}
        return m


def encode_snapshot_data(membership: Membership, state: bytes) -> bytes:
    """The data of a Raft snapshot: the membership table, then the applier's snapshot."""
    meta = json.dumps(membership.to_json(), sort_keys=True).encode()
    return _SNAP_MAGIC + _LEN.pack(len(meta)) + meta + state


def decode_snapshot_data(data: bytes) -> tuple[Membership, bytes]:
    if not data.startswith(_SNAP_MAGIC):
        raise ValueError("not a raftcron snapshot")
    pos = len(_SNAP_MAGIC)
    (n,) = _LEN.unpack_from(data, pos)
    pos += _LEN.size
    meta = json.loads(data[pos:pos + n])
    return Membership.from_json(meta), data[pos + n:]
