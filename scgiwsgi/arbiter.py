"""The arbiter of the fork backend: forks workers, supervises, answers signals.

Shape of the loop (gunicorn's and uvicorn's ideas at uvicorn's size): signal
handlers only queue the signal and write a byte to a wake-up pipe.  The main
loop sleeps in ``select`` on that pipe and on the workers' notes pipe (at most
a second, less when a deadline is near), then, in order: dispatches queued
signals to ``_handle_<name>``, reads worker notes (ready, retiring), reaps
dead children, and either keeps the pool at its size and kills workers whose
request ran past ``--timeout`` (running), or waits for the pool to drain
(stopping).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import logging
import mmap
import os
import select
import signal
import time
from collections.abc import Callable
from types import FrameType

from .backends.prefork import (
    EXIT_APP_IMPORT,
    EXIT_TIMEOUT,
    NOTE_READY,
    NOTE_RETIRING,
    SLOT_SIZE,
    WorkerContext,
    read_notes,
    read_slot,
    run_worker,
    set_process_title,
)
from .config import Config
from .gateway import WSGIApp
from .reexec import CodeCheck, Inherited, reexec, start_code_check
from .sockets import Listener

__all__ = ["Arbiter"]

log = logging.getLogger("scgiwsgi.error")

_HANDLED_SIGNALS = (
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGCHLD,
)
_MAX_SLOTS = 4096
_QUICK_STOP_SECONDS = 5.0
_TIMEOUT_KILL_GRACE = 2.0
_CRASH_LOOP_LIMIT = 10


class _State(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"


@dataclasses.dataclass
class _Worker:
    pid: int
    generation: int
    slot_base: int
    ready: bool = False
    retiring: bool = False
    kill_at: float | None = None
    timed_out: bool = False


class Arbiter:
    """Supervises ``config.worker_count`` forked workers on ``listeners``.

    ``app`` is the application object when it was loaded before forking
    (``--preload``, or an object given to :class:`~scgiwsgi.WSGIServer`);
    otherwise each worker calls ``app_loader`` after the fork.  :meth:`run`
    returns the process exit status: 0 after a stop, 4 when the workers
    cannot import the application, 1 when workers keep dying at boot.
    """

    def __init__(
        self,
        config: Config,
        listeners: list[Listener],
        *,
        app: WSGIApp | None,
        app_loader: Callable[[], WSGIApp] | None,
        app_name: str,
        reload_by_reexec: bool = False,
        inherited: Inherited | None = None,
        on_hup: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.on_hup = on_hup
        self.reload_by_reexec = reload_by_reexec
        self.listeners = listeners
        self.app = app
        self.app_loader = app_loader
        self.app_name = app_name
        self.target = config.worker_count
        self.workers: dict[int, _Worker] = {}
        self.generation = 0
        self.exit_status = 0
        self._state = _State.RUNNING
        self._stop_deadline = 0.0
        self._signals: collections.deque[int] = collections.deque()
        self._boot_failures = 0
        self._free_slots = list(range(0, _MAX_SLOTS, config.thread_count))
        self._slots = mmap.mmap(-1, _MAX_SLOTS * SLOT_SIZE)
        self._wake_r, self._wake_w = os.pipe()
        self._notes_r, self._notes_w = os.pipe()
        self._alive_r, self._alive_w = os.pipe()
        for fd in (self._wake_r, self._wake_w, self._notes_r):
            os.set_blocking(fd, False)
        self._old_alive_w = -1
        self._code_check: CodeCheck | None = None
        if inherited is not None:
            self._adopt(inherited)

    def _adopt(self, inherited: Inherited) -> None:
        """Take over the workers of the image this process was before ``exec``."""
        self._old_alive_w = inherited.alive_fd
        self.generation = 1
        if inherited.target is not None:
            self.target = inherited.target
        for pid in inherited.old_workers:
            self.workers[pid] = _Worker(pid, generation=0, slot_base=-1, ready=True)
        log.info(
            "re-executed for a reload: %d old worker(s) stop once the new ones accept",
            len(inherited.old_workers),
        )

    # -- public ----------------------------------------------------------------------

    def run(self) -> int:
        """Fork the workers and supervise them until stopped; return the exit status."""
        set_process_title(f"scgi-wsgi arbiter: {self.app_name}")
        previous = self._install_signals()
        # Every caught signal also wakes the select (no handler can run late).
        previous_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        try:
            self._spawn_missing()
            while self.workers or self._state is _State.RUNNING:
                self._sleep()
                self._dispatch_signals()
                self._read_notes()
                self._reap()
                self._tend()
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            self._restore_signals(previous)
            self._close_pipes()
        return self.exit_status

    def stop(self, graceful: bool = True) -> None:
        """Queue a stop as if TERM (or INT when not ``graceful``) arrived."""
        self._queue_signal(signal.SIGTERM if graceful else signal.SIGINT)

    # -- signals ---------------------------------------------------------------------

    def _install_signals(self) -> dict[int, object]:
        previous: dict[int, object] = {}
        for signum in _HANDLED_SIGNALS:
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _restore_signals(self, previous: dict[int, object]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._queue_signal(signum)

    def _queue_signal(self, signum: int) -> None:
        self._signals.append(signum)
        # OSError: the pipe is full, so the loop is awake anyway.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")

    def _dispatch_signals(self) -> None:
        while self._signals:
            signum = self._signals.popleft()
            name = signal.Signals(signum).name.lower()
            getattr(self, f"_handle_{name}")()

    def _handle_sigchld(self) -> None:
        """Reaping happens on every turn of the loop."""

    def _handle_sigterm(self) -> None:
        self._begin_stop(graceful=True, reason="received SIGTERM")

    def _handle_sigint(self) -> None:
        self._begin_stop(graceful=False, reason="received SIGINT")

    def _handle_sigquit(self) -> None:
        self._begin_stop(graceful=False, reason="received SIGQUIT")

    def _handle_sighup(self) -> None:
        if self._state is not _State.RUNNING:
            return
        if self.on_hup is not None:
            self.on_hup()  # the embedding program decides (flup's launchers stop)
            return
        if self.reload_by_reexec:
            self._reexec()
            return
        self._restart_workers()

    def _restart_workers(self) -> None:
        self.generation += 1
        log.info(
            "received SIGHUP: starting %d new worker(s) (generation %d); the old ones "
            "stop once the new ones accept",
            self.target,
            self.generation,
        )
        if self.app is not None:
            log.warning(
                "the application object was created before forking and cannot be "
                "re-imported: the new workers run the same code"
            )

    def _reexec(self) -> None:
        if self._code_check is not None:
            log.info("received SIGHUP: a reload is already being checked")
            return
        log.info(
            "received SIGHUP with --preload: checking the new code, then re-executing the "
            "arbiter to import it; the old workers serve meanwhile"
        )
        try:
            self._code_check = start_code_check()
        except OSError as exc:
            log.error("reload refused, the new code cannot be checked: %s", exc)
            return
        if self._code_check is None:
            self._reexec_now()

    def _finish_code_check(self) -> None:
        check = self._code_check
        if check is None:
            return
        done, problem = check.result()
        if not done:
            return
        self._code_check = None
        if problem is not None:
            log.error("reload refused, the old workers keep serving: %s", problem)
            return
        self._reexec_now()

    def _reexec_now(self) -> None:
        try:
            reexec(self.listeners, list(self.workers), self._alive_w, self.target)
        except OSError as exc:
            log.error("cannot re-execute the arbiter (%s); restarting the workers only", exc)
            self._restart_workers()

    def _handle_sigttin(self) -> None:
        self.target += 1
        log.info("received SIGTTIN: %d worker(s) wanted", self.target)

    def _handle_sigttou(self) -> None:
        self.target = max(1, self.target - 1)
        log.info("received SIGTTOU: %d worker(s) wanted", self.target)

    def _handle_sigusr1(self) -> None:
        log.info("received SIGUSR1: workers reopen their log files")
        for pid in list(self.workers):
            self._kill(pid, signal.SIGUSR1)

    # -- the loop's steps ---------------------------------------------------------------

    def _sleep(self) -> None:
        timeout = 1.0
        deadlines = [w.kill_at for w in self.workers.values() if w.kill_at is not None]
        if self._state is _State.STOPPING:
            deadlines.append(self._stop_deadline)
        if deadlines:
            timeout = max(0.0, min(timeout, min(deadlines) - time.monotonic()))
        if self._signals:
            timeout = 0.0
        try:
            readable, _, _ = select.select([self._wake_r, self._notes_r], [], [], timeout)
        except InterruptedError:
            return
        if self._wake_r in readable:
            _drain_pipe(self._wake_r)

    def _read_notes(self) -> None:
        data = _drain_pipe(self._notes_r)
        for kind, pid in read_notes(data):
            worker = self.workers.get(pid)
            if worker is None:
                continue
            if kind == NOTE_READY:
                worker.ready = True
                self._boot_failures = 0
            elif kind == NOTE_RETIRING:
                worker.retiring = True

    def _reap(self) -> None:
        # Only our workers: other children (the reload's code check, the
        # development HTTP front) are waited for by their owners.
        for pid in list(self.workers):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                continue
            # A worker writes its notes before it exits, so they are in the
            # pipe now even if they arrived after this turn's _read_notes: a
            # retirement must not be logged as an unexpected exit.
            self._read_notes()
            worker = self.workers.pop(pid, None)
            if worker is not None:
                if worker.slot_base >= 0:
                    self._free_slots.append(worker.slot_base)
                self._worker_exited(worker, status)

    def _worker_exited(self, worker: _Worker, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        expected = worker.retiring or self._state is _State.STOPPING
        if code == EXIT_APP_IMPORT:
            self._boot_failed(worker)
            return
        if code == EXIT_TIMEOUT or (worker.timed_out and code < 0):
            log.error(
                "worker %d killed after a request ran past the timeout; replacing it", worker.pid
            )
        elif code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            level = logging.INFO if expected and -code == signal.SIGKILL else logging.ERROR
            log.log(
                level, "worker %d was killed by signal %s%s", worker.pid, name, self._replacing()
            )
        elif code != 0 or not expected:
            log.error("worker %d exited with status %d%s", worker.pid, code, self._replacing())
        else:
            log.info("worker %d exited", worker.pid)
        if not worker.ready and not expected:
            self._boot_failures += 1
            if self._boot_failures >= _CRASH_LOOP_LIMIT:
                log.error("%d workers in a row died before serving; giving up", self._boot_failures)
                self.exit_status = 1
                self._begin_stop(graceful=False, reason="workers cannot start")

    def _boot_failed(self, worker: _Worker) -> None:
        if self._state is not _State.RUNNING or worker.retiring:
            return  # retiring: a sibling of a reload that was already given up
        older = [w for w in self.workers.values() if w.generation < worker.generation and w.ready]
        if older:
            log.error(
                "reload failed: worker %d cannot import the application; keeping the "
                "workers that run the previous code",
                worker.pid,
            )
            self.generation -= 1
            for other in list(self.workers.values()):
                if other.generation == worker.generation:
                    # Marked so that their exit (0, or 4 when they fail too) is
                    # expected: a second "reload failed" would step the
                    # generation back past the old workers and respawn the
                    # broken code, which then stops the server.
                    other.retiring = True
                    self._kill(other.pid, signal.SIGINT)
            return
        log.error("worker %d cannot import the application: stopping the server", worker.pid)
        self.exit_status = EXIT_APP_IMPORT
        self._begin_stop(graceful=False, reason="the application cannot be imported")

    def _replacing(self) -> str:
        return "; replacing it" if self._state is _State.RUNNING else ""

    def _tend(self) -> None:
        now = time.monotonic()
        self._enforce_kill_deadlines(now)
        if self._state is _State.STOPPING:
            if now >= self._stop_deadline:
                self._kill_all(signal.SIGKILL, "did not stop in time")
                self._stop_deadline = now + 1.0  # reaped on a later turn
            return
        self._check_timeouts(now)
        self._finish_reload()
        self._spawn_missing()
        self._trim_extra()
        self._finish_code_check()

    # -- pool management ------------------------------------------------------------------

    def _current(self) -> list[_Worker]:
        return [
            w
            for w in self.workers.values()
            if w.generation == self.generation and not w.retiring and w.kill_at is None
        ]

    def _spawn_missing(self) -> None:
        for _ in range(self.target - len(self._current())):
            if not self._free_slots:
                log.error("no shared memory slot left for another worker")
                return
            self._spawn(self._free_slots.pop(0))

    def _spawn(self, slot_base: int) -> None:
        for index in range(self.config.thread_count):
            offset = (slot_base + index) * SLOT_SIZE
            self._slots[offset : offset + SLOT_SIZE] = bytes(SLOT_SIZE)
        pid = os.fork()
        if pid == 0:
            os._exit(self._run_child(slot_base))
        self.workers[pid] = _Worker(pid, self.generation, slot_base)
        log.debug("worker %d started (generation %d)", pid, self.generation)

    def _run_child(self, slot_base: int) -> int:
        try:
            context = WorkerContext(
                config=self.config,
                listeners=self.listeners,
                app=self.app,
                app_loader=self.app_loader,
                app_name=self.app_name,
                slots=self._slots,
                alive_fd=self._alive_r,
                notify_fd=self._notes_w,
                close_fds=(self._wake_r, self._wake_w, self._notes_r, self._alive_w),
            )
            return run_worker(context, slot_base)
        except BaseException:
            return 70

    def _finish_reload(self) -> None:
        old = [
            w for w in self.workers.values() if w.generation < self.generation and not w.retiring
        ]
        if not old:
            return
        fresh = [w for w in self._current() if w.ready]
        if len(fresh) < self.target:
            return
        log.info("new workers accept; stopping %d old worker(s) gracefully", len(old))
        for worker in old:
            worker.retiring = True
            self._kill(worker.pid, signal.SIGTERM)
            worker.kill_at = time.monotonic() + self.config.graceful_timeout

    def _trim_extra(self) -> None:
        current = sorted(self._current(), key=lambda w: w.pid)
        for worker in current[self.target :]:
            worker.retiring = True
            self._kill(worker.pid, signal.SIGTERM)
            worker.kill_at = time.monotonic() + self.config.graceful_timeout

    def _check_timeouts(self, now: float) -> None:
        limit = self.config.timeout
        if not limit:
            return
        for worker in self.workers.values():
            if worker.timed_out or not worker.ready or worker.slot_base < 0:
                continue
            started = [
                read_slot(self._slots, worker.slot_base + i)
                for i in range(self.config.thread_count)
            ]
            running = [now - s for s in started if s > 0.0]
            if running and max(running) > limit:
                log.warning(
                    "worker %d: a request has run %.1fs, past the %ss timeout; asking for its "
                    "stack, then killing the worker",
                    worker.pid,
                    max(running),
                    limit,
                )
                worker.timed_out = True
                worker.kill_at = now + _TIMEOUT_KILL_GRACE
                self._kill(worker.pid, signal.SIGUSR2)

    def _enforce_kill_deadlines(self, now: float) -> None:
        for worker in list(self.workers.values()):
            if worker.kill_at is not None and now >= worker.kill_at:
                worker.kill_at = None
                worker.retiring = True
                self._kill(worker.pid, signal.SIGKILL)

    # -- stopping ---------------------------------------------------------------------

    def _begin_stop(self, *, graceful: bool, reason: str) -> None:
        if self._state is _State.STOPPING and graceful:
            return
        self._state = _State.STOPPING
        if self._code_check is not None:
            self._code_check.cancel()
            self._code_check = None
        if graceful:
            wait = self.config.graceful_timeout
            log.info("%s: stopping gracefully; in-flight requests get up to %ss", reason, wait)
            self._kill_all(signal.SIGTERM)
        else:
            wait = _QUICK_STOP_SECONDS
            log.info("%s: stopping now", reason)
            self._kill_all(signal.SIGQUIT)
        self._stop_deadline = time.monotonic() + wait
        for listener in self.listeners:
            listener.close()
        # Workers watch this pipe: closing our end tells every one of them.
        for fd in (self._alive_w, self._old_alive_w):
            if fd >= 0:
                _close_fd(fd)
        self._alive_w = self._old_alive_w = -1

    def _kill_all(self, signum: int, why: str = "") -> None:
        if why and self.workers:
            log.warning("%d worker(s) %s; killing them", len(self.workers), why)
        for pid in list(self.workers):
            self._kill(pid, signum)

    def _kill(self, pid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    def _close_pipes(self) -> None:
        for fd in (
            self._wake_r,
            self._wake_w,
            self._notes_r,
            self._notes_w,
            self._alive_r,
            self._alive_w,
        ):
            if fd >= 0:
                _close_fd(fd)
        self._slots.close()


def _drain_pipe(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def _close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
