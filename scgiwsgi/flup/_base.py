"""What both flup faces share: flup's arguments -> scgiwsgi options, and ``run()``."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import FrameType
from typing import Any, ClassVar

from ..config import LOG_LEVELS
from ..errors import BindError, ConfigError
from ..gateway import WSGIApp
from ..server import WSGIServer
from . import NoDefault

__all__ = [
    "FlupServer",
    "allow_list",
    "bind_address",
    "log_level",
    "script_name",
    "socket_mode",
]

log = logging.getLogger("scgiwsgi.error")

BindAddress = tuple[Any, ...] | str
_NOT_GIVEN: Any = object()
"""The default of ``timeout``: only the faces that take it see it, and only when given."""


def bind_address(address: BindAddress) -> str:
    """flup's ``bindAddress`` as an scgiwsgi address.

    A string is a unix socket path; ``(host, port)`` is TCP, where ``""``
    means every IPv4 interface (every IPv6 one for flup's longer IPv6
    tuples).  Raises ConfigError for anything else.
    """
    if isinstance(address, str):
        return f"unix:{address}"
    if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[0], str):
        host, port = address[0], address[1]
        if not host:
            host = "::" if len(address) > 2 else "0.0.0.0"
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    raise ConfigError(f"bindAddress must be (host, port) or a unix socket path, not {address!r}")


def socket_mode(umask: int | None) -> int:
    """The mode flup's unix socket got: ``0o777`` minus the umask (the process's if None)."""
    if umask is None:
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o777 & ~umask


def script_name(value: object) -> str:
    """flup's ``scriptName`` as scgiwsgi's ``script_name``.

    ``NoDefault`` and None leave the paths to the front end's variables (an
    empty mount prefix); a trailing slash is dropped.
    """
    if value is None or value is NoDefault:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"scriptName must be a string, not {value!r}")
    return value.rstrip("/")


def allow_list(servers: Sequence[str] | str | None) -> tuple[str, ...]:
    """flup's ``allowedServers`` as scgiwsgi's ``allow`` networks (IPv4 and IPv6).

    None allows every peer.  flup's empty list allowed none, which would
    only lock the front end out: it is refused with a ConfigError.
    """
    if servers is None:
        return ()
    entries = (servers,) if isinstance(servers, str) else tuple(servers)
    if not entries:
        raise ConfigError("allowedServers=[] refuses every front end; None allows all")
    return entries


def log_level(level: int) -> str:
    """A ``logging`` level number as the nearest scgiwsgi level name at or below it."""
    chosen = LOG_LEVELS[0]
    for name in LOG_LEVELS:
        if logging.getLevelName(name.upper()) <= level:
            chosen = name
    return chosen


def _extend_environ(app: WSGIApp, extra: Mapping[str, Any], multiprocess: bool) -> WSGIApp:
    def with_extra(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ.update(extra)
        if multiprocess:
            environ["wsgi.multiprocess"] = True
        return app(environ, start_response)

    return with_extra


def _debug_pages(app: WSGIApp) -> WSGIApp:
    """flup's ``debug=True``: a failure before the head went out shows its traceback."""

    def debugging(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        result: Iterable[bytes] | None = None
        try:
            result = app(environ, start_response)
            yield from result
        except Exception:
            # Re-raises when the head is already out: the server then aborts.
            start_response(
                "500 Internal Server Error",
                [("Content-Type", "text/plain; charset=utf-8")],
                sys.exc_info(),
            )
            log.exception("application failed; answered 500 with its traceback (debug=True)")
            yield traceback.format_exc().encode("utf-8", "replace")
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    return debugging


class FlupServer:
    """flup's ``WSGIServer``: build with flup's arguments, then :meth:`run`.

    The constructor takes the arguments of flup's forking server, in its
    order; a face with other positional arguments (the threaded one) has a
    constructor of its own that passes them on by keyword.  ``timeout`` and
    the other keywords are the face's own (:attr:`flup_keywords`), given to
    :meth:`backend_options`; :attr:`ignored_keywords` are accepted and
    dropped.  Raises ConfigError (or TypeError for an argument flup does not
    know) from the constructor.
    """

    backend: ClassVar[str]
    flup_keywords: ClassVar[tuple[str, ...]]
    """The keyword arguments of this face that :meth:`backend_options` takes."""
    ignored_keywords: ClassVar[tuple[str, ...]] = ("jobClass", "jobArgs")
    """Keyword arguments flup took that mean nothing here."""
    multiprocess: bool = False
    """flup's ``multiprocess``: ``wsgi.multiprocess`` forced on (the threaded face's argument)."""

    def __init__(
        self,
        application: WSGIApp,
        scriptName: object = NoDefault,
        environ: Mapping[str, Any] | None = None,
        bindAddress: BindAddress = ("localhost", 4000),
        umask: int | None = None,
        allowedServers: Sequence[str] | None = None,
        loggingLevel: int = logging.INFO,
        debug: bool = False,
        timeout: float | None = _NOT_GIVEN,
        **kw: Any,
    ) -> None:
        if timeout is not _NOT_GIVEN:
            kw["timeout"] = timeout
        unknown = sorted(set(kw) - {*self.flup_keywords, *self.ignored_keywords})
        if unknown:
            raise TypeError(f"WSGIServer() got unexpected keyword arguments: {', '.join(unknown)}")
        options = self.backend_options(
            **{name: value for name, value in kw.items() if name in self.flup_keywords}
        )
        self.application = application
        self.scriptName = scriptName
        self.environ = dict(environ or {})
        self.debug = debug
        self.logger = log
        app = application
        if self.environ or self.multiprocess:
            app = _extend_environ(app, self.environ, self.multiprocess)
        if debug:
            app = _debug_pages(app)
        address = bind_address(bindAddress)
        if address.startswith("unix:"):
            options["socket_mode"] = socket_mode(umask)
        options["allow"] = allow_list(allowedServers)
        self.server = WSGIServer(
            app,
            bind=address,
            backend=self.backend,
            app_name=_describe(application),
            script_name=script_name(scriptName),
            log_level=log_level(loggingLevel),
            **options,
        )
        self._hup_received = False

    def backend_options(self, **kw: Any) -> dict[str, Any]:
        """scgiwsgi's options for this face's own flup keywords (:attr:`flup_keywords`)."""
        raise NotImplementedError

    def run(self) -> bool:
        """Serve until SIGHUP (returns True), SIGTERM or SIGINT (returns False).

        In-flight requests finish first.  As in flup, an address that cannot
        be bound is logged and gives False.
        """
        self._hup_received = False
        try:
            self.server.bind()
        except BindError as exc:
            log.error("Failed to bind socket (%s), exiting", exc)
            return False
        with self._sighup_stops():
            self.server.serve_forever()
        return self._hup_received

    @contextlib.contextmanager
    def _sighup_stops(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop_for_restart() -> None:
            log.info("received SIGHUP: stopping; run() returns True for a restart")
            self._hup_received = True
            self.server.shutdown()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            stop_for_restart()

        # The fork backend's arbiter owns SIGHUP: it calls on_hup instead.
        self.server.on_hup = stop_for_restart
        previous = signal.signal(signal.SIGHUP, on_hup)
        try:
            yield
        finally:
            signal.signal(signal.SIGHUP, previous)


def _describe(app: object) -> str:
    module = getattr(app, "__module__", None) or "?"
    name = getattr(app, "__qualname__", None) or type(app).__qualname__
    return f"{module}:{name}"
