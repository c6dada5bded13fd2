"""A small SCGI client: talk to a running SCGI server the way a front end does.

:func:`request` sends one request with the CGI variables nginx's stock
``scgi_params`` would send, reads the answer until the server closes, and
returns it parsed as an :class:`SCGIResponse`::

    from scgiwsgi.client import request

    response = request("127.0.0.1:4000", method="POST", path="/submit",
                       query="draft=1",
                       headers={"Host": "example.com",
                                "Content-Type": "application/json"},
                       body=b'{"answer": 42}')
    print(response.status, response.reason, response.header("Content-Type"))
    print(response.body)

:class:`SCGIProxyApp` is a WSGI application that forwards every request it gets
to an SCGI server, so WSGI test tools drive a live server over the wire::

    import webtest
    from scgiwsgi.client import SCGIProxyApp

    app = webtest.TestApp(SCGIProxyApp("unix:/run/app.sock"))
    assert app.get("/health").text == "ok"

Addresses are ``"HOST:PORT"``, ``"[IPv6]:PORT"``, ``"unix:/path"``, a plain
path starting with ``/``, or a ``(host, port)`` tuple.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, BinaryIO, TypeAlias
from urllib.parse import quote, unquote

from .errors import SCGIError
from .protocol import encode_request, reason_phrase

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "Address",
    "ResponseFormatError",
    "SCGIProxyApp",
    "SCGIResponse",
    "parse_response",
    "request",
]

Address: TypeAlias = str | tuple[str, int]
_Target: TypeAlias = str | tuple[str, int]  # a unix path, or (host, port)

_CHUNK_SIZE = 64 * 1024
_ONE_SEND_LIMIT = 64 * 1024  # bodies up to this size go out with the head
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS = re.compile(r"([1-9][0-9]{2})(?:[ \t]+(.*))?")
_PATH_SAFE = "/;=,@:!$&'()*+"
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te"}
    | {"trailer", "trailers", "transfer-encoding", "upgrade"}
)


class ResponseFormatError(SCGIError):
    """The server's answer is not a valid CGI-style response.

    Raised for an empty answer, a head without the blank line that ends it, a
    bad ``Status`` line, a malformed header line, or a connection reset before
    the head was complete.  The server (or the application behind it) is at
    fault; a front end would answer 502 Bad Gateway.
    """


@dataclasses.dataclass(frozen=True)
class SCGIResponse:
    """A parsed response: status code, reason phrase, headers, body.

    ``headers`` keeps the order and the duplicates the server sent, without
    the ``Status`` line.  ``reason`` is the standard phrase when the server
    sent none.
    """

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def status_line(self) -> str:
        """The WSGI status string, ``"NNN Reason"``."""
        return f"{self.status} {self.reason}"

    def header(self, name: str) -> str | None:
        """The value of the first header called ``name`` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def headers_all(self, name: str) -> list[str]:
        """The values of every header called ``name`` (any case), in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


# -- public entry points -----------------------------------------------------


def request(
    address: Address,
    *,
    method: str = "GET",
    path: str = "/",
    query: str = "",
    headers: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    body: bytes | BinaryIO = b"",
    timeout: float = 30.0,
) -> SCGIResponse:
    """Send one SCGI request to ``address`` and return the parsed response.

    ``path`` is the raw (percent-encoded) request path; a ``?query`` inside it
    is split off when ``query`` is empty.  ``headers`` are HTTP request headers
    and become ``HTTP_*`` variables (``Content-Type`` becomes
    ``CONTENT_TYPE``; ``Content-Length`` is ignored: CONTENT_LENGTH always
    comes from ``body``).  ``environ`` holds raw CGI variables that override
    everything else except CONTENT_LENGTH and SCGI.  ``body`` is bytes or a
    binary file; a seekable file is streamed from its current position to its
    end, any other file is read whole first.  ``timeout`` bounds the whole
    exchange, in seconds.  The socket is never half-closed, like front ends.

    Raises :class:`ValueError` for a bad address, timeout or variable (a NUL
    byte, text that is not latin-1), or a body file shorter than it claimed;
    :class:`OSError` when the server cannot be reached;
    :class:`TimeoutError` when the exchange outlasts ``timeout``; and
    :class:`ResponseFormatError` when the answer is not a valid response.
    """
    target = _parse_address(address)
    variables = _request_variables(method, path, query, headers or {}, environ or {})
    return _exchange(target, variables, body, _check_timeout(timeout))


def parse_response(raw: bytes) -> SCGIResponse:
    """Parse a complete CGI-style response: head, blank line, body.

    Head lines end with CRLF or a bare LF.  Without a ``Status`` line the
    status is 302 when a ``Location`` header is present and 200 otherwise,
    as nginx does.  Raises :class:`ResponseFormatError` when ``raw`` is not a
    valid response.
    """
    if not raw:
        raise ResponseFormatError("the server closed the connection without a response")
    lines, body = _split_head(raw)
    status, reason, headers = _parse_head(lines)
    return SCGIResponse(status, reason, headers, body)


class SCGIProxyApp:
    """A WSGI application that forwards each request to an SCGI server.

    The environ's CGI variables (string values under upper-case keys) are
    sent with the body read from ``wsgi.input`` (CONTENT_LENGTH bytes), and
    the server's status, headers (minus hop-by-hop ones) and body are
    returned.  REQUEST_URI is rebuilt from SCRIPT_NAME, PATH_INFO and
    QUERY_STRING when missing; SCRIPT_NAME and PATH_INFO themselves are not
    sent, as behind nginx, unless ``forward_path_info`` is true.

    Errors are not turned into responses: the application raises what
    :func:`request` raises (:class:`OSError`, :class:`TimeoutError`,
    :class:`ResponseFormatError`), and :class:`ValueError` for a
    CONTENT_LENGTH that is not a number.
    """

    def __init__(
        self, address: Address, timeout: float = 30.0, *, forward_path_info: bool = False
    ) -> None:
        self.address = address
        self.timeout = _check_timeout(timeout)
        self.forward_path_info = forward_path_info
        self._target = _parse_address(address)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Forward one request and relay the answer (see the class docstring)."""
        variables = self._forwarded_variables(environ)
        body = _read_wsgi_input(environ)
        response = _exchange(self._target, variables, body, self.timeout)
        headers = [(n, v) for n, v in response.headers if n.lower() not in _HOP_BY_HOP]
        start_response(response.status_line, headers)
        return [response.body]

    def _forwarded_variables(self, environ: WSGIEnvironment) -> dict[str, str]:
        variables = {
            key: value for key, value in environ.items() if key.isupper() and isinstance(value, str)
        }
        if "REQUEST_URI" not in variables:
            variables["REQUEST_URI"] = _rebuild_request_uri(variables)
        if not self.forward_path_info:
            variables.pop("SCRIPT_NAME", None)
            variables.pop("PATH_INFO", None)
        return variables


