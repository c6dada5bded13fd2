"""The exception hierarchy of scgiwsgi.

Everything the server raises on purpose derives from :class:`SCGIError`.

* :class:`ProtocolError` and its subclasses describe a request that the peer
  (the front-end web server) got wrong.  Each carries ``status_hint``: the HTTP
  status the server answers with, so callers map an error to a response
  without a ladder of ``isinstance`` checks.
* :class:`StartupError` and its subclasses stop the server before it serves;
  each carries ``exit_code``, the process exit status the CLI uses.
* :class:`ResponseError` is raised into the application when it breaks the
  WSGI response rules (bad status, bad header, ``start_response`` misuse).
"""

from __future__ import annotations

__all__ = [
    "AppImportError",
    "BindError",
    "BodyTooLarge",
    "ConfigError",
    "HeaderTooLarge",
    "IncompleteRequest",
    "MalformedRequest",
    "ProtocolError",
    "ResponseError",
    "SCGIError",
    "StartupError",
]


class SCGIError(Exception):
    """Base class of every error scgiwsgi raises on purpose."""


class ProtocolError(SCGIError):
    """The peer sent bytes that are not a valid SCGI request.

    ``status_hint`` is the HTTP status to answer with; ``reason`` is a short
    human sentence for the log line.  The connection cannot be reused after
    this error: answer with :func:`scgiwsgi.protocol.encode_error_response`
    and close it.
    """

    status_hint: int = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedRequest(ProtocolError):
    """The request breaks the SCGI grammar (answered with 400)."""

    status_hint = 400


class IncompleteRequest(MalformedRequest):
    """The peer closed the connection before the request was complete."""


class HeaderTooLarge(ProtocolError):
    """The header netstring is longer than ``max_header_size`` (431)."""

    status_hint = 431


class BodyTooLarge(ProtocolError):
    """CONTENT_LENGTH is larger than ``max_body_size`` (413)."""

    status_hint = 413


class ResponseError(SCGIError, ValueError):
    """The application broke a WSGI response rule.

    Raised from ``start_response`` or ``write`` into the application; if the
    application lets it propagate the server answers 500 (or aborts the
    connection when the head was already sent) and logs the traceback.
    """


class StartupError(SCGIError):
    """The server cannot start; ``exit_code`` is the process exit status."""

    exit_code: int = 1


class ConfigError(StartupError):
    """An option has an impossible value or combination (exit status 2)."""

    exit_code = 2


class BindError(StartupError):
    """A listening address cannot be bound or adopted (exit status 3)."""

    exit_code = 3


class AppImportError(StartupError):
    """The WSGI application cannot be imported or found (exit status 4).

    ``traceback_text`` holds the traceback when the failure happened inside
    the user's code (worth showing); it is None when the one-line message
    says it all (a missing module, a missing attribute).
    """

    exit_code = 4

    def __init__(self, message: str, traceback_text: str | None = None) -> None:
        super().__init__(message)
        self.traceback_text = traceback_text
