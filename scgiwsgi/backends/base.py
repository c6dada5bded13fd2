"""The accept loop every in-process backend shares.

Strategy: the main thread waits in a selector on every listening socket plus
a wake-up socket pair.  A backend only selects when it has capacity, so
connections it cannot serve yet stay in the kernel's listen queue (where a
sibling process may take them).  :meth:`Backend.shutdown` is safe to call
from a signal handler or another thread: it sets a flag and writes one byte
to the wake-up socket.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import selectors
import socket
import threading
from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

from ..config import Config
from ..handler import ListenerInfo

__all__ = ["Backend", "Handler", "Listening"]

log = logging.getLogger("scgiwsgi.error")


class Listening(ListenerInfo, Protocol):
    """A bound listening socket (see :class:`scgiwsgi.sockets.Listener`)."""

    sock: socket.socket

    def close(self) -> None: ...


class Handler(Protocol):
    """Serves one accepted connection and closes it."""

    def handle(self, sock: socket.socket, listener: ListenerInfo) -> None: ...


class _Watch:
    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback


class Backend(abc.ABC):
    """Accepts connections on ``listeners`` and hands them to ``handler``."""

    name: ClassVar[str]
    multithread: ClassVar[bool] = False
    multiprocess: ClassVar[bool] = False
    may_exit_process: bool = False
    """Whether the backend may end the process when requests outlive the grace time."""

    def __init__(self, listeners: Sequence[Listening], handler: Handler, config: Config) -> None:
        self.listeners = list(listeners)
        self.handler = handler
        self.config = config
        self._stopping = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._watches: list[tuple[int, Callable[[], None]]] = []

    def watch(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` from the accept loop when ``fd`` becomes readable.

        The prefork worker watches a pipe from its arbiter this way: the pipe
        reads EOF when the arbiter dies.  Register before :meth:`serve_forever`.
        """
        self._watches.append((fd, callback))

    @classmethod
    def is_multithread(cls, config: Config) -> bool:
        """Whether requests may run in parallel threads under ``config``."""
        return cls.multithread

    @property
    def stopping(self) -> bool:
        """True once :meth:`shutdown` was called."""
        return self._stopping.is_set()

    def describe(self) -> str:
        """A few words for the startup line, e.g. ``threaded (8 threads)``."""
        return self.name

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown`, then finish in-flight requests."""
        self.start()
        try:
            self._accept_loop()
        finally:
            self._close_listeners()
            self.finish(self.config.graceful_timeout)
            self._wake_reader.close()
            self._wake_writer.close()

    def shutdown(self) -> None:
        """Ask the loop to stop accepting; signal- and thread-safe."""
        self._stopping.set()
        # OSError: already woken (buffer full), or closed after the loop ended.
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")

    def start(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Prepare workers before the first accept (override when needed)."""

    @abc.abstractmethod
    def wait_for_capacity(self) -> bool:
        """Block until one more connection can be served; False to stop."""

    def release_capacity(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Give back the capacity taken by :meth:`wait_for_capacity` unused."""

    @abc.abstractmethod
    def dispatch(self, sock: socket.socket, listener: Listening) -> None:
        """Serve (or queue) one accepted connection."""

    @abc.abstractmethod
    def finish(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for in-flight requests to end."""

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            for listener in self.listeners:
                selector.register(listener.sock, selectors.EVENT_READ, listener)
            selector.register(self._wake_reader, selectors.EVENT_READ, None)
            for fd, callback in self._watches:
                selector.register(fd, selectors.EVENT_READ, _Watch(callback))
            while not self.stopping:
                if not self.wait_for_capacity():
                    break
                if not self._accept_one(selector):
                    self.release_capacity()

    def _accept_one(self, selector: selectors.BaseSelector) -> bool:
        """Accept and dispatch one connection; False if none was taken."""
        for key, _ in selector.select():
            listener = key.data
            if isinstance(listener, _Watch):
                selector.unregister(key.fileobj)
                listener.callback()
                return False
            if listener is None or self.stopping:
                return False
            try:
                conn, _ = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                continue  # another process or thread took it
            except OSError as exc:
                log.error("accept() on %s failed: %s", listener.display, exc)
                continue
            conn.setblocking(True)
            self.dispatch(conn, listener)
            return True
        return False

    def _close_listeners(self) -> None:
        # Stop accepting at once: new connections are refused (the front end
        # can fail over) instead of waiting in a queue nobody will serve.
        for listener in self.listeners:
            listener.close()
