"""Client histories for linearizability checking.

A history is a list of :class:`Op`: one client operation each, with the time it was
invoked, the time it returned (``None`` when no answer ever came) and what it returned.
Times are plain floats in any unit (virtual milliseconds in the simulator, wall-clock
seconds in real-process tests); only their order matters. Intervals are *closed*: an op
that returned at ``t`` and another that was invoked at ``t`` are concurrent.

Operations are single-key operations on a key-value store whose responses carry the
store revision, as etcd's ``header.revision`` does:

* ``PUT key value`` — always succeeds when it takes effect; response: the revision
  it created.
* ``GET key`` — response: the value (``None`` = key absent) and the store revision the
  read was served at.
* ``CAS key expected value`` — compare-and-set: if the current value equals
  ``expected`` (``None`` = "the key must not exist", etcd's ``create_revision == 0``)
  set it to ``value``. Response: whether the compare held and the store revision
  (the new one on success, the current one on failure).

Outcome (:class:`Status`):

* ``OK`` — a response arrived; the op took effect exactly once, with that result.
* ``FAIL`` — the op definitely did **not** take effect (e.g. it was refused before
  being proposed). Checkers ignore it.
* ``UNKNOWN`` — indeterminate (timeout, connection lost, node crashed): it may or may
  not have taken effect, at any point after its call. ``ret`` is then ``None``.

Assumptions the checkers rely on (etcd's robustness tests make the same ones):
the store starts empty at ``initial_revision``, and every written value is unique, so a
value read identifies the write that produced it. Use :class:`Recorder` to build a
history from a running test; it enforces one op in flight per client.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


class Kind(enum.StrEnum):
    PUT = "put"
    GET = "get"
    CAS = "cas"


class Status(enum.StrEnum):
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation: input, call/return times and output.

    ``value`` is the value written by PUT / CAS; ``expected`` the CAS compare value.
    Output fields are meaningful only when ``status`` is ``OK``: ``result`` (GET: the
    value read), ``succeeded`` (CAS: the compare held), ``revision`` (store revision
    of the response, when the system reports one; ``None`` otherwise).
    """

    id: int
    client: int
    kind: Kind
    key: str
    call: float
    ret: float | None
    status: Status
    value: str | None = None
    expected: str | None = None
    result: str | None = None
    succeeded: bool | None = None
    revision: int | None = None

    @property
    def is_write(self) -> bool:
        """True when the op, if it took effect, changed the store."""
        if self.kind is Kind.PUT:
            return True
        if self.kind is Kind.CAS:
            return self.status is not Status.OK or bool(self.succeeded)
        return False

    def describe(self) -> str:
        if self.kind is Kind.PUT:
            inp = f"put {self.key}={self.value}"
        elif self.kind is Kind.GET:
            inp = f"get {self.key}"
        else:
            inp = f"cas {self.key} {self.expected}->{self.value}"
        if self.status is Status.OK:
            if self.kind is Kind.GET:
                out = f"-> {self.result!r}"
            elif self.kind is Kind.CAS:
                out = f"-> {'ok' if self.succeeded else 'failed'}"
            else:
                out = "-> ok"
            out += f" @rev {self.revision}" if self.revision is not None else ""
        else:
            out = f"-> {self.status.value}"
        ret = "inf" if self.ret is None else f"{self.ret:g}"
        return f"#{self.id} c{self.client} [{self.call:g}, {ret}] {inp} {out}"


class HistoryError(Exception):
    """The recording was misused (two ops in flight for one client, unknown op id …)."""


@dataclass
class Recorder:
    """Builds a history as a test runs: ``invoke`` then one of ``ok`` / ``fail`` / ``unknown``.

    Ops still pending when :meth:`history` is called are reported as ``UNKNOWN``.
    """

    _ops: list[Op] = field(default_factory=list)
    _pending: dict[int, int] = field(default_factory=dict)  # client -> op id

    def invoke(
        self,
        client: int,
        kind: Kind,
        key: str,
        call: float,
        *,
        value: str | None = None,
        expected: str | None = None,
    ) -> int:
        if client in self._pending:
            raise HistoryError(f"client {client} already has op #{self._pending[client]} in flight")
        op = Op(
            id=len(self._ops),
            client=client,
            kind=kind,
            key=key,
            call=call,
            ret=None,
            status=Status.UNKNOWN,
            value=value,
            expected=expected,
        )
        self._ops.append(op)
        self._pending[client] = op.id
        return op.id

    def _finish(self, op_id: int, ret: float | None = None) -> Op:
        if op_id >= len(self._ops):
            raise HistoryError(f"no op #{op_id}")
        op = self._ops[op_id]
        if self._pending.get(op.client) != op_id:
            raise HistoryError(f"op #{op_id} is not in flight")
        if ret is not None and ret < op.call:
            raise HistoryError(f"op #{op_id} returned before it was called")
        del self._pending[op.client]
        return op

    def ok(
        self,
        op_id: int,
        ret: float,
        *,
        result: str | None = None,
        succeeded: bool | None = None,
        revision: int | None = None,
    ) -> None:
        if op_id < len(self._ops) and self._ops[op_id].kind is Kind.CAS and succeeded is None:
            raise HistoryError("a CAS response needs succeeded=")
        op = self._finish(op_id, ret)
        self._ops[op_id] = replace(
            op, ret=ret, status=Status.OK, result=result, succeeded=succeeded, revision=revision
        )

    def fail(self, op_id: int, ret: float) -> None:
        """The op definitely did not take effect."""
        op = self._finish(op_id, ret)
        self._ops[op_id] = replace(op, ret=ret, status=Status.FAIL)

    def unknown(self, op_id: int) -> None:
        """No answer: the op may or may not have taken effect (and the client moves on)."""
        self._finish(op_id)

    def in_flight(self, client: int) -> int | None:
        return self._pending.get(client)

    def history(self) -> list[Op]:
        return list(self._ops)


def format_history(ops: list[Op]) -> str:
    """One line per op, in call order."""
    return "\n".join(op.describe() for op in sorted(ops, key=lambda o: (o.call, o.id)))
