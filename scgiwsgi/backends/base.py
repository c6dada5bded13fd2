"""The accept loop every in-process backend shares.

Strategy: one loop thread (the main thread) owns a poller over the
listening sockets, a wake-up socket pair, and every connection whose request
header is still arriving.  A connection is accepted only while a worker is
free; its header is read without blocking (usually in the first ``recv``),
and only a connection with a complete header is handed to a worker.  So a
peer that sends one byte a second costs a poller entry, never a thread, and
connections this process cannot serve stay in the kernel's listen queue,
where a sibling process may take them.  :meth:`Backend.shutdown` is safe from
a signal handler or another thread: it sets a flag and writes one byte to
the wake-up socket.
"""

from __future__ import annotations

import _socket
import abc
import collections
import contextlib
import logging
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

from ..config import Config
from ..handler import ListenerInfo, Pending
from .poller import Poller, new_poller

__all__ = ["MAX_PENDING", "Backend", "Handler", "Listening"]

log = logging.getLogger("scgiwsgi.error")

MAX_PENDING = 1000
"""Connections per process whose header may be arriving at once."""
ACCEPT_BURST = 16
"""Requests served back to back from the listen queue before the next poll."""
FRESH_SECONDS = 0.05
"""How long a silent new connection reserves a worker in a prefork worker.

Strategy: a front end sends its whole header right after connecting, so a
connection accepted before its first byte arrived is about to be served.
In a process that shares its listening sockets with siblings, such a
connection keeps a worker reserved for a moment, so the process does not
accept what a sibling could serve sooner.  A connection that sent part of a
header and stalls, or stays silent past this time, is a slow peer: it
reserves nothing, and the process keeps accepting (up to MAX_PENDING).
"""


class Listening(ListenerInfo, Protocol):
    """A bound listening socket (see :class:`scgiwsgi.sockets.Listener`)."""

    sock: socket.socket

    def close(self) -> None: ...


class Handler(Protocol):
    """The connection handler interface the loop drives (see ConnectionHandler)."""

    def open(self, sock: _socket.socket, listener: ListenerInfo) -> Pending | None: ...

    def advance(self, pending: Pending) -> bool | None: ...

    def expire(self, pending: Pending) -> None: ...

    def serve(self, pending: Pending) -> None: ...


class _Watch:
    __slots__ = ("callback", "fd")

    def __init__(self, fd: int, callback: Callable[[], None]) -> None:
        self.fd = fd
        self.callback = callback