# -- addresses ---------------------------------------------------------------


def _parse_address(address: Address) -> _Target:
    """A unix socket path, or a ``(host, port)`` pair; ValueError if invalid."""
    if isinstance(address, tuple):
        host, port = address
        if not host or isinstance(port, bool) or not isinstance(port, int):
            raise ValueError(f"SCGI address {address!r} is not a (host, port) pair")
        return host, _check_port(port, address)
    if address.startswith("unix:") and len(address) > len("unix:"):
        return address[len("unix:") :]
    if address.startswith("/"):
        return address
    return _parse_host_port(address)


def _parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"SCGI address {text!r}: write an IPv6 address as [ADDRESS]:PORT")
    if not sep or not host or not (port.isascii() and port.isdigit()):
        raise ValueError(
            f"SCGI address {text!r} is not HOST:PORT, [IPv6]:PORT, unix:/path or /path"
        )
    return host, _check_port(int(port), text)


def _check_port(port: int, address: object) -> int:
    if not 0 < port < 65536:
        raise ValueError(f"SCGI address {address!r}: port must be 1-65535")
    return port


def _check_timeout(timeout: float) -> float:
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return timeout


# -- CGI variables -------------------------------------------------------------


def _request_variables(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    environ: Mapping[str, str],
) -> dict[str, str]:
    """The variables nginx's stock scgi_params send, then ``environ``."""
    if not query and "?" in path:
        path, query = path.split("?", 1)
    http = _http_variables(headers)
    http.setdefault("HTTP_HOST", "localhost")
    server_name, server_port = _split_host(http["HTTP_HOST"])
    variables = {
        "REQUEST_METHOD": method,
        "REQUEST_URI": f"{path}?{query}" if query else path,
        "QUERY_STRING": query,
        # nginx sends the decoded path bytes; latin-1 keeps them byte for byte.
        "DOCUMENT_URI": unquote(path, encoding="latin-1"),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_SCHEME": "http",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "0",
        "SERVER_PORT": server_port,
        "SERVER_NAME": server_name,
    }
    variables.update(http)
    variables.update(environ)
    return variables


