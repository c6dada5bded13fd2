"""Error log setup and the access log (Apache combined format).

Nothing is configured at import time: the CLI calls :func:`configure_error_log`
when it starts, and :class:`~scgiwsgi.WSGIServer` does when neither the
``scgiwsgi`` logger nor the root logger has a handler yet.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import threading
import time
from typing import IO, Any

from .errors import ConfigError

__all__ = ["AccessLog", "configure_error_log", "format_combined", "format_json"]

ERROR_LOG_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
_HANDLER_MARK = "_scgiwsgi_handler"


def configure_error_log(
    level: str = "info", stream: IO[str] | None = None, *, path: str | None = None
) -> None:
    """Send the ``scgiwsgi`` loggers to ``path`` (a file) or ``stream`` (stderr).

    A file is reopened by itself when logrotate moves it.  Idempotent:
    calling it again replaces the handler it installed before and leaves
    handlers installed by the application alone.  Raises
    :class:`~scgiwsgi.errors.ConfigError` when the file cannot be opened.
    """
    logger = logging.getLogger("scgiwsgi")
    logger.setLevel(level.upper())
    for old in list(logger.handlers):
        if getattr(old, _HANDLER_MARK, False):
            logger.removeHandler(old)
            old.close()
    handler: logging.Handler
    if path and path != "-":
        try:
            handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"error_log: cannot open {path!r}: {exc.strerror or exc}") from None
    else:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(ERROR_LOG_FORMAT))
    setattr(handler, _HANDLER_MARK, True)
    logger.addHandler(handler)
    logger.propagate = False


def format_combined(
    environ: dict[str, Any], status: int, size: int, when: float | None = None
) -> str:
    """One access log line in Apache's combined format."""
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(when))
    request = "{} {} {}".format(
        environ.get("REQUEST_METHOD", "-"),
        environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/"),
        environ.get("SERVER_PROTOCOL", "-"),
    )
    return '{} - {} [{}] "{}" {} {} "{}" "{}"'.format(
        environ.get("REMOTE_ADDR") or "-",
        environ.get("REMOTE_USER") or "-",
        stamp,
        _escape(request),
        status,
        size if size else "-",
        _escape(environ.get("HTTP_REFERER", "-")),
        _escape(environ.get("HTTP_USER_AGENT", "-")),
    )


def format_json(environ: dict[str, Any], status: int, size: int, seconds: float) -> str:
    """One access log line as a JSON object (time in microseconds)."""
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "remote_addr": environ.get("REMOTE_ADDR", ""),
        "remote_user": environ.get("REMOTE_USER"),
        "method": environ.get("REQUEST_METHOD", ""),
        "uri": environ.get("REQUEST_URI") or environ.get("PATH_INFO", ""),
        "protocol": environ.get("SERVER_PROTOCOL", ""),
        "status": status,
        "bytes": size,
        "duration_us": int(seconds * 1_000_000),
        "referer": environ.get("HTTP_REFERER"),
        "user_agent": environ.get("HTTP_USER_AGENT"),
        "pid": os.getpid(),
    }
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


def _escape(text: str) -> str:
    # Non-printable and non-ASCII bytes become escapes, so a line is one line.
    return text.encode("unicode_escape").decode("ascii").replace('"', '\\"')


class AccessLog:
    """Writes access log lines to a file path, or stdout for ``-``.

    Raises :class:`~scgiwsgi.errors.ConfigError` (one line naming the path)
    when the file cannot be opened for appending; the caller should report it
    and stop.
    """

    def __init__(self, destination: str, log_format: str = "combined") -> None:
        self.destination = destination
        self.log_format = log_format
        self._lock = threading.Lock()
        self._closed = False
        self._stream: IO[str] = sys.stdout if destination == "-" else _open_log(destination)

    def log(self, environ: dict[str, Any], status: int, size: int, seconds: float) -> None:
        """Append one line for a finished request."""
        if self.log_format == "json":
            line = format_json(environ, status, size, seconds) + "\n"
        else:
            line = format_combined(environ, status, size) + "\n"
        with self._lock:
            if self._closed:
                return  # a request outlived the server's stop
            self._stream.write(line)
            self._stream.flush()

    def reopen(self) -> None:
        """Reopen the file by its path (after logrotate moved it); stdout stays."""
        if self.destination == "-":
            return
        with self._lock:
            if self._closed:
                return
            try:
                stream = _open_log(self.destination)
            except ConfigError as exc:
                logging.getLogger("scgiwsgi.error").error("%s; keeping the old file", exc)
                return
            _close_log(self._stream, self.destination)
            self._stream = stream

    def close(self) -> None:
        """Close the file (never stdout); later lines are dropped."""
        with self._lock:
            self._closed = True
            if self._stream is not sys.stdout:
                _close_log(self._stream, self.destination)


def _close_log(stream: IO[str], destination: str) -> None:
    # Lines whose write failed (a full disk) stay in the stream's buffer, and
    # closing tries them once more: if that fails too they are lost, which is
    # said once here, and a server stopping must not fail for it.  The file
    # is closed either way.
    try:
        stream.close()
    except OSError as exc:
        logging.getLogger("scgiwsgi.error").warning(
            "access log %s: lines not written before closing it: %s", destination, exc
        )


def _open_log(path: str) -> IO[str]:
    try:
        return open(path, "a", encoding="utf-8")
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ConfigError(f"access_log: cannot open {path!r}: {why}") from None
