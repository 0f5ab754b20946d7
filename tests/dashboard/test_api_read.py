"""The read JSON API of `raftcron dashboard` against a real agent (docs/api.md)."""

from __future__ import annotations

from tests.dashboard.conftest import Dashboard


def test_cluster_shows_the_single_member_as_leader(dashboard: Dashboard) -> None:
    status, body = dashboard.get("/api/v1/cluster")
    assert status == 200, body
    assert [m["name"] for m in body["members"]] == ["a1"]
    assert body["healthy"] is True
    assert body["leader"] == body["members"][0]["id"]
    assert body["raft_term"] >= 1


def test_unknown_api_path_is_a_json_404(dashboard: Dashboard) -> None:
    status, body = dashboard.get("/api/v1/nope")
    assert status == 404
    assert body["error"]["code"] == "not_found"
