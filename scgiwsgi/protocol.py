"""Sans-IO SCGI: a request parser and the encoders of both directions.

Nothing here touches a socket.  Feed bytes to :class:`RequestParser` with
:meth:`~RequestParser.receive_data` (``b""`` means the peer closed) and pull
events with :meth:`~RequestParser.next_event` until it returns
:data:`NEED_DATA`:

* :class:`RequestHead` once, with the CGI variables in the order received;
* :class:`BodyData` zero or more times;
* :class:`EndOfRequest` once the body reached CONTENT_LENGTH;
* :class:`ConnectionClosed` when the peer closed before sending one byte.

A request the parser rejects raises a :class:`~scgiwsgi.errors.ProtocolError`
whose ``status_hint`` is the status to answer with
(:func:`encode_error_response`).
"""

from __future__ import annotations

import dataclasses
import enum
import http
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from .errors import BodyTooLarge, HeaderTooLarge, IncompleteRequest, MalformedRequest

__all__ = [
    "NEED_DATA",
    "BodyData",
    "ConnectionClosed",
    "EndOfRequest",
    "Event",
    "RequestHead",
    "RequestParser",
    "encode_error_response",
    "encode_request",
    "encode_response_head",
    "reason_phrase",
]

DEFAULT_MAX_HEADER_SIZE = 64 * 1024
_MAX_DIGITS = 18
"""The most significant digits a length on the wire may have (an exabyte)."""


class RequestHead(NamedTuple):
    """The header netstring, parsed.

    ``variables`` maps each CGI variable's name to its value, both decoded as
    latin-1 (byte N becomes code point N, so nothing is lost and
    ``.encode("latin-1")`` gives the wire bytes back), in the order received.
    A repeated ``HTTP_*`` name arrives joined, as HTTP joins a repeated
    header.  This is what :func:`scgiwsgi.environ.environ_from_variables`
    takes.  ``content_length`` is CONTENT_LENGTH as an int.

    Strategy: the parser makes one per request, and a tuple is the cheapest
    immutable object to make (the parser calls ``tuple.__new__``, which
    runs no Python code): about 1,200 machine instructions, against 2,100
    for a frozen dataclass, whose fields live in a per-instance dict.
    """

    variables: dict[str, str]
    content_length: int

    @property
    def headers(self) -> dict[bytes, bytes]:
        """``variables`` as raw bytes, computed on each use.

        For callers that want the wire bytes.
        """
        return {
            name.encode("latin-1"): value.encode("latin-1")
            for name, value in self.variables.items()
        }


class BodyData(NamedTuple):
    """A non-empty piece of the request body.

    A tuple for the reason :class:`RequestHead` is one: the parser makes one
    per piece of body read, with ``tuple.__new__``.
    """

    data: bytes


_new_tuple = tuple.__new__
"""Makes a RequestHead or a BodyData from a tuple of its fields, running no Python code."""


@dataclasses.dataclass(frozen=True)
class EndOfRequest:
    """The body is complete; bytes after it, if any, are ignored."""


@dataclasses.dataclass(frozen=True)
class ConnectionClosed:
    """The peer closed the connection before sending anything."""


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = _NeedData.NEED_DATA
"""Returned by :meth:`RequestParser.next_event` when more bytes are needed."""

Event = RequestHead | BodyData | EndOfRequest | ConnectionClosed


class _State(enum.Enum):
    HEAD = "head"
    BODY = "body"
    DONE = "done"


# Strategy: the parser compares its state several times per request, and
# reading a member off an Enum class (``_State.BODY``) costs a lookup
# through the enum's metaclass, about 0.1 us on Python 3.11; a module
# global costs next to nothing.
_HEAD, _BODY, _DONE = _State


_END_OF_REQUEST = EndOfRequest()
_CONNECTION_CLOSED = ConnectionClosed()


