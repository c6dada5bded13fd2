"""systemd integration: socket activation and readiness notification.

Both halves follow systemd's documented protocols (``sd_listen_fds(3)`` and
``sd_notify(3)``) without linking to libsystemd:

* **Socket activation.**  The service manager binds the sockets of a
  ``.socket`` unit and starts the service with them open from fd 3 on;
  ``LISTEN_FDS`` says how many, ``LISTEN_PID`` which process they are meant
  for and ``LISTEN_FDNAMES`` (optional) their ``FileDescriptorName=``.
  :func:`listen_fds` reads the variables and *always* removes them from the
  environment, so worker processes, re-executed arbiters and programs the
  application starts never take them for their own.  The sockets are used
  only when ``LISTEN_PID`` is this process: start the server with ``exec``
  from a wrapper script, never as a child of a shell.
* **Notification.**  When ``NOTIFY_SOCKET`` is set (``Type=notify``), the
  server sends ``READY=1`` with a ``STATUS=`` line once its sockets listen
  and ``STOPPING=1`` when it begins to stop (:class:`Notifier`).  The
  variable stays in the environment: a server re-executed for a reload
  needs it again, and systemd ignores messages from other processes than
  the main one (``NotifyAccess=main``, the default).

Nothing here needs systemd as PID 1: the variables are all there is to it,
so Debian's ``systemd-socket-activate`` or a test can play the manager.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket

from .errors import BindError, ConfigError
from .sockets import BindSpec, Listener, bind

__all__ = [
    "LISTEN_FDS_START",
    "ActivatedSocket",
    "Notifier",
    "activated_listeners",
    "listen_fds",
    "notify",
]

log = logging.getLogger("scgiwsgi.error")

LISTEN_FDS_START = 3
"""The first file descriptor systemd passes (``SD_LISTEN_FDS_START``)."""
_ENV_NAMES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_DEFAULT_NAME = "unknown"  # what systemd calls a socket without FileDescriptorName=
_NOTIFY_TIMEOUT = 2.0


@dataclasses.dataclass(frozen=True)
class ActivatedSocket:
    """One descriptor passed by the service manager, and its name.

    ``name`` is the unit's ``FileDescriptorName=`` (``"unknown"`` when
    ``LISTEN_FDNAMES`` is absent, as in systemd).
    """

    fd: int
    name: str


def listen_fds() -> list[ActivatedSocket]:
    """The sockets passed to this process by socket activation, in fd order.

    Returns an empty list when ``LISTEN_FDS`` or ``LISTEN_PID`` is unset, or
    when ``LISTEN_PID`` names another process (a warning is logged: the
    server was probably started without ``exec``).  The passed descriptors
    are marked close-on-exec.  ``LISTEN_PID``, ``LISTEN_FDS`` and
    ``LISTEN_FDNAMES`` are removed from ``os.environ`` in every case.

    Raises :class:`~scgiwsgi.errors.ConfigError` when the variables are
    malformed (not numbers, a name count that does not match) or name a
    descriptor that is not open; the service definition is wrong and the
    caller should report it and stop.
    """
    values = {name: os.environ.pop(name, None) for name in _ENV_NAMES}
    pid_text, count_text, names_text = (values[name] for name in _ENV_NAMES)
    if pid_text is None or count_text is None:
        return []
    pid = _parse_number("LISTEN_PID", pid_text)
    count = _parse_number("LISTEN_FDS", count_text)
    if pid != os.getpid():
        log.warning(
            "LISTEN_FDS is set for pid %d, not for this process (pid %d): not using the "
            "passed sockets; start scgi-wsgi with exec so that it keeps the pid",
            pid,
            os.getpid(),
        )
        return []
    names = names_text.split(":") if names_text is not None else [_DEFAULT_NAME] * count
    if len(names) != count:
        raise ConfigError(
            f"socket activation: LISTEN_FDNAMES has {len(names)} name(s) "
            f"for LISTEN_FDS={count} descriptor(s)"
        )
    passed = []
    for offset, name in enumerate(names):
        fd = LISTEN_FDS_START + offset
        try:
            os.set_inheritable(fd, False)
        except OSError as exc:
            raise ConfigError(
                f"socket activation: fd {fd} of LISTEN_FDS={count} is not open ({exc.strerror})"
            ) from None
        passed.append(ActivatedSocket(fd, name or _DEFAULT_NAME))
    return passed


def _parse_number(name: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ConfigError(f"socket activation: {name}={text!r} is not a number")
    return int(text)


def activated_listeners() -> list[Listener]:
    """Listeners for the sockets of :func:`listen_fds`; empty without activation.

    Each one displays as ``fd://3 (127.0.0.1:4000)``, with the socket's name
    when the unit gave one (``fd://3 (web: 127.0.0.1:4000)``).  Raises
    :class:`~scgiwsgi.errors.ConfigError` as :func:`listen_fds` does, and
    :class:`~scgiwsgi.errors.BindError` when a passed descriptor is not a
    listening stream socket (a datagram socket, or a connection passed by
    ``Accept=yes``, which ``scgi-wsgi --inetd`` serves instead); the
    listeners adopted before the failure are closed.
    """
    passed = listen_fds()
    listeners: list[Listener] = []
    try:
        for activated in passed:
            listeners.append(_adopt(activated))
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    if listeners:
        log.info(
            "socket activation: serving on %d socket(s) passed by the service manager "
            "instead of the bind addresses",
            len(listeners),
        )
    return listeners


def _adopt(activated: ActivatedSocket) -> Listener:
    spec = BindSpec("fd", fd=activated.fd)
    try:
        listener = bind(spec)
    except BindError as exc:
        hint = ""
        if "not listening" in str(exc):
            hint = " (with Accept=yes every connection is passed: use scgi-wsgi --inetd)"
        raise BindError(f"socket activation: {exc}{hint}") from exc
    if activated.name != _DEFAULT_NAME:
        bound = listener.display.removeprefix(f"{spec} (").removesuffix(")")
        listener.display = f"{spec} ({activated.name}: {bound})"
    return listener


# -- sd_notify -----------------------------------------------------------------------


def notify(*assignments: str) -> bool:
    """Send ``assignments`` (``"READY=1"``, ``"STATUS=..."``) to ``$NOTIFY_SOCKET``.

    Returns False, sending nothing, when ``NOTIFY_SOCKET`` is unset or is not
    a unix socket address (an absolute path, or ``@name`` in the abstract
    namespace); True once the datagram is sent.  A newline inside an
    assignment would start another one, so newlines become spaces.  Never
    raises for a failed send: it is logged as a warning and False is
    returned, since the server itself is fine.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        target = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:
        log.warning("NOTIFY_SOCKET=%r is not a unix socket address: not notifying", address)
        return False
    lines = [" ".join(item.splitlines()) for item in assignments]
    message = "\n".join(lines).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(_NOTIFY_TIMEOUT)
            sock.sendto(message, target)
    except OSError as exc:
        log.warning("cannot notify the service manager at %s: %s", address, exc)
        return False
    return True


class Notifier:
    """The server's state as the service manager sees it: ready, then stopping.

    :meth:`stopping` sends ``STOPPING=1`` at most once after each
    :meth:`ready`, so it may be called from every path that ends serving.
    Both are no-ops without ``NOTIFY_SOCKET`` and never raise.
    """

    def __init__(self) -> None:
        self._serving = False

    def ready(self, status: str) -> None:
        """Send ``READY=1`` with ``STATUS=status``: the sockets accept connections."""
        self._serving = True
        notify("READY=1", f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> None:
        """Send ``STOPPING=1`` with ``STATUS=status``, once per :meth:`ready`."""
        if not self._serving:
            return
        self._serving = False
        notify("STOPPING=1", f"STATUS={status}")
