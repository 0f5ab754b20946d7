"""Compact one-line renderings of entries, messages and Readys (for scenario output and
debugging). The formats are part of the scenario files' expected output: change them
only together with a rewrite of tests/raft/scenarios.
"""

from __future__ import annotations

from coord.raft.types import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    Snapshot,
)


def describe_data(data: bytes) -> str:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return data.hex()
    if text.isprintable():
        return '"' + text + '"'
    return data.hex()


def describe_entry(e: Entry) -> str:
    """``term/index`` then the payload: ``1/12 "x"``, ``2/13 conf(ADD_NODE 4)``."""
    if e.type == EntryType.CONF_CHANGE:
        try:
            cc = ConfChange.decode(e.data)
            body = f"conf({cc.type.name} {cc.node_id})"
        except ValueError:
            body = "conf(?" + e.data.hex() + ")"
    else:
        body = describe_data(e.data)
    return f"{e.term}/{e.index} {body}"


def describe_conf_state(cs: ConfState) -> str:
    s = "voters=(" + ",".join(map(str, cs.voters)) + ")"
    if cs.learners:
        s += " learners=(" + ",".join(map(str, cs.learners)) + ")"
    return s


def describe_snapshot(s: Snapshot) -> str:
    md = s.metadata
    return f"snap({md.term}/{md.index} {describe_conf_state(md.conf_state)})"


def describe_hard_state(hs: HardState) -> str:
    return f"term={hs.term} vote={hs.vote} commit={hs.commit}"


_LOG_TYPES = (MessageType.APP, MessageType.VOTE, MessageType.PRE_VOTE)


def describe_message(m: Message) -> str:
    """``1->2 APP term=1 log=1/11 commit=11 entries=[1/12 "x"]`` — default fields omitted."""
    parts = [f"{m.frm}->{m.to} {m.type.name}"]
    if m.term:
        parts.append(f"term={m.term}")
    if m.type in _LOG_TYPES:
        parts.append(f"log={m.log_term}/{m.index}")
    elif m.index:
        parts.append(f"index={m.index}")
    if m.commit:
        parts.append(f"commit={m.commit}")
    if m.entries:
        parts.append("entries=[" + ", ".join(describe_entry(e) for e in m.entries) + "]")
    if m.snapshot is not None:
        parts.append(describe_snapshot(m.snapshot))
    if m.reject:
        parts.append("rejected")
        if m.type == MessageType.APP_RESP:
            parts.append(f"hint={m.log_term}/{m.reject_hint}")
    if m.context:
        parts.append("ctx=" + describe_data(m.context))
    return " ".join(parts)


def describe_ready(rd: Ready, indent: str = "  ") -> list[str]:
    """The non-empty fields of a Ready, one item per line."""
    out: list[str] = []
    if rd.soft_state is not None:
        out.append(f"{indent}role: {rd.soft_state.role.name} lead={rd.soft_state.leader}")
    if rd.hard_state is not None:
        out.append(f"{indent}hard state: {describe_hard_state(rd.hard_state)}")
    if rd.snapshot is not None:
        out.append(f"{indent}snapshot: {describe_snapshot(rd.snapshot)}")
    if rd.entries:
        out.append(f"{indent}entries: " + ", ".join(describe_entry(e) for e in rd.entries))
    if rd.committed_entries:
        out.append(
            f"{indent}committed: " + ", ".join(describe_entry(e) for e in rd.committed_entries)
        )
    for m in rd.messages:
        out.append(f"{indent}send: {describe_message(m)}")
    for m in rd.messages_after_persist:
        out.append(f"{indent}send after persist: {describe_message(m)}")
    for rs in rd.read_states:
        out.append(f"{indent}read state: index={rs.index} ctx={describe_data(rs.request_ctx)}")
    return out
