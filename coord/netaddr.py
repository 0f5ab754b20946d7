"""The one ``host:port`` parser, and what counts as loopback (a leaf: it imports nothing of
coord)."""

from __future__ import annotations

import ipaddress


def parse_hostport(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``, after an optional ``scheme://`` (``http://`` as etcd
    writes URLs) → ``(host, port)``, the host without brackets and possibly empty (the
    caller decides what an empty host or port 0 means). ValueError unless the port is
    0-65535."""
    hostport = value.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def join_hostport(host: str, port: int) -> str:
    """The inverse of :func:`parse_hostport` (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether a listener on ``host`` is reachable from this host only: ``localhost`` or a
    loopback address. Any other name, and every-interface (empty, ``0.0.0.0``, ``::``), is
    not (a name may resolve to anything)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
