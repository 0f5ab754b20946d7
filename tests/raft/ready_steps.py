"""Extra scenario commands for the etcd-io/raft ports (tests/raft/scenarios_etcd/*.txt).

They add what the base commands (``interaction.py``) cannot express:

* the Ready contract taken one step at a time, so a scenario can let messages in while a
  Ready is outstanding (the window in which etcd-io/raft's asynchronous storage writes
  race): ``ready`` (take it; its ``messages`` may leave at once), ``persist`` (write it
  to storage; only now do its ``messages_after_persist`` leave), ``advance`` (apply it
  and hand it back);
* storage-side faults and snapshots: ``create-snapshot`` (without compacting),
  ``send-snapshot`` (a snapshot sent outside the core's flow control), ``durable`` (what
  storage holds), ``lose-entries`` (a disk that lost writes it had acknowledged) and
  ``lose-commit`` (a commit index that never reached the disk, which is allowed: only a
  Ready with entries, a term or a vote must be synced).

Everything goes through ``RawNode``'s public methods and the driver's ``MemoryStorage``.
"""

from __future__ import annotations

from collections.abc import Callable

from coord.raft import (
    ConfChange,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    Ready,
    describe_entry,
    describe_message,
    describe_ready,
)
from coord.raft.describe import describe_conf_state, describe_hard_state
from tests.raft.harness import Env, decode_sm, encode_sm
from tests.raft.interaction import COMMANDS


class SteppedEnv(Env):
    """An ``Env`` that can also hold a node's Ready between ``ready``, ``persist`` and
    ``advance``. While one is held the node takes no other Ready (``has_ready`` is
    False), so ``stabilize`` and ``process-ready`` skip it, but messages still reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[int, Ready] = {}
        self.persisted: set[int] = set()


def _env(env: Env) -> SteppedEnv:
    if not isinstance(env, SteppedEnv):
        raise TypeError("these commands need a SteppedEnv")
    return env


def cmd_ready(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    """ready <id>: take the node's Ready and hold it; its ``messages`` are sent now."""
    se, nid = _env(env), int(pos[0])
    rn = se.nodes[nid].rn
    if nid in se.held:
        return [f"error: {nid} already holds a Ready"]
    if not rn.has_ready():
        return ["(no ready)"]
    rd = rn.ready()
    se.held[nid] = rd
    se.queue.extend(rd.messages)
    return [f"> {nid} ready (held) must_sync={rd.must_sync}", *describe_ready(rd)]


