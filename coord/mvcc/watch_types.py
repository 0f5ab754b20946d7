"""What the watch hub takes and produces: plain named types, no protobuf.

The API layer maps them to etcd's ``WatchCreateRequest`` / ``WatchResponse``; each output
item becomes one response (an :class:`EventBatch` may become several fragments).
"""

from __future__ import annotations

from typing import NamedTuple

from coord.mvcc.record import KeyRec, Rec

DUPLICATE_ID_REASON = "mvcc: duplicate watch ID provided on the WatchStream"
EMPTY_RANGE_REASON = "mvcc: watcher range is empty"


class WatchSpec(NamedTuple):
    """A watch to create (etcd's WatchCreateRequest). ``range_end`` follows the wire rules:
    empty = the single key, ``b"\\0"`` = every key ``>= key``; an empty ``key`` means
    ``b"\\0"``. ``watch_id`` 0 asks for an automatic id."""

    key: bytes
    range_end: bytes = b""
    start_revision: int = 0
    watch_id: int = 0
    prev_kv: bool = False
    fragment: bool = False
    progress_notify: bool = False
    no_put: bool = False
    no_delete: bool = False


class Created(NamedTuple):
    """The reply to a create. A refused create has ``watch_id == -1`` and a reason (it is
    also a cancel)."""

    watch_id: int
    revision: int
    cancel_reason: str = ""


class Canceled(NamedTuple):
    """The reply to a cancel of a known watch."""

    watch_id: int
    revision: int


class CompactCanceled(NamedTuple):
    """The watch was removed because the history it needs is compacted (no revision: etcd
    sends an empty header)."""

    watch_id: int
    compact_revision: int


class Progress(NamedTuple):
    """A progress bookmark: nothing at or below ``revision`` is still to come. ``watch_id``
    is -1 for a requested one, the watch's id for a periodic one."""

    watch_id: int
    revision: int


class EventBatch(NamedTuple):
    """Events of one watch, in revision then op order. ``revision`` is the header revision
    (the events' own revision when live, the current one when catching up). ``prevs`` holds
    each event's previous live record (None when absent or compacted) when the watch asked
    for ``prev_kv``, else is None. A tombstone record (``value is None``) is a delete."""

    watch_id: int
    revision: int
    events: list[KeyRec]
    prevs: list[Rec | None] | None
    fragment: bool
    """The watch accepts a large batch split into fragments."""


WatchOutput = Created | Canceled | CompactCanceled | Progress | EventBatch
"""One item of a stream's output."""
