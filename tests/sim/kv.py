"""The replicated state machine of the simulation: a tiny revisioned KV store.

Each node applies committed entries to its own :class:`KVStore`. Entry data is an encoded
:class:`Request` (a client put / get / CAS, or a no-op probe). Like etcd, the store has a
revision counter: every write that changes the store (a put, a CAS whose compare held)
increments it; every response carries the revision after the request (the "header
revision"). Requests carry a unique id and the store remembers applied ids, so a proposal
that reaches the log twice (a duplicated MsgProp) takes effect once — unless the
``dedup=False`` switch (a simulator bug-injection knob) is set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

INITIAL_REVISION = 1  # etcd starts an empty store at revision 1


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    kind: str  # "put" | "get" | "cas" | "noop"
    key: str = ""
    value: str | None = None
    expected: str | None = None

    def encode(self) -> bytes:
        return json.dumps(
            [self.id, self.kind, self.key, self.value, self.expected], separators=(",", ":")
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Request:
        rid, kind, key, value, expected = json.loads(data)
        return cls(int(rid), str(kind), str(key), value, expected)


@dataclass(frozen=True, slots=True)
class Result:
    revision: int
    value: str | None = None  # get: the value read
    succeeded: bool | None = None  # cas


class KVStore:
    def __init__(self, *, dedup: bool = True) -> None:
        self.data: dict[str, str] = {}
        self.revision = INITIAL_REVISION
        self.applied_ids: dict[int, Result] = {}
        self.dedup = dedup

    def apply(self, req: Request) -> Result:
        if self.dedup and req.id in self.applied_ids:
            return self.applied_ids[req.id]
        if req.kind == "put":
            assert req.value is not None
            self.revision += 1
            self.data[req.key] = req.value
            res = Result(self.revision)
        elif req.kind == "cas":
            assert req.value is not None
            ok = self.data.get(req.key) == req.expected
            if ok:
                self.revision += 1
                self.data[req.key] = req.value
            res = Result(self.revision, succeeded=ok)
        elif req.kind == "get":
            res = Result(self.revision, value=self.data.get(req.key))
        else:  # noop / probe
            res = Result(self.revision)
        if self.dedup:
            self.applied_ids[req.id] = res
        return res

    def read(self, key: str) -> Result:
        """A local read (ReadIndex path: only once applied ≥ the read index)."""
        return Result(self.revision, value=self.data.get(key))

    def encode(self) -> bytes:
        ids = sorted(self.applied_ids.items())
        return json.dumps(
            {
                "rev": self.revision,
                "data": sorted(self.data.items()),
                "ids": [[i, r.revision, r.value, r.succeeded] for i, r in ids],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, blob: bytes, *, dedup: bool = True) -> KVStore:
        kv = cls(dedup=dedup)
        if not blob:
            return kv
        d = json.loads(blob)
        kv.revision = int(d["rev"])
        kv.data = {str(k): str(v) for k, v in d["data"]}
        kv.applied_ids = {int(i): Result(int(r), v, s) for i, r, v, s in d["ids"]}
        return kv
