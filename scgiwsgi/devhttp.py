"""``--http HOST:PORT``: a development HTTP front for the server's own SCGI socket.

SCGI needs a web server in front.  For development, ``scgi-wsgi APP --http
127.0.0.1:8000`` also starts a small HTTP/1.1 server that turns each
browser request into an SCGI request to the server's first listener, with
the package's own client (:mod:`scgiwsgi.client`), so the application is
browsable with nothing else installed.  It is for development only, and
says so in the log: it buffers whole requests and responses, has no limits
worth the name and no TLS.

The request goes out the way nginx's stock ``scgi_params`` would send it:
``REQUEST_URI`` is the raw, still percent-encoded target, from which the
server derives ``PATH_INFO`` (percent-decoded, per PEP 3333) exactly as
behind nginx.  Request headers become ``HTTP_*`` variables, repeated ones
merged, hop-by-hop ones and names with an underscore dropped (nginx's
default); a chunked body is de-chunked.  The status, the reason and the
headers of the answer are passed through; ``Content-Length`` is recomputed.
An unreachable server gives 502, one that does not answer in
:data:`SCGI_TIMEOUT` seconds 504.

Where it runs: with the in-process backends (``--threaded``, ``--single``),
in a thread of the server process.  With ``--fork`` the arbiter must stay
free of threads (it forks workers all the time), so the front runs in a
process of its own, forked before the arbiter starts; it ends when the
server ends or re-executes itself (``SIGHUP`` with ``--preload``), and the
new image starts a new one.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast
from urllib.parse import urlsplit

from . import __version__
from .client import Address, ResponseFormatError, SCGIResponse, request
from .errors import BindError, ConfigError
from .lifeline import wait_for_eof
from .sockets import BindSpec, Listener, bind, parse_bind

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "SCGI_TIMEOUT",
    "DevFront",
    "DevHTTPServer",
    "parse_http_address",
    "scgi_address",
    "start_dev_front",
]

log = logging.getLogger("scgiwsgi.devhttp")

SCGI_TIMEOUT = 300.0
"""Seconds one SCGI exchange may take (the application's run time included)."""
IDLE_TIMEOUT = 60.0
"""Seconds a browser connection may stay idle (or stall while sending)."""
_CLOSE_TIMEOUT = 5.0
_REBIND_TIMEOUT = 5.0
_SPOOL_MEMORY = 1024 * 1024  # larger request bodies go to a temporary file
_MAX_LINE = 8192
_MAX_TRAILERS = 100
_TOKEN = re.compile(r"[!#$%&'*+\-.^`|~0-9A-Za-z]+")  # no "_": see the module docstring
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_FOLD = re.compile(r"\r?\n[ \t]*")
_NOT_FORWARDED = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection"}
    | {"te", "trailer", "upgrade", "expect"}
)
_NOT_RELAYED = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection"}
    | {"te", "trailer", "upgrade", "proxy-authenticate"}
)


def parse_http_address(text: str) -> BindSpec:
    """Parse the ``--http`` address, ``HOST:PORT`` or ``[IPv6]:PORT``.

    Raises :class:`~scgiwsgi.errors.ConfigError` naming the option when
    ``text`` is anything else (a unix socket, an fd, garbage).
    """
    wrong = ConfigError(f"http: {text!r} is not HOST:PORT or [IPv6]:PORT (e.g. 127.0.0.1:8000)")
    try:
        spec = parse_bind(text)
    except ConfigError:
        raise wrong from None
    if spec.kind != "tcp":
        raise wrong
    return spec


def scgi_address(listener: Listener) -> Address:
    """The address a client connects to for ``listener`` (wildcards become loopback)."""
    sock = listener.sock
    name: Any = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        path = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        return f"unix:{path}"
    host, port = str(name[0]), int(name[1])
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, port


# -- the HTTP server ------------------------------------------------------------------


