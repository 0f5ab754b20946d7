"""Applying committed entries on a member: client requests (answering this member's
waiters), conf changes (the core's configuration, the membership table, the transport's
peers) and members' published attributes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any

import structlog
from google.protobuf.message import DecodeError

from coord.errors import (
    CoordError,
)
from coord.pb import internal_pb2
from coord.raft import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    RaftError,
)
from coord.server.member_state import (
    TAG_ATTRS,
    TAG_REQUEST,
    MemberState,
)

log = structlog.get_logger("coord.raftnode")


class Applying(MemberState):
    def _apply(self, entries: Sequence[Entry], now: float) -> None:
        assert self.rn is not None
        for e in entries:
            if e.index <= self._applied:
                continue
            if e.type == EntryType.CONF_CHANGE:
                self._apply_conf_change(e)
            elif e.data[:1] == TAG_REQUEST:
                self._unsnapped_bytes += len(e.data)
                self._apply_request(e, now)
            elif e.data[:1] == TAG_ATTRS:
                with contextlib.suppress(ValueError, KeyError):
                    self.membership.apply_attributes(e.data[1:])
            self._applied = e.index
        self._on_applied()
        for fut in self._wait.applied(self._applied):
            if not fut.done():
                fut.set_result(None)

    def _apply_request(self, e: Entry, now: float) -> None:
        """Apply one client request entry. The applier is total (a request that fails at
        apply is rolled back and answered ApplyFailed); undecodable bytes are logged and
        skipped, identically on every member. Only an ApplyInvariantError (a failed
        rollback) propagates, and stops the member."""
        try:
            req = internal_pb2.InternalRequest.FromString(e.data[1:])
        except DecodeError as err:
            log.error("apply.undecodable_entry", index=e.index, error=str(err))
            return
        fut = self._wait.request_applied(req.id)
        try:
            resp = self.applier.apply(req, now)
        except CoordError as err:
            if fut is not None and not fut.done():
                fut.set_exception(err)
        else:
            if fut is not None and not fut.done():
                fut.set_result(resp)

    def _apply_conf_change(self, e: Entry) -> None:
        assert self.rn is not None
        cc = ConfChange.decode(e.data)
        ctx: dict[str, Any] = json.loads(cc.context) if cc.context else {}
        try:
            self.rn.apply_conf_change(cc)
        except RaftError as err:
            log.warning("raftnode.conf_change_rejected", error=repr(err))
        self.membership.apply_conf_change(cc)
        if cc.type == ConfChangeType.REMOVE_NODE:
            self.transport.remove_peer(cc.node_id)
            if cc.node_id == self.member_id:
                self.removed = True
                log.warning("raftnode.removed_from_cluster")
        else:
            peer = self.membership.peer_of(cc.node_id)
            if peer:
                self.transport.set_peer(cc.node_id, peer)
        log.info("raftnode.conf_change", type=cc.type.name, node=f"{cc.node_id:x}", index=e.index)
        fut = self._conf_waiters.get(int(ctx.get("rid", 0)))
        if fut is not None and not fut.done():
            fut.set_result(None)
