"""The worker side of the fork backend: what runs in each forked process.

A worker accepts on the listening sockets it inherited from the arbiter and
serves with the single backend (one thread) or the threaded one.  It talks to
the arbiter through three channels set up before the fork:

* a pipe it only reads: it reads EOF when the arbiter dies, and the worker
  stops (no orphans);
* a pipe it writes fixed-size notes to (ready, retiring);
* a shared memory block with one slot per request thread holding the
  monotonic start time of the request in progress (0.0 when idle), which the
  arbiter reads to find requests running past ``--timeout``.

Signals: TERM stops gracefully, INT and QUIT exit at once, USR1 reopens the
access log, USR2 (sent by the arbiter on a timeout) logs the stack of every
request running past the timeout, then exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import mmap
import os
import signal
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from threading import get_ident
from types import FrameType
from typing import Any

from ..config import Config
from ..errors import AppImportError
from ..gateway import WSGIApp
from ..handler import ConnectionHandler
from ..logs import AccessLog
from .base import Backend, Listening
from .single import SingleBackend
from .threaded import ThreadedBackend

__all__ = [
    "EXIT_APP_IMPORT",
    "EXIT_BOOT_FAILED",
    "EXIT_TIMEOUT",
    "NOTE_READY",
    "NOTE_RETIRING",
    "SLOT_SIZE",
    "WorkerContext",
    "freeze_startup_objects",
    "read_notes",
    "read_slot",
    "run_worker",
    "set_process_title",
]

log = logging.getLogger("scgiwsgi.error")

EXIT_APP_IMPORT = 4
"""A worker could not import the application: the arbiter stops the server."""
EXIT_BOOT_FAILED = 70
"""A worker failed before serving for another reason."""
EXIT_TIMEOUT = 75
"""A worker ended itself after logging a request that ran past ``--timeout``."""

NOTE_READY = b"R"
NOTE_RETIRING = b"X"
_NOTE = struct.Struct("=c3xi")
SLOT_SIZE = 8
_SLOT = struct.Struct("=d")


@dataclasses.dataclass
class WorkerContext:
    """Everything a worker inherits from the arbiter."""

    config: Config
    listeners: Sequence[Listening]
    app: WSGIApp | None
    app_loader: Callable[[], WSGIApp] | None
    app_name: str
    slots: mmap.mmap
    alive_fd: int
    """Read end of the pipe whose write end only the arbiter holds."""
    notify_fd: int
    """Write end of the arbiter's notes pipe."""
    close_fds: tuple[int, ...] = ()
    """Descriptors of the arbiter that a worker closes right after the fork."""


def read_slot(slots: mmap.mmap, index: int) -> float:
    """The start time stored in slot ``index`` (0.0: idle)."""
    return float(_SLOT.unpack_from(slots, index * SLOT_SIZE)[0])


def read_notes(data: bytes) -> list[tuple[bytes, int]]:
    """Split bytes read from the notes pipe into ``(kind, pid)`` pairs."""
    usable = len(data) - len(data) % _NOTE.size
    return [_NOTE.unpack_from(data, offset) for offset in range(0, usable, _NOTE.size)]


def set_process_title(title: str) -> None:
    """Set the process title when ``setproctitle`` is installed."""
    try:
        import setproctitle  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return
    setproctitle.setproctitle(title)


def run_worker(context: WorkerContext, slot_base: int) -> int:
    """Serve in a freshly forked worker; return its exit status.

    The caller must pass the result to ``os._exit``: a worker never returns
    into the arbiter's code.
    """
    worker = _Worker(context, slot_base)
    try:
        return worker.run()
    except Exception:
        log.exception("worker %d failed", os.getpid())
        return EXIT_BOOT_FAILED