class DevHTTPServer(http.server.ThreadingHTTPServer):
    """An HTTP/1.1 server forwarding every request to the SCGI server at ``target``.

    It serves on ``listener`` (bound already; :meth:`server_close` closes
    it), one thread per browser connection.  Use ``serve_forever()`` and
    ``shutdown()`` as with any :mod:`socketserver` server, then
    :meth:`server_close` and :meth:`close_connections`.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(
        self, listener: Listener, target: Address, *, scgi_timeout: float = SCGI_TIMEOUT
    ) -> None:
        super().__init__(("", 0), _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener.sock
        self.listener = listener
        self.target = target
        self.scgi_timeout = scgi_timeout
        self.server_address = listener.sock.getsockname()
        self.port_text = listener.server_port
        self.url = f"http://{listener.display}/"
        self._lock = threading.Lock()
        self._connections: dict[threading.Thread, socket.socket] = {}

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a new daemon thread, remembered until it ends."""
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"scgiwsgi-devhttp-{client_address[1]}",
            daemon=True,
        )
        with self._lock:
            self._connections[thread] = request
        thread.start()

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._connections.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a failed connection: one line for a vanished browser, else a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.debug("connection from %s ended: %s", client_address[0], error)
        else:
            log.exception("error while serving %s", client_address[0])

    def server_close(self) -> None:
        """Stop listening (close the listener)."""
        super().server_close()
        self.listener.close()

    def close_connections(self, timeout: float = _CLOSE_TIMEOUT) -> bool:
        """End the open browser connections; True if their threads ended in ``timeout``.

        A thread waiting for the SCGI server finishes that exchange first;
        it is a daemon thread, so it never keeps the process alive.
        """
        with self._lock:
            connections = dict(self._connections)
        for sock in connections.values():
            with contextlib.suppress(OSError):  # already closed by its thread
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in connections:
            thread.join(max(deadline - time.monotonic(), 0.0))
        return not any(thread.is_alive() for thread in connections)


