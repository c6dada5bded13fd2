"""The WSGI response side: ``start_response``, ``write()``, the file wrapper.

:class:`Response` validates what the application says (PEP 3333 to the
letter) and writes the CGI-style head and the body through a ``send``
callable; it never sees a socket.  :mod:`scgiwsgi.gateway` drives it.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import IO, Any, NoReturn, cast

from .errors import ResponseError
from .protocol import encode_response_head, reason_phrase

__all__ = [
    "ClientDisconnected",
    "FileWrapper",
    "Response",
    "SendFile",
    "ShortResponse",
    "validate_header",
    "validate_status",
]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
SendFile = Callable[[IO[bytes], int, int], int]
"""``sendfile(file, offset, count)`` sends file bytes and returns how many."""

_STATUS_RE = re.compile(r"([2-5][0-9][0-9]) ([^\x00-\x08\x0a-\x1f\x7f]*)\Z")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Everything a header value may not hold: the control characters above and
# whatever is not latin-1.  One search checks a value (after the cheaper
# isascii() and isprintable(), which pass most values); only a failure works
# out which of the two it was.
_find_forbidden = re.compile(r"[^\t\x20-\x7e\x80-\xff]").search
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_NO_BODY_STATUSES = frozenset({204, 304})
_COALESCE_LIMIT = 256 * 1024
_SEND_TIMED_OUT = "timed out sending the response"
_SENDFILE_TIMED_OUT = "timed out sending a file"

# Per-process caches of what passed validation, so that "200 OK" and
# "Content-Type" are checked once.  Bounded: once full nothing is added (an
# application inventing header names per request cannot grow them), and the
# size check racing between threads can overshoot by a few entries at most.
_CACHE_LIMIT = 512
_valid_names: dict[str, str] = {}
"""Header names known to be valid tokens, neither hop-by-hop nor Status: name -> name.lower()."""
_valid_statuses: dict[str, int] = {}
"""Status strings known to be valid: status -> code."""


class ClientDisconnected(ConnectionError):
    """The front end closed the connection while the response was sent."""


class ShortResponse(Exception):
    """The body ended before the declared Content-Length."""


def validate_status(status: object) -> int:
    """Check a WSGI status string and return its code.

    Raises :class:`~scgiwsgi.errors.ResponseError` unless ``status`` is a
    native ``str`` of three digits (200-599), one space and a reason phrase
    without control characters.
    """
    if type(status) is not str:
        raise ResponseError(f"status must be a str, not {type(status).__name__}")
    code = _valid_statuses.get(status)
    if code is not None:
        return code
    match = _STATUS_RE.match(status)
    if match is None or not _is_latin1(status):
        raise ResponseError(
            f"invalid status {status!r}: expected 'NNN Reason' with NNN between 200 and 599"
            " and a latin-1 reason"
        )
    code = int(match.group(1))
    if len(_valid_statuses) < _CACHE_LIMIT:
        _valid_statuses[status] = code
    return code


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def validate_header(header: object) -> tuple[str, str]:
    """Check one ``(name, value)`` header tuple and return it.

    Raises :class:`~scgiwsgi.errors.ResponseError` for a non-tuple, non-str
    parts, a name that is not an HTTP token, CR/LF/NUL or other control
    characters in the value, text that is not latin-1, hop-by-hop headers and
    ``Status`` (the status belongs in ``start_response``'s first argument).
    """
    _check_headers([header])
    return cast("tuple[str, str]", header)


def _check_headers(headers: list[Any]) -> int | None:
    """Check every header as :func:`validate_header` does; return the Content-Length.

    Strategy: one call per response, not one per header.  The first
    Content-Length is parsed only after the loop, so that an invalid header
    anywhere is reported before a bad length.
    """
    length_value: str | None = None
    for header in headers:
        if type(header) is not tuple:
            raise _not_a_pair(header)
        # A tuple of another length fails to unpack (a try costs nothing
        # until it catches, where len() would be a call per header).
        try:
            name, value = header
        except ValueError:
            raise _not_a_pair(header) from None
        if type(name) is not str or type(value) is not str:
            raise ResponseError(f"header name and value must be str: {header!r}")
        lowered = _valid_names.get(name) or _check_new_name(name)
        # Printable ASCII (most values) is checked by two C loops, faster than
        # a regular expression; tabs and non-ASCII text take the expression.
        if not (value.isascii() and value.isprintable()) and _find_forbidden(value) is not None:
            _reject_value(name, value)
        if lowered == "content-length" and length_value is None:
            length_value = value
    if length_value is None:
        return None
    stripped = length_value.strip()
    if not stripped.isdigit() or not stripped.isascii():
        raise ResponseError(f"Content-Length must be decimal digits, not {length_value!r}")
    return int(stripped)


def _not_a_pair(header: object) -> ResponseError:
    return ResponseError(f"header must be a (name, value) tuple, not {header!r}")


def _check_new_name(name: str) -> str:
    """Check a header name not seen before; remember it once it passed."""
    if not _TOKEN_RE.match(name):
        raise ResponseError(f"invalid header name {name!r}")
    lowered = name.lower()
    if lowered in _HOP_BY_HOP:
        raise ResponseError(f"hop-by-hop header {name} is not allowed in a WSGI response")
    if lowered == "status":
        raise ResponseError("a 'Status' header is not allowed; pass the status to start_response")
    if len(_valid_names) < _CACHE_LIMIT:
        _valid_names[name] = lowered
    return lowered


def _reject_value(name: str, value: str) -> NoReturn:
    if _BAD_VALUE_RE.search(value):
        raise ResponseError(f"header {name} has a control character (CR, LF, NUL...) in {value!r}")
    raise ResponseError(f"header {name} value is not latin-1: {value!r}")


def _client_gone(exc: OSError, timed_out: str) -> ClientDisconnected:
    if isinstance(exc, (TimeoutError, BlockingIOError)):
        return ClientDisconnected(timed_out)
    return ClientDisconnected(str(exc))


class Response:
    """One WSGI response, written through ``send`` (and ``sendfile``).

    ``send(data)`` must send all of ``data`` or raise; ``sendfile(file,
    offset, count)`` returns how many bytes it sent or raises.  Both may be a
    socket's own methods (``sock.sendall``): an :class:`OSError` they raise
    becomes :class:`ClientDisconnected`, with the message "timed out sending
    the response" (or "... a file") for :class:`TimeoutError` and
    :class:`BlockingIOError` (a blocking socket's ``SO_SNDTIMEO`` expiring)
    and ``str(exc)`` otherwise; a :class:`ClientDisconnected` they raise
    passes unchanged.  ``head_request`` lifts the Content-Length completeness
    check, since a HEAD response declares a length but carries no body.
    """

    __slots__ = (
        "_head_request",
        "_send",
        "_sendfile",
        "body_bytes",
        "content_length",
        "headers",
        "headers_sent",
        "status",
        "status_code",
        "truncated",
    )

    def __init__(
        self,
        send: Callable[[bytes], None],
        sendfile: SendFile | None = None,
        head_request: bool = False,
    ) -> None:
        # Not keyword-only: the handler makes one per request, and keyword
        # arguments to a class cost a dict per call.
        self._send = send
        self._sendfile = sendfile
        self._head_request = head_request
        self.status: str | None = None
        self.status_code = 0
        self.headers: list[tuple[str, str]] = []
        self.content_length: int | None = None
        self.headers_sent = False
        self.body_bytes = 0
        self.truncated = 0

    # -- start_response and write ----------------------------------------------

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        """The ``start_response`` callable given to the application."""
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the frame <-> traceback cycle
        elif self.status is not None:
            raise ResponseError("start_response was called a second time without exc_info")
        # A status seen before is found in the cache without a call.
        code = (type(status) is str and _valid_statuses.get(status)) or validate_status(status)
        if type(headers) is not list:
            raise ResponseError(f"headers must be a list, not {type(headers).__name__}")
        checked = headers.copy()
        self.content_length = _check_headers(checked)
        self.status, self.status_code, self.headers = status, code, checked
        return self.write

    def write(self, data: bytes) -> None:
        """The ``write()`` callable, also used for every chunk of the iterable."""
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise ResponseError(f"response data must be bytes, not {type(data).__name__}")
            data = bytes(data)
        if self.status is None:
            raise ResponseError("write() or a body chunk came before start_response()")
        if not data:
            return
        limit = self.content_length
        size = len(data)
        if limit is not None and size > limit - self.body_bytes:
            room = max(limit - self.body_bytes, 0)
            self.truncated += size - room
            data = data[:room]
            size = room
        # Strategy: the sends are written out here, not in a helper: this
        # runs once per chunk, and a call costs more than the lines.
        try:
            if self.headers_sent:
                if data:
                    self._send(data)
            else:
                self.headers_sent = True
                head = encode_response_head(self.status, self.headers)
                if size <= _COALESCE_LIMIT:
                    self._send(head + data)
                else:
                    self._send(head)
                    self._send(data)
        except ClientDisconnected:
            raise
        except OSError as exc:
            raise _client_gone(exc, _SEND_TIMED_OUT) from None
        self.body_bytes += size

    def _send_head(self) -> None:
        """Send the head alone (no body came, or a file follows)."""
        if self.status is None:
            raise ResponseError("no status: start_response() was never called")
        self.headers_sent = True
        try:
            self._send(encode_response_head(self.status, self.headers))
        except ClientDisconnected:
            raise
        except OSError as exc:
            raise _client_gone(exc, _SEND_TIMED_OUT) from None

    # -- completion ------------------------------------------------------------

    def finish(self) -> None:
        """Send the head if no body was sent, then check the length.

        Raises :class:`ShortResponse` when fewer body bytes than the declared
        Content-Length were sent (the caller must abort the connection), and
        :class:`ClientDisconnected` when sending the head failed.
        """
        if not self.headers_sent:
            self._send_head()
        expected = self.content_length
        if (
            expected is not None
            and self.body_bytes < expected
            and not (self._head_request or self.status_code in _NO_BODY_STATUSES)
        ):
            raise ShortResponse(
                f"response body has {self.body_bytes} bytes, Content-Length said {expected}"
            )

    def send_error(self, code: int, message: str = "") -> None:
        """Replace an unsent response with a plain-text error page."""
        if self.headers_sent:
            raise ResponseError("cannot send an error page: the head was already sent")
        reason = reason_phrase(code) or "Error"
        body = f"{code} {reason}\n{message}".rstrip("\n").encode("utf-8") + b"\n"
        self.status, self.status_code, self.truncated = f"{code} {reason}", code, 0
        self.headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        self.content_length = len(body)
        self.write(body)

    # -- files -----------------------------------------------------------------

    def send_file(self, wrapper: FileWrapper) -> bool:
        """Send a :class:`FileWrapper` with ``sendfile``; False if it cannot.

        Honours the file's current position and a declared Content-Length.
        When False is returned nothing was sent and the caller iterates the
        wrapper instead.  Raises :class:`ClientDisconnected` when sending
        failed.
        """
        if self._sendfile is None or self.status is None:
            return False
        position_size = _regular_file_span(wrapper.filelike)
        if position_size is None:
            return False
        position, size = position_size
        count = max(size - position, 0)
        if self.content_length is not None:
            count = min(count, self.content_length - self.body_bytes)
        if not self.headers_sent:
            self._send_head()
        if count > 0:
            try:
                sent = self._sendfile(wrapper.filelike, position, count)
            except ClientDisconnected:
                raise
            except OSError as exc:
                raise _client_gone(exc, _SENDFILE_TIMED_OUT) from None
            self.body_bytes += sent
        return True


def _regular_file_span(filelike: Any) -> tuple[int, int] | None:
    try:
        fd = filelike.fileno()
        position = filelike.tell()
        info = os.fstat(fd)
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(info.st_mode) or not isinstance(position, int):
        return None
    if hasattr(filelike, "flush"):
        filelike.flush()
    return position, info.st_size


class FileWrapper:
    """``wsgi.file_wrapper``: marks a file for ``sendfile`` and iterates it.

    Servers send regular files with ``os.sendfile`` from the current position;
    anything else is read in ``block_size`` pieces.  ``close()`` closes the
    file-like object when it has a ``close`` method.
    """

    def __init__(self, filelike: Any, block_size: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while block := read(self.block_size):
            yield block

    def close(self) -> None:
        """Close the wrapped file-like object, if it can be closed."""
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()
