"""Listening sockets: parse bind addresses, bind TCP and unix sockets, adopt fds.

Four address forms are understood (see :func:`parse_bind`):

* ``HOST:PORT`` -- an IPv4 address or a host name, resolved at bind time;
* ``[IPv6]:PORT`` -- an IPv6 literal in brackets (the socket is IPv6-only);
* ``unix:/path`` -- a unix socket file, relative paths kept as given;
* ``fd://N`` -- a listening socket inherited from the parent process.

Every listening socket is non-blocking, so a selector loop that sees it
readable never blocks in ``accept()`` when another process took the
connection first.  Connections returned by ``accept()`` are blocking (CPython
on Linux does not pass ``O_NONBLOCK`` on to them); handlers set the timeout
they want.

Unix socket files are handled with care: a file that is not a socket is never
removed, a socket file that still answers is never taken over, and
:meth:`Listener.close` removes only the very socket file this server created.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import re
import socket
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from .errors import BindError, ConfigError

__all__ = ["BindKind", "BindSpec", "Listener", "bind", "bind_all", "parse_bind"]

BindKind = Literal["tcp", "unix", "fd"]

_EXPECTED = "expected HOST:PORT, [IPv6]:PORT, unix:/path or fd://N"
_DIGITS = re.compile(r"[0-9]+")
_HOSTNAME = re.compile(r"[A-Za-z0-9_.-]+")
_BRACKETED = re.compile(r"\[([^\[\]]*)\]:(.*)")
_PROBE_TIMEOUT = 1.0
_DEFER_ACCEPT: int | None = getattr(socket, "TCP_DEFER_ACCEPT", None)
"""Linux's socket option; None where the platform has none."""
# SERVER_NAME / SERVER_PORT fallbacks for unix sockets, which have neither.
_UNIX_SERVER_NAME = "localhost"
_UNIX_SERVER_PORT = "80"

_ERRNO_REASONS = {
    errno.EADDRINUSE: "address already in use",
    errno.EADDRNOTAVAIL: "address not available",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EAFNOSUPPORT: "address family not supported (is IPv6 disabled?)",
    errno.EBADF: "bad file descriptor",
    errno.ENOENT: "no such file or directory",
    errno.EROFS: "read-only file system",
}


@dataclass(frozen=True)
class BindSpec:
    """A parsed listening address; ``str()`` gives its canonical form.

    Only the fields of ``kind`` are meaningful: ``host`` and ``port`` for
    ``tcp`` (``host`` without brackets, e.g. ``"::1"``), ``path`` for
    ``unix``, ``fd`` for ``fd``.  Build one with :func:`parse_bind`.
    """

    kind: BindKind
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        return _tcp_display(self.host, self.port)


