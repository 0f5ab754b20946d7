"""What every scenario of ``aetcd_driver.py`` records its steps with: :class:`Run` (one
scenario's client, key prefix and steps) and the conversions of aetcd's results to the JSON
the harness normalises (raw revisions and ids under the field names it knows).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aetcd
import aetcd.exceptions as aexc
import grpc


def hdr(h: Any) -> dict[str, int]:
    return {"cluster_id": h.cluster_id, "member_id": h.member_id, "revision": h.revision,
            "raft_term": h.raft_term}


def kv(k: Any) -> dict[str, Any] | None:
    if k is None:
        return None
    return {"key": bytes(k.key).decode("utf-8", "replace"),
            "value": bytes(k.value).decode("utf-8", "replace"),
            "create_revision": k.create_revision, "mod_revision": k.mod_revision,
            "version": k.version, "lease": k.lease}


def get_range(r: Any) -> dict[str, Any]:
    return {"header": hdr(r.header), "kvs": [kv(x) for x in r], "more": r.more, "count": r.count}


def err(e: BaseException) -> dict[str, Any]:
    if isinstance(e, aexc.RevisionCompactedError):
        return {"error": type(e).__name__, "compact_revision": e.compacted_revision}
    detail = str(e)
    return {"error": type(e).__name__, "detail": detail}


class Run:
    def __init__(self, client: aetcd.Client, prefix: str) -> None:
        self.c = client
        self.p = prefix.encode()
        self.steps: list[list[Any]] = []
        self.steps_base = 0  # the store revision before the scenario's first step
        self.endpoint = ""

    def k(self, name: str) -> bytes:
        return self.p + name.encode()

    async def step(self, label: str, aw: Awaitable[Any],
                   conv: Callable[[Any], Any] = lambda x: x) -> Any:
        try:
            res = await aw
        except aexc.ClientError as e:
            self.steps.append([label, err(e)])
            return None
        except grpc.aio.AioRpcError as e:  # raw stub calls
            self.steps.append([label, {"error": e.code().name, "detail": e.details()}])
            return None
        self.steps.append([label, conv(res)])
        return res

    def note(self, label: str, value: Any) -> None:
        self.steps.append([label, value])

    async def base(self) -> int:
        r = await self.c.get_prefix(self.p + b"\x00base")
        return int(r.header.revision)


def put_res(r: Any) -> dict[str, Any]:
    return {"header": hdr(r.header), "prev_kv": kv(r.prev_kv)}


def del_res(r: Any) -> dict[str, Any] | None:
    if r is None:
        return None
    out: dict[str, Any] = {"header": hdr(r.header), "deleted": r.deleted}
    if hasattr(r, "prev_kv"):
        out["prev_kv"] = kv(r.prev_kv)
    else:
        out["prev_kvs"] = [kv(x) for x in r.prev_kvs]
    return out


def get_res(r: Any) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"header": hdr(r.header), "kv": kv(r)}


def txn_res(r: Any) -> dict[str, Any]:
    ok, responses = r
    out = []
    for resp in responses:
        if isinstance(resp, list):
            out.append({"range": [[bytes(v).decode(), kv(g)] for v, g in resp]})
        else:
            out.append(raw_op(resp))
    return {"succeeded": ok, "responses": out}


def raw_op(resp: Any) -> dict[str, Any]:
    which = resp.WhichOneof("response")
    sub = getattr(resp, which)
    if which == "response_txn":
        return {which: {"header_revision": sub.header.revision, "succeeded": sub.succeeded,
                        "responses": [raw_op(x) for x in sub.responses]}}
    if which == "response_range":
        return {which: {"revision": sub.header.revision, "kvs": [kv(x) for x in sub.kvs],
                        "count": sub.count, "more": sub.more}}
    if which == "response_delete_range":
        return {which: {"revision": sub.header.revision, "deleted": sub.deleted,
                        "prev_kvs": [kv(x) for x in sub.prev_kvs]}}
    return {which: {"revision": sub.header.revision,
                    "prev_kv": kv(sub.prev_kv) if sub.HasField("prev_kv") else None}}