class _ClientError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"scgiwsgi-devhttp/{__version__}"
    timeout = IDLE_TIMEOUT
    server: DevHTTPServer

    def do_GET(self) -> None:
        self._forward()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s - %s", self.address_string(), format % args)

    def log_error(self, format: str, *args: Any) -> None:
        log.warning("%s - %s", self.address_string(), format % args)

    def _forward(self) -> None:
        try:
            body = self._read_body()
        except _ClientError as exc:
            self.send_error(exc.status, exc.message)
            return
        try:
            response = self._exchange(body)
        except _ClientError as exc:
            self.send_error(exc.status, exc.message)
            return
        finally:
            body.close()
        self._relay(response)

    def _exchange(self, body: BinaryIO) -> SCGIResponse:
        target = self.server.target
        try:
            return request(
                target,
                method=self.command,
                path=self._request_target(),
                headers=self._forwarded_headers(),
                environ=self._server_variables(),
                body=body,
                timeout=self.server.scgi_timeout,
            )
        except TimeoutError:
            log.error(
                "the SCGI server at %s did not answer in %ss", target, self.server.scgi_timeout
            )
            raise _ClientError(504, "The SCGI server did not answer in time") from None
        except ResponseFormatError as exc:
            log.error("invalid response from the SCGI server at %s: %s", target, exc)
            raise _ClientError(502, f"Invalid response from the SCGI server: {exc}") from None
        except ValueError as exc:
            raise _ClientError(400, str(exc)) from None
        except OSError as exc:
            log.error("cannot reach the SCGI server at %s: %s", target, exc)
            raise _ClientError(502, f"Cannot reach the SCGI server: {exc}") from None

    def _request_target(self) -> str:
        if self.path.startswith("/") or self.path == "*":
            return self.path
        parts = urlsplit(self.path)  # absolute form: http://host/path?query
        path = parts.path or "/"
        return f"{path}?{parts.query}" if parts.query else path

    def _forwarded_headers(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            if key in _NOT_FORWARDED or not _TOKEN.fullmatch(name):
                continue
            value = _FOLD.sub(" ", value).strip(" \t")
            if key in merged:
                value = merged[key] + ("; " if key == "cookie" else ", ") + value
            merged[key] = value
        return merged

    def _server_variables(self) -> dict[str, str]:
        return {
            "REMOTE_ADDR": str(self.client_address[0]),
            "REMOTE_PORT": str(self.client_address[1]),
            "SERVER_PROTOCOL": self.request_version,
            "SERVER_PORT": self.server.port_text,
            "SERVER_SOFTWARE": self.version_string(),
        }

    # -- the request body ------------------------------------------------------------

    def _read_body(self) -> BinaryIO:
        codings = self.headers.get_all("Transfer-Encoding") or []
        lengths = self.headers.get_all("Content-Length") or []
        # The caller closes it once the exchange is over.
        spool = cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY))  # noqa: SIM115
        try:
            if codings:
                self._check_chunked(codings, lengths)
                self._read_chunked(spool)
            elif lengths:
                self._copy(spool, _content_length(lengths))
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return spool

    def _check_chunked(self, codings: list[str], lengths: list[str]) -> None:
        # An error answer (send_error) always closes the connection.
        if lengths:
            raise _ClientError(400, "Both Transfer-Encoding and Content-Length")
        names = [item.strip().lower() for item in ",".join(codings).split(",")]
        if names != ["chunked"]:
            raise _ClientError(501, f"Transfer-Encoding {', '.join(codings)!r} is not supported")

    def _read_chunked(self, out: BinaryIO) -> None:
        while True:
            size_text = self._read_line().split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                raise _ClientError(400, "Invalid chunk size")
            size = int(size_text, 16)
            if size == 0:
                break
            self._copy(out, size)
            if self._read_line().strip():
                raise _ClientError(400, "A chunk does not end with CRLF")
        for _ in range(_MAX_TRAILERS):
            if not self._read_line().strip():
                return
        raise _ClientError(400, "Too many trailer lines")

    def _read_line(self) -> bytes:
        line = self.rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise _ClientError(400, "Chunk line too long")
        if not line:
            raise _ClientError(400, "The request body ended early")
        return line

    def _copy(self, out: BinaryIO, length: int) -> None:
        remaining = length
        while remaining > 0:
            data = self.rfile.read(min(remaining, 64 * 1024))
            if not data:
                raise _ClientError(400, "The request body ended early")
            out.write(data)
            remaining -= len(data)

    # -- the response ------------------------------------------------------------------

    def _relay(self, response: SCGIResponse) -> None:
        status = response.status
        self.send_response_only(status, response.reason)
        present = set()
        app_length: str | None = None
        for name, value in response.headers:
            key = name.lower()
            if key == "content-length":
                app_length = value
            elif key not in _NOT_RELAYED:
                present.add(key)
                self.send_header(name, value)
        if "server" not in present:
            self.send_header("Server", self.version_string())
        if "date" not in present:
            self.send_header("Date", self.date_time_string())
        bodiless = status < 200 or status in (204, 304)
        length = app_length if self.command == "HEAD" else str(len(response.body))
        if not bodiless and length is not None:
            self.send_header("Content-Length", length)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not bodiless and self.command != "HEAD":
            self.wfile.write(response.body)
        self.log_request(status, len(response.body))


def _content_length(values: list[str]) -> int:
    distinct = {value.strip() for value in ",".join(values).split(",")}
    if len(distinct) != 1:
        raise _ClientError(400, "Conflicting Content-Length values")
    text = distinct.pop()
    if not (text.isascii() and text.isdigit()):
        raise _ClientError(400, f"Invalid Content-Length {text!r}")
    return int(text)


# -- starting and stopping ----------------------------------------------------------------


class DevFront(Protocol):
    """A running development front: where it listens, and how to stop it."""

    url: str
    """``http://HOST:PORT/`` with the real port."""

    def close(self) -> None:
        """Stop serving and release the port; waits a few seconds at most."""


