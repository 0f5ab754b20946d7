"""The raftcron command line (typer). Every command has --help with an example.

This module is the entry point (``raftcron = scheduler.cli:main``, ``python -m
scheduler.cli``) and holds the commands that run a process: ``coord serve``, ``worker`` and
``agent``. The others live beside it and register on the same app when imported here:
:mod:`scheduler.cli_app` (the app, shared options, the store call), :mod:`scheduler.cli_store`
(the member's flags), :mod:`scheduler.cli_output` (tables and JSON), :mod:`scheduler.cli_files`
(validate, apply), :mod:`scheduler.cli_jobs` (jobs, locks, workers) and
:mod:`scheduler.cli_cluster` (cluster).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer

from coord.logsetup import configure as configure_logging

# The commands register in this order (the order of `raftcron --help`): validate, apply,
# locks, workers, then worker and agent below.
from scheduler import (  # noqa: F401
    cli_auth,
    cli_certs,
    cli_cluster,
    cli_dashboard,
    cli_doctor,
    cli_files,
    cli_jobs,
)
from scheduler.cli_app import EndpointsOpt, TagsOpt, app, coord_app, fail, parse_tags
from scheduler.cli_ops import MetricsOpt, check_listen_metrics, new_registry, ops_listener
from scheduler.cli_output import PLAIN_TABLE_OVER, emit
from scheduler.cli_store import (
    DEFAULT_CLIENT,
    DEFAULT_CLUSTER_STATE,
    DEFAULT_DATA_DIR,
    DEFAULT_NAME,
    DEFAULT_PEER,
    DEFAULT_SNAPSHOT_BYTES,
    DEFAULT_SNAPSHOT_COUNT,
    DEFAULT_TOKEN_TTL,
    AuthTokenTTLOpt,
    ClientOpt,
    ClusterOpt,
    ClusterStateOpt,
    DataDirOpt,
    NameOpt,
    PeerOpt,
    SnapshotBytesOpt,
    SnapshotCountOpt,
    store_config_from_flags,
)
from scheduler.cli_tls import (
    DEFAULT_MIN_VERSION,
    CertFileOpt,
    ClientCertAuthOpt,
    InsecureListenOpt,
    KeyFileOpt,
    MinVersionOpt,
    PeerAllowedCNOpt,
    PeerCertFileOpt,
    PeerClientCertAuthOpt,
    PeerKeyFileOpt,
    PeerTrustedCAOpt,
    ServerTLSFlags,
    TrustedCAOpt,
    client_auth,
    client_tls,
)

# What other modules and tests import from here, as before the split.
__all__ = ["PLAIN_TABLE_OVER", "STOP_NOW_EXIT", "app", "emit", "fail", "main",
           "run_until_signal"]

log = structlog.get_logger("raftcron")

SWITCH_INTERVAL = 0.0005
"""Seconds a thread may hold the GIL while another waits for it, in `raftcron worker`."""

StopTimeoutOpt = Annotated[float, typer.Option(
    "--stop-timeout", help="Seconds a graceful stop (SIGINT/SIGTERM) waits for running jobs "
    "before killing them; a second signal stops at once.")]


STOP_NOW_EXIT = 130
"""Exit status after a second SIGINT/SIGTERM cut a graceful stop short (README, CLI)."""


def data_dir_failure(data_dir: Path, err: Exception) -> str:
    """The one line a server prints when its data dir stops it (exit 3)."""
    from coord.storage import DataDirError

    if isinstance(err, DataDirError):
        return str(err)
    return f"cannot recover data dir {data_dir}: {err}"


def run_until_signal(make_main: object) -> None:
    """Run an async ``main(stop_event)`` until SIGINT/SIGTERM.

    The first signal sets the stop event: ``main`` stops gracefully (a worker lets its
    running jobs finish, up to its --stop-timeout). A second signal cancels ``main`` at
    once, whatever state it is in, and the process exits with status 130.
    """
    cut_short = False

    async def runner() -> None:
        nonlocal cut_short
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        main = asyncio.ensure_future(make_main(stop))  # type: ignore[operator]

        def on_signal(sig: signal.Signals) -> None:
            nonlocal cut_short
            if not stop.is_set():
                log.info("process.stopping", signal=sig.name,
                         hint="send it again to stop at once")
                stop.set()
            elif not cut_short:
                log.warning("process.stopping_now", signal=sig.name)
                cut_short = True
                main.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await main
        except asyncio.CancelledError:
            if not cut_short:
                raise

    asyncio.run(runner())
    if cut_short:
        raise typer.Exit(STOP_NOW_EXIT)


@coord_app.command("serve")
def coord_serve(
    name: NameOpt = DEFAULT_NAME,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    listen_client: ClientOpt = DEFAULT_CLIENT,
    listen_peer: PeerOpt = DEFAULT_PEER,
    initial_cluster: ClusterOpt = None,
    initial_cluster_state: ClusterStateOpt = DEFAULT_CLUSTER_STATE,
    snapshot_count: SnapshotCountOpt = DEFAULT_SNAPSHOT_COUNT,
    snapshot_bytes: SnapshotBytesOpt = DEFAULT_SNAPSHOT_BYTES,
    auth_token_ttl: AuthTokenTTLOpt = DEFAULT_TOKEN_TTL,
    cert_file: CertFileOpt = None,
    key_file: KeyFileOpt = None,
    trusted_ca_file: TrustedCAOpt = None,
    client_cert_auth: ClientCertAuthOpt = False,
    tls_min_version: MinVersionOpt = DEFAULT_MIN_VERSION,
    insecure_listen: InsecureListenOpt = False,
    peer_cert_file: PeerCertFileOpt = None,
    peer_key_file: PeerKeyFileOpt = None,
    peer_trusted_ca_file: PeerTrustedCAOpt = None,
    peer_client_cert_auth: PeerClientCertAuthOpt = False,
    peer_cert_allowed_cn: PeerAllowedCNOpt = "",
    listen_metrics: MetricsOpt = "",
) -> None:
    """Serve the etcd v3 API from a coord member (no scheduler worker).

    Example:  raftcron coord serve --name n1 --data-dir /var/lib/raftcron
    --listen-client 127.0.0.1:2379 --listen-peer 127.0.0.1:2380
    --initial-cluster n1=127.0.0.1:2380
    """
    from coord.process import gc_freeze_enabled, setup_process
    from coord.server.server import CoordServer
    from coord.storage import StorageError

    configure_logging()
    # The WAL thread hands each fsync result back to the event loop: with the default
    # 5 ms GIL switch interval that handoff alone can add milliseconds to every Ready.
    sys.setswitchinterval(SWITCH_INTERVAL)
    config = store_config_from_flags(name, data_dir, listen_client, listen_peer,
                                     initial_cluster, initial_cluster_state, snapshot_count,
                                     snapshot_bytes, ServerTLSFlags(
                                         cert_file, key_file, trusted_ca_file,
                                         client_cert_auth, tls_min_version,
                                         insecure_listen, peer_cert_file, peer_key_file,
                                         peer_trusted_ca_file, peer_client_cert_auth,
                                         peer_cert_allowed_cn), auth_token_ttl)
    check_listen_metrics(listen_metrics, insecure_listen)
    registry = new_registry(listen_metrics)
    try:
        setup_process()
        server = CoordServer(config, freeze_heap=gc_freeze_enabled(), sighup=True,
                             metrics=registry)

        async def serve(stop: asyncio.Event) -> None:
            async with ops_listener(listen_metrics, registry, [server.health_check()], []):
                await server.serve_until(stop)

        run_until_signal(serve)
    except StorageError as err:
        fail(data_dir_failure(data_dir, err), 3)
    except OSError as err:
        fail(str(err), 1)


# ---------------------------------------------------------------------------- processes
def _worker_config(name: str, endpoints: list[str], tags: str, session_ttl: int,
                   log_dir: Path, clock_offset: float, compact_retention: str = "10m",
                   stop_timeout: float = 30.0) -> Any:
    from coord.process import gc_freeze_enabled
    from scheduler.clock import SystemClock
    from scheduler.plan import parse_duration
    from scheduler.worker import WorkerConfig

    try:
        retention = parse_duration(compact_retention)
    except ValueError as err:
        fail(f"--compact-retention: {err}", 2)
    if stop_timeout < 0:
        fail(f"--stop-timeout: must be 0 or more seconds, got {stop_timeout:g}", 2)
    return WorkerConfig(name=name, endpoints=endpoints, tags=parse_tags(tags),
                        stop_timeout=stop_timeout,
                        session_ttl=session_ttl, log_dir=log_dir,
                        clock=SystemClock(offset=clock_offset),
                        compact_retention=float(retention),
                        freeze_heap=gc_freeze_enabled(), tls=client_tls(),
                        auth=client_auth())


SessionOpt = Annotated[int, typer.Option("--session-ttl",
                                         help="Seconds of the worker's session lease.")]
LogDirOpt = Annotated[Path, typer.Option("--log-dir", help="Where job output logs go.")]
OffsetOpt = Annotated[float, typer.Option("--clock-offset", hidden=True,
                                          help="Skew this worker's clock (tests).")]
CompactOpt = Annotated[str, typer.Option(
    "--compact-retention",
    help="Store history to keep (e.g. 10m, 1h): the workers compact older revisions "
    "away so run-record churn cannot grow the store forever. 0 = never compact (a shared "
    "store compacted by someone else).")]


@app.command("worker")
def worker_cmd(
    endpoints: EndpointsOpt = "127.0.0.1:2379",
    name: Annotated[str, typer.Option("--name", help="Unique worker name.")] = "",
    tags: TagsOpt = "",
    session_ttl: SessionOpt = 10,
    log_dir: LogDirOpt = Path("raftcron-logs"),
    clock_offset: OffsetOpt = 0.0,
    compact_retention: CompactOpt = "10m",
    stop_timeout: StopTimeoutOpt = 30.0,
    listen_metrics: MetricsOpt = "",
    insecure_listen: InsecureListenOpt = False,
) -> None:
    """Run a scheduler worker against coord members or a real etcd.

    Example:  raftcron worker --endpoints 10.0.0.1:2379,10.0.0.2:2379 --tags disk=ssd
    """
    from coord.process import setup_process
    from scheduler.worker import Worker

    configure_logging()
    # The worker's CPU goes mostly to grpc.aio's futures and callbacks, as a coord member's
    # does: on uvloop's loop (as in `agent`) an occurrence costs less CPU (figures in
    # docs/benchmarks.md). RAFTCRON_UVLOOP=0 keeps asyncio's own loop.
    setup_process()
    # Jobs are forked on a few threads (scheduler.executor); each hands the GIL back and
    # forth several times per spawn, and with the default 5 ms switch interval a thread
    # could wait that long for it at every turn while the event loop is busy.
    sys.setswitchinterval(SWITCH_INTERVAL)
    cfg = _worker_config(name or socket.gethostname(), endpoints.split(","), tags, session_ttl,
                         log_dir, clock_offset, compact_retention, stop_timeout)
    check_listen_metrics(listen_metrics, insecure_listen)
    cli_auth.check_worker_identity(cfg.endpoints, cfg.name, cfg.tls, cfg.auth)
    registry = new_registry(listen_metrics)
    if registry is None:
        run_until_signal(Worker(cfg).run)
        return
    from scheduler.metrics import WorkerMetrics

    metrics = WorkerMetrics(registry)
    worker = Worker(dataclasses.replace(cfg, metrics=metrics))

    async def run(stop: asyncio.Event) -> None:
        checks = [metrics.ready_check]
        async with ops_listener(listen_metrics, registry, checks, checks):
            await worker.run(stop)

    try:
        run_until_signal(run)
    except OSError as err:
        fail(str(err), 1)


@app.command("agent")
def agent(
    name: NameOpt = DEFAULT_NAME,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    listen_client: ClientOpt = DEFAULT_CLIENT,
    listen_peer: PeerOpt = DEFAULT_PEER,
    initial_cluster: ClusterOpt = None,
    initial_cluster_state: ClusterStateOpt = DEFAULT_CLUSTER_STATE,
    snapshot_count: SnapshotCountOpt = DEFAULT_SNAPSHOT_COUNT,
    snapshot_bytes: SnapshotBytesOpt = DEFAULT_SNAPSHOT_BYTES,
    auth_token_ttl: AuthTokenTTLOpt = DEFAULT_TOKEN_TTL,
    cert_file: CertFileOpt = None,
    key_file: KeyFileOpt = None,
    trusted_ca_file: TrustedCAOpt = None,
    client_cert_auth: ClientCertAuthOpt = False,
    tls_min_version: MinVersionOpt = DEFAULT_MIN_VERSION,
    insecure_listen: InsecureListenOpt = False,
    peer_cert_file: PeerCertFileOpt = None,
    peer_key_file: PeerKeyFileOpt = None,
    peer_trusted_ca_file: PeerTrustedCAOpt = None,
    peer_client_cert_auth: PeerClientCertAuthOpt = False,
    peer_cert_allowed_cn: PeerAllowedCNOpt = "",
    jobs: Annotated[Path | None, typer.Option(
        "--jobs", help="Apply this job file at start (in the background, retried until "
        "the store takes it; as `apply` without --prune).")] = None,
    tags: TagsOpt = "",
    session_ttl: SessionOpt = 10,
    log_dir: LogDirOpt = Path("raftcron-logs"),
    clock_offset: OffsetOpt = 0.0,
    compact_retention: CompactOpt = "10m",
    stop_timeout: StopTimeoutOpt = 30.0,
    listen_metrics: MetricsOpt = "",
    listen_http: cli_dashboard.ListenHttpOpt = "",
) -> None:
    """Run a coord member and a worker in one process (no flags: a single-node cluster).

    Example:  raftcron agent --jobs jobs.example.yaml
    """
    from coord.process import gc_freeze_enabled, setup_process
    from coord.server.server import CoordServer
    from coord.storage import StorageError
    from scheduler.errors import SpecError
    from scheduler.roles import IdentityRefused, agent_identity
    from scheduler.spec import load_jobs
    from scheduler.startup import apply_at_start, cancel_and_wait
    from scheduler.worker import Worker

    configure_logging()
    member = name or socket.gethostname()
    specs = None
    if jobs is not None:
        try:
            specs = load_jobs(jobs)
        except SpecError as err:
            fail(str(err), 2)
    sys.setswitchinterval(SWITCH_INTERVAL)  # the member's WAL thread, as in `coord serve`
    config = store_config_from_flags(member, data_dir, listen_client, listen_peer,
                                     initial_cluster, initial_cluster_state, snapshot_count,
                                     snapshot_bytes, ServerTLSFlags(
                                         cert_file, key_file, trusted_ca_file,
                                         client_cert_auth, tls_min_version,
                                         insecure_listen, peer_cert_file, peer_key_file,
                                         peer_trusted_ca_file, peer_client_cert_auth,
                                         peer_cert_allowed_cn), auth_token_ttl)
    # Every flag is checked before the member touches its data dir.
    cfg = _worker_config(member, [listen_client], tags, session_ttl, log_dir, clock_offset,
                         compact_retention, stop_timeout)
    if cfg.tls is None and config.client_tls is not None:
        # The worker reaches its own TLS client port (RAFTCRON_AGENT_LOCAL=0) with the
        # member's files: its CA and, for --client-cert-auth, its own certificate.
        from coord.client import ClientTLS

        own = config.client_tls
        cfg = dataclasses.replace(cfg, tls=ClientTLS(own.trusted_ca_file, own.cert_file,
                                                     own.key_file))
    check_listen_metrics(listen_metrics, insecure_listen)
    if listen_http:
        cli_dashboard.check_listen("--listen-http", listen_http, insecure_listen)
    registry = new_registry(listen_metrics)
    if registry is not None:
        from scheduler.metrics import WorkerMetrics

        cfg = dataclasses.replace(cfg, metrics=WorkerMetrics(registry))
    try:
        setup_process()
        server = CoordServer(config, freeze_heap=gc_freeze_enabled(), sighup=True,
                             metrics=registry)
    except StorageError as err:
        fail(data_dir_failure(data_dir, err), 3)
        return

    async def main(stop: asyncio.Event) -> None:
        ready = [cfg.metrics.ready_check] if cfg.metrics is not None else []
        async with ops_listener(listen_metrics, registry, [server.health_check()], ready):
            await agent_main(stop)

    async def agent_main(stop: asyncio.Event) -> None:
        from coord.client import Client

        await server.start_until(stop)
        applying: asyncio.Future[None] | None = None
        try:
            if stop.is_set():
                return
            # The worker calls its own member in-process (coord.rpc.local), unless
            # RAFTCRON_AGENT_LOCAL=0 sends its calls through the client port like any client.
            channels = None
            if os.environ.get("RAFTCRON_AGENT_LOCAL", "1") != "0":
                channels = server.channels()
            async with Client([listen_client], timeout=5, channels=channels,
                              tls=cfg.tls, auth=cfg.auth) as c:
                await agent_identity(c, cfg.name, cfg.auth)
                if specs is not None and jobs is not None:
                    applying = asyncio.ensure_future(apply_at_start(c, specs, jobs))
                try:
                    async with cli_dashboard.http_listener(listen_http, c, listen_client):
                        await Worker(dataclasses.replace(cfg, channels=channels)).run(stop)
                finally:
                    # An apply still retrying ends before its client closes.
                    await cancel_and_wait(applying)
        finally:
            await server.stop()

    try:
        run_until_signal(main)
    except StorageError as err:
        fail(data_dir_failure(data_dir, err), 3)
    except IdentityRefused as err:
        fail(str(err), 1)
    except OSError as err:
        fail(str(err), 1)


@app.command("dashboard")
def dashboard(
    endpoints: EndpointsOpt = "127.0.0.1:2379",
    listen: cli_dashboard.ListenOpt = cli_dashboard.DEFAULT_LISTEN,
    insecure_listen: InsecureListenOpt = False,
) -> None:
    """Serve the web dashboard and its JSON API (/api/v1/) on a store.

    Example:  raftcron dashboard --endpoints 127.0.0.1:2379 --listen 127.0.0.1:8080
    """
    cli_dashboard.dashboard(endpoints, listen, insecure_listen, run_until_signal)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
