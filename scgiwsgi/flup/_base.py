"""What both flup faces share: flup's arguments -> scgiwsgi options, and ``run()``."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import FrameType
from typing import Any, ClassVar

from ..config import LOG_LEVELS
from ..errors import BindError, ConfigError
from ..gateway import WSGIApp
from ..server import WSGIServer
from . import NoDefault

__all__ = [
    "AllowList",
    "FlupServer",
    "bind_address",
    "log_level",
    "script_name",
    "socket_mode",
]

log = logging.getLogger("scgiwsgi.error")

BindAddress = tuple[Any, ...] | str
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def bind_address(address: BindAddress) -> str:
    """flup's ``bindAddress`` as an scgiwsgi address.

    A string is a unix socket path; ``(host, port)`` is TCP, where ``""``
    means every IPv4 interface (every IPv6 one for flup's longer IPv6
    tuples).  Raises ConfigError for anything else.
    """
    if isinstance(address, str):
        return f"unix:{address}"
    if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[0], str):
        host, port = address[0], address[1]
        if not host:
            host = "::" if len(address) > 2 else "0.0.0.0"
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    raise ConfigError(f"bindAddress must be (host, port) or a unix socket path, not {address!r}")


def socket_mode(umask: int | None) -> int:
    """The mode flup's unix socket got: ``0o777`` minus the umask (the process's if None)."""
    if umask is None:
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o777 & ~umask


def script_name(value: object) -> str:
    """flup's ``scriptName`` as scgiwsgi's ``script_name``.

    ``NoDefault`` and None leave the paths to the front end's variables (an
    empty mount prefix); a trailing slash is dropped.
    """
    if value is None or value is NoDefault:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"scriptName must be a string, not {value!r}")
    return value.rstrip("/")


def log_level(level: int) -> str:
    """A ``logging`` level number as the nearest scgiwsgi level name at or below it."""
    chosen = LOG_LEVELS[0]
    for name in LOG_LEVELS:
        if logging.getLevelName(name.upper()) <= level:
            chosen = name
    return chosen


class AllowList:
    """flup's ``allowedServers``: the front ends allowed to connect.

    Entries are IPv4 or IPv6 addresses, or networks (``10.0.0.0/8``); an
    IPv4-mapped IPv6 peer (``::ffff:127.0.0.1``) matches its IPv4 entry.
    Unix socket peers are always allowed.  Raises ConfigError for an entry
    that is not an address.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        if isinstance(entries, str):
            entries = [entries]
        self.networks: list[Network] = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ConfigError(f"allowedServers: {entry!r} is not an IP address") from None

    def allows(self, peer: Any) -> bool:
        """Whether a peer address as ``accept()`` returns it may connect."""
        if not isinstance(peer, tuple) or not peer or not peer[0]:
            return True  # a unix socket peer
        address = ipaddress.ip_address(peer[0].split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


class _AllowListSocket(socket.socket):
    """A listening socket whose ``accept()`` closes connections from other peers."""

    allow_list: AllowList

    @classmethod
    def adopt(cls, sock: socket.socket, allow_list: AllowList) -> _AllowListSocket:
        new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        new.setblocking(False)
        new.allow_list = allow_list
        return new

    def accept(self) -> tuple[socket.socket, Any]:
        conn, peer = super().accept()
        if self.allow_list.allows(peer):
            return conn, peer
        log.warning("connection from %s refused: not in allowedServers", peer[0])
        conn.close()
        # To the accept loop this is "nothing to accept": it goes on waiting.
        raise BlockingIOError(errno.EAGAIN, "peer not allowed")


def _extend_environ(app: WSGIApp, extra: Mapping[str, Any], multiprocess: bool) -> WSGIApp:
    def with_extra(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ.update(extra)
        if multiprocess:
            environ["wsgi.multiprocess"] = True
        return app(environ, start_response)

    return with_extra


def _debug_pages(app: WSGIApp) -> WSGIApp:
    """flup's ``debug=True``: a failure before the head went out shows its traceback."""

    def debugging(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        result: Iterable[bytes] | None = None
        try:
            result = app(environ, start_response)
            yield from result
        except Exception:
            # Re-raises when the head is already out: the server then aborts.
            start_response(
                "500 Internal Server Error",
                [("Content-Type", "text/plain; charset=utf-8")],
                sys.exc_info(),
            )
            log.exception("application failed; answered 500 with its traceback (debug=True)")
            yield traceback.format_exc().encode("utf-8", "replace")
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    return debugging


class FlupServer:
    """flup's ``WSGIServer``: build with flup's arguments, then :meth:`run`.

    Raises ConfigError (or TypeError for an argument flup does not know)
    from the constructor.
    """

    backend: ClassVar[str]

    def __init__(
        self,
        application: WSGIApp,
        *,
        scriptName: object,
        environ: Mapping[str, Any] | None,
        bindAddress: BindAddress,
        umask: int | None,
        allowedServers: Sequence[str] | None,
        loggingLevel: int,
        debug: bool,
        multiprocess: bool,
        options: dict[str, Any],
    ) -> None:
        self.application = application
        self.scriptName = scriptName
        self.environ = dict(environ or {})
        self.multiprocess = multiprocess
        self.debug = debug
        self.logger = log
        self.allow_list = AllowList(allowedServers) if allowedServers is not None else None
        app = application
        if self.environ or multiprocess:
            app = _extend_environ(app, self.environ, multiprocess)
        if debug:
            app = _debug_pages(app)
        address = bind_address(bindAddress)
        if address.startswith("unix:"):
            options["socket_mode"] = socket_mode(umask)
        self.server = WSGIServer(
            app,
            bind=address,
            backend=self.backend,
            app_name=_describe(application),
            script_name=script_name(scriptName),
            log_level=log_level(loggingLevel),
            **options,
        )
        self._hup_received = False

    def run(self) -> bool:
        """Serve until SIGHUP (returns True), SIGTERM or SIGINT (returns False).

        In-flight requests finish first.  As in flup, an address that cannot
        be bound is logged and gives False.
        """
        self._hup_received = False
        try:
            self.server.bind()
        except BindError as exc:
            log.error("Failed to bind socket (%s), exiting", exc)
            return False
        if self.allow_list is not None:
            for listener in self.server.listeners:
                listener.sock = _AllowListSocket.adopt(listener.sock, self.allow_list)
        with self._sighup_stops():
            self.server.serve_forever()
        return self._hup_received

    @contextlib.contextmanager
    def _sighup_stops(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_hup(signum: int, frame: FrameType | None) -> None:
            log.info("received SIGHUP: stopping; run() returns True for a restart")
            self._hup_received = True
            self.server.shutdown()

        previous = signal.signal(signal.SIGHUP, on_hup)
        try:
            yield
        finally:
            signal.signal(signal.SIGHUP, previous)


def _describe(app: object) -> str:
    module = getattr(app, "__module__", None) or "?"
    name = getattr(app, "__qualname__", None) or type(app).__qualname__
    return f"{module}:{name}"
