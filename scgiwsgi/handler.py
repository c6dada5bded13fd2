"""The one place where the SCGI protocol meets a socket.

:class:`ConnectionHandler` serves exactly one request on one accepted
connection: it reads the header netstring within ``header_timeout``, builds
the environ, runs the application through :mod:`scgiwsgi.gateway`, writes
the response and closes the connection in the way that keeps the front end's
view right (a clean close, or a reset for a broken response).
"""

from __future__ import annotations

import _socket
import contextlib
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

from .config import Config
from .environ import ServerInfo, environ_from_variables
from .errors import IncompleteRequest, ProtocolError
from .gateway import Outcome, WSGIApp, run_application
from .offload import OffloadFiles, parse_offload
from .peers import AllowList
from .protocol import (
    NEED_DATA,
    BodyData,
    ConnectionClosed,
    EndOfRequest,
    RequestHead,
    RequestParser,
    encode_error_response,
)
from .redirects import AbsoluteRedirects
from .response import ClientDisconnected, FileWrapper, Response
from .wsgi_input import BodyInput, all_in_hand, empty_input

__all__ = ["AccessLogger", "ConnectionHandler", "ListenerInfo", "PeerName", "Pending"]

log = logging.getLogger("scgiwsgi.error")

_RECV_SIZE = 64 * 1024
_HEAD_RECV_SIZE = _RECV_SIZE + 8 * 1024
"""Bytes asked for by a header read.

Strategy: a front end sends the body right behind the header, so one read
of a head of up to 8 KiB takes a body of up to 64 KiB with it (most form
posts and JSON bodies): one system call, and the body is copied once, when
it is sliced out of that buffer.  A larger body streams through the body
reads.  Only the bytes that arrived are kept: the buffer shrinks to them.
"""
_DONTWAIT = socket.MSG_DONTWAIT
_TIMEOUTS_INHERITED = sys.platform.startswith("linux")
"""Whether accepted TCP connections inherit SO_RCVTIMEO/SO_SNDTIMEO (Linux)."""
MIN_BODY_RATE = 64 * 1024
"""Bytes per second a request body must average, after a grace of body_timeout."""
_ERROR_DRAIN_BYTES = 1024 * 1024
_ERROR_DRAIN_SECONDS = 1.0
_ABORT = Outcome.ABORT
"""A module global: reading ``Outcome.ABORT`` per request costs a metaclass lookup."""


class ListenerInfo(Protocol):
    """What the handler needs to know of the socket a connection came from."""

    display: str
    server_name: str
    server_port: str


class AccessLogger(Protocol):
    """Writes one access log line per request."""

    def log(self, environ: dict[str, Any], status: int, size: int, seconds: float) -> None: ...


class Pending:
    """An accepted connection: its header arriving, then its request served.

    ``timeouts_set`` is True when the socket already carries the kernel's
    send and receive timeouts (inherited from its listening socket).
    ``peer`` names the peer in log lines; ``str(pending)`` is that name too.
    """

    __slots__ = (
        "_peer",
        "deadline",
        "draining",
        "head",
        "listener",
        "parser",
        "sock",
        "started",
        "timeouts_set",
    )

    def __init__(
        self,
        sock: _socket.socket,
        listener: ListenerInfo,
        parser: RequestParser,
        started: float,
        deadline: float,
        timeouts_set: bool = False,
    ) -> None:
        self.sock = sock
        self.listener = listener
        self.parser = parser
        self.started = started
        self.deadline = deadline
        self.timeouts_set = timeouts_set
        self.head: RequestHead | None = None
        self.draining = False
        self._peer: PeerName | None = None

    @property
    def peer(self) -> PeerName:
        """The peer's name for log lines, made on first use (most requests log nothing)."""
        if self._peer is None:
            self._peer = PeerName(self.sock, self.listener)
        return self._peer

    def __str__(self) -> str:
        return str(self.peer)

    def send_file(self, file: IO[bytes], offset: int, count: int) -> int:
        """``sendfile`` on this connection, for :class:`~scgiwsgi.response.Response`.

        A bound method costs less per request than a ``functools.partial``.
        """
        return _send_file(self.sock, file, offset, count)