class RequestParser:
    """Incremental parser of one SCGI request.

    ``max_header_size`` caps the header netstring's declared length
    (:class:`~scgiwsgi.errors.HeaderTooLarge`, 431); ``max_body_size`` caps
    CONTENT_LENGTH (:class:`~scgiwsgi.errors.BodyTooLarge`, 413), None means
    unlimited.  Any other violation raises
    :class:`~scgiwsgi.errors.MalformedRequest` (400).  After an error the
    parser is unusable.
    """

    # The state of a new parser.  Strategy: a parser is made per request,
    # so these start as class attributes (all immutable) and an instance
    # gets its own only when one changes.
    _state: _State = _HEAD
    _buffer: bytes | bytearray = b""
    """The head's bytes so far: the first chunk as it came (no copy); a
    bytearray only once a second chunk arrives before the head is complete."""
    _block_start = 0
    """Where the header block starts in _buffer; 0 until the length prefix is read."""
    _block_end = 0
    """Where the header block's ',' must be in _buffer."""
    body_remaining = 0
    """Body bytes still expected from the peer (0 before the head); read-only."""
    _received_any = False
    _eof = False
    _end_sent = False
    _body_chunks: list[bytes]
    """Body bytes received and not yet returned; made when the body starts."""

    max_header_size: int = DEFAULT_MAX_HEADER_SIZE
    max_body_size: int | None = None

    def __init__(
        self,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        max_body_size: int | None = None,
    ) -> None:
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size

    @classmethod
    def factory(
        cls,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        max_body_size: int | None = None,
    ) -> Callable[[], RequestParser]:
        """A callable without arguments that makes parsers with these limits.

        Strategy: a server makes a parser per request.  The callable is a
        subclass that holds the limits as class attributes and runs no
        Python ``__init__``, which halves the cost of making a parser
        (about 600 machine instructions against 1,400 for
        ``RequestParser(max_header_size, max_body_size)``).
        """
        namespace = {
            "max_header_size": max_header_size,
            "max_body_size": max_body_size,
            "__init__": object.__init__,
            "__module__": cls.__module__,
            "__doc__": cls.__doc__,
        }
        return type(cls.__name__, (cls,), namespace)

    @property
    def received_any(self) -> bool:
        """Whether any byte has arrived from the peer yet."""
        return self._received_any

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed its side.

        ``data`` is kept by reference: pass an immutable ``bytes``.
        """
        if not data:
            self._eof = True
            return
        self._received_any = True
        state = self._state
        if state is _BODY:
            self._take_body(data)
        elif state is _HEAD:
            buffer = self._buffer
            if not buffer:
                self._buffer = data
            elif isinstance(buffer, bytes):
                # Strategy: appending to a bytearray is amortized O(1), so a
                # head fed byte by byte costs linear time, not quadratic.
                grown = bytearray(buffer)
                grown += data
                self._buffer = grown
            else:
                buffer += data

    def next_event(self) -> Event | _NeedData:
        """Return the next event, or :data:`NEED_DATA`.

        Raises :class:`~scgiwsgi.errors.ProtocolError` for a bad request.
        """
        state = self._state
        if state is _HEAD:
            return self._parse_head() or self._need_data_or_eof()
        if state is _BODY:
            return self._body_event()
        return self._done_event()

    # -- the head: netstring length, then the header block ------------------------

    def _parse_head(self) -> RequestHead | None:
        # Strategy: one function reads and checks the whole header block,
        # which a front end sends in one piece; the checks that pass cost a
        # comparison each, and only a failed one calls _block_error() to
        # say what is wrong.
        buffer = self._buffer
        start = self._block_start or self._parse_length(buffer)
        end = self._block_end
        if not start or len(buffer) <= end:
            return None
        if buffer[end] != 0x2C:  # ","
            raise MalformedRequest("header netstring does not end with ','")
        items = buffer[start:end].decode("latin-1").split("\0")
        last = items.pop()  # "" when the block ends with a NUL, as it must
        if last or not items or len(items) % 2:
            raise _block_error(items, last)
        # Strategy: build the dict in C; only a block with a repeated or
        # empty name (rare) takes _join_repeated(), which also names the
        # problem.  The count is even, so zip() need not check it again.
        pairs = iter(items)
        variables = dict(zip(pairs, pairs, strict=False))
        if len(variables) * 2 != len(items) or "" in variables:
            variables = _join_repeated(items)
        raw_length = items[1]
        scgi = variables.get("SCGI")
        # What every front end sends passes this one condition; anything
        # else gets the full checks, which raise for what is wrong.
        if not (
            items[0] == "CONTENT_LENGTH"
            and raw_length.isdigit()
            and raw_length.isascii()
            and len(raw_length) <= _MAX_DIGITS
            and scgi == "1"
        ):
            _check_required_variables(items[0], raw_length, scgi)
        content_length = int(raw_length)
        if self.max_body_size is not None and content_length > self.max_body_size:
            raise BodyTooLarge(
                f"CONTENT_LENGTH {content_length} exceeds max_body_size ({self.max_body_size})"
            )
        self._buffer = b""
        if content_length:
            # What came of the body with the head: one copy (bytes() of a
            # bytes slice is the slice itself).  The bookkeeping of
            # _take_body(), written out: calling it here costs a POST 1.2k
            # machine instructions more (0.6%).
            body = bytes(buffer[end + 1 : end + 1 + content_length])
            self._body_chunks = [body] if body else []
            self.body_remaining = content_length - len(body)
            self._state = _BODY
        else:
            self._state = _DONE
        return _new_tuple(RequestHead, (variables, content_length))

    def _parse_length(self, buffer: bytes | bytearray) -> int:
        """Read the netstring's length prefix; where the block starts, or 0 if incomplete.

        Strategy: validate digit by digit as bytes arrive, so a garbage or
        oversized prefix is rejected without waiting for a ':' that may
        never come.
        """
        colon = buffer.find(b":")
        digits = buffer[:colon] if colon >= 0 else buffer
        if not digits.isdigit():
            if digits:
                bad = next(b for b in digits if not 0x30 <= b <= 0x39)
                raise MalformedRequest(
                    f"netstring length must be decimal digits, got byte {bytes([bad])!r}"
                )
            if colon >= 0:
                raise MalformedRequest("netstring length is empty")
            return 0
        if digits[0] == 0x30 and len(digits) > 1:
            raise MalformedRequest("netstring length has a leading zero")
        # int() is slow for a very long digit string: a prefix longer than
        # the limit's own digits is too large without it (the first test
        # spares the str() for any real limit).
        limit = self.max_header_size
        too_long = len(digits) > _MAX_DIGITS and len(digits) > len(str(limit))
        length = limit + 1 if too_long else int(digits)
        if length > limit:
            raise HeaderTooLarge(f"header netstring is longer than max_header_size ({limit} bytes)")
        if colon < 0:
            return 0
        self._block_start = colon + 1
        self._block_end = colon + 1 + length
        return colon + 1

    # -- the body -------------------------------------------------------------

    def _take_body(self, data: bytes) -> None:
        remaining = self.body_remaining
        if len(data) > remaining:
            data = data[:remaining]
        if data:
            self._body_chunks.append(data)
            self.body_remaining = remaining - len(data)

    def take_body(self) -> bytes:
        """The body bytes received and not yet returned, as one ``bytes``; ``b""`` if none.

        What the next :class:`BodyData` would carry, without the event: a
        server takes the body that came with the head this way.  The events
        then go on from there (:class:`EndOfRequest` if the body is complete).
        """
        if self._state is not _BODY or not self._body_chunks:
            return b""
        chunks = self._body_chunks
        self._body_chunks = []
        if self.body_remaining == 0:
            self._state = _DONE
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _body_event(self) -> Event | _NeedData:
        if self._body_chunks:
            return _new_tuple(BodyData, (self.take_body(),))
        if self.body_remaining == 0:
            self._state = _DONE
            return self._done_event()
        if self._eof:
            raise IncompleteRequest(
                f"peer closed the connection with {self.body_remaining} body bytes missing"
            )
        return NEED_DATA

    def _done_event(self) -> Event | _NeedData:
        if self._end_sent:
            return NEED_DATA
        self._end_sent = True
        return _END_OF_REQUEST

    def _need_data_or_eof(self) -> Event | _NeedData:
        if not self._eof:
            return NEED_DATA
        if not self._received_any:
            self._state = _DONE
            self._end_sent = True
            return _CONNECTION_CLOSED
        where = "header netstring" if self._block_start else "netstring length"
        raise IncompleteRequest(f"peer closed the connection inside the {where}")


def _block_error(items: list[str], last: str) -> MalformedRequest:
    """Why a header block split at NULs into ``items`` and ``last`` is malformed."""
    if last:
        return MalformedRequest("header block does not end with a NUL byte")
    if not items:
        return MalformedRequest("header block is empty (CONTENT_LENGTH is required)")
    return MalformedRequest("header block has a name without a value")


def _join_repeated(items: list[str]) -> dict[str, str]:
    variables: dict[str, str] = {}
    for index in range(0, len(items), 2):
        name = items[index]
        if not name:
            raise MalformedRequest("header block has an empty header name")
        value = items[index + 1]
        if name in variables:
            if not name.startswith("HTTP_") or name == "HTTP_HOST":
                raise MalformedRequest(f"duplicate header {_show(name)}")
            # nginx before 1.23 passes a repeated client header (HTTP/2
            # browsers split Cookie) as repeated names: join them as HTTP does.
            separator = "; " if name == "HTTP_COOKIE" else ", "
            value = variables[name] + separator + value
        variables[name] = value
    return variables


def _check_required_variables(first: str, raw_length: str, scgi: str | None) -> None:
    """Check the first variable, CONTENT_LENGTH and SCGI, in that order; raise for a bad one."""
    if first != "CONTENT_LENGTH":
        raise MalformedRequest(f"first header must be CONTENT_LENGTH, got {_show(first)}")
    # str.isdigit() alone accepts the latin-1 digits "\xb2\xb3\xb9" (and int()
    # would read "\xb9" as 1): ASCII digits only.
    if not (raw_length.isdigit() and raw_length.isascii()):
        raise MalformedRequest(f"CONTENT_LENGTH must be decimal digits, got {_show(raw_length)}")
    # Even with max_body_size=None: int() raises ValueError past 4300 digits,
    # and 19 significant digits (an exabyte) is beyond any real body.
    if len(raw_length) > _MAX_DIGITS and len(raw_length.lstrip("0")) > _MAX_DIGITS:
        raise BodyTooLarge(f"CONTENT_LENGTH {_show(raw_length)} is too large")
    if scgi is None:
        raise MalformedRequest("required header SCGI is missing")
    if scgi != "1":
        raise MalformedRequest(f"header SCGI must be '1', got {_show(scgi)}")


def _show(value: str, limit: int = 40) -> str:
    # Shown as the wire bytes' repr, without the b'' around it.
    text = repr(value[:limit].encode("latin-1"))[2:-1]
    return f"'{text}...'" if len(value) > limit else f"'{text}'"


# -- encoders ---------------------------------------------------------------


_RFC_9110_PHRASES = {
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
}
"""Phrases RFC 9110 renamed, which ``http.HTTPStatus`` has only from Python 3.13."""


def reason_phrase(code: int) -> str:
    """The standard reason phrase of ``code`` (RFC 9110's), or ``""`` if it has none.

    The same on every Python version: ``http.HTTPStatus``'s, with the names
    RFC 9110 gave 413, 414, 416 and 422.
    """
    try:
        return _RFC_9110_PHRASES.get(code) or http.HTTPStatus(code).phrase
    except ValueError:
        return ""


def encode_response_head(status: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """Encode a CGI-style response head: ``Status:`` line, headers, blank line.

    ``status`` is ``"NNN Reason"`` and every name and value must already be
    validated latin-1 text (:mod:`scgiwsgi.response` does that).
    """
    parts = ["Status: ", status, "\r\n"]
    for name, value in headers:
        parts += (name, ": ", value, "\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def encode_error_response(code: int, message: str = "") -> bytes:
    """A complete plain-text response for a request the server rejects."""
    reason = reason_phrase(code) or "Error"
    body = f"{code} {reason}\n{message}\n" if message else f"{code} {reason}\n"
    payload = body.encode("utf-8", "replace")
    head = encode_response_head(
        f"{code} {reason}",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(payload)))],
    )
    return head + payload


def encode_request(
    headers: Mapping[str, str] | Iterable[tuple[str, str]], body: bytes = b""
) -> bytes:
    """Encode a complete SCGI request (netstring of headers, then the body).

    ``CONTENT_LENGTH`` (from ``len(body)``) and ``SCGI=1`` are written first;
    those two names in ``headers`` are ignored.  Names and values are encoded
    as latin-1; a NUL inside one raises :class:`ValueError`.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    parts = [b"CONTENT_LENGTH\0", str(len(body)).encode("ascii"), b"\0SCGI\x001\0"]
    for name, value in pairs:
        if name in ("CONTENT_LENGTH", "SCGI"):
            continue
        raw_name, raw_value = name.encode("latin-1"), value.encode("latin-1")
        if b"\0" in raw_name or b"\0" in raw_value or not raw_name:
            raise ValueError(f"SCGI header {name!r} has an empty name or a NUL byte")
        parts += [raw_name, b"\0", raw_value, b"\0"]
    block = b"".join(parts)
    return b"%d:%s,%s" % (len(block), block, body)
