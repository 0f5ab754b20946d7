"""Commands of the scenario files (tests/raft/scenarios/*.txt), run against an ``Env``.

Each command returns its output lines. Arguments: positional ints/words and ``key=value``
pairs; ``(1,2,3)`` is a tuple of ints.
"""

from __future__ import annotations

from collections.abc import Callable

from coord.raft import (
    ConfChange,
    ConfChangeType,
    Entry,
    HardState,
    MessageType,
    RaftError,
    StateRole,
    describe_entry,
    describe_message,
)
from coord.raft.describe import describe_conf_state
from tests.raft.harness import Env, encode_sm

Args = tuple[list[str], dict[str, str]]


def ints(s: str) -> tuple[int, ...]:
    s = s.strip("()")
    return tuple(int(x) for x in s.split(",") if x)


def boolean(s: str) -> bool:
    return s in ("true", "1", "yes")


def _ids(env: Env, pos: list[str]) -> list[int]:
    return [int(p) for p in pos] if pos else sorted(env.nodes)


def cmd_add_nodes(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    cfg: dict[str, object] = {}
    names = {"prevote": "pre_vote", "checkquorum": "check_quorum", "election": "election_tick",
             "heartbeat": "heartbeat_tick", "max-inflight": "max_inflight_msgs",
             "max-size": "max_size_per_msg"}
    for k, v in kw.items():
        if k in ("prevote", "checkquorum"):
            cfg[names[k]] = boolean(v)
        elif k in names:
            cfg[names[k]] = int(v)
        elif k == "bugs":
            cfg["bugs"] = frozenset(v.strip("()").split(","))
    ids = env.add_nodes(
        int(pos[0]), voters=ints(kw.get("voters", "()")), learners=ints(kw.get("learners", "()")),
        index=int(kw.get("index", "1")), **cfg,
    )
    return [f"added {','.join(map(str, ids))}"]


def cmd_process_ready(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    out = []
    for nid in _ids(env, pos):
        out.append(f"> {nid} ready")
        out.extend(env.process_ready(nid) or ["  (nothing)"])
    return out


def cmd_deliver_msgs(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    """deliver-msgs [to...] [from=X] [type=APP] [count=N]: step matching queued messages."""
    frm = int(kw["from"]) if "from" in kw else None
    typ = MessageType[kw["type"]] if "type" in kw else None
    count = int(kw.get("count", "1000000"))
    out = []
    for nid in _ids(env, pos):
        out.append(f"> {nid} receives")
        chosen, rest = [], []
        for m in env.queue:
            ok = m.to == nid and frm in (None, m.frm) and typ in (None, m.type)
            (chosen if ok and len(chosen) < count else rest).append(m)
        env.queue = chosen
        out.extend(env.deliver(nid) or ["  (nothing)"])
        env.queue = env.queue + rest
    return out


def cmd_drop_msgs(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    frm, to = kw.get("from"), kw.get("to")
    keep, out = [], []
    for m in env.queue:
        if (frm is None or m.frm == int(frm)) and (to is None or m.to == int(to)):
            out.append(f"  dropped: {describe_message(m)}")
        else:
            keep.append(m)
    env.queue = keep
    return out


def cmd_stabilize(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    out = env.stabilize([int(p) for p in pos] or None)
    if boolean(kw.get("quiet", "false")):
        return [line for line in out if "error:" in line] or ["ok"]
    return out


def cmd_tick(env: Env, pos: list[str], kw: dict[str, str], unit: str = "") -> list[str]:
    for nid in _ids(env, pos):
        cfg = env.nodes[nid].config
        n = {"election": cfg.election_tick, "heartbeat": cfg.heartbeat_tick}.get(unit, 1)
        env.tick(nid, n * int(kw.get("n", "1")))
    return []


def cmd_campaign(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    env.nodes[int(pos[0])].rn.campaign()
    return []


def _call(fn: Callable[[], None]) -> list[str]:
    try:
        fn()
    except RaftError as e:
        return [f"error: {type(e).__name__}: {e}"]
    return []


def cmd_propose(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    rn = env.nodes[int(pos[0])].rn
    return _call(lambda: rn.propose(pos[1].encode()))


def cmd_propose_conf_change(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    rn = env.nodes[int(pos[0])].rn
    kinds = {"add": ConfChangeType.ADD_NODE, "remove": ConfChangeType.REMOVE_NODE,
             "learner": ConfChangeType.ADD_LEARNER_NODE}
    (k, v), = kw.items()
    return _call(lambda: rn.propose_conf_change(ConfChange(kinds[k], int(v))))


def cmd_read_index(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    rn = env.nodes[int(pos[0])].rn
    return _call(lambda: rn.read_index(pos[1].encode()))


def cmd_transfer(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    rn = env.nodes[int(kw["from"])].rn
    return _call(lambda: rn.transfer_leader(int(kw["to"])))


def cmd_raft_state(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    out = []
    for nid in _ids(env, pos):
        node = env.nodes[nid]
        if node.crashed:
            out.append(f"{nid}: crashed")
            continue
        r = node.rn._raft
        out.append(
            f"{nid}: {r.state.name} term={r.term} lead={r.lead} vote={r.vote} "
            f"last={r.log.last_index()} commit={r.log.committed} applied={r.log.applied} "
            f"{describe_conf_state(r.trk.conf_state())}"
        )
    return out


def cmd_raft_log(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    out = []
    for nid in _ids(env, pos):
        log = env.nodes[nid].rn._raft.log
        first = log.first_index()
        out.append(f"{nid}: snapshot={log.term(first - 1)}/{first - 1} commit={log.committed}")
        ents = log.all_entries()
        out.append("  " + (", ".join(describe_entry(e) for e in ents) if ents else "(empty)"))
    return out


def cmd_status(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    st = env.nodes[int(pos[0])].rn.status()
    out = []
    for pid, pv in st.progress.items():
        flags = " learner" if pv.is_learner else ""
        flags += " paused" if pv.paused else ""
        flags += f" pending_snap={pv.pending_snapshot}" if pv.pending_snapshot else ""
        out.append(f"{pid}: {pv.state.name} match={pv.match} next={pv.next}{flags}")
    return out or [f"{st.id} is not leader"]


def cmd_compact(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    """compact <id> <index>: snapshot the state machine at <index> and compact the log."""
    node = env.nodes[int(pos[0])]
    index = int(pos[1])
    data = encode_sm([(i, d) for i, d in node.applied if i <= index])
    node.storage.create_snapshot(index, node.conf_state, data)
    node.storage.compact(index)
    return cmd_raft_log(env, [pos[0]], {})


def cmd_set_log(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    """set-log <id> terms=(...) term=T: entries 2.. with these terms (index 1 is the
    snapshot); restarts the node over that storage."""
    nid = int(pos[0])
    st = env.nodes[nid].storage
    terms = ints(kw["terms"])
    st.append([Entry(t, 2 + i) for i, t in enumerate(terms)])
    st.set_hard_state(HardState(term=int(kw["term"]), commit=st.first_index() - 1))
    env.restart(nid)
    return cmd_raft_log(env, [pos[0]], {})


def cmd_partition(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    env.partition(*(set(ints(p)) for p in pos))
    return []


def cmd_isolate(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    env.isolate(int(pos[0]))
    return []


def cmd_heal(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    env.heal()
    return []


def cmd_crash(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    env.crash(int(pos[0]))
    return []


def cmd_restart(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    env.restart(int(pos[0]))
    return cmd_raft_state(env, pos, {})


def cmd_set_election_timeout(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    """Pin the node's current randomized election timeout (until its next role change)."""
    env.nodes[int(pos[0])].rn._raft.randomized_election_timeout = int(pos[1])
    return []


def cmd_report_unreachable(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    env.nodes[int(pos[0])].rn.report_unreachable(int(pos[1]))
    return []


def cmd_applied(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    out = []
    for nid in _ids(env, pos):
        vals = " ".join(d.decode() for _, d in env.nodes[nid].applied)
        out.append(f"{nid}: {vals or '(nothing)'}")
    return out


def cmd_leader(env: Env, pos: list[str], kw: dict[str, str]) -> list[str]:
    leaders = [n for n, nd in env.nodes.items()
               if not nd.crashed and nd.rn._raft.state == StateRole.LEADER]
    return [f"leaders: {','.join(map(str, leaders)) or 'none'}"]


COMMANDS: dict[str, Callable[[Env, list[str], dict[str, str]], list[str]]] = {
    "add-nodes": cmd_add_nodes,
    "process-ready": cmd_process_ready,
    "deliver-msgs": cmd_deliver_msgs,
    "drop-msgs": cmd_drop_msgs,
    "stabilize": cmd_stabilize,
    "tick": cmd_tick,
    "tick-election": lambda e, p, k: cmd_tick(e, p, k, "election"),
    "tick-heartbeat": lambda e, p, k: cmd_tick(e, p, k, "heartbeat"),
    "campaign": cmd_campaign,
    "propose": cmd_propose,
    "propose-conf-change": cmd_propose_conf_change,
    "read-index": cmd_read_index,
    "transfer-leadership": cmd_transfer,
    "raft-state": cmd_raft_state,
    "raft-log": cmd_raft_log,
    "status": cmd_status,
    "compact": cmd_compact,
    "set-log": cmd_set_log,
    "partition": cmd_partition,
    "isolate": cmd_isolate,
    "heal": cmd_heal,
    "crash": cmd_crash,
    "restart": cmd_restart,
    "report-unreachable": cmd_report_unreachable,
    "set-election-timeout": cmd_set_election_timeout,
    "applied": cmd_applied,
    "leaders": cmd_leader,
}


def run_command(env: Env, line: str) -> list[str]:
    name, *rest = line.split()
    pos = [a for a in rest if "=" not in a]
    kw = dict(a.split("=", 1) for a in rest if "=" in a)
    if name not in COMMANDS:
        raise ValueError(f"unknown command {name!r}")
    return COMMANDS[name](env, pos, kw) or ["ok"]
