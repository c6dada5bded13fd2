"""``--reload``: restart the workers when the application's source changes.

For development only.  The server runs the fork backend without
``--preload``, so the arbiter never imports the application: on ``SIGHUP`` it
forks fresh workers, which import the code as it is now, and retires the old
ones once the new ones accept.  The listening sockets stay open throughout.

Strategy: the watching happens in a small process of its own, forked by the
server before the arbiter starts (the arbiter forks workers all the time and
must hold no threads, and watchfiles runs a thread).  It runs
``watchfiles.watch`` over the directories of the application, and on a
change of a ``*.py`` file logs ``reloading: changed FILE``, removes that
file's cached bytecode (a rewrite within the same second and of the same
size would otherwise pass the ``.pyc`` check) and sends ``SIGHUP`` to the
server.  It holds the read end of a pipe whose only write end the server
holds: when the server exits, however it exits, the pipe reads EOF and the
watcher stops, so it never outlives the server.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence

from .config import Config
from .errors import ConfigError
from .lifeline import wait_for_eof
from .sockets import Listener

__all__ = ["Reloader", "watch_dirs"]

log = logging.getLogger("scgiwsgi.error")

_DEBOUNCE_MS = 300
_QUIET_MS = 250
_READY_TIMEOUT = 15.0
_CLOSE_TIMEOUT = 5.0

# Write ends of the pipes that keep watcher processes alive.  Forked children
# (workers, the watcher itself) close them, so the watcher sees EOF exactly
# when the server process ends.
_alive_writers: set[int] = set()
_at_fork_registered = False


def watch_dirs(config: Config) -> list[str]:
    """Directories whose ``*.py`` files ``--reload`` watches, recursively.

    They are the ``chdir`` and ``pythonpath`` directories and the directory
    of the application's top-level package or module (or of its file), found
    without importing anything.  Relative paths are taken from ``chdir`` as
    :func:`~scgiwsgi.loading.load_app` does.
    """
    base = os.path.abspath(config.chdir) if config.chdir else os.getcwd()
    search = [os.path.join(base, entry) for entry in config.pythonpath] + [base]
    dirs = search[:-1] + ([base] if config.chdir else [])
    module_part = (config.app or "").partition(":")[0].strip()
    if module_part.endswith(".py") or "/" in module_part or os.sep in module_part:
        dirs.append(os.path.dirname(os.path.join(base, module_part)))
    elif module_part:
        dirs.extend(_module_dirs(module_part.split(".")[0], search))
    if not dirs:
        dirs.append(base)
    return _outermost(os.path.abspath(path) for path in dirs if os.path.isdir(path))


def _module_dirs(top: str, search: list[str]) -> list[str]:
    # PathFinder only looks: no package __init__ runs in the arbiter, which
    # must stay free of the application's code for fresh imports in workers.
    spec = importlib.machinery.PathFinder.find_spec(top, [*search, *sys.path])
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return list(spec.submodule_search_locations)
    return [os.path.dirname(spec.origin)] if spec.origin else []


def _outermost(paths: Iterable[str]) -> list[str]:
    unique = sorted(set(paths))
    kept: list[str] = []
    for path in unique:
        if not any(path == top or path.startswith(top.rstrip(os.sep) + os.sep) for top in kept):
            kept.append(path)
    return kept


class Reloader:
    """The watcher process of ``--reload``, signalling ``target_pid`` with SIGHUP.

    Raises :class:`~scgiwsgi.errors.ConfigError` when watchfiles is not
    installed (``pip install 'scgiwsgi[reload]'``).  :meth:`close` stops the
    watcher and waits for it.
    """

    def __init__(self, dirs: Sequence[str], target_pid: int, listeners: Sequence[Listener]) -> None:
        global _at_fork_registered
        if importlib.util.find_spec("watchfiles") is None:
            raise ConfigError("reload needs watchfiles: pip install 'scgiwsgi[reload]'")
        if not _at_fork_registered:
            os.register_at_fork(after_in_child=_close_alive_writers_in_child)
            _at_fork_registered = True
        log.warning(
            "reload: watching *.py under %s; for development only, never in production",
            ", ".join(dirs),
        )
        alive_r, self._alive_w = os.pipe()
        _alive_writers.add(self._alive_w)
        ready_r, ready_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            status = 70
            try:
                os.close(ready_r)
                status = _run_watcher(list(dirs), target_pid, (alive_r, ready_w), listeners)
            finally:
                os._exit(status)
        os.close(alive_r)
        os.close(ready_w)
        self._wait_ready(ready_r)

    def _wait_ready(self, ready_fd: int) -> None:
        # A change made once the server says it serves must be seen: wait
        # until the watcher watches (one byte), or has died (EOF).
        try:
            readable, _, _ = select.select([ready_fd], [], [], _READY_TIMEOUT)
            ready = bool(readable) and os.read(ready_fd, 1) == b"!"
        finally:
            os.close(ready_fd)
        if not ready:
            self.close()
            raise ConfigError("reload: the watcher process could not start watching")

    def close(self) -> None:
        """Stop the watcher (EOF on its pipe) and reap it; kill it if it lingers."""
        if self._alive_w < 0:
            return
        _alive_writers.discard(self._alive_w)
        os.close(self._alive_w)
        self._alive_w = -1
        deadline = time.monotonic() + _CLOSE_TIMEOUT
        while not _reaped(self.pid):
            if time.monotonic() >= deadline:
                log.warning("the reload watcher (pid %d) did not stop: killing it", self.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                deadline = time.monotonic() + _CLOSE_TIMEOUT
            time.sleep(0.02)


def _close_alive_writers_in_child() -> None:
    for fd in _alive_writers:
        with contextlib.suppress(OSError):
            os.close(fd)
    _alive_writers.clear()


def _reaped(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def _run_watcher(
    dirs: list[str], target_pid: int, pipes: tuple[int, int], listeners: Sequence[Listener]
) -> int:
    alive_fd, ready_fd = pipes
    # Ctrl-C reaches the whole process group: the server decides, and its
    # exit closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for listener in listeners:
        listener.sock.close()  # the file of a unix socket stays: the server owns it
    from .backends.prefork import set_process_title

    set_process_title("scgi-wsgi reload watcher")
    import watchfiles

    stop = threading.Event()
    threading.Thread(
        target=_stop_on_eof, args=(alive_fd, stop), name="scgiwsgi-reload-alive", daemon=True
    ).start()
    for changes in watchfiles.watch(
        *dirs,
        watch_filter=watchfiles.PythonFilter(),
        debounce=_DEBOUNCE_MS,
        stop_event=stop,
        raise_interrupt=False,
        # An empty set after each quiet spell: the first says the watch is on.
        rust_timeout=_QUIET_MS,
        yield_on_timeout=True,
    ):
        if ready_fd >= 0:
            os.write(ready_fd, b"!")
            os.close(ready_fd)
            ready_fd = -1
        if not changes:
            continue
        changed = sorted({path for _, path in changes})
        log.info("reloading: changed %s", ", ".join(changed))
        for path in changed:
            with contextlib.suppress(OSError, ValueError):
                os.unlink(importlib.util.cache_from_source(path))
        try:
            os.kill(target_pid, signal.SIGHUP)
        except ProcessLookupError:
            break
    return 0


def _stop_on_eof(fd: int, stop: threading.Event) -> None:
    wait_for_eof(fd)
    stop.set()
