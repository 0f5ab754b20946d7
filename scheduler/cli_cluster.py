"""`raftcron cluster members` and `cluster status`: the coord cluster as its members see
it."""

from __future__ import annotations

from typing import Any

from scheduler.cli_app import EndpointsOpt, OutputOpt, check_output, client_call, cluster_app
from scheduler.cli_output import emit


async def _cluster_members(client: Any) -> list[dict[str, Any]]:
    return [{"id": f"{m.id:x}", "name": m.name or "(unstarted)",
             "peer_urls": ",".join(m.peer_urls), "client_urls": ",".join(m.client_urls),
             "learner": m.is_learner} for m in await client.members()]


async def _cluster_status(client: Any) -> list[dict[str, Any]]:
    from coord.client import ClientError

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


@cluster_app.command("members")
def cluster_members(endpoints: EndpointsOpt = "127.0.0.1:2379",
                    output: OutputOpt = "table") -> None:
    """Every member: id, name, peer and client URLs, learner or voter.

    Example:  raftcron cluster members --endpoints 127.0.0.1:2379 -o json
    """
    check_output(output)
    rows = client_call(endpoints, _cluster_members)
    emit(output, rows, ["id", "name", "peer_urls", "client_urls", "learner"], "members")


@cluster_app.command("status")
def cluster_status(endpoints: EndpointsOpt = "127.0.0.1:2379",
                   output: OutputOpt = "table") -> None:
    """Each member's view: leader or not, raft term, raft index, applied index, errors.

    Example:  raftcron cluster status --endpoints 127.0.0.1:2379,127.0.0.1:22379
    """
    check_output(output)
    rows = client_call(endpoints, _cluster_status)
    emit(output, rows, ["endpoint", "id", "name", "leader", "raft_term", "raft_index",
                        "applied_index", "version", "error"], "cluster status")
