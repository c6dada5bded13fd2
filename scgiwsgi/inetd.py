"""One request per process: inetd, xinetd, systemd ``Accept=yes``, ``scgi-wsgi --inetd``.

The super-server accepts the connection and starts the program with the
connected socket as its standard input and output.  :func:`run_app` reads
one SCGI request from fd 0, answers on the same connection (fd 1) and ends
the process: 0 when a request was answered, 1 when none came (the peer
closed early, a malformed or truncated request, a timeout), each with an
error log line.  Nothing waits for an EOF that never comes: the header is
bounded by ``header_timeout`` and the body by CONTENT_LENGTH.

Strategy: the connection is taken over on a private descriptor, and fds 0,
1 and 2 that still refer to it are pointed elsewhere (fd 1 to stderr, fd 2
to ``/dev/null`` when classic inetd made stderr the socket too).  A stray
``print()`` in the application then cannot corrupt the response, and
closing the private descriptor really ends the connection.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import sys
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from .config import Config
from .demo import application as demo_application
from .errors import ConfigError
from .gateway import WSGIApp
from .handler import AccessLogger, ConnectionHandler
from .logs import AccessLog, configure_error_log

__all__ = ["ConnectionInfo", "run_app", "serve_connection"]

log = logging.getLogger("scgiwsgi.error")


class ConnectionInfo:
    """What the handler needs to know of the socket a connection came from."""

    def __init__(self, sock: socket.socket, fd: int) -> None:
        address: Any = sock.getsockname()
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            host, port = str(address[0]), str(address[1])
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            self.server_name, self.server_port = host, port
        else:
            shown = f"unix:{address or '(unnamed)'}"
            self.server_name, self.server_port = "localhost", "80"
        self.display = f"fd {fd} ({shown})"


class _Outcome:
    """An access logger that remembers whether a request was answered."""

    def __init__(self, inner: AccessLogger | None) -> None:
        self.inner = inner
        self.status: int | None = None

    def log(self, environ: dict[str, Any], status: int, size: int, seconds: float) -> None:
        # 0: the request ended before the application chose a status.
        self.status = status or None
        if self.inner is not None:
            self.inner.log(environ, status, size, seconds)


def serve_connection(
    app: WSGIApp | None = None, *, fd: int = 0, config: Config | None = None, **options: Any
) -> int | None:
    """Serve the one request on the connected socket ``fd``; return its status.

    Returns the HTTP status answered, or None when no request was answered
    (the reason is in the error log).  ``options`` are
    :class:`~scgiwsgi.Config` options (``max_body_size``,
    ``header_timeout``...).  Raises :class:`~scgiwsgi.errors.ConfigError`
    when ``fd`` is not a connected stream socket (or, for fd 0, when fd 1 is
    not the same connection): the process was not started by a
    super-server.
    """
    settings = (config or Config()).replace(**options) if options else (config or Config())
    if not logging.getLogger("scgiwsgi").handlers and not logging.getLogger().handlers:
        configure_error_log(settings.log_level)
    conn = _take_connection(fd)
    access_log = (
        AccessLog(settings.access_log, settings.access_log_format) if settings.access_log else None
    )
    outcome = _Outcome(access_log)
    handler = ConnectionHandler(
        _run_once(app if app is not None else demo_application),
        settings,
        multithread=False,
        multiprocess=True,
        access_log=outcome,
    )
    try:
        handler.handle(conn, ConnectionInfo(conn, fd))
    finally:
        if access_log is not None:
            access_log.close()
    return outcome.status


def run_app(
    app: WSGIApp | None = None, *, config: Config | None = None, **options: Any
) -> NoReturn:
    """Serve the request on fds 0/1 and exit: 0 if answered, 1 if not, 2 if misused.

    The entry point of a script started by inetd, xinetd or systemd
    (``Accept=yes``); ``config`` or ``options`` are
    :class:`~scgiwsgi.Config` settings.
    """
    try:
        status = serve_connection(app, config=config, **options)
    except ConfigError as exc:
        print(f"scgi-wsgi: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    if status is None:
        log.error("no request was answered on this connection; exiting with status 1")
        raise SystemExit(1)
    raise SystemExit(0)


def _run_once(app: WSGIApp) -> WSGIApp:
    def one_request(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["wsgi.run_once"] = True
        return app(environ, start_response)

    return one_request


def _take_connection(fd: int) -> socket.socket:
    identity = _socket_identity(fd)
    if fd == 0 and _identity_or_none(1) != identity:
        raise ConfigError(
            "--inetd: fd 1 is not the connection on fd 0; the answer must go back on the"
            " socket the request came from"
        )
    conn = socket.socket(fileno=os.dup(fd))
    if conn.type != socket.SOCK_STREAM:
        conn.close()
        raise ConfigError(f"--inetd: fd {fd} is not a stream socket")
    conn.setblocking(True)
    _release_std_fds(identity)
    return conn


def _socket_identity(fd: int) -> tuple[int, int]:
    try:
        info = os.fstat(fd)
    except OSError as exc:
        raise ConfigError(f"--inetd: fd {fd} is not open ({exc.strerror})") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError(
            f"--inetd: fd {fd} is not a socket; inetd, xinetd or systemd (Accept=yes) must"
            " start this program with the connection as its standard input"
        )
    return info.st_dev, info.st_ino


def _identity_or_none(fd: int) -> tuple[int, int] | None:
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _release_std_fds(identity: tuple[int, int]) -> None:
    stderr_is_conn = _identity_or_none(2) == identity
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in (0, 1, 2):
            if _identity_or_none(fd) != identity:
                continue
            target = 2 if fd == 1 and not stderr_is_conn else devnull
            os.dup2(target, fd)
    finally:
        os.close(devnull)
