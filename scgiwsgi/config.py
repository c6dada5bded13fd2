"""The single definition of every server option.

The CLI, the Python API (:class:`scgiwsgi.WSGIServer`) and any later source of
settings all build one frozen :class:`Config`; nothing else defines defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from .errors import ConfigError

__all__ = ["BACKENDS", "DEFAULT_BIND", "LOG_LEVELS", "Config"]

BackendName = Literal["single", "threaded"]
BACKENDS: tuple[str, ...] = ("single", "threaded")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")
DEFAULT_BIND = "127.0.0.1:4000"


@dataclasses.dataclass(frozen=True)
class Config:
    """Validated, immutable server settings.

    Construct with keyword arguments; an impossible value raises
    :class:`~scgiwsgi.errors.ConfigError` naming the option.
    """

    bind: tuple[str, ...] = (DEFAULT_BIND,)
    """Listening addresses: ``HOST:PORT``, ``[IPv6]:PORT``, ``unix:/path``, ``fd://N``."""
    backend: BackendName = "threaded"
    """``single`` (one request at a time) or ``threaded`` (a bounded pool)."""
    threads: int = 8
    """Size of the thread pool of the threaded backend."""
    script_name: str = ""
    """Mount prefix: ``SCRIPT_NAME`` for requests under it (``--script-name``)."""
    max_header_size: int = 64 * 1024
    """Largest accepted header netstring in bytes (431 above it)."""
    max_body_size: int | None = None
    """Largest accepted CONTENT_LENGTH in bytes, or None for no limit (413)."""
    socket_mode: int = 0o660
    """Permission bits of unix sockets the server creates."""
    backlog: int = 1024
    """Listen queue length of every socket the server binds."""
    graceful_timeout: float = 30.0
    """Seconds in-flight requests get to finish after SIGTERM or SIGINT."""
    header_timeout: float = 10.0
    """Seconds the peer gets to send the whole header netstring."""
    body_timeout: float = 30.0
    """Seconds allowed between two reads of the request body, and two sends."""
    access_log: str | None = None
    """Access log destination: a file path, ``-`` for stdout, None for none."""
    log_level: str = "info"
    """Level of the error log (stderr)."""

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        if isinstance(self.bind, str):
            object.__setattr__(self, "bind", (self.bind,))
        if not self.bind:
            raise ConfigError("bind: at least one address is needed")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"log_level: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}"
            )
        _require(self.threads >= 1, "threads must be at least 1")
        _require(self.max_header_size >= 16, "max_header_size must be at least 16 bytes")
        _require(
            self.max_body_size is None or self.max_body_size >= 0, "max_body_size must be >= 0"
        )
        _require(0 <= self.socket_mode <= 0o777, "socket_mode must be between 0 and 0o777")
        _require(self.backlog >= 1, "backlog must be at least 1")
        for name in ("graceful_timeout", "header_timeout", "body_timeout"):
            _require(getattr(self, name) > 0, f"{name} must be positive")
        prefix = self.script_name
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ConfigError(
                f"script_name: {prefix!r} must start with '/' and not end with '/' (e.g. /app)"
            )

    @property
    def multithread(self) -> bool:
        """True when requests of one process may run in parallel threads."""
        return self.backend == "threaded" and self.threads > 1

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