def _tcp_display(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _invalid(text: str, why: str = _EXPECTED) -> ConfigError:
    return ConfigError(f"invalid bind address {text!r}: {why}")


def parse_bind(text: str) -> BindSpec:
    """Parse a bind address such as ``127.0.0.1:4000`` into a :class:`BindSpec`.

    Host names are not resolved here; :func:`bind` does that.  Raises
    :class:`~scgiwsgi.errors.ConfigError` with a one-line message naming the
    address and what is wrong with it; the caller should show it to the user.
    """
    if text.startswith("unix:"):
        return _parse_unix(text)
    if text.startswith("fd://"):
        return _parse_fd(text)
    bracketed = _BRACKETED.fullmatch(text)
    if bracketed:
        return _parse_ipv6(text, bracketed.group(1), bracketed.group(2))
    return _parse_host_port(text)


def _parse_unix(text: str) -> BindSpec:
    path = text[len("unix:") :]
    if not path:
        raise _invalid(text, "the unix socket path is empty (e.g. unix:/run/app.sock)")
    if "\0" in path:
        raise _invalid(text, "the unix socket path contains a NUL character")
    return BindSpec("unix", path=path)


def _parse_fd(text: str) -> BindSpec:
    number = text[len("fd://") :]
    if not _DIGITS.fullmatch(number):
        raise _invalid(text, "fd://N needs a non-negative file descriptor number (e.g. fd://3)")
    return BindSpec("fd", fd=int(number))


def _parse_port(text: str, port: str) -> int:
    if not _DIGITS.fullmatch(port) or int(port) > 65535:
        raise _invalid(text, "the port must be a number from 0 to 65535")
    return int(port)


def _parse_ipv6(text: str, host: str, port: str) -> BindSpec:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise _invalid(text, f"{host!r} is not an IPv6 address") from None
    return BindSpec("tcp", host=host, port=_parse_port(text, port))


def _parse_host_port(text: str) -> BindSpec:
    if _DIGITS.fullmatch(text):
        raise _missing_host(text, text)
    host, colon, port = text.rpartition(":")
    if not colon:
        raise _invalid(text)
    if ":" in host:
        raise _invalid(text, "put IPv6 addresses in brackets, e.g. [::1]:4000")
    number = _parse_port(text, port)
    if not host:
        raise _missing_host(text, port)
    if not _HOSTNAME.fullmatch(host):
        raise _invalid(text, f"{host!r} is not a valid host name or IPv4 address")
    return BindSpec("tcp", host=host, port=number)


def _missing_host(text: str, port: str) -> ConfigError:
    return _invalid(
        text,
        f"the host is missing; use 0.0.0.0:{port} for all interfaces "
        f"or 127.0.0.1:{port} for this machine only",
    )


def _reason(exc: OSError) -> str:
    """One lowercase line describing ``exc`` for a BindError message."""
    if exc.errno in _ERRNO_REASONS:
        return _ERRNO_REASONS[exc.errno]
    text = exc.strerror or str(exc) or type(exc).__name__
    return " ".join(text.split()).lower()


class Listener:
    """A bound, listening socket and what the environ needs to know of it.

    ``display`` is the real address after binding (``127.0.0.1:43121`` when
    port 0 was asked, ``unix:/run/app.sock``, ``fd://3 (127.0.0.1:4000)``).
    ``server_name`` and ``server_port`` are the fallbacks for ``SERVER_NAME``
    and ``SERVER_PORT``: the bound host and port, or ``localhost`` and ``80``
    for unix sockets.  The socket is non-blocking.  Usable as a context
    manager; :meth:`close` may be called more than once.
    """

    def __init__(
        self,
        sock: socket.socket,
        spec: BindSpec,
        *,
        display: str,
        server_name: str,
        server_port: str,
        owned_file: tuple[int, int] | None = None,
    ) -> None:
        self.sock = sock
        self.spec = spec
        self.display = display
        self.server_name = server_name
        self.server_port = server_port
        # (st_dev, st_ino) of the unix socket file this server created, and
        # the process that created it: a forked worker closing its copy of
        # the socket must leave the file to the parent.
        self._owned_file = owned_file
        self._owner_pid = os.getpid()

    @property
    def owned_file(self) -> tuple[int, int] | None:
        """``(st_dev, st_ino)`` of the unix socket file this server created, if any."""
        return self._owned_file

    def fileno(self) -> int:
        """The socket's file descriptor (-1 once closed), for selectors."""
        return self.sock.fileno()

    def close(self) -> None:
        """Close the socket and remove the unix socket file this server created.

        The file is removed only by the process that bound it, and only if it
        is still the socket created by :func:`bind` (same device and inode);
        a file someone put in its place is left alone.  Never raises for a
        file that cannot be removed.
        """
        self.sock.close()
        owned, self._owned_file = self._owned_file, None
        if owned is not None and os.getpid() == self._owner_pid:
            with contextlib.suppress(OSError):
                _unlink_if_same(self.spec.path, owned)

    def __enter__(self) -> Listener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Listener {self.display} fd={self.fileno()}>"


def bind(
    spec: BindSpec, *, socket_mode: int = 0o660, backlog: int = 1024, defer_accept: bool = False
) -> Listener:
    """Bind and listen on ``spec``, or adopt the inherited socket of ``fd://N``.

    TCP sockets get ``SO_REUSEADDR``; IPv6 ones are IPv6-only; with
    ``defer_accept`` (where the platform has ``TCP_DEFER_ACCEPT``) the kernel
    queues a connection for ``accept`` only once its first bytes arrived, or
    after about a second without any.  An inherited socket keeps the options
    it came with.  A unix socket file gets the permission bits
    ``socket_mode``; a stale socket file (nothing answers on it) is
    replaced.  The returned socket is non-blocking and not inheritable.
    Raises :class:`~scgiwsgi.errors.BindError` with a one-line message
    (address in use, permission denied, unknown host, a non-socket file in
    the way, ...); the caller should report it and stop.
    """
    if spec.kind == "unix":
        return _bind_unix(spec, socket_mode, backlog)
    if spec.kind == "fd":
        return _adopt_fd(spec)
    return _bind_tcp(spec, backlog, defer_accept)


def bind_all(
    specs: Iterable[str | BindSpec],
    *,
    socket_mode: int = 0o660,
    backlog: int = 1024,
    defer_accept: bool = False,
) -> list[Listener]:
    """Bind every address of ``specs`` (strings are parsed first).

    All strings are parsed before anything is bound, so a bad one raises
    :class:`~scgiwsgi.errors.ConfigError` with nothing bound.  If a bind
    fails, the listeners already bound are closed (their unix socket files
    removed) and the :class:`~scgiwsgi.errors.BindError` is re-raised.
    """
    parsed = [parse_bind(s) if isinstance(s, str) else s for s in specs]
    listeners: list[Listener] = []
    try:
        for spec in parsed:
            listeners.append(
                bind(spec, socket_mode=socket_mode, backlog=backlog, defer_accept=defer_accept)
            )
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def _describe_bound(sock: socket.socket) -> tuple[str, str, str]:
    """``(display, server_name, server_port)`` of a bound socket."""
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        if isinstance(address, bytes):  # Linux abstract namespace
            name = "@" + address[1:].decode("utf-8", "backslashreplace")
        else:
            name = str(address) or "(unnamed)"
        return f"unix:{name}", _UNIX_SERVER_NAME, _UNIX_SERVER_PORT
    host, port = str(address[0]), int(address[1])
    return _tcp_display(host, port), host, str(port)


def _make_listener(
    sock: socket.socket, spec: BindSpec, owned_file: tuple[int, int] | None = None
) -> Listener:
    display, name, port = _describe_bound(sock)
    if spec.kind == "fd":
        display = f"{spec} ({display})"
    return Listener(
        sock, spec, display=display, server_name=name, server_port=port, owned_file=owned_file
    )


def _resolve(spec: BindSpec) -> tuple[socket.AddressFamily, tuple[object, ...]]:
    """The first ``(family, sockaddr)`` getaddrinfo() gives for ``spec``."""
    try:
        infos = socket.getaddrinfo(
            spec.host or None, spec.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise BindError(f"cannot bind {spec}: cannot resolve host {spec.host!r} ({why})") from exc
    if not infos:
        raise BindError(f"cannot bind {spec}: host {spec.host!r} has no address")
    family, _, _, _, address = infos[0]
    return family, address


def _bind_tcp(spec: BindSpec, backlog: int, defer_accept: bool) -> Listener:
    family, address = _resolve(spec)
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise BindError(f"cannot bind {spec}: {_reason(exc)}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if defer_accept and _DEFER_ACCEPT is not None:
            # Strategy: a connection accepted before its request arrived
            # costs a read that finds nothing, a poller registration and one
            # more turn of the loop.  The value is in seconds: the kernel
            # hands over a silent connection after one SYN-ACK retransmit.
            sock.setsockopt(socket.IPPROTO_TCP, _DEFER_ACCEPT, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
        return _make_listener(sock, spec)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot bind {spec}: {_reason(exc)}") from exc


def _bind_unix(spec: BindSpec, socket_mode: int, backlog: int) -> Listener:
    _check_directory(spec)
    _clear_stale_socket(spec)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    owned: tuple[int, int] | None = None
    try:
        sock.bind(spec.path)
        info = os.lstat(spec.path)
        owned = (info.st_dev, info.st_ino)
        # Strategy: chmod before listen(); until listen() every connect is
        # refused, so nobody gets in while the umask-derived mode applies.
        os.chmod(spec.path, socket_mode)
        sock.listen(backlog)
        sock.setblocking(False)
        return _make_listener(sock, spec, owned)
    except OSError as exc:
        sock.close()
        if owned is not None:
            with contextlib.suppress(OSError):
                _unlink_if_same(spec.path, owned)
        raise BindError(f"cannot bind {spec}: {_reason(exc)}") from exc


def _check_directory(spec: BindSpec) -> None:
    directory = os.path.dirname(spec.path) or "."
    if not os.path.exists(directory):
        raise BindError(f"cannot bind {spec}: directory {directory} does not exist")
    if not os.path.isdir(directory):
        raise BindError(f"cannot bind {spec}: {directory} is not a directory")


def _clear_stale_socket(spec: BindSpec) -> None:
    """Remove a socket file at ``spec.path`` that nothing listens on any more."""
    try:
        info = os.lstat(spec.path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BindError(f"cannot bind {spec}: {_reason(exc)}") from exc
    if not stat.S_ISSOCK(info.st_mode):
        raise BindError(
            f"cannot bind {spec}: the path exists and is not a socket (not removing it)"
        )
    if _is_answering(spec):
        raise BindError(f"address already in use: {spec} (another server is listening)")
    try:
        _unlink_if_same(spec.path, (info.st_dev, info.st_ino))
    except OSError as exc:
        raise BindError(f"cannot bind {spec}: cannot remove stale socket: {_reason(exc)}") from exc


def _is_answering(spec: BindSpec) -> bool:
    """True if a server accepts connections on the unix socket ``spec.path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(_PROBE_TIMEOUT)
        try:
            probe.connect(spec.path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except (BlockingIOError, TimeoutError):
            return True  # a full listen queue: someone is there, just busy
        except OSError as exc:
            raise BindError(
                f"cannot bind {spec}: cannot check the existing socket: {_reason(exc)}"
            ) from exc
    return True


def _unlink_if_same(path: str, identity: tuple[int, int]) -> bool:
    """Unlink ``path`` if it is still the socket file ``(st_dev, st_ino)``."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(info.st_mode) or (info.st_dev, info.st_ino) != identity:
        return False
    os.unlink(path)
    return True


def _adopt_fd(spec: BindSpec) -> Listener:
    where = str(spec)
    try:
        if not stat.S_ISSOCK(os.fstat(spec.fd).st_mode):
            raise BindError(f"cannot adopt {where}: it is not a socket")
        sock = socket.socket(fileno=spec.fd)
    except OSError as exc:
        raise BindError(f"cannot adopt {where}: {_reason(exc)}") from exc
    try:
        _check_listening(sock, where)
        sock.set_inheritable(False)
        sock.setblocking(False)
        return _make_listener(sock, spec)
    except OSError as exc:
        sock.detach()  # not ours to close: leave the descriptor to its owner
        raise BindError(f"cannot adopt {where}: {_reason(exc)}") from exc
    except BindError:
        sock.detach()
        raise


def _check_listening(sock: socket.socket, where: str) -> None:
    if sock.type != socket.SOCK_STREAM:
        raise BindError(f"cannot adopt {where}: it is not a stream socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise BindError(f"cannot adopt {where}: the socket is not listening")
