"""The coord cluster as its members see it: the data of `raftcron cluster members|status`
and of the dashboard's cluster view (one implementation; rendering is theirs)."""

from __future__ import annotations

from typing import Any

from coord.client import ClientError


async def cluster_members(client: Any) -> list[dict[str, Any]]:
    return [{"id": f"{m.id:x}", "name": m.name or "(unstarted)",
             "peer_urls": ",".join(m.peer_urls), "client_urls": ",".join(m.client_urls),
             "learner": m.is_learner} for m in await client.members()]


async def cluster_status(client: Any) -> list[dict[str, Any]]:
    """Each member's status as it answers it (or the error reaching it)."""
    members = await client.members()
    names = {m.id: m.name for m in members}
    endpoints: list[str] = []
    for m in members:
        endpoints += [u.removeprefix("http://") for u in m.client_urls[:1]]
    for ep in client.endpoints:
        if ep not in endpoints:
            endpoints.append(ep)
    rows = []
    for ep in endpoints:
        try:
            st = await client.status(ep)
        except ClientError as err:
            rows.append({"endpoint": ep, "error": str(err)})
            continue
        mid = st.header.member_id
        rows.append({"endpoint": ep, "id": f"{mid:x}", "name": names.get(mid, ""),
                     "leader": st.leader == mid, "leader_id": f"{st.leader:x}",
                     "raft_term": st.raft_term, "raft_index": st.raft_index,
                     "applied_index": st.raft_applied_index, "version": st.version,
                     "db_size": st.db_size, "error": ""})
    return rows
