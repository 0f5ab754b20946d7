"""The raftcron command line (typer). Every command has --help with an example."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from coord.logsetup import configure as configure_logging

app = typer.Typer(
    name="raftcron",
    help="A distributed cron scheduler on an embedded, Raft-replicated, etcd-compatible store.",
    no_args_is_help=True,
    add_completion=False,
)
coord_app = typer.Typer(help="Run or inspect a coord store member.", no_args_is_help=True)
app.add_typer(coord_app, name="coord")

NameOpt = Annotated[str, typer.Option("--name", help="Member name, unique in the cluster.")]
DataDirOpt = Annotated[Path, typer.Option("--data-dir", help="Where the WAL and snapshots live.")]
ClientOpt = Annotated[str, typer.Option("--listen-client",
                                        help="HOST:PORT for etcd-v3 clients (etcdctl, workers).")]
PeerOpt = Annotated[str, typer.Option("--listen-peer", help="HOST:PORT for Raft peer traffic.")]
ClusterOpt = Annotated[str | None, typer.Option(
    "--initial-cluster", help="NAME=HOST:PORT,... of every member's peer address "
    "(default: this member alone).")]


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def run_until_signal(make_main: object) -> None:
    """Run an async ``main(stop_event)`` until SIGINT/SIGTERM."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await make_main(stop)  # type: ignore[operator]

    asyncio.run(runner())


@coord_app.command("serve")
def coord_serve(
    name: NameOpt = "default",
    data_dir: DataDirOpt = Path("raftcron-data"),
    listen_client: ClientOpt = "127.0.0.1:2379",
    listen_peer: PeerOpt = "127.0.0.1:2380",
    initial_cluster: ClusterOpt = None,
) -> None:
    """Serve the etcd v3 API from a coord member (no scheduler worker).

    Example:  raftcron coord serve --name n1 --data-dir /var/lib/raftcron
    --listen-client 127.0.0.1:2379 --listen-peer 127.0.0.1:2380
    --initial-cluster n1=127.0.0.1:2380
    """
    from coord.server.config import ConfigError, ServerConfig, parse_initial_cluster
    from coord.server.server import CoordServer
    from coord.storage import StorageError

    configure_logging()
    try:
        cluster = parse_initial_cluster(initial_cluster) if initial_cluster else {}
        config = ServerConfig(name=name, data_dir=data_dir, listen_client=listen_client,
                              listen_peer=listen_peer, initial_cluster=cluster)
    except ConfigError as err:
        fail(str(err), 2)
        return
    server = CoordServer(config)
    try:
        run_until_signal(server.serve_until)
    except StorageError as err:
        fail(f"cannot recover data dir {data_dir}: {err}", 3)
    except OSError as err:
        fail(str(err), 1)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
