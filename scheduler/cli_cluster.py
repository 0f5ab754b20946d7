"""`raftcron cluster members` and `cluster status`: the coord cluster as its members see
it."""

from __future__ import annotations

from scheduler.cli_app import EndpointsOpt, OutputOpt, check_output, client_call, cluster_app
from scheduler.cli_output import emit
from scheduler.clusterview import cluster_members as _cluster_members
from scheduler.clusterview import cluster_status as _cluster_status


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