class Backend(abc.ABC):
    """Accepts connections on ``listeners`` and hands complete requests to workers."""

    name: ClassVar[str]
    multithread: ClassVar[bool] = False
    multiprocess: ClassVar[bool] = False
    may_exit_process: bool = False
    """Whether the backend may end the process when requests outlive the grace time."""
    shares_listeners: bool = False
    """Set in prefork workers: sibling processes accept on the same sockets."""
    serves_inline: ClassVar[bool] = False
    """Whether :meth:`dispatch` serves the request before it returns (then the worker is free)."""

    def __init__(self, listeners: Sequence[Listening], handler: Handler, config: Config) -> None:
        self.listeners = list(listeners)
        self.handler = handler
        self.config = config
        # A plain flag: written by shutdown() (from a signal handler or any
        # thread), read by the loop; threading.Event costs a call per read.
        self._stop_asked = False
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._watches: list[tuple[int, Callable[[], None]]] = []
        self._pending: dict[int, Pending] = {}
        self._ready: collections.deque[Pending] = collections.deque()
        self._listening = False
        self._listening_fds: list[int] = []
        self._capacity_wanted = False
        self._handed = 0
        """Connections handed to workers so far (compared before and after a step)."""
        self._stop_deadline = 0.0
        self._probe = select.poll()
        """The listeners, polled without a wait to see whether a connection is queued."""
        self._listener_of: dict[int, Listening] = {}
        for listener in self.listeners:
            fd = listener.sock.fileno()
            self._probe.register(fd, select.POLLIN)
            self._listener_of[fd] = listener

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
        return self._stop_asked

    def describe(self) -> str:
        """A few words for the startup line, e.g. ``threaded (8 threads)``."""
        return self.name

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown`, then finish in-flight requests."""
        self.start()
        # A caught signal may be handled late (it landed on a worker thread, or
        # just before select()), leaving select() asleep: the wake-up fd makes
        # every caught signal wake the loop.
        in_main = threading.current_thread() is threading.main_thread()
        previous_wakeup = (
            signal.set_wakeup_fd(self._wake_writer.fileno(), warn_on_full_buffer=False)
            if in_main
            else -1
        )
        try:
            self._loop()
        finally:
            if in_main:
                signal.set_wakeup_fd(previous_wakeup)
            self._close_listeners()
            left = self._stop_deadline - time.monotonic() if self._stop_deadline else None
            self.finish(self.config.graceful_timeout if left is None else max(left, 0.0))
            self._wake_reader.close()
            self._wake_writer.close()

    def shutdown(self) -> None:
        """Ask the loop to stop accepting; signal- and thread-safe."""
        self._stop_asked = True
        self._wake()

    def start(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Prepare workers before the first accept (override when needed)."""

    @abc.abstractmethod
    def free_workers(self) -> int:
        """How many more complete requests could be handed over right now."""

    def has_capacity(self) -> bool:
        """Whether a request that is ready could be dispatched now."""
        return self.free_workers() > 0

    @abc.abstractmethod
    def dispatch(self, pending: Pending) -> None:
        """Serve (or hand to a worker) one connection whose header is complete."""

    @abc.abstractmethod
    def finish(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for in-flight requests to end."""

    def capacity_freed(self) -> None:
        """Workers call this after a request: wakes the loop if it waits for one."""
        if self._capacity_wanted:
            self._wake()

    def _wake(self) -> None:
        # OSError: already woken (buffer full), or closed after the loop ended.
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")

    # -- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        poller = new_poller()
        try:
            poller.register(self._wake_reader.fileno(), None)
            for fd, callback in self._watches:
                poller.register(fd, _Watch(fd, callback))
            stop_deadline: float | None = None
            while True:
                if self._stop_asked and stop_deadline is None:
                    stop_deadline = time.monotonic() + self.config.graceful_timeout
                    self._stop_deadline = stop_deadline
                    self._set_listening(poller, False)
                    self._close_listeners()
                if stop_deadline is not None and not (self._pending or self._ready):
                    return
                self._turn(poller, stop_deadline)
                if stop_deadline is not None and time.monotonic() >= stop_deadline:
                    self._drop_all(poller)
                    return
        finally:
            poller.close()

    def _turn(self, poller: Poller, stop_deadline: float | None) -> None:
        # Strategy: this runs once per request; with nothing pending (the
        # common case) it skips the deadline bookkeeping altogether.
        pending = self._pending
        ready = self._ready
        fresh = self._fresh(time.monotonic()) if pending else []
        free = self.free_workers()
        can_serve = free - len(ready) - len(fresh) > 0
        wanted = stop_deadline is None and can_serve and len(pending) < MAX_PENDING
        if wanted is not self._listening:
            self._set_listening(poller, wanted)
        timeout = (
            self._timeout(stop_deadline, min(fresh, default=None))
            if pending or stop_deadline is not None
            else None
        )
        # Waiting for a worker to free up (not for a fresh connection's
        # header, which reserves a free worker: that wait is the timeout's).
        self._capacity_wanted = bool(ready) or free <= 0
        if self._capacity_wanted and self.has_capacity():
            timeout = 0.0  # freed between the check and the flag
        handed = self._handed
        for data in poller.poll(timeout):
            self._on_event(poller, data)
        self._capacity_wanted = False
        if pending:
            self._expire(poller, time.monotonic())
        while ready and self.has_capacity():
            self._handed += 1
            self.dispatch(ready.popleft())
        if wanted and self._handed != handed:
            self._accept_waiting(poller)

    def _accept_waiting(self, poller: Poller) -> None:
        # Strategy: under load the next connection is usually queued by the
        # time a request is served: accept it straight away rather than go
        # round the loop and wait in the poller.  A poll(2) of the listeners
        # with no timeout (about 0.2 us) says whether one is queued, where
        # an accept that finds the queue empty raises BlockingIOError (about
        # 1.8 us in Python 3.11).  The poller cannot tell: with
        # EPOLLEXCLUSIVE a connection wakes one process's poller, not all.
        probe = self._probe
        inline = self.serves_inline  # then the worker is free: no has_capacity() call
        for _ in range(ACCEPT_BURST):
            if self._stop_asked or self._pending or self._ready:
                return
            if not (inline or self.has_capacity()):
                return  # before the probe: no system call while every worker is busy
            queued = probe.poll(0)
            if not queued:
                return
            handed = self._handed
            # One connection from each listener that has one (in turn, so
            # that a busy listener cannot starve another), each while a
            # worker is free (_accept() hands it over without asking) and
            # no stop came during the one before.
            for fd, _ in queued:
                if self._stop_asked or not (inline or self.has_capacity()):
                    return
                self._accept(poller, self._listener_of[fd], True)
            if self._handed == handed:
                return  # taken by another process, refused, or its header is still arriving

    def _fresh(self, now: float) -> list[float]:
        if not self.shares_listeners:
            return []
        return [
            p.started + FRESH_SECONDS
            for p in self._pending.values()
            if p.started + FRESH_SECONDS > now and not p.parser.received_any
        ]

    def _timeout(self, stop_deadline: float | None, stale_at: float | None) -> float | None:
        deadlines = [pending.deadline for pending in self._pending.values()]
        for extra in (stop_deadline, stale_at):
            if extra is not None:
                deadlines.append(extra)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _on_event(self, poller: Poller, data: object) -> None:
        if data is None:
            _drain_wake(self._wake_reader)
        elif isinstance(data, _Watch):
            poller.unregister(data.fd)
            data.callback()
        elif isinstance(data, Pending):
            fd = data.sock.fileno()
            poller.unregister(fd)
            del self._pending[fd]
            self._advance(poller, data)
        elif self._listening:
            # Only listeners are left (typing.cast would cost a call here).
            self._accept(poller, data)  # type: ignore[arg-type]

    def _accept(self, poller: Poller, listener: Listening, at_once: bool = False) -> bool:
        """Accept one connection and read what it sent; False if none was waiting.

        ``at_once``: as :meth:`_advance`.
        """
        # Strategy: ``socket.accept`` reads ``self.family`` and ``self.type``,
        # which build enum members on every call, and wraps the connection in
        # ``socket.socket``, whose ``__init__`` and ``close`` are Python code;
        # the handler needs only the C methods (``os.sendfile`` replaces
        # ``socket.sendfile``).  So the listener's C-level ``_accept`` gives
        # a descriptor, made into a blocking ``_socket.socket`` (``accept``
        # makes it blocking from a non-blocking listener).
        listen_sock = listener.sock
        try:
            fd, _ = listen_sock._accept()  # type: ignore[attr-defined]
        except (BlockingIOError, InterruptedError):
            return False  # another process or thread took it
        except OSError as exc:
            log.error("accept() on %s failed: %s", listener.display, exc)
            return False
        conn = _socket.socket(_raw_family(listen_sock), socket.SOCK_STREAM, listen_sock.proto, fd)
        pending = self.handler.open(conn, listener)
        if pending is not None:
            self._advance(poller, pending, at_once)
        return True

    def _advance(self, poller: Poller, pending: Pending, at_once: bool = False) -> None:
        """Read what a connection sent; queue it, or register it to wait for more.

        ``at_once``: hand a complete request to a worker straight away, not
        through the queue.  Only for the accept burst (the usual case under
        load), which saw a free worker and an empty queue just before the
        accept.  Not while a batch of poll events is handled: the single
        backend serves inline, and a stop during that request would leave
        a later listener event of the batch, which woke this process alone
        (EPOLLEXCLUSIVE), unaccepted.
        """
        outcome = self.handler.advance(pending)
        if outcome is True:
            if at_once:
                self._handed += 1
                self.dispatch(pending)
            else:
                self._ready.append(pending)
        elif outcome is False:
            fd = pending.sock.fileno()  # still open: only None closes it
            self._pending[fd] = pending
            poller.register(fd, pending)

    def _expire(self, poller: Poller, now: float) -> None:
        for fd, pending in list(self._pending.items()):
            if pending.deadline <= now:
                poller.unregister(fd)
                del self._pending[fd]
                self.handler.expire(pending)

    def _drop_all(self, poller: Poller) -> None:
        for fd, pending in list(self._pending.items()):
            poller.unregister(fd)
            self.handler.expire(pending)
        self._pending.clear()
        for pending in self._ready:
            log.warning("%s: request not started before the graceful timeout", pending.peer)
            pending.sock.close()
        self._ready.clear()

    def _set_listening(self, poller: Poller, wanted: bool) -> None:
        if wanted == self._listening:
            return
        if wanted:
            for listener in self.listeners:
                fd = listener.sock.fileno()
                if fd >= 0:
                    poller.register(fd, listener, exclusive=True)
                    self._listening_fds.append(fd)
        else:
            # The fds as registered: a listener closed since has fileno() -1.
            for fd in self._listening_fds:
                poller.unregister(fd)
            self._listening_fds.clear()
        self._listening = wanted

    def _close_listeners(self) -> None:
        # Stop accepting at once: new connections are refused (the front end
        # can fail over) instead of waiting in a queue nobody will serve.
        for listener in self.listeners:
            listener.close()


_raw_family: Callable[[socket.socket], int] = _socket.socket.family.__get__


def _drain_wake(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while sock.recv(4096):
            pass
