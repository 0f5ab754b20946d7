"""A coord member run inside the test's own process."""

from __future__ import annotations

from pathlib import Path

from coord.server.config import ServerConfig
from tests.helpers.procs import free_port


def member_config(data_dir: Path, name: str = "n1") -> ServerConfig:
    """A one-member cluster on free loopback ports, its data in ``data_dir``."""
    return ServerConfig(name=name, data_dir=data_dir,
                        listen_client=f"127.0.0.1:{free_port()}",
                        listen_peer=f"127.0.0.1:{free_port()}")
