"""Run one WSGI application call and turn every failure into a visible answer.

:func:`run_application` calls the app, streams its result into a
:class:`~scgiwsgi.response.Response`, always calls ``close()`` on the
iterable, and decides what the front end sees when something goes wrong:
a 500 page while the head is unsent, an aborted connection after it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from typing import Any

from .errors import ResponseError
from .response import ClientDisconnected, FileWrapper, Response, ShortResponse

__all__ = ["Outcome", "WSGIApp", "run_application"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

log = logging.getLogger("scgiwsgi.error")


class Outcome(enum.Enum):
    """How the response ended, which tells the handler how to close."""

    COMPLETE = "complete"
    """The whole response was sent: close normally."""
    ABORT = "abort"
    """The response is broken: reset the connection so the front end notices."""
    GONE = "gone"
    """The front end went away: just close."""


# Read per request: an Enum class attribute (``Outcome.COMPLETE``) is looked
# up through the enum's metaclass, about 0.1 us on Python 3.11.
_COMPLETE, _ABORT, _GONE = Outcome


def run_application(app: WSGIApp, environ: dict[str, Any], response: Response) -> Outcome:
    """Call ``app`` and send its response; never raises for app or client errors.

    ``BaseException`` subclasses that are not ``Exception`` (``SystemExit``,
    ``KeyboardInterrupt``) still propagate after ``close()`` was called.
    """
    result: Iterable[bytes] | None = None
    try:
        result = app(environ, response.start_response)
        # A plain list (the common ``[body]``) needs no check.
        if type(result) is list or not _sent_as_file(result, response):
            write = response.write
            for chunk in result:
                write(chunk)
                if response.truncated:
                    break
        response.finish()
        if response.truncated:
            _warn_truncated(response, environ)
        return _COMPLETE
    except ClientDisconnected as exc:
        log.info("%s: connection to the front end lost (%s)", _where(environ), exc)
        return _GONE
    except ShortResponse as exc:
        log.error("%s: %s; connection aborted", _where(environ), exc)
        return _ABORT
    except Exception:
        return _app_failed(response, environ)
    finally:
        # A plain list (the common ``[body]``) has no close().
        if type(result) is not list:
            _close_result(result, environ)


def _sent_as_file(result: Iterable[bytes], response: Response) -> bool:
    """Check an application's iterable; True if it was a file, sent with sendfile."""
    if isinstance(result, (str, bytes)):
        # Not an iterable of bytestrings; an empty one would pass as an empty 200.
        kind = type(result).__name__
        raise ResponseError(f"the application returned {kind}; return a list such as [body]")
    return isinstance(result, FileWrapper) and response.send_file(result)


def _warn_truncated(response: Response, environ: dict[str, Any]) -> None:
    log.warning(
        "%s: application sent more than its Content-Length (%s); the excess was dropped",
        _where(environ),
        response.content_length,
    )


def _app_failed(response: Response, environ: dict[str, Any]) -> Outcome:
    if response.headers_sent:
        log.exception(
            "%s: application failed after the response head was sent; connection aborted",
            _where(environ),
        )
        return _ABORT
    log.exception("%s: application failed; answered 500", _where(environ))
    try:
        response.send_error(500)
    except ClientDisconnected:
        return _GONE
    return _COMPLETE


def _close_result(result: Iterable[bytes] | None, environ: dict[str, Any]) -> None:
    close = getattr(result, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        log.exception("%s: the application's close() failed", _where(environ))


def _where(environ: dict[str, Any]) -> str:
    peer = environ.get("REMOTE_ADDR", "-")
    method = environ.get("REQUEST_METHOD", "-")
    uri = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
    return f"{peer} {method} {uri}"
