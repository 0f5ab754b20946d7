"""Certificate reload without restarting the member: on SIGHUP, and when the files change.

Both listeners (client and peer port) and the peer dialer take new certificate, key and
CA files for the handshakes that follow; connections made before go on with what they
were made with. Files are watched by polling their inode, size and modification time
every ``ServerConfig.tls_watch_interval`` seconds (0 turns the watch off; SIGHUP still
reloads). Files that cannot be loaded (a key that does
not match the certificate, a file half written) leave the certificate in use in place,
with one ``tls.reload_failed`` error per broken set of files (docs/security.md).
"""

from __future__ import annotations

import asyncio
import ssl

import structlog

from coord.rpc.h2.tls import ServerTLS, client_context, files_stamp, reload_server
from coord.server.config import ServerConfig
from coord.server.transport import Transport

log = structlog.get_logger("coord.tls")



def dialer_context(peer: ServerTLS) -> ssl.SSLContext:
    """How a member dials its peers: its peer certificate, their CA."""
    return client_context(peer.trusted_ca_file, peer.cert_file, peer.key_file,
                          min_version=peer.min_version)


class TLSReloader:
    """Reloads a member's certificates (:meth:`reload`) and watches their files
    (:meth:`watch`)."""

    def __init__(self, config: ServerConfig, transport: Transport) -> None:
        self.config = config
        self.transport = transport

    @property
    def enabled(self) -> bool:
        return self.config.client_tls is not None or self.config.peer_tls is not None

    def reload(self, trigger: str, changed_only: bool = False) -> None:
        """Load the files again (``changed_only``: only a port whose files changed since
        they were last read)."""
        if not self.enabled:
            log.info("tls.reload_skipped", trigger=trigger, reason="no TLS configured")
            return
        for port, tls in (("client", self.config.client_tls), ("peer", self.config.peer_tls)):
            if tls is None:
                continue
            if changed_only and files_stamp(tls.files()) == tls.live.stamp:
                continue
            if reload_server(tls, trigger, port) and port == "peer":
                self.transport.set_peer_ssl(dialer_context(tls))

    async def watch(self) -> None:
        """Reload a port whenever its files change (runs until cancelled)."""
        interval = self.config.tls_watch_interval
        if not self.enabled or interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            self.reload("file change", changed_only=True)