class _Worker:
    def __init__(self, context: WorkerContext, slot_base: int) -> None:
        self.context = context
        self.config = context.config
        self.backend: Backend | None = None
        self.access_log: AccessLog | None = None
        self.requests = 0
        self.limit = _request_limit(self.config)
        self._lock = threading.Lock()
        # This worker's slots (one per request thread) as doubles: an item
        # store costs less than struct.pack_into.  Beside each, the environ
        # of the request it times, described only if it runs too long.
        threads = self.config.thread_count
        self._slots = memoryview(context.slots).cast("d")[slot_base : slot_base + threads]
        self._environs: list[dict[str, Any] | None] = [None] * threads
        self._slot_index: dict[int, int] = {}
        """The slot of each request thread, by thread ident."""
        # One request thread (the single backend): it is this, the main
        # thread, and its slot is 0; no lookup by thread ident per request.
        self._one_thread = threads == 1
        if self._one_thread:
            self._slot_index[get_ident()] = 0
        self._term_before_serving = False

    def run(self) -> int:
        # The arbiter's wake-up fd is inherited: unset it before closing it.
        signal.set_wakeup_fd(-1)
        for fd in self.context.close_fds:
            _close_quietly(fd)
        self._install_signals()
        set_process_title(f"scgi-wsgi worker: {self.context.app_name}")
        app = self._load_app()
        if app is None:
            return EXIT_APP_IMPORT
        freeze_startup_objects()
        backend = self._make_backend(app)
        backend.watch(self.context.alive_fd, self._arbiter_gone)
        self._note(NOTE_READY)
        if self._term_before_serving:
            backend.shutdown()
        backend.serve_forever()
        if self.access_log is not None:
            self.access_log.close()
        return 0

    # -- setup -----------------------------------------------------------------

    def _load_app(self) -> WSGIApp | None:
        if self.context.app is not None:
            return self.context.app
        if self.context.app_loader is None:
            raise RuntimeError("worker has neither an application nor a loader")
        try:
            return self.context.app_loader()
        except AppImportError as exc:
            if exc.traceback_text:
                log.error("worker %d: %s\n%s", os.getpid(), exc, exc.traceback_text.rstrip())
            else:
                log.error("worker %d: %s", os.getpid(), exc)
            return None

    def _make_backend(self, app: WSGIApp) -> Backend:
        threads = self.config.thread_count
        cls: type[Backend] = ThreadedBackend if threads > 1 else SingleBackend
        if self.config.access_log:
            self.access_log = AccessLog(self.config.access_log, self.config.access_log_format)
        on_request, on_finished = self._request_hooks()
        handler = ConnectionHandler(
            app,
            self.config,
            multithread=threads > 1,
            multiprocess=True,
            access_log=self.access_log,
            on_request=on_request,
            on_finished=on_finished,
        )
        self.backend = cls(self.context.listeners, handler, self.config)
        self.backend.shares_listeners = True
        return self.backend

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_quick_stop)
        signal.signal(signal.SIGQUIT, self._on_quick_stop)
        signal.signal(signal.SIGUSR1, self._on_reopen)
        signal.signal(signal.SIGUSR2, self._on_timeout)
        for signum in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(signum, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    # -- noting each request (the handler calls these) --------------------------

    def _request_hooks(self) -> tuple[Callable[[dict[str, Any]], None], Callable[[], None]]:
        """The handler's ``on_request`` and ``on_finished``.

        A request starts: its slot gets the time, for the arbiter's
        ``--timeout`` watch, and its environ is kept beside it.  A request
        ends (or failed before it started): the slot is cleared, and the
        request counted.  Strategy: with one request thread these are
        closures over slot 0 (no attribute or thread lookups), about 360
        machine instructions less per request than the methods.
        """
        if not self._one_thread:
            return self._on_request, self._on_finished
        slots, environs, now = self._slots, self._environs, time.monotonic
        count = self._count_request if self.limit else None

        def on_request(environ: dict[str, Any]) -> None:
            environs[0] = environ
            slots[0] = now()

        def on_finished() -> None:
            slots[0] = 0.0
            environs[0] = None
            if count is not None:
                count()

        return on_request, on_finished

    def _on_request(self, environ: dict[str, Any]) -> None:
        """A request starts in one of several threads: stamp that thread's slot."""
        index = self._slot_of(get_ident())
        self._environs[index] = environ
        self._slots[index] = time.monotonic()

    def _on_finished(self) -> None:
        """A request ended in one of several threads: clear its slot, count it."""
        index = self._slot_index.get(get_ident())
        if index is not None:
            self._slots[index] = 0.0
            self._environs[index] = None
        if self.limit:
            self._count_request()

    def _slot_of(self, thread: int) -> int:
        """The slot of a request thread; one seen for the first time gets the next one."""
        index = self._slot_index.get(thread)
        if index is None:
            with self._lock:
                index = len(self._slot_index)
                self._slot_index[thread] = index
        return index

    def _started(self, thread: int | None) -> float:
        """When the request running in ``thread`` started; 0.0 if none runs there."""
        index = self._slot_index.get(thread) if thread is not None else None
        return 0.0 if index is None else self._slots[index]

    def _count_request(self) -> None:
        with self._lock:
            self.requests += 1
            retire = self.requests == self.limit
        if retire and self.backend is not None:
            log.info("worker %d: served %d requests; retiring", os.getpid(), self.requests)
            self._note(NOTE_RETIRING)
            self.backend.shutdown()

    # -- talking to the arbiter -------------------------------------------------------

    def _note(self, kind: bytes) -> None:
        try:
            os.write(self.context.notify_fd, _NOTE.pack(kind, os.getpid()))
        except OSError as exc:
            log.warning("worker %d: cannot reach the arbiter: %s", os.getpid(), exc)

    def _arbiter_gone(self) -> None:
        if self.backend is None or self.backend.stopping:
            return  # a normal stop: the arbiter closed the pipe after sending TERM
        log.error("worker %d: the arbiter is gone; stopping", os.getpid())
        self.backend.shutdown()

    # -- signal handlers ------------------------------------------------------------

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        if self.backend is None:
            # Still importing the app (TTOU soon after TTIN): stop once built,
            # not graceful_timeout later with SIGKILL, maybe mid-request.
            self._term_before_serving = True
            return
        self.backend.shutdown()
        if self._started(threading.main_thread().ident):
            # The single backend serves in the main thread, so its accept loop
            # closes the listeners only after this request.  Our copy would
            # keep a TCP socket listening once the arbiter and idle workers
            # closed theirs: new connections would queue unserved until the
            # drain ends, then be reset.  Close it now so they are refused.
            for listener in self.context.listeners:
                listener.close()

    def _on_quick_stop(self, signum: int, frame: FrameType | None) -> None:
        sys.stderr.flush()
        os._exit(0)

    def _on_reopen(self, signum: int, frame: FrameType | None) -> None:
        if self.access_log is not None:
            self.access_log.reopen()

    def _on_timeout(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        overdue = [
            (thread, started, self._environs[index])
            for thread, index in list(self._slot_index.items())
            if (started := self._slots[index]) and now - started >= self.config.timeout
        ]
        if not overdue:
            return  # the request finished meanwhile: nothing to kill
        frames = sys._current_frames()
        main = threading.main_thread().ident
        for thread, started, environ in overdue:
            what = _describe_request(environ or {})
            where = frame if thread == main else frames.get(thread)
            stack = _application_stack(where)
            log.error(
                "worker %d: request %s has run %.1fs, past the %ss timeout; "
                "the worker is killed. Where it is (most recent call last):\n%s",
                os.getpid(),
                what,
                now - started,
                self.config.timeout,
                stack.rstrip("\n"),
            )
        for handler in logging.getLogger("scgiwsgi").handlers:
            handler.flush()
        os._exit(EXIT_TIMEOUT)


def freeze_startup_objects() -> None:
    """Collect once, then leave every object alive now out of later collections.

    Strategy: the application's modules, classes and functions live as long
    as the process, yet each full collection of the cyclic garbage collector
    walks all of them again (tens of milliseconds for a large Django
    project, every few hundred requests).  ``gc.freeze()`` moves them to a
    generation that is never collected, so collections only walk what the
    requests allocate.  Only for processes the server owns.
    """
    gc.collect()
    gc.freeze()


def _describe_request(environ: dict[str, Any]) -> str:
    uri = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
    return f"{environ.get('REQUEST_METHOD', '-')} {uri}"


def _application_stack(frame: FrameType | None) -> str:
    """The stack of ``frame`` from the application's entry on (server frames cut)."""
    if frame is None:
        return "  (the request's thread is gone)\n"
    entries = traceback.extract_stack(frame)
    for index, entry in enumerate(entries):
        if entry.name == "run_application" and entry.filename.endswith("gateway.py"):
            entries = traceback.StackSummary.from_list(entries[index + 1 :]) or entries
            break
    return "".join(entries.format())


def _request_limit(config: Config) -> int:
    if not config.max_requests:
        return 0
    jitter = config.max_requests_jitter
    extra = int.from_bytes(os.urandom(4), "little") % (jitter + 1) if jitter else 0
    return config.max_requests + extra


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
