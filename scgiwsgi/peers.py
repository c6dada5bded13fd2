"""Who may connect: the ``--allow`` list of networks, IPv4 and IPv6.

The SCGI port trusts what it hears (``REMOTE_ADDR``, ``REMOTE_USER``...), so
only the front end may reach it.  A TCP peer outside every allowed network
is closed at once; the refusals are logged at most once every few seconds so
a flood cannot fill the disk.  Unix socket peers are governed by the socket
file's mode and group instead, and are always accepted here.
"""

from __future__ import annotations

import _socket
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterable

__all__ = ["AllowList", "parse_networks"]

log = logging.getLogger("scgiwsgi.error")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_LOG_INTERVAL = 10.0


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """Parse CIDR strings (``10.0.0.0/8``, ``::1``, ``127.0.0.1``).

    Raises :class:`ValueError` naming the bad entry.
    """
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IPv4 or IPv6 network (CIDR)") from None
    return tuple(networks)


class AllowList:
    """Decides whether a TCP peer may talk to the server."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = parse_networks(networks)
        self._lock = threading.Lock()
        self._last_log = -_LOG_INTERVAL
        self._suppressed = 0

    def permits_address(self, host: str) -> bool:
        """True when ``host`` (an IP address string) is inside an allowed network."""
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def permits(self, sock: _socket.socket, peer: object) -> bool:
        """True for unix peers and allowed TCP peers; logs refusals (rate-limited)."""
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True
        try:
            host = str(sock.getpeername()[0])
        except OSError:
            return False
        if self.permits_address(host):
            return True
        self._log_refusal(peer)
        return False

    def _log_refusal(self, peer: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_log < _LOG_INTERVAL:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last_log = self._suppressed, 0, now
        more = f" ({suppressed} more refused since the last report)" if suppressed else ""
        log.warning("%s: refused: not in the --allow list%s", peer, more)