def cmd_persist(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    """persist <id>: write the held Ready's snapshot, entries and hard state to storage,
    then send its ``messages_after_persist``."""
    se, nid = _env(env), int(pos[0])
    node, rd = se.nodes[nid], se.held[nid]
    if rd.snapshot is not None:
        node.storage.apply_snapshot(rd.snapshot)
    node.storage.append(rd.entries)
    if rd.hard_state is not None:
        node.storage.set_hard_state(rd.hard_state)
    se.read_states.extend((nid, rs) for rs in rd.read_states)
    se.queue.extend(rd.messages_after_persist)
    se.persisted.add(nid)
    return [f"  sent: {describe_message(m)}" for m in rd.messages_after_persist]


def cmd_advance(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    """advance <id>: apply the held (and persisted) Ready, then hand it back."""
    se, nid = _env(env), int(pos[0])
    if nid not in se.persisted:
        return [f"error: persist {nid} first"]
    node, rd = se.nodes[nid], se.held.pop(nid)
    se.persisted.discard(nid)
    out = []
    if rd.snapshot is not None:
        node.applied = decode_sm(rd.snapshot.data)
        node.conf_state = rd.snapshot.metadata.conf_state
    for e in rd.committed_entries:
        if e.type == EntryType.CONF_CHANGE:
            node.conf_state = node.rn.apply_conf_change(ConfChange.decode(e.data))
            out.append(f"  applied: {describe_conf_state(node.conf_state)}")
        elif e.data:
            node.applied.append((e.index, e.data))
    node.rn.advance(rd)
    return out


def cmd_crash(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    """crash <id>: as the base command; a held Ready that was not persisted is lost."""
    se, nid = _env(env), int(pos[0])
    out = []
    if nid in se.held:
        out.append("  lost: the held Ready" + ("" if nid in se.persisted else " (not persisted)"))
        del se.held[nid]
        se.persisted.discard(nid)
    se.crash(nid)
    return out


def cmd_create_snapshot(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    """create-snapshot <id> <index>: snapshot the state machine at <index>, keep the log."""
    node, index = env.nodes[int(pos[0])], int(pos[1])
    data = encode_sm([(i, d) for i, d in node.applied if i <= index])
    snap = node.storage.create_snapshot(index, node.conf_state, data)
    return [f"snapshot {snap.metadata.term}/{snap.metadata.index}"]


def cmd_send_snapshot(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    """send-snapshot <from> <to>: queue a SNAP carrying <from>'s storage snapshot at its
    current term (as a transport would that sends snapshots on its own)."""
    frm, to = int(pos[0]), int(pos[1])
    node = env.nodes[frm]
    term = node.rn.status().hard_state.term
    env.queue.append(Message(MessageType.SNAP, to, frm, term, snapshot=node.storage.snapshot()))
    return ["ok"]


def cmd_durable(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    """durable <id>: what the node's storage holds (the only thing a crash keeps)."""
    nid = int(pos[0])
    st = env.nodes[nid].storage
    first, last = st.first_index(), st.last_index()
    ents = st.entries(first, last + 1) if last >= first else []
    return [
        f"{nid}: {describe_hard_state(st.hard_state())} snapshot={st.term(first - 1)}/{first - 1}",
        "  " + (", ".join(describe_entry(e) for e in ents) if ents else "(no entries)"),
    ]


def _rebuild(st: MemoryStorage, keep_last: int, commit: int) -> MemoryStorage:
    new = MemoryStorage()
    snap = st.snapshot()
    if not snap.is_empty():
        new.apply_snapshot(snap)
    first = st.first_index()
    if keep_last >= first:
        new.append(st.entries(first, keep_last + 1))
    hs = st.hard_state()
    new.set_hard_state(HardState(hs.term, hs.vote, commit))
    return new


def cmd_lose_entries(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    """lose-entries <id> <last>: the crashed node's disk lost every entry after <last>,
    though it had acknowledged them (a broken fsync); the lost commit goes with them."""
    nid, last = int(pos[0]), int(pos[1])
    node = env.nodes[nid]
    if not node.crashed:
        return ["error: crash the node first"]
    hs = node.storage.hard_state()
    node.storage = _rebuild(node.storage, last, min(hs.commit, last))
    return cmd_durable(env, [pos[0]], {})


def cmd_lose_commit(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    """lose-commit <id> <commit>: the crashed node's stored commit index is back at
    <commit> (a commit-only hard state need not be synced); its entries are intact."""
    nid, commit = int(pos[0]), int(pos[1])
    node = env.nodes[nid]
    if not node.crashed:
        return ["error: crash the node first"]
    node.storage = _rebuild(node.storage, node.storage.last_index(), commit)
    return cmd_durable(env, [pos[0]], {})


def cmd_propose_entries(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    """propose-many <id> a b c: one proposal message carrying several entries."""
    env.nodes[int(pos[0])].rn.propose_many([p.encode() for p in pos[1:]])
    return ["ok"]


EXTRA_COMMANDS: dict[str, Callable[[Env, list[str], dict[str, str]], list[str]]] = {
    "ready": cmd_ready,
    "persist": cmd_persist,
    "advance": cmd_advance,
    "crash": cmd_crash,
    "create-snapshot": cmd_create_snapshot,
    "send-snapshot": cmd_send_snapshot,
    "durable": cmd_durable,
    "lose-entries": cmd_lose_entries,
    "lose-commit": cmd_lose_commit,
    "propose-many": cmd_propose_entries,
}


def run_command(env: Env, line: str) -> list[str]:
    """Like ``interaction.run_command``, with the extra commands above."""
    name, *rest = line.split()
    pos = [a for a in rest if "=" not in a]
    kw = dict(a.split("=", 1) for a in rest if "=" in a)
    fn = EXTRA_COMMANDS.get(name) or COMMANDS.get(name)
    if fn is None:
        raise ValueError(f"unknown command {name!r}")
    return fn(env, pos, kw) or ["ok"]


__all__ = ["EXTRA_COMMANDS", "SteppedEnv", "run_command"]