def start_dev_front(
    config: Config, listeners: Sequence[Listener], *, rebinding: bool = False
) -> DevFront | None:
    """Start the front of ``config.http`` for ``listeners[0]``; None when unset.

    With the ``fork`` backend the front runs in a forked process (call this
    before the arbiter starts), otherwise in a thread.  ``rebinding`` (a
    re-executed server) retries a busy port for a few seconds while the
    previous front lets go of it.  Logs the front's address and that it is
    for development only.  Raises :class:`~scgiwsgi.errors.ConfigError` for
    a bad address and :class:`~scgiwsgi.errors.BindError` when it cannot be
    bound; the caller should report it and stop.
    """
    if config.http is None:
        return None
    if not listeners:
        raise ConfigError("http: the server has no listening socket to forward to")
    spec = parse_http_address(config.http)
    listener = _bind_http(spec, _REBIND_TIMEOUT if rebinding else 0.0)
    target = scgi_address(listeners[0])
    server = DevHTTPServer(listener, target)
    log.warning(
        "development HTTP front on %s -> SCGI %s: for development only, never in "
        "production (put nginx, Apache httpd or lighttpd in front instead)",
        server.url,
        listeners[0].display,
    )
    if config.backend == "fork":
        return _ProcessFront(server, listeners)
    return _ThreadFront(server)


def _bind_http(spec: BindSpec, retry_for: float) -> Listener:
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return bind(spec)
        except BindError as exc:
            cause = exc.__cause__
            busy = isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE
            if not busy or time.monotonic() >= deadline:
                raise BindError(f"http: {exc}") from exc
        time.sleep(0.1)


class _ThreadFront:
    def __init__(self, server: DevHTTPServer) -> None:
        self.server = server
        self.url = server.url
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.5,), name="scgiwsgi-devhttp", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self._thread.join(_CLOSE_TIMEOUT)
        self.server.server_close()
        self.server.close_connections(_CLOSE_TIMEOUT)


# Write ends of the pipes that keep front processes alive.  Only the process
# that started a front may hold one: a forked child (a worker, the front
# itself) closes them all at once, so the front sees EOF exactly when the
# server process exits or replaces itself with exec (the pipe is close-on-exec).
_alive_writers: set[int] = set()
_at_fork_registered = False


def _close_alive_writers_in_child() -> None:
    for fd in _alive_writers:
        with contextlib.suppress(OSError):
            os.close(fd)
    _alive_writers.clear()


class _ProcessFront:
    def __init__(self, server: DevHTTPServer, scgi_listeners: Sequence[Listener]) -> None:
        global _at_fork_registered
        if not _at_fork_registered:
            os.register_at_fork(after_in_child=_close_alive_writers_in_child)
            _at_fork_registered = True
        self.url = server.url
        alive_r, self._alive_w = os.pipe()
        _alive_writers.add(self._alive_w)
        self.pid = os.fork()
        if self.pid == 0:
            status = 70
            try:
                status = _run_front_process(server, alive_r, scgi_listeners)
            finally:
                os._exit(status)
        os.close(alive_r)
        server.listener.sock.close()  # the front process has its own copy

    def close(self) -> None:
        _alive_writers.discard(self._alive_w)
        os.close(self._alive_w)
        deadline = time.monotonic() + _CLOSE_TIMEOUT
        while not _reaped(self.pid):
            if time.monotonic() >= deadline:
                log.warning(
                    "the development HTTP front (pid %d) did not stop: killing it", self.pid
                )
                os.kill(self.pid, signal.SIGKILL)
                deadline = time.monotonic() + _CLOSE_TIMEOUT
            time.sleep(0.02)


def _reaped(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # reaped by someone else (the arbiter reaps every child)
    return done == pid


def _run_front_process(
    server: DevHTTPServer, alive_fd: int, scgi_listeners: Sequence[Listener]
) -> int:
    # Ctrl-C reaches the whole process group: the server decides, and its
    # exit closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    for listener in scgi_listeners:
        listener.sock.close()  # the file of a unix socket stays: the server owns it
    watcher = threading.Thread(
        target=_shutdown_on_eof, args=(alive_fd, server), name="scgiwsgi-devhttp-alive", daemon=True
    )
    watcher.start()
    server.serve_forever(0.5)
    server.server_close()
    server.close_connections(_CLOSE_TIMEOUT)
    return 0


def _shutdown_on_eof(fd: int, server: DevHTTPServer) -> None:
    wait_for_eof(fd)
    server.shutdown()