def _http_variables(headers: Mapping[str, str]) -> dict[str, str]:
    """HTTP headers as CGI variables; repeated names are merged like nginx."""
    result: dict[str, str] = {}
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_LENGTH":
            continue
        if key != "CONTENT_TYPE":
            key = "HTTP_" + key
        if key in result:
            value = result[key] + ("; " if key == "HTTP_COOKIE" else ", ") + value
        result[key] = value
    return result


def _split_host(host: str) -> tuple[str, str]:
    """SERVER_NAME and SERVER_PORT from a Host header value."""
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and (name.endswith("]") or ":" not in name):
        return name or "localhost", port
    return host or "localhost", "80"


def _rebuild_request_uri(variables: Mapping[str, str]) -> str:
    raw_path = variables.get("SCRIPT_NAME", "") + variables.get("PATH_INFO", "")
    path = quote(raw_path, safe=_PATH_SAFE, encoding="latin-1") or "/"
    query = variables.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def _read_wsgi_input(environ: WSGIEnvironment) -> bytes:
    raw_length = (environ.get("CONTENT_LENGTH") or "").strip()
    if not raw_length:
        return b""
    if not raw_length.isdigit():
        raise ValueError(f"CONTENT_LENGTH {raw_length!r} is not a number")
    stream = environ["wsgi.input"]
    chunks: list[bytes] = []
    remaining = int(raw_length)
    while remaining > 0:
        chunk = stream.read(min(remaining, _CHUNK_SIZE))
        if not chunk:
            break  # a short body is sent as it is: CONTENT_LENGTH follows len(body)
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# -- the exchange --------------------------------------------------------------


class _Deadline:
    """One time budget for a whole exchange, spent by every socket call."""

    def __init__(self, timeout: float) -> None:
        self._end = time.monotonic() + timeout

    def remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError("the SCGI exchange timed out")
        return left


def _exchange(
    target: _Target, variables: Mapping[str, str], body: bytes | BinaryIO, timeout: float
) -> SCGIResponse:
    deadline = _Deadline(timeout)
    with _connect(target, deadline) as sock:
        send_error: ConnectionError | None = None
        try:
            _send_request(sock, variables, body, deadline)
        except ConnectionError as exc:
            # The server may answer early (413, 411) and close without reading
            # the whole body; its answer can still be waiting for us.
            send_error = exc
        raw, reset = _receive_all(sock, deadline)
    return _finish(raw, reset, send_error)


def _connect(target: _Target, deadline: _Deadline) -> socket.socket:
    if isinstance(target, tuple):
        return socket.create_connection(target, timeout=deadline.remaining())
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(deadline.remaining())
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return sock


def _send_request(
    sock: socket.socket,
    variables: Mapping[str, str],
    body: bytes | BinaryIO,
    deadline: _Deadline,
) -> None:
    if not isinstance(body, (bytes, bytearray, memoryview)):
        length = _stream_length(body)
        if length is not None and length > _ONE_SEND_LIMIT:
            _sendall(sock, _encode_head(variables, length), deadline)
            _send_stream(sock, body, length, deadline)
            return
        body = _read_stream(body, length)
    data = bytes(body)
    if len(data) <= _ONE_SEND_LIMIT:
        _sendall(sock, encode_request(variables, data), deadline)
    else:
        _sendall(sock, _encode_head(variables, len(data)), deadline)
        _sendall(sock, data, deadline)


def _encode_head(variables: Mapping[str, str], content_length: int) -> bytes:
    """The header netstring alone, announcing ``content_length`` body bytes."""
    # Strategy: let encode_request validate and encode the variables with an
    # empty body.  It documents CONTENT_LENGTH as the first header, so the
    # block starts with a known prefix: swap in the real length and re-frame.
    encoded = encode_request(variables)
    block = encoded[encoded.index(b":") + 1 : -1]
    empty_prefix = b"CONTENT_LENGTH\x000\x00"
    block = b"CONTENT_LENGTH\x00%d\x00%s" % (content_length, block[len(empty_prefix) :])
    return b"%d:%s," % (len(block), block)