class ConnectionHandler:
    """Serves one request per accepted connection; safe to share across threads.

    ``multithread`` and ``multiprocess`` are the backend's flags and go to the
    environ unchanged.  ``on_request``, if given, is called with each environ
    before the application runs, and ``on_finished``, if given, at the end of
    every :meth:`serve` (the prefork worker notes what it serves, and counts
    the requests).
    """

    def __init__(
        self,
        app: WSGIApp,
        config: Config,
        *,
        multithread: bool,
        multiprocess: bool,
        access_log: AccessLogger | None = None,
        on_request: Callable[[dict[str, Any]], None] | None = None,
        on_finished: Callable[[], None] | None = None,
    ) -> None:
        if config.offload is not None:
            app = OffloadFiles(app, parse_offload(config.offload))
        self.app: WSGIApp = AbsoluteRedirects(app) if config.absolute_redirects else app
        self.on_request = on_request
        self.on_finished = on_finished
        self.config = config
        self.multithread = multithread
        self.multiprocess = multiprocess
        self.access_log = access_log
        self.allow = AllowList(config.allow) if config.allow else None
        self._servers: dict[str, ServerInfo] = {}
        self._inheriting: dict[int, bool] = {}
        self._kernel_timeout = _timeval(config.body_timeout)
        self._new_parser = RequestParser.factory(config.max_header_size, config.max_body_size)

    def handle(self, sock: _socket.socket, listener: ListenerInfo) -> None:
        """Serve the request on ``sock`` and close it; never raises ``Exception``.

        Blocking from the first byte: for a connection nobody else watches
        (``--inetd``).  Backends use :meth:`open`, :meth:`advance` and
        :meth:`serve` so that a slow header never holds a thread.
        """
        started = time.monotonic()
        connection = Pending(
            sock, listener, self._new_parser(), started, started + self.config.header_timeout
        )
        try:
            connection.head = self._read_head(connection)
            if connection.head is not None:
                sock.settimeout(None)
        except Exception:
            log.exception("%s: unexpected error while reading the request header", connection)
            _abort(sock)
            connection.head = None
        if connection.head is None:
            sock.close()
            return
        self.serve(connection)

    # -- the non-blocking intake of the header ------------------------------------------

    def open(self, sock: _socket.socket, listener: ListenerInfo) -> Pending | None:
        """Take a freshly accepted connection; None if it was refused and closed.

        The socket stays in blocking mode (header reads pass ``MSG_DONTWAIT``);
        call :meth:`advance` when it is readable and :meth:`expire` once
        ``pending.deadline`` has passed.
        """
        if self.allow is not None and not self.allow.permits(sock, PeerName(sock, listener)):
            sock.close()
            return None
        if sock.gettimeout() is not None:
            sock.settimeout(None)  # socket.setdefaulttimeout() was called
        inherited = self._inheriting.get(id(listener))
        if inherited is None:
            # This connection was accepted before its listener had them.
            self._inheriting[id(listener)] = self._prepare_listener(listener)
            inherited = False
        now = time.monotonic()
        return Pending(
            sock,
            listener,
            self._new_parser(),
            now,
            now + self.config.header_timeout,
            inherited,
        )

    def _prepare_listener(self, listener: ListenerInfo) -> bool:
        # Strategy: CPython polls before every operation on a socket with a
        # timeout, and switching a socket's mode is an ioctl.  Served
        # connections are blocking sockets with the kernel's SO_RCVTIMEO and
        # SO_SNDTIMEO instead; Linux TCP connections inherit those from
        # their listening socket, so setting them there once costs nothing
        # per request.  Other sockets get them per connection in serve().
        listen_sock = getattr(listener, "sock", None)
        inherits = False
        if isinstance(listen_sock, socket.socket) and _TIMEOUTS_INHERITED:
            try:
                self._set_kernel_timeouts(listen_sock)
                inherits = listen_sock.family in (socket.AF_INET, socket.AF_INET6)
            except OSError as exc:
                log.debug("kernel timeouts not set on %s: %s", listener.display, exc)
        return inherits

    def _set_kernel_timeouts(self, sock: _socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self._kernel_timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self._kernel_timeout)

    def advance(self, pending: Pending) -> bool | None:
        """Read what the socket has; True when the head is complete.

        False means "wait for more" (the deadline may have moved); None means
        the connection was closed here (peer gone, or a rejected request
        whose error answer was sent and whose input was drained).
        """
        parser = pending.parser
        try:
            while True:
                try:
                    data = pending.sock.recv(_HEAD_RECV_SIZE, _DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    return False
                except OSError as exc:
                    log.info(
                        "%s: connection failed before the request header: %s", pending.peer, exc
                    )
                    pending.sock.close()
                    return None
                if pending.draining:
                    if not data:
                        pending.sock.close()
                        return None
                    continue
                parser.receive_data(data)
                try:
                    event = parser.next_event()
                except ProtocolError as exc:
                    _reject_nonblocking(pending, exc)
                    continue
                if type(event) is RequestHead:
                    pending.head = event
                    return True
                if isinstance(event, ConnectionClosed) or not data:
                    pending.sock.close()
                    return None
        except Exception:
            log.exception("%s: unexpected error while reading the request header", pending.peer)
            pending.sock.close()
            return None

    def expire(self, pending: Pending) -> None:
        """Close a connection whose header (or drain) time ran out."""
        if not pending.draining:
            log.warning(
                "%s: no complete request header within %ss; connection closed",
                pending.peer,
                self.config.header_timeout,
            )
        pending.sock.close()

    # -- serving ----------------------------------------------------------------------

    def serve(self, pending: Pending) -> None:
        """Serve a connection whose head is complete, and close it (blocking)."""
        sock = pending.sock
        head = pending.head
        try:
            if head is None:
                raise RuntimeError("serve() needs a complete request head")
            # The socket is blocking, with the kernel timeouts of body_timeout.
            if not pending.timeouts_set:
                self._set_kernel_timeouts(sock)
            length = head.content_length
            # Keep our own reference: the app or a middleware may replace
            # environ["wsgi.input"] with a wrapper that lacks BodyInput's API.
            body = self._body_input(pending, length) if length else empty_input()
            environ = environ_from_variables(
                head.variables,
                server=self._servers.get(pending.listener.display)
                or self._new_server_info(pending.listener),
                wsgi_input=body,
                wsgi_errors=sys.stderr,
                file_wrapper=FileWrapper,
            )
            if self.on_request is not None:
                self.on_request(environ)
            is_head = environ["REQUEST_METHOD"] == "HEAD"
            response = Response(sock.sendall, pending.send_file, is_head)
            outcome = run_application(self.app, environ, response)
            if self.access_log is not None:
                seconds = time.monotonic() - pending.started
                _log_access(self.access_log, environ, response, seconds, pending)
            if outcome is _ABORT:
                _abort(sock)
                return
            # Strategy: closing a socket with unread input makes the kernel
            # send a reset, and a front end still sending the body would then
            # report an error instead of our response.  Half-close first, then
            # read the rest of the body (bounded by CONTENT_LENGTH and the
            # body timeouts) before closing.  The half-close also ends the
            # response when another process holds a copy of the descriptor
            # (--inetd's fds 0 and 1, a child the application forked), where
            # close() alone would send nothing.
            try:
                sock.shutdown(socket.SHUT_WR)
                if length and body.unpulled:
                    body.discard()
            except (OSError, ClientDisconnected):
                pass
        except Exception:
            log.exception("%s: unexpected error while serving the connection", pending.peer)
            _abort(sock)
        finally:
            sock.close()
            if self.on_finished is not None:
                self.on_finished()

    def _body_input(self, connection: Pending, length: int) -> BodyInput:
        """``wsgi.input`` for a body of ``length`` bytes, from what the head's read brought."""
        # Strategy: the parser holds whatever body came with the head (all
        # of a body of up to 64 KiB, usually); taking it now costs no I/O,
        # and a body that is all there needs no reader of the socket.
        parser = connection.parser
        received = parser.take_body()
        if not parser.body_remaining:
            return BodyInput(all_in_hand, length, received)
        reader = _BodyReader(connection.sock, parser, self.config.body_timeout, length)
        return BodyInput(reader.read_chunk, length, received)

    def _read_head(self, connection: Pending) -> RequestHead | None:
        try:
            return _receive_head(connection.sock, connection.parser, self.config.header_timeout)
        except ProtocolError as exc:
            _reject(connection, exc)
        except TimeoutError:
            log.warning(
                "%s: no complete request header within %ss; connection closed",
                connection,
                self.config.header_timeout,
            )
        except OSError as exc:
            log.info("%s: connection failed while reading the request header: %s", connection, exc)
        return None

    def _new_server_info(self, listener: ListenerInfo) -> ServerInfo:
        """The ServerInfo of a listener not seen before, kept for its next requests."""
        info = ServerInfo(
            server_name=listener.server_name,
            server_port=listener.server_port,
            multithread=self.multithread,
            multiprocess=self.multiprocess,
            script_name=self.config.script_name,
        )
        self._servers[listener.display] = info
        return info


def _log_access(
    access_log: AccessLogger,
    environ: dict[str, Any],
    response: Response,
    seconds: float,
    peer: Pending,
) -> None:
    # A log that cannot be written (disk full, or closed by a server that
    # stopped while this request ran past graceful_timeout) must not
    # turn a complete response into an aborted one.
    try:
        access_log.log(environ, response.status_code, response.body_bytes, seconds)
    except (OSError, ValueError) as exc:
        log.warning("%s: access log line not written: %s", peer, exc)


def _receive_head(
    sock: _socket.socket, parser: RequestParser, timeout: float
) -> RequestHead | None:
    deadline = time.monotonic() + timeout
    while True:
        event = parser.next_event()
        if isinstance(event, RequestHead):
            return event
        if isinstance(event, ConnectionClosed):
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("header timeout")
        sock.settimeout(remaining)
        parser.receive_data(sock.recv(_HEAD_RECV_SIZE))


class _BodyReader:
    """Pulls body bytes from the socket through the parser.

    Strategy: a peer gets ``timeout`` seconds between two reads, and the
    whole body must arrive within ``timeout`` plus one second per
    MIN_BODY_RATE bytes: a peer that trickles a byte a second is cut off
    instead of holding a worker until CONTENT_LENGTH bytes came.
    """

    def __init__(
        self, sock: _socket.socket, parser: RequestParser, timeout: float, length: int
    ) -> None:
        self._sock = sock
        self._parser = parser
        self._leftover = b""
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout + length / MIN_BODY_RATE

    def read_chunk(self, size: int) -> bytes:
        data = self._leftover or self._next_data()
        self._leftover = data[size:]
        return data[:size]

    def _next_data(self) -> bytes:
        while True:
            try:
                event = self._parser.next_event()
            except IncompleteRequest as exc:
                raise ClientDisconnected(exc.reason) from None
            if isinstance(event, BodyData):
                return event.data
            if isinstance(event, EndOfRequest):
                return b""
            if event is not NEED_DATA:
                return b""
            want = min(max(self._parser.body_remaining, 1), _RECV_SIZE)
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise ClientDisconnected(
                    f"request body slower than {MIN_BODY_RATE // 1024} KiB/s; connection closed"
                )
            # Shorten the socket timeout only near the deadline, and put it
            # back: response sends rely on the normal timeout.
            short = left < self._timeout
            try:
                if short:
                    _set_receive_timeout(self._sock, left)
                self._parser.receive_data(self._sock.recv(want))
            except (TimeoutError, BlockingIOError):
                if time.monotonic() >= self._deadline:
                    raise ClientDisconnected(
                        f"request body slower than {MIN_BODY_RATE // 1024} KiB/s; connection closed"
                    ) from None
                raise ClientDisconnected("timed out waiting for the request body") from None
            except OSError as exc:
                raise ClientDisconnected(f"connection lost while reading the body: {exc}") from None
            finally:
                if short:
                    with contextlib.suppress(OSError):
                        _set_receive_timeout(self._sock, self._timeout)


def _set_receive_timeout(sock: _socket.socket, seconds: float) -> None:
    # The socket is blocking while a request is served (open() and handle()
    # see to it; sends never switch it to CPython's timeout mode), so the
    # kernel's SO_RCVTIMEO is the timeout of every read.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))


def _timeval(seconds: float) -> bytes:
    """``struct timeval`` for SO_RCVTIMEO/SO_SNDTIMEO; never 0, which means forever."""
    micros = max(int(seconds * 1_000_000), 1)
    return struct.pack("@ll", micros // 1_000_000, micros % 1_000_000)


def _send_file(sock: _socket.socket, file: IO[bytes], offset: int, count: int) -> int:
    """``sendfile`` for :class:`Response` (which turns OSError into ClientDisconnected).

    ``os.sendfile`` on the blocking socket: the kernel's send timeout bounds
    every wait (an ``EAGAIN`` with nothing sent is a timeout).  Where the
    kernel cannot ``sendfile`` this file, the bytes are read and sent.
    Leaves the file's position after the bytes sent, as ``socket.sendfile``.
    """
    out, source = sock.fileno(), file.fileno()
    sent = 0
    try:
        while sent < count:
            try:
                done = os.sendfile(out, source, offset + sent, count - sent)
            except OSError as exc:
                if sent or isinstance(exc, (BlockingIOError, TimeoutError)):
                    raise
                return _read_and_send(sock, file, offset, count)
            if done == 0:
                break  # the file is shorter than it was
            sent += done
    finally:
        if sent:
            file.seek(offset + sent)
    return sent


def _read_and_send(sock: _socket.socket, file: IO[bytes], offset: int, count: int) -> int:
    file.seek(offset)
    sent = 0
    while sent < count:
        data = file.read(min(count - sent, _RECV_SIZE))
        if not data:
            break
        sock.sendall(data)
        sent += len(data)
    return sent


def _reject(connection: Pending, exc: ProtocolError) -> None:
    log.warning("%s: rejected request (%d): %s", connection, exc.status_hint, exc.reason)
    sock = connection.sock
    try:
        sock.settimeout(_ERROR_DRAIN_SECONDS)
        sock.sendall(encode_error_response(exc.status_hint, exc.reason))
        sock.shutdown(socket.SHUT_WR)
        _drain(sock, _ERROR_DRAIN_BYTES, _ERROR_DRAIN_SECONDS)
    except OSError:
        pass


def _reject_nonblocking(pending: Pending, exc: ProtocolError) -> None:
    """Answer a bad request without blocking, then drain its input briefly."""
    log.warning("%s: rejected request (%d): %s", pending.peer, exc.status_hint, exc.reason)
    pending.draining = True
    pending.deadline = time.monotonic() + _ERROR_DRAIN_SECONDS
    try:
        # A short answer always fits in an empty socket buffer.
        pending.sock.send(encode_error_response(exc.status_hint, exc.reason), _DONTWAIT)
        pending.sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _drain(sock: _socket.socket, limit: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while limit > 0:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        sock.settimeout(remaining)
        data = sock.recv(min(limit, _RECV_SIZE))
        if not data:
            return
        limit -= len(data)


def _abort(sock: _socket.socket) -> None:
    """Close with a TCP reset so the front end sees a failed response."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class PeerName:
    """The peer of a connection for log lines, looked up only when one is written.

    Strategy: ``getpeername`` costs a system call per request, and the name
    is only needed when something is logged: ``%s`` formatting calls
    :meth:`__str__` when a record is emitted.
    """

    __slots__ = ("_listener", "_name", "_sock")

    def __init__(self, sock: _socket.socket, listener: ListenerInfo) -> None:
        self._sock = sock
        self._listener = listener
        self._name: str | None = None

    def __str__(self) -> str:
        if self._name is None:
            self._name = _peer_name(self._sock, self._listener)
        return self._name


def _peer_name(sock: _socket.socket, listener: ListenerInfo) -> str:
    try:
        address = sock.getpeername()
    except OSError:
        return listener.display
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return listener.display
