"""The committed *_pb2 modules are exactly what `make proto` generates from the .proto files."""

from __future__ import annotations

from pathlib import Path

import pytest

from coord.pb.generate import PROTO_DIR, generate


def test_generated_modules_match_protos(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh_dir = tmp_path / "coord" / "pb"
    fresh = sorted(p.name for p in fresh_dir.iterdir() if p.suffix in {".py", ".pyi"})
    assert fresh, "protoc generated nothing"
    for name in fresh:
        committed = PROTO_DIR / name
        if not committed.exists():
            pytest.fail(f"{name} is generated but not committed; run `make proto`")
        assert committed.read_bytes() == (fresh_dir / name).read_bytes(), (
            f"{name} drifted from its .proto; run `make proto` and commit"
        )


def test_wire_names_match_etcd() -> None:
    """Spot-check the facts clients depend on: package, service and field numbers."""
    from coord.pb import kv_pb2, rpc_pb2

    assert rpc_pb2.DESCRIPTOR.package == "etcdserverpb"
    assert rpc_pb2.DESCRIPTOR.services_by_name["KV"].methods_by_name["Txn"].full_name == (
        "etcdserverpb.KV.Txn"
    )
    rr = rpc_pb2.RangeRequest.DESCRIPTOR.fields_by_name
    assert (rr["key"].number, rr["range_end"].number, rr["limit"].number) == (1, 2, 3)
    assert rr["max_create_revision"].number == 13
    kv = kv_pb2.KeyValue.DESCRIPTOR.fields_by_name
    assert [kv[n].number for n in ("key", "create_revision", "mod_revision", "version",
                                    "value", "lease")] == [1, 2, 3, 4, 5, 6]
    wc = rpc_pb2.WatchCreateRequest.DESCRIPTOR.fields_by_name
    assert (wc["watch_id"].number, wc["fragment"].number) == (7, 8)