def _stream_length(stream: BinaryIO) -> int | None:
    """Bytes from the current position to the end, or None if unknowable."""
    try:
        if not stream.seekable():
            return None
        start = stream.tell()
        end = stream.seek(0, os.SEEK_END)
        stream.seek(start)
    except (AttributeError, OSError):
        return None
    return max(end - start, 0)


def _read_stream(stream: BinaryIO, length: int | None) -> bytes:
    if length is None:
        return stream.read()
    data = b""
    while len(data) < length:
        chunk = stream.read(length - len(data))
        if not chunk:
            raise ValueError(f"request body file ended {length - len(data)} bytes early")
        data += chunk
    return data


def _send_stream(sock: socket.socket, stream: BinaryIO, length: int, deadline: _Deadline) -> None:
    remaining = length
    while remaining > 0:
        chunk = stream.read(min(remaining, _CHUNK_SIZE))
        if not chunk:
            raise ValueError(f"request body file ended {remaining} bytes early")
        _sendall(sock, chunk, deadline)
        remaining -= len(chunk)


def _sendall(sock: socket.socket, data: bytes, deadline: _Deadline) -> None:
    sock.settimeout(deadline.remaining())
    sock.sendall(data)


def _receive_all(sock: socket.socket, deadline: _Deadline) -> tuple[bytes, bool]:
    """Everything until EOF, and whether the connection was reset instead."""
    chunks: list[bytes] = []
    while True:
        sock.settimeout(deadline.remaining())
        try:
            data = sock.recv(_CHUNK_SIZE)
        except ConnectionError:
            return b"".join(chunks), True
        if not data:
            return b"".join(chunks), False
        chunks.append(data)


def _finish(raw: bytes, reset: bool, send_error: ConnectionError | None) -> SCGIResponse:
    """Parse the answer; a reset after a complete head keeps what arrived."""
    try:
        return parse_response(raw)
    except ResponseFormatError as exc:
        if send_error is not None:
            raise ResponseFormatError(
                f"the server closed the connection while the request was sent ({send_error})"
                f" and gave no valid response: {exc}"
            ) from send_error
        if reset:
            raise ResponseFormatError(
                f"connection reset by the server before a complete response head"
                f" ({len(raw)} bytes received)"
            ) from exc
        raise


# -- the response head ---------------------------------------------------------


def _split_head(raw: bytes) -> tuple[list[bytes], bytes]:
    """The head's lines (CRLF or LF stripped) and the body after the blank line."""
    lines: list[bytes] = []
    position = 0
    while True:
        end = raw.find(b"\n", position)
        if end < 0:
            raise ResponseFormatError(
                f"response head has no blank line after {len(lines)} lines ({len(raw)} bytes)"
            )
        line = raw[position:end]
        position = end + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if not lines:
                raise ResponseFormatError("response head has no header lines")
            return lines, raw[position:]
        lines.append(line)


def _parse_head(lines: list[bytes]) -> tuple[int, str, list[tuple[str, str]]]:
    status_value: str | None = None
    headers: list[tuple[str, str]] = []
    for line in lines:
        name, value = _parse_header_line(line)
        if name.lower() != "status":
            headers.append((name, value))
        elif status_value is None:
            status_value = value
        else:
            raise ResponseFormatError("response head has more than one Status line")
    if status_value is not None:
        status, reason = _parse_status(status_value)
        return status, reason, headers
    status = 302 if any(name.lower() == "location" for name, _ in headers) else 200
    return status, reason_phrase(status), headers


def _parse_header_line(line: bytes) -> tuple[str, str]:
    text = line.decode("latin-1")
    name, colon, value = text.partition(":")
    if not colon:
        raise ResponseFormatError(f"response header line has no colon: {_show(text)}")
    if not _HEADER_NAME.fullmatch(name):
        raise ResponseFormatError(f"response header has an invalid name: {_show(text)}")
    value = value.strip(" \t")
    if _BAD_VALUE_CHAR.search(value):
        raise ResponseFormatError(f"response header value has a control byte: {_show(text)}")
    return name, value


def _parse_status(value: str) -> tuple[int, str]:
    match = _STATUS.fullmatch(value)
    if match is None:
        raise ResponseFormatError(f"invalid Status line: {_show(value)}")
    status = int(match.group(1))
    reason = match.group(2) or reason_phrase(status)
    return status, reason


def _show(text: str, limit: int = 60) -> str:
    return repr(text[:limit]) + ("..." if len(text) > limit else "")
