"""Hand files to the front end instead of sending them (``--offload``).

When an application returns ``environ["wsgi.file_wrapper"](file)`` for a
regular file under the configured directory, scgiwsgi sends no body: it adds
a header telling the front end which file to send itself, and the worker is
free at once.

``x-sendfile:DIR``
    ``X-Sendfile: /DIR/path/of/file`` -- Apache (``ProxySCGISendfile On``)
    and lighttpd (``"x-sendfile" => "enable"`` with
    ``"x-sendfile-docroot" => ( "DIR" )``).
``x-accel-redirect:DIR=URI``
    ``X-Accel-Redirect: /URI/path/of/file`` -- nginx, with an ``internal``
    location ``URI`` aliased to ``DIR``.

Files outside ``DIR``, file-like objects without a real file, and responses
that were not a ``wsgi.file_wrapper`` are sent by scgiwsgi as usual.  An
application may also set ``X-Sendfile`` or ``X-Accel-Redirect`` itself; such
headers pass through unchanged.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any
from urllib.parse import quote

from .errors import ConfigError
from .response import FileWrapper

__all__ = ["Offload", "OffloadFiles", "parse_offload"]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
_LENGTH_HEADERS = ("content-length",)


@dataclasses.dataclass(frozen=True)
class Offload:
    """A parsed ``--offload`` setting."""

    header: str
    """``X-Sendfile`` or ``X-Accel-Redirect``."""
    root: str
    """Absolute, normalised directory whose files may be offloaded."""
    uri: str = ""
    """For X-Accel-Redirect: the internal URI prefix that maps to ``root``."""

    def header_value(self, path: str) -> str | None:
        """The header value for the file ``path``, or None when it is outside ``root``."""
        real = os.path.realpath(path)
        if os.path.commonpath([real, self.root]) != self.root or real == self.root:
            return None
        if self.header == "X-Sendfile":
            return real
        relative = os.path.relpath(real, self.root).replace(os.sep, "/")
        return self.uri + quote(relative, safe="/")


def parse_offload(spec: str) -> Offload:
    """Parse ``x-sendfile:DIR`` or ``x-accel-redirect:DIR=URI``.

    Raises :class:`~scgiwsgi.errors.ConfigError` (naming the option) for any
    other form, a relative directory or a URI that does not start with ``/``.
    """
    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in ("x-sendfile", "x-accel-redirect"):
        raise ConfigError(f"offload: {spec!r} is not x-sendfile:DIR or x-accel-redirect:DIR=URI")
    if kind == "x-sendfile":
        return Offload("X-Sendfile", _root(rest, spec))
    directory, sep, uri = rest.partition("=")
    if not sep or not uri.startswith("/"):
        raise ConfigError(f"offload: {spec!r} needs DIR=URI with URI starting with '/'")
    return Offload("X-Accel-Redirect", _root(directory, spec), uri.rstrip("/") + "/")


def _root(directory: str, spec: str) -> str:
    if not os.path.isabs(directory):
        raise ConfigError(f"offload: the directory in {spec!r} must be absolute")
    return os.path.realpath(directory)


class OffloadFiles:
    """WSGI middleware: a ``wsgi.file_wrapper`` response under the root leaves as a header.

    The application's ``start_response`` is held back until its result is
    known; ``write()`` (or an exception) releases it unchanged.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], offload: Offload) -> None:
        self.app = app
        self.offload = offload

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        call = _HeldStart(start_response)
        result = self.app(environ, call.start)
        held = call.held
        if held is None or call.passed:
            call.release()
            return result
        status, headers, _exc_info = held
        value = self._header_value(status, result)
        if value is None:
            call.release()
            return result
        kept = [(n, v) for n, v in headers if n.lower() not in _LENGTH_HEADERS]
        start_response(status, [*kept, (self.offload.header, value)])
        close = getattr(result, "close", None)
        if close is not None:
            close()
        return []

    def _header_value(self, status: str, result: Iterable[bytes]) -> str | None:
        if not isinstance(result, FileWrapper) or not status.startswith("200 "):
            return None
        path = _regular_file_path(result.filelike)
        return None if path is None else self.offload.header_value(path)


class _HeldStart:
    """``start_response`` held back until the application's result is known."""

    def __init__(self, start_response: Callable[..., Any]) -> None:
        self._start_response = start_response
        self.held: tuple[str, list[tuple[str, str]], ExcInfo | None] | None = None
        self.passed = False
        self._write: Callable[[bytes], Any] | None = None

    def start(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], Any]:
        if self.passed:  # after the result came back (a generator), or after write()
            write: Callable[[bytes], Any] = self._start_response(status, headers, exc_info)
            return write
        self.held = (status, headers, exc_info)
        return self._write_through

    def release(self) -> None:
        """Pass the held call on (if any); later calls go straight through."""
        if not self.passed and self.held is not None:
            self._write = self._start_response(*self.held)
        self.passed = True

    def _write_through(self, data: bytes) -> Any:
        self.release()
        if self._write is None:
            raise RuntimeError("write() before start_response()")
        return self._write(data)


def _regular_file_path(filelike: Any) -> str | None:
    name = getattr(filelike, "name", None)
    if not isinstance(name, str):
        return None
    try:
        if filelike.tell() != 0 or not stat.S_ISREG(os.fstat(filelike.fileno()).st_mode):
            return None
    except (AttributeError, OSError, ValueError):
        return None
    return name
