"""Sans-IO parser of CGI-style output: header lines, a blank line, the body.

Legacy SCGI handlers (:mod:`scgiwsgi.scgi_server`) and CGI programs
(:mod:`scgiwsgi.cgi`) write their answer the CGI way.  Front ends need a
``Status:`` line and choke on a malformed head, so the head is parsed here and
turned into a WSGI status and header list; the server then writes a proper
head of its own.

Lines may end in ``\\r\\n`` or a bare ``\\n``.  The status is the ``Status:``
header when there is one, ``302 Found`` when there is only a ``Location:``,
and ``200 OK`` otherwise (RFC 3875, section 6.3).
"""

from __future__ import annotations

import dataclasses
import re

from .errors import ResponseError
from .protocol import reason_phrase

__all__ = ["DEFAULT_MAX_HEAD_SIZE", "CGIHead", "CGIOutputError", "CGIOutputParser", "parse_head"]

DEFAULT_MAX_HEAD_SIZE = 64 * 1024
_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_STATUS_RE = re.compile(r"([0-9]{3})(?:[ \t]+(.*))?\Z")
# Connection-level headers belong to the front end; WSGI forbids them.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te"}
    | {"trailer", "trailers", "transfer-encoding", "upgrade"}
)


class CGIOutputError(ResponseError):
    """The CGI-style output is not a valid response head.

    Raised for a header line without a colon, a bad ``Status:`` value, a
    head larger than the limit, or output that ends before the blank line
    closing the head.  The server answers 500 and logs the reason.
    """


@dataclasses.dataclass(frozen=True)
class CGIHead:
    """A parsed head: a WSGI status string and the other headers, in order.

    ``dropped`` names the hop-by-hop headers (``Connection``...) left out:
    they describe the connection to the front end, which is not the
    script's to manage.
    """

    status: str
    headers: list[tuple[str, str]]
    dropped: tuple[str, ...] = ()


def parse_head(lines: list[bytes]) -> CGIHead:
    """Turn head lines (without their line ends) into a :class:`CGIHead`.

    Raises :class:`CGIOutputError` for a malformed line or status.
    """
    status: str | None = None
    headers: list[tuple[str, str]] = []
    dropped: list[str] = []
    for raw in lines:
        name, value = _split_line(raw)
        if name.lower() == "status":
            if status is not None:
                raise CGIOutputError("the output has two Status: lines")
            status = _parse_status(value)
        elif name.lower() in _HOP_BY_HOP:
            dropped.append(name)
        else:
            headers.append((name, value))
    if status is None:
        has_location = any(name.lower() == "location" for name, _ in headers)
        status = "302 Found" if has_location else "200 OK"
    return CGIHead(status, headers, tuple(dropped))


def _split_line(raw: bytes) -> tuple[str, str]:
    line = raw.decode("latin-1")
    name, colon, value = line.partition(":")
    if not colon or not _NAME_RE.match(name):
        raise CGIOutputError(f"malformed header line {_show(line)} in the output")
    return name, value.strip(" \t")


def _parse_status(value: str) -> str:
    match = _STATUS_RE.match(value)
    if match is None:
        raise CGIOutputError(f"malformed Status: {_show(value)} (expected e.g. '404 Not Found')")
    code, reason = match.group(1), (match.group(2) or "").strip()
    return f"{code} {reason or reason_phrase(int(code))}"


def _show(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


class CGIOutputParser:
    """Splits a stream of CGI output into its head and its body.

    Feed bytes with :meth:`feed`; it returns the body bytes available so
    far, and :attr:`head` is set once the blank line ending the head was
    seen.  Call :meth:`close` at the end of the output.  At most
    ``max_head_size`` bytes are buffered while looking for the end of the
    head.
    """

    def __init__(self, *, max_head_size: int = DEFAULT_MAX_HEAD_SIZE) -> None:
        self.max_head_size = max_head_size
        self.head: CGIHead | None = None
        self.received = 0
        self._buffer = bytearray()
        self._lines: list[bytes] = []

    def feed(self, data: bytes) -> bytes:
        """Take more output; return the body bytes it completes (maybe ``b""``).

        Raises :class:`CGIOutputError` when the head is malformed or too large.
        """
        self.received += len(data)
        if self.head is not None:
            return data
        self._buffer += data
        # Strategy: consume complete lines from the front of the buffer, so
        # each byte is scanned once however the output is split into writes.
        while (newline := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:newline]).removesuffix(b"\r")
            del self._buffer[: newline + 1]
            if not line:
                self.head = parse_head(self._lines)
                body, self._buffer = bytes(self._buffer), bytearray()
                return body
            self._lines.append(line)
        if self.received > self.max_head_size:
            raise CGIOutputError(
                f"no blank line ending the headers within the first {self.max_head_size} bytes"
            )
        return b""

    def close(self) -> CGIHead:
        """The output ended: return the head, or raise :class:`CGIOutputError`."""
        if self.head is not None:
            return self.head
        if not self.received:
            raise CGIOutputError("the output is empty: no headers, no body")
        raise CGIOutputError("the output ended inside the headers (no blank line after them)")
