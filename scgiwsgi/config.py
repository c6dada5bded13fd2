"""The single definition of every server option.

The CLI, the Python API (:class:`scgiwsgi.WSGIServer`) and any later source of
settings all build one frozen :class:`Config`; nothing else defines defaults.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Literal

from .errors import ConfigError
from .peers import parse_networks

__all__ = ["ACCESS_LOG_FORMATS", "BACKENDS", "DEFAULT_BIND", "LOG_LEVELS", "Config"]

BackendName = Literal["single", "threaded", "fork"]
BACKENDS: tuple[str, ...] = ("single", "threaded", "fork")
DEFAULT_THREADS = {"single": 1, "threaded": 8, "fork": 1}
AccessLogFormat = Literal["combined", "json"]
ACCESS_LOG_FORMATS: tuple[str, ...] = ("combined", "json")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")
DEFAULT_BIND = "127.0.0.1:4000"


@dataclasses.dataclass(frozen=True)
class Config:
    """Validated, immutable server settings.

    Construct with keyword arguments; an impossible value raises
    :class:`~scgiwsgi.errors.ConfigError` naming the option.
    """

    app: str | None = None
    """The application spec (``pkg.mod:name``...); None serves the built-in page."""
    chdir: str | None = None
    """Directory to change to before loading the application."""
    pythonpath: tuple[str, ...] = ()
    """Directories put at the front of ``sys.path`` before loading the application."""
    cgi: str | None = None
    """Serve CGI programs instead of ``app``: a directory of scripts, or one script."""
    cgi_timeout: float = 60.0
    """Seconds one CGI run may take before it is killed (504)."""
    bind: tuple[str, ...] = (DEFAULT_BIND,)
    """Listening addresses: ``HOST:PORT``, ``[IPv6]:PORT``, ``unix:/path``, ``fd://N``."""
    backend: BackendName = "threaded"
    """``single`` (one request at a time), ``threaded`` (a bounded pool) or
    ``fork`` (an arbiter supervising prefork worker processes)."""
    threads: int | None = None
    """Threads per process: default 8 for ``threaded``, 1 for ``fork``; ``single`` has 1."""
    workers: int | None = None
    """Worker processes of the ``fork`` backend; default: the number of CPUs."""
    preload: bool = False
    """``fork``: import the app once in the arbiter, before forking."""
    reload: bool = False
    """Development: restart the workers when a ``*.py`` file of the app changes
    (:mod:`scgiwsgi.reloader`, needs watchfiles).  Implies the ``fork`` backend,
    with one worker unless ``workers`` is given; not with ``preload``."""
    max_requests: int = 0
    """``fork``: a worker retires after this many requests (0: never)."""
    max_requests_jitter: int = 0
    """``fork``: up to this many requests added at random to each worker's share."""
    timeout: float = 30.0
    """``fork``: seconds one request may run before its worker's stack is logged
    and the worker killed (0: never)."""
    pid_file: str | None = None
    """A file the server writes its pid to at start and removes at exit."""
    script_name: str = ""
    """Mount prefix: ``SCRIPT_NAME`` for requests under it (``--script-name``)."""
    absolute_redirects: bool = False
    """Make a relative ``Location`` absolute from the request (scheme, host,
    path), so no front end treats it as an internal redirect."""
    offload: str | None = None
    """Hand ``wsgi.file_wrapper`` files under a directory to the front end:
    ``x-sendfile:DIR`` or ``x-accel-redirect:DIR=URI`` (:mod:`scgiwsgi.offload`)."""
    max_header_size: int = 64 * 1024
    """Largest accepted header netstring in bytes (431 above it)."""
    max_body_size: int | None = None
    """Largest accepted CONTENT_LENGTH in bytes, or None for no limit (413)."""
    allow: tuple[str, ...] = ()
    """Networks (CIDR, IPv4 and IPv6) whose TCP peers may connect; empty: any."""
    socket_mode: int = 0o660
    """Permission bits of unix sockets the server creates."""
    socket_group: str | None = None
    """Group owning the unix socket files the server creates."""
    user: str | None = None
    """User to switch to once the sockets are bound (needs root)."""
    group: str | None = None
    """Group to switch to once the sockets are bound; default: the user's."""
    backlog: int = 1024
    """Listen queue length of every socket the server binds."""
    defer_accept: bool = True
    """TCP sockets the server binds hand over a connection only once its first
    bytes arrived (Linux ``TCP_DEFER_ACCEPT``, as uWSGI does by default and
    nginx's ``listen ... deferred``); a connection that sends nothing is
    handed over after about a second."""
    graceful_timeout: float = 30.0
    """Seconds in-flight requests get to finish after SIGTERM or SIGINT."""
    header_timeout: float = 10.0
    """Seconds the peer gets to send the whole header netstring."""
    body_timeout: float = 30.0
    """Seconds allowed between two reads of the request body, and two sends."""
    access_log: str | None = None
    """Access log destination: a file path, ``-`` for stdout, None for none."""
    access_log_format: AccessLogFormat = "combined"
    """``combined`` (Apache's) or ``json`` (one object a line)."""
    error_log: str | None = None
    """Error log file; None (or ``-``) for stderr."""
    log_level: str = "info"
    """Level of the error log."""
    http: str | None = None
    """``HOST:PORT`` of a development HTTP front that forwards each request to the
    first listener (``--http``); see :mod:`scgiwsgi.devhttp`.  Never for production."""

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        if isinstance(self.bind, str):
            object.__setattr__(self, "bind", (self.bind,))
        for name in ("pythonpath", "allow"):
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, (getattr(self, name),))
        try:
            parse_networks(self.allow)
        except ValueError as exc:
            raise ConfigError(f"allow: {exc}") from None
        if self.access_log_format not in ACCESS_LOG_FORMATS:
            raise ConfigError(
                f"access_log_format: {self.access_log_format!r} is not one of "
                f"{', '.join(ACCESS_LOG_FORMATS)}"
            )
        if not self.bind:
            raise ConfigError("bind: at least one address is needed")
        if self.reload:
            self._check_reload()
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"log_level: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}"
            )
        _require(self.threads is None or self.threads >= 1, "threads must be at least 1")
        _require(
            not (self.backend == "single" and (self.threads or 1) > 1),
            "threads applies to the threaded and fork backends, not single",
        )
        _require(self.workers is None or self.workers >= 1, "workers must be at least 1")
        _require(self.max_requests >= 0, "max_requests must be >= 0")
        _require(self.max_requests_jitter >= 0, "max_requests_jitter must be >= 0")
        _require(self.timeout >= 0, "timeout must be >= 0 (0 disables it)")
        _require(self.max_header_size >= 16, "max_header_size must be at least 16 bytes")
        _require(
            self.max_body_size is None or self.max_body_size >= 0, "max_body_size must be >= 0"
        )
        _require(0 <= self.socket_mode <= 0o777, "socket_mode must be between 0 and 0o777")
        _require(self.backlog >= 1, "backlog must be at least 1")
        _require(not (self.app and self.cgi), "cgi replaces app: give one of them, not both")
        _require(self.cgi_timeout > 0, "cgi_timeout must be positive")
        for name in ("graceful_timeout", "header_timeout", "body_timeout"):
            _require(getattr(self, name) > 0, f"{name} must be positive")
        prefix = self.script_name
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ConfigError(
                f"script_name: {prefix!r} must start with '/' and not end with '/' (e.g. /app)"
            )
        if self.offload is not None:
            from .offload import parse_offload

            parse_offload(self.offload)
        if self.http is not None:
            from .devhttp import parse_http_address  # lazy: it imports http.server

            parse_http_address(self.http)

    def _check_reload(self) -> None:
        _require(
            not self.preload,
            "reload imports the app afresh in each new worker; it cannot be used with preload",
        )
        _require(self.app is not None, "reload watches the app's source: name the app to import")
        # The arbiter keeps the sockets while workers come and go.
        object.__setattr__(self, "backend", "fork")
        if self.workers is None:
            object.__setattr__(self, "workers", 1)

    @property
    def thread_count(self) -> int:
        """Threads serving requests in each process, defaults applied."""
        return self.threads if self.threads is not None else DEFAULT_THREADS[self.backend]

    @property
    def worker_count(self) -> int:
        """Worker processes of the fork backend, defaults applied."""
        return self.workers if self.workers is not None else (os.cpu_count() or 1)

    def replace(self, **changes: Any) -> Config:
        """Return a copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Names of every option, in definition order."""
        return tuple(field.name for field in dataclasses.fields(cls))


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
