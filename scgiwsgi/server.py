"""``WSGIServer``: bind, pick a backend, serve until told to stop.

The CLI is a thin layer over this class; launcher scripts use it directly::

    from scgiwsgi import WSGIServer
    WSGIServer(application, bind="127.0.0.1:4000", threads=16).serve_forever()
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any

from . import __version__
from .arbiter import Arbiter
from .backends import Backend, backend_class
from .config import Config
from .demo import application as demo_application
from .errors import ConfigError
from .gateway import WSGIApp
from .handler import ConnectionHandler
from .logs import AccessLog, configure_error_log
from .privileges import apply_socket_group, secure
from .reexec import Inherited, take_inherited
from .sockets import Listener, bind_all
from .systemd import Notifier, activated_listeners

if TYPE_CHECKING:
    from .devhttp import DevFront
    from .reloader import Reloader

__all__ = ["WSGIServer"]

log = logging.getLogger("scgiwsgi.error")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class WSGIServer:
    """A WSGI server speaking SCGI on one or more addresses.

    ``bind`` is one address or a list of them (``HOST:PORT``, ``[IPv6]:PORT``,
    ``unix:/path``, ``fd://N``); ``backend`` is ``"threaded"``, ``"single"``
    or ``"fork"``; every other keyword is a :class:`~scgiwsgi.Config` option
    (``threads``, ``script_name``, ``max_header_size``...).  Pass ``config``
    instead to use a ready-made :class:`~scgiwsgi.Config`.  With ``app`` None
    and no ``app_loader`` the built-in page listing the CGI variables is
    served.  ``app_loader`` (a callable returning the app) lets the fork
    backend import the application in each worker after the fork, unless
    ``preload`` is set.

    Raises :class:`~scgiwsgi.errors.ConfigError` for a bad option and, from
    :meth:`bind` or :meth:`serve_forever`,
    :class:`~scgiwsgi.errors.BindError` when an address cannot be bound.
    """

    def __init__(
        self,
        app: WSGIApp | None = None,
        bind: str | Iterable[str] | None = None,
        backend: str | None = None,
        *,
        config: Config | None = None,
        app_name: str | None = None,
        app_loader: Callable[[], WSGIApp] | None = None,
        **options: Any,
    ) -> None:
        base = config if config is not None else Config()
        changes = dict(options)
        if bind is not None:
            changes["bind"] = (bind,) if isinstance(bind, str) else tuple(bind)
        if backend is not None:
            changes["backend"] = backend
        self.config = base.replace(**changes) if changes else base
        self.app: WSGIApp | None = app
        self.app_loader = app_loader
        if app is None and app_loader is None:
            self.app = demo_application
        self.app_name = app_name or _describe_app(app)
        self.listeners: list[Listener] = []
        self._backend: Backend | None = None
        self._arbiter: Arbiter | None = None
        self.on_hup: Callable[[], None] | None = None
        """With the fork backend, called on SIGHUP instead of the graceful reload."""
        self._inherited: Inherited | None = None
        self._stop_requested = threading.Event()
        self._access_log: AccessLog | None = None
        self._notifier = Notifier()

    @property
    def addresses(self) -> list[str]:
        """The bound addresses as displayed (real ports when 0 was asked)."""
        return [listener.display for listener in self.listeners]

    def bind(self) -> list[Listener]:
        """Bind every address now (idempotent); raises BindError.

        Sockets passed by systemd socket activation (``LISTEN_FDS``) are used
        instead of the ``bind`` addresses; see :mod:`scgiwsgi.systemd`.
        """
        if not self.listeners and self._inherited is None:
            self._inherited = take_inherited()
            if self._inherited is not None:
                self.listeners = list(self._inherited.listeners)
        if not self.listeners:
            self.listeners = activated_listeners() or bind_all(
                self.config.bind,
                socket_mode=self.config.socket_mode,
                backlog=self.config.backlog,
                defer_accept=self.config.defer_accept,
            )
            try:
                apply_socket_group(self.config, self.listeners)
            except ConfigError:
                self.server_close()
                raise
        return self.listeners

    def serve_forever(self) -> int:
        """Serve until :meth:`shutdown`, SIGTERM or SIGINT; then stop gracefully.

        In-flight requests get ``graceful_timeout`` seconds to finish.  Signal
        handlers are installed only when called from the main thread (the
        fork backend must run there).  Returns the exit status for the
        process: 0 after a stop; with the fork backend, 4 when the workers
        cannot import the application.  Raises
        :class:`~scgiwsgi.errors.AppImportError` when the application is
        loaded here and fails.
        """
        _ensure_logging(self.config.log_level)
        self.bind()
        pid_file = _PidFile(self.config.pid_file)
        dev_front: DevFront | None = None
        reloader: Reloader | None = None
        previous_hup: Any = None
        try:
            pid_file.write()
            self._open_access_log()
            secure(self.config, self.listeners)
            dev_front = self._start_dev_front()
            if self.config.reload:
                # A change noticed before or after the arbiter's own handler
                # is in place must not end the process (SIGHUP's default).
                previous_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
                reloader = self._start_reloader()
            if self.config.backend == "fork":
                return self._run_arbiter()
            self._run_in_process()
            return 0
        finally:
            if reloader is not None:
                reloader.close()
            if previous_hup is not None:
                signal.signal(signal.SIGHUP, previous_hup)
            if dev_front is not None:
                dev_front.close()
            self._notifier.stopping()
            pid_file.remove()
            self.server_close()
            self._stop_requested.clear()

    def _run_in_process(self) -> None:
        app = self._loaded_app()
        restore = self._install_signal_handlers()
        try:
            backend = self._make_backend(app)
            log.info("%s", self._startup_line(backend.describe()))
            self._notifier.ready(f"serving {self.app_name} on {', '.join(self.addresses)}")
            if self._stop_requested.is_set():
                backend.shutdown()
            backend.serve_forever()
            log.info("stopped")
        finally:
            restore()

    def _run_arbiter(self) -> int:
        if threading.current_thread() is not threading.main_thread():
            raise ConfigError("the fork backend must run in the main thread")
        preload = self.config.preload or self.app_loader is None
        reloadable = self.config.preload and self.app_loader is not None
        app = self._loaded_app() if preload else None
        self._arbiter = Arbiter(
            self.config,
            list(self.listeners),
            app=app,
            app_loader=None if app is not None else self.app_loader,
            app_name=self.app_name,
            reload_by_reexec=reloadable,
            inherited=self._inherited,
            on_hup=self.on_hup,
        )
        workers, threads = self.config.worker_count, self.config.thread_count
        log.info(
            "%s",
            self._startup_line(
                f"fork ({workers} worker{'s' if workers > 1 else ''}, "
                f"{threads} thread{'s' if threads > 1 else ''} each)"
            ),
        )
        self._notifier.ready(f"serving {self.app_name} on {', '.join(self.addresses)}")
        if self._stop_requested.is_set():
            self._arbiter.stop()
        status = self._arbiter.run()
        log.info("stopped")
        return status

    def _start_dev_front(self) -> DevFront | None:
        if self.config.http is None:
            return None
        from .devhttp import start_dev_front  # imports http.server: only when asked

        return start_dev_front(self.config, self.listeners, rebinding=self._inherited is not None)

    def _start_reloader(self) -> Reloader:
        if self.app_loader is None:
            raise ConfigError("reload needs the app as an import spec, not an application object")
        from .reloader import Reloader, watch_dirs

        return Reloader(watch_dirs(self.config), os.getpid(), self.listeners)

    def _loaded_app(self) -> WSGIApp:
        if self.app is None:
            if self.app_loader is None:
                raise ConfigError("no application to serve")
            self.app = self.app_loader()
        return self.app

    def shutdown(self) -> None:
        """Stop accepting and let :meth:`serve_forever` return; thread-safe."""
        self._notifier.stopping()
        self._stop_requested.set()
        if self._backend is not None:
            self._backend.shutdown()
        if self._arbiter is not None:
            self._arbiter.stop()

    def server_close(self) -> None:
        """Close the listening sockets (removing unix socket files) and logs."""
        for listener in self.listeners:
            listener.close()
        self.listeners = []
        if self._access_log is not None:
            self._access_log.close()
            self._access_log = None

    def _open_access_log(self) -> None:
        # Opened before privileges are dropped and before anything is served,
        # so a bad path is one clear error.  Fork workers open their own.
        if not self.config.access_log:
            return
        self._access_log = AccessLog(self.config.access_log, self.config.access_log_format)
        if self.config.backend == "fork":
            self._access_log.close()
            self._access_log = None

    def _make_backend(self, app: WSGIApp) -> Backend:
        cls = backend_class(self.config.backend)
        handler = ConnectionHandler(
            app,
            self.config,
            multithread=cls.is_multithread(self.config),
            multiprocess=cls.multiprocess,
            access_log=self._access_log,
        )
        self._backend = cls(self.listeners, handler, self.config)
        # Only a server that owns the process (signal handlers installed from
        # the main thread) may end it when a request outlives the grace time.
        self._backend.may_exit_process = threading.current_thread() is threading.main_thread()
        return self._backend

    def _startup_line(self, backend: str) -> str:
        return (
            f"scgiwsgi {__version__} serving {self.app_name} on "
            f"{', '.join(self.addresses)} with the {backend} backend, pid {os.getpid()}"
        )

    def _install_signal_handlers(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {signum: signal.getsignal(signum) for signum in (*_STOP_SIGNALS, signal.SIGUSR1)}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info(
                "received %s: stopping; in-flight requests get up to %ss",
                signal.Signals(signum).name,
                self.config.graceful_timeout,
            )
            self.shutdown()

        def on_reopen(signum: int, frame: FrameType | None) -> None:
            if self._access_log is not None:
                log.info("received SIGUSR1: reopening the access log")
                self._access_log.reopen()

        for signum in _STOP_SIGNALS:
            signal.signal(signum, on_signal)
        signal.signal(signal.SIGUSR1, on_reopen)

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore


class _PidFile:
    """``--pid FILE``: written at start, removed at exit if it still names us."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.pid = 0

    def write(self) -> None:
        if self.path is None:
            return
        self.pid = os.getpid()
        try:
            with open(self.path, "w", encoding="ascii") as file:
                file.write(f"{self.pid}\n")
        except OSError as exc:
            raise ConfigError(f"pid_file: cannot write {self.path!r}: {exc.strerror}") from None

    def remove(self) -> None:
        if self.path is None or self.pid != os.getpid():
            return
        try:
            with open(self.path, encoding="ascii") as file:
                if file.read().strip() != str(self.pid):
                    return
            os.unlink(self.path)
        except OSError:
            pass


def _ensure_logging(level: str) -> None:
    if not logging.getLogger("scgiwsgi").handlers and not logging.getLogger().handlers:
        configure_error_log(level)


def _describe_app(app: WSGIApp | None) -> str:
    if app is None:
        return "the built-in CGI variables page"
    module = getattr(app, "__module__", None) or "?"
    name = getattr(app, "__qualname__", None) or type(app).__qualname__
    return f"{module}:{name}"
