"""`raftcron cluster members` and `cluster status`: the coord cluster as its members see
it."""

from __future__ import annotations

from scheduler.cli_app import EndpointsOpt, OutputOpt, check_output, client_call, cluster_app
from scheduler.cli_output import emit

# scheduler.clusterview imports coord.client (and so grpc): imported inside the commands, so
# that a member started by this CLI never loads grpc (tests/server/test_no_grpc_import.py).


@cluster_app.command("members")
def cluster_members(endpoints: EndpointsOpt = "127.0.0.1:2379",
                    output: OutputOpt = "table") -> None:
    """Every member: id, name, peer and client URLs, learner or voter.

    Example:  raftcron cluster members --endpoints 127.0.0.1:2379 -o json
    """
    check_output(output)
    from scheduler.clusterview import cluster_members as members
    rows = client_call(endpoints, members)
    emit(output, rows, ["id", "name", "peer_urls", "client_urls", "learner"], "members")


@cluster_app.command("status")
def cluster_status(endpoints: EndpointsOpt = "127.0.0.1:2379",
                   output: OutputOpt = "table") -> None:
    """Each member's view: leader or not, raft term, raft index, applied index, errors.

    Example:  raftcron cluster status --endpoints 127.0.0.1:2379,127.0.0.1:22379
    """
    check_output(output)
    from scheduler.clusterview import cluster_status as status
    rows = client_call(endpoints, status)
    emit(output, rows, ["endpoint", "id", "name", "leader", "raft_term", "raft_index",
                        "applied_index", "version", "error"], "cluster status")
