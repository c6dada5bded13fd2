"""Tests of scgiwsgi.client against a tiny SCGI server running in the test.

The fake server accepts on loopback TCP or a unix socket in tmp_path, parses
each request with RequestParser, records it, and answers with canned bytes
(or a callable) chosen by the test.  Every accept and recv has a timeout and
the thread is joined at teardown.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
import webtest

from scgiwsgi.client import (
    ResponseFormatError,
    SCGIProxyApp,
    SCGIResponse,
    parse_response,
    request,
)
from scgiwsgi.protocol import (
    NEED_DATA,
    BodyData,
    ConnectionClosed,
    EndOfRequest,
    RequestHead,
    RequestParser,
)

IO_TIMEOUT = 5.0
OK_REPLY = b"Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"

# --------------------------------------------------------------------------- the fake server


@dataclasses.dataclass
class Received:
    """One request as the fake server parsed it."""

    variables: dict[str, str]
    names: list[str]
    body: bytes
    eof_before_reply: bool | None = None


Reply = bytes | Callable[[socket.socket, Received], None]


class FakeSCGIServer:
    """Serves one connection at a time in a thread until stopped."""

    def __init__(self, listener: socket.socket, address: str) -> None:
        self.listener = listener
        self.address = address
        self.reply: Reply = OK_REPLY
        self.read_body = True
        self.check_half_close = False
        self.received: list[Received] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        listener.settimeout(0.05)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(IO_TIMEOUT)
        self.listener.close()
        assert not self._thread.is_alive(), "fake SCGI server thread did not stop"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    self._handle(conn)
                except Exception as exc:  # reported by the fixture at teardown
                    self.errors.append(exc)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(IO_TIMEOUT)
        received = self._read_request(conn)
        if received is None:
            return
        if self.check_half_close:
            received.eof_before_reply = _peer_closed(conn)
        self.received.append(received)
        if callable(self.reply):
            self.reply(conn, received)
        else:
            conn.sendall(self.reply)

    def _read_request(self, conn: socket.socket) -> Received | None:
        parser = RequestParser()
        head: RequestHead | None = None
        body = bytearray()
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                parser.receive_data(conn.recv(65536))
            elif isinstance(event, ConnectionClosed):
                return None
            elif isinstance(event, RequestHead):
                head = event
                if not self.read_body:
                    break
            elif isinstance(event, BodyData):
                body += event.data
            elif isinstance(event, EndOfRequest):
                break
        assert head is not None
        variables = {k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers.items()}
        return Received(variables, list(variables), bytes(body))


def _peer_closed(conn: socket.socket) -> bool:
    """True if the client half-closed (EOF) instead of waiting for the answer."""
    conn.settimeout(0.3)
    try:
        return conn.recv(1) == b""
    except TimeoutError:
        return False
    finally:
        conn.settimeout(IO_TIMEOUT)


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def _listen(kind: str, tmp_path: Path) -> tuple[socket.socket, str]:
    """A listening socket and the client address string for it."""
    if kind == "tcp":
        sock = socket.create_server(("127.0.0.1", 0))
        return sock, f"127.0.0.1:{sock.getsockname()[1]}"
    if kind == "tcp6":
        sock = socket.create_server(("::1", 0), family=socket.AF_INET6)
        return sock, f"[::1]:{sock.getsockname()[1]}"
    path = str(tmp_path / "scgi.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen()
    return sock, f"unix:{path}"


@contextlib.contextmanager
def serving(kind: str, tmp_path: Path) -> Iterator[FakeSCGIServer]:
    listener, address = _listen(kind, tmp_path)
    server = FakeSCGIServer(listener, address)
    try:
        yield server
    finally:
        server.stop()
    assert server.errors == []


@pytest.fixture(params=["tcp", "unix"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSCGIServer]:
    with serving(request.param, tmp_path) as fake:
        yield fake


@pytest.fixture
def tcp_server(tmp_path: Path) -> Iterator[FakeSCGIServer]:
    with serving("tcp", tmp_path) as fake:
        yield fake


def _only(server: FakeSCGIServer) -> Received:
    assert len(server.received) == 1
    return server.received[0]


def echo_reply(conn: socket.socket, received: Received) -> None:
    """Answer with the request's variables (in order) and body as JSON."""
    payload = json.dumps(
        {"names": received.names, "vars": received.variables, "body": received.body.hex()}
    ).encode()
    head = b"Status: 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    conn.sendall(head % len(payload) + payload)


def _reset(conn: socket.socket) -> None:
    """Make the coming close() send a TCP RST instead of a FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --------------------------------------------------------------------------- request()


def test_request_sends_nginx_style_variables(server: FakeSCGIServer) -> None:
    response = request(
        server.address,
        path="/a%20b/c",
        query="x=1&y=2",
        headers={"Host": "example.com:8080", "User-Agent": "t/1", "X-Forwarded-For": "10.1.2.3"},
        timeout=IO_TIMEOUT,
    )

    assert (response.status, response.body) == (200, b"ok")
    got = _only(server)
    assert got.names[:2] == ["CONTENT_LENGTH", "SCGI"]
    assert got.variables == {
        "CONTENT_LENGTH": "0",
        "SCGI": "1",
        "REQUEST_METHOD": "GET",
        "REQUEST_URI": "/a%20b/c?x=1&y=2",
        "QUERY_STRING": "x=1&y=2",
        "DOCUMENT_URI": "/a b/c",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_SCHEME": "http",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "0",
        "SERVER_PORT": "8080",
        "SERVER_NAME": "example.com",
        "HTTP_HOST": "example.com:8080",
        "HTTP_USER_AGENT": "t/1",
        "HTTP_X_FORWARDED_FOR": "10.1.2.3",
    }
    assert got.body == b""


def test_request_defaults_host_and_path(server: FakeSCGIServer) -> None:
    request(server.address, timeout=IO_TIMEOUT)

    got = _only(server).variables
    assert got["HTTP_HOST"] == "localhost"
    assert (got["SERVER_NAME"], got["SERVER_PORT"]) == ("localhost", "80")
    assert (got["REQUEST_URI"], got["QUERY_STRING"], got["DOCUMENT_URI"]) == ("/", "", "/")
    assert "CONTENT_TYPE" not in got


def test_request_splits_query_out_of_path(tcp_server: FakeSCGIServer) -> None:
    request(tcp_server.address, path="/p%C3%A9?q=1&r", timeout=IO_TIMEOUT)

    got = _only(tcp_server).variables
    assert got["REQUEST_URI"] == "/p%C3%A9?q=1&r"
    assert got["QUERY_STRING"] == "q=1&r"
    assert got["DOCUMENT_URI"] == "/p\xc3\xa9"  # decoded bytes, latin-1 as WSGI wants


def test_request_content_type_and_length_headers(server: FakeSCGIServer) -> None:
    body = b"a=1&b=\x00\xff\r\n"
    request(
        server.address,
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "999"},
        body=body,
        timeout=IO_TIMEOUT,
    )

    got = _only(server)
    assert got.body == body
    assert got.variables["CONTENT_LENGTH"] == str(len(body))
    assert got.variables["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert got.variables["REQUEST_METHOD"] == "POST"
    assert "HTTP_CONTENT_TYPE" not in got.variables
    assert "HTTP_CONTENT_LENGTH" not in got.variables


def test_request_merges_repeated_header_names(tcp_server: FakeSCGIServer) -> None:
    headers = {"Accept": "a/b", "accept": "c/d", "Cookie": "x=1", "COOKIE": "y=2"}
    request(tcp_server.address, headers=headers, timeout=IO_TIMEOUT)

    got = _only(tcp_server).variables
    assert got["HTTP_ACCEPT"] == "a/b, c/d"
    assert got["HTTP_COOKIE"] == "x=1; y=2"


def test_environ_overrides_all_but_content_length(tcp_server: FakeSCGIServer) -> None:
    environ = {
        "REMOTE_ADDR": "192.0.2.7",
        "REQUEST_URI": "/raw",
        "HTTPS": "on",
        "HTTP_HOST": "override.test",
        "CONTENT_LENGTH": "99",
    }
    request(tcp_server.address, headers={"Host": "h"}, environ=environ, timeout=IO_TIMEOUT)

    got = _only(tcp_server).variables
    assert got["REMOTE_ADDR"] == "192.0.2.7"
    assert got["REQUEST_URI"] == "/raw"
    assert got["HTTPS"] == "on"
    assert got["HTTP_HOST"] == "override.test"
    assert got["CONTENT_LENGTH"] == "0"


def _pipe_body(data: bytes) -> BinaryIO:
    read_fd, write_fd = os.pipe()
    with open(write_fd, "wb") as writer:
        writer.write(data)  # small enough for the pipe buffer
    return open(read_fd, "rb")


BIG = bytes(range(256)) * 1200  # 300 KiB: more than one send and one chunk


@pytest.mark.parametrize(
    ("make_body", "expected"),
    [
        (lambda tmp: b"small", b"small"),
        (lambda tmp: BIG, BIG),
        (lambda tmp: bytearray(b"from a bytearray"), b"from a bytearray"),
        (lambda tmp: io.BytesIO(b"tiny"), b"tiny"),
        (lambda tmp: _positioned(io.BytesIO(b"skip" + BIG), 4), BIG),
        (lambda tmp: _disk_file(tmp, b"skip" + BIG, 4), BIG),
        (lambda tmp: _pipe_body(b"through a pipe" * 100), b"through a pipe" * 100),
    ],
    ids=["bytes", "big-bytes", "bytearray", "small-file", "big-file", "disk-file", "pipe"],
)
def test_request_body_kinds(
    server: FakeSCGIServer,
    tmp_path: Path,
    make_body: Callable[[Path], bytes | BinaryIO],
    expected: bytes,
) -> None:
    body = make_body(tmp_path)
    try:
        request(server.address, method="PUT", body=body, timeout=IO_TIMEOUT)
    finally:
        if not isinstance(body, (bytes, bytearray)):
            body.close()

    got = _only(server)
    assert got.variables["CONTENT_LENGTH"] == str(len(expected))
    assert got.body == expected


def _positioned(stream: BinaryIO, offset: int) -> BinaryIO:
    stream.seek(offset)
    return stream


def _disk_file(tmp_path: Path, data: bytes, offset: int) -> BinaryIO:
    path = tmp_path / "body.bin"
    path.write_bytes(data)
    return _positioned(path.open("rb"), offset)


def test_request_does_not_half_close(server: FakeSCGIServer) -> None:
    server.check_half_close = True

    response = request(server.address, method="POST", body=b"x" * 10, timeout=IO_TIMEOUT)

    assert response.status == 200
    assert _only(server).eof_before_reply is False


def test_request_returns_the_parsed_response(server: FakeSCGIServer) -> None:
    server.reply = (
        b"Status: 201 Created\r\nLocation: /new\r\n"
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nmade\r\n\r\nit"
    )

    response = request(server.address, method="POST", timeout=IO_TIMEOUT)

    assert response == SCGIResponse(
        201,
        "Created",
        [("Location", "/new"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
        b"made\r\n\r\nit",
    )


@pytest.mark.parametrize("form", ["string", "tuple", "plain-path", "ipv6"])
def test_request_address_forms(form: str, tmp_path: Path) -> None:
    if form == "ipv6" and not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    kind = {"string": "tcp", "tuple": "tcp", "plain-path": "unix", "ipv6": "tcp6"}[form]
    with serving(kind, tmp_path) as fake:
        address: str | tuple[str, int] = fake.address
        if form == "tuple":
            address = ("127.0.0.1", fake.listener.getsockname()[1])
        elif form == "plain-path":
            address = fake.address.removeprefix("unix:")
            assert address.startswith("/")

        response = request(address, timeout=IO_TIMEOUT)

    assert response.body == b"ok"
    assert len(fake.received) == 1


@pytest.mark.parametrize(
    "address",
    [
        "localhost",
        "localhost:",
        ":4000",
        "host:http",
        "host:0",
        "host:65536",
        "::1:4000",
        "unix:",
        ("127.0.0.1", "4000"),
        ("", 4000),
        ("127.0.0.1", 0),
    ],
)
def test_request_rejects_bad_addresses(address: str | tuple[str, int]) -> None:
    with pytest.raises(ValueError, match="SCGI address"):
        request(address, timeout=IO_TIMEOUT)


def test_request_rejects_non_positive_timeout() -> None:
    with pytest.raises(ValueError, match="timeout"):
        request("127.0.0.1:4000", timeout=0)


def test_request_connection_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        request(("127.0.0.1", port), timeout=IO_TIMEOUT)


def test_request_missing_unix_socket(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        request(f"unix:{tmp_path / 'absent.sock'}", timeout=IO_TIMEOUT)


def test_request_times_out_on_a_silent_server(server: FakeSCGIServer) -> None:
    gate = threading.Event()

    def stall(conn: socket.socket, received: Received) -> None:
        gate.wait(IO_TIMEOUT)

    server.reply = stall
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            request(server.address, timeout=0.3)
    finally:
        gate.set()
    assert time.monotonic() - started < 2.0


def test_request_close_without_answer(server: FakeSCGIServer) -> None:
    server.reply = b""

    with pytest.raises(ResponseFormatError, match="without a response"):
        request(server.address, timeout=IO_TIMEOUT)


def test_request_reset_before_head(tcp_server: FakeSCGIServer) -> None:
    def partial_head_then_reset(conn: socket.socket, received: Received) -> None:
        conn.sendall(b"Status: 200 OK\r\nContent-")
        _reset(conn)

    tcp_server.reply = partial_head_then_reset

    with pytest.raises(ResponseFormatError, match="reset"):
        request(tcp_server.address, timeout=IO_TIMEOUT)


def test_request_reset_after_head_keeps_what_arrived(tcp_server: FakeSCGIServer) -> None:
    def head_then_reset(conn: socket.socket, received: Received) -> None:
        conn.sendall(b"Status: 200 OK\r\nContent-Length: 10\r\n\r\npart")
        _reset(conn)

    tcp_server.reply = head_then_reset

    response = request(tcp_server.address, timeout=IO_TIMEOUT)

    assert (response.status, response.header("content-length"), response.body) == (
        200,
        "10",
        b"part",
    )


def test_request_reads_an_early_answer(server: FakeSCGIServer) -> None:
    # The server answers 413 after the head and closes without reading the
    # body; far more than the socket buffers hold is still being sent.
    server.read_body = False
    server.reply = b"Status: 413 Content Too Large\r\nContent-Type: text/plain\r\n\r\ntoo big"

    response = request(server.address, method="POST", body=b"x" * (32 << 20), timeout=10.0)

    assert (response.status, response.reason, response.body) == (
        413,
        "Content Too Large",
        b"too big",
    )


# --------------------------------------------------------------------------- parse_response()


def test_parse_response_normal() -> None:
    raw = b"Status: 404 Not Found\r\nContent-Type: text/html\r\nX-Pad:  spaced\t \r\n\r\n<p>"

    response = parse_response(raw)

    assert response.status == 404
    assert response.reason == "Not Found"
    assert response.status_line == "404 Not Found"
    assert response.headers == [("Content-Type", "text/html"), ("X-Pad", "spaced")]
    assert response.body == b"<p>"


@pytest.mark.parametrize(
    ("raw", "status", "reason"),
    [
        (b"Content-Type: text/plain\r\n\r\n", 200, "OK"),
        (b"Location: /elsewhere\r\n\r\n", 302, "Found"),
        (b"X-A: 1\r\nlocation: http://x.test/\r\n\r\n", 302, "Found"),
        (b"Status: 204\r\n\r\n", 204, "No Content"),
        (b"status: 201 Made It\r\n\r\n", 201, "Made It"),
        (b"Status:599\r\n\r\n", 599, ""),
        (b"Status: 200 Okay\t\r\n\r\n", 200, "Okay"),
    ],
    ids=["no-status", "location", "lowercase-location", "no-reason", "lowercase", "odd", "tab"],
)
def test_parse_response_status(raw: bytes, status: int, reason: str) -> None:
    response = parse_response(raw)

    assert (response.status, response.reason) == (status, reason)
    assert all(name.lower() != "status" for name, _ in response.headers)


def test_parse_response_bare_lf_and_mixed_line_ends() -> None:
    bare = parse_response(b"Status: 200 OK\nContent-Type: text/plain\n\nbody\r\n")
    mixed = parse_response(b"Status: 200 OK\r\nContent-Type: text/plain\n\r\nbody\n\n")

    assert bare.headers == [("Content-Type", "text/plain")]
    assert bare.body == b"body\r\n"
    assert mixed.headers == [("Content-Type", "text/plain")]
    assert mixed.body == b"body\n\n"


def test_parse_response_repeated_headers_keep_order() -> None:
    response = parse_response(
        b"Status: 200 OK\r\nSet-Cookie: a=1; Path=/\r\nX-Mid: m\r\n"
        b"set-cookie: b=2\r\nSET-COOKIE: c=3\r\n\r\n"
    )

    assert response.headers_all("Set-Cookie") == ["a=1; Path=/", "b=2", "c=3"]
    assert response.header("SET-cookie") == "a=1; Path=/"
    assert response.header("x-mid") == "m"
    assert response.header("Absent") is None
    assert response.headers_all("Absent") == []


def test_parse_response_body_may_contain_blank_lines() -> None:
    response = parse_response(b"Status: 200 OK\r\nContent-Type: t\r\n\r\nfirst\r\n\r\nsecond\n\n")

    assert response.headers == [("Content-Type", "t")]
    assert response.body == b"first\r\n\r\nsecond\n\n"


def test_parse_response_headers_are_latin1() -> None:
    response = parse_response(b"Status: 200 OK\r\nX-Name: Zo\xeb\r\n\r\n")

    assert response.header("X-Name") == "Zo\xeb"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"Status: 200 OK",
        b"Status: 200 OK\r\nContent-Type: text/plain\r\n",
        b"\r\nbody",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"Status: OK\r\n\r\n",
        b"Status: 20 OK\r\n\r\n",
        b"Status: 2000 OK\r\n\r\n",
        b"Status: 099 Low\r\n\r\n",
        b"Status: 200OK\r\n\r\n",
        b"Status: 200 OK\r\nStatus: 201 Created\r\n\r\n",
        b"Content-Type text/plain\r\n\r\n",
        b": no name\r\n\r\n",
        b"Bad Name: x\r\n\r\n",
        b"X-A: 1\r\n continued\r\n\r\n",
        b"X-A: a\x00b\r\n\r\n",
        b"X-A: a\rb\r\n\r\n",
    ],
    ids=[
        "empty",
        "no-newline",
        "no-blank-line",
        "no-headers",
        "http-status-line",
        "status-not-number",
        "status-two-digits",
        "status-four-digits",
        "status-below-100",
        "status-no-space",
        "two-status-lines",
        "no-colon",
        "empty-name",
        "space-in-name",
        "continuation-line",
        "nul-in-value",
        "cr-in-value",
    ],
)
def test_parse_response_rejects_malformed(raw: bytes) -> None:
    with pytest.raises(ResponseFormatError):
        parse_response(raw)


# --------------------------------------------------------------------------- SCGIProxyApp


def _proxy(server: FakeSCGIServer, **options: bool) -> webtest.TestApp:
    return webtest.TestApp(SCGIProxyApp(server.address, IO_TIMEOUT, **options))


def test_proxy_get_with_query(server: FakeSCGIServer) -> None:
    server.reply = echo_reply

    response = _proxy(server).get("/caf%C3%A9/x", params={"q": "a b"})

    sent = response.json
    assert sent["vars"]["REQUEST_METHOD"] == "GET"
    assert sent["vars"]["REQUEST_URI"] == "/caf%C3%A9/x?q=a+b"
    assert sent["vars"]["QUERY_STRING"] == "q=a+b"
    assert sent["vars"]["CONTENT_LENGTH"] == "0"
    assert sent["vars"]["HTTP_HOST"] == "localhost:80"
    assert "SCRIPT_NAME" not in sent["vars"]
    assert "PATH_INFO" not in sent["vars"]
    assert all(name.isupper() for name in sent["names"])  # no wsgi.* or paste.*
    assert sent["body"] == ""


def test_proxy_post_form(tcp_server: FakeSCGIServer) -> None:
    tcp_server.reply = echo_reply

    response = _proxy(tcp_server).post("/form", {"name": "Zoë", "n": "1"})

    sent = response.json
    expected_body = b"name=Zo%C3%AB&n=1"
    assert bytes.fromhex(sent["body"]) == expected_body
    assert sent["vars"]["CONTENT_LENGTH"] == str(len(expected_body))
    assert sent["vars"]["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert sent["vars"]["REQUEST_METHOD"] == "POST"
    assert sent["vars"]["REQUEST_URI"] == "/form"


def test_proxy_rebuilds_request_uri_with_script_name(tcp_server: FakeSCGIServer) -> None:
    tcp_server.reply = echo_reply

    response = _proxy(tcp_server).get("/x%20y", extra_environ={"SCRIPT_NAME": "/mount"})

    assert response.json["vars"]["REQUEST_URI"] == "/mount/x%20y"


def test_proxy_keeps_a_given_request_uri(tcp_server: FakeSCGIServer) -> None:
    tcp_server.reply = echo_reply

    response = _proxy(tcp_server).get("/a/b", extra_environ={"REQUEST_URI": "/a%2Fb"})

    assert response.json["vars"]["REQUEST_URI"] == "/a%2Fb"


def test_proxy_forward_path_info(tcp_server: FakeSCGIServer) -> None:
    tcp_server.reply = echo_reply
    app = _proxy(tcp_server, forward_path_info=True)

    response = app.get("/p%20q", extra_environ={"SCRIPT_NAME": "/app"})

    sent = response.json["vars"]
    assert (sent["SCRIPT_NAME"], sent["PATH_INFO"]) == ("/app", "/p q")
    assert sent["REQUEST_URI"] == "/app/p%20q"


def test_proxy_forwards_status_with_reason(server: FakeSCGIServer) -> None:
    server.reply = (
        b"Status: 404 Nowhere To Be Found\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 4\r\n\r\ngone"
    )

    response = _proxy(server).get("/missing", status=404)

    assert response.status == "404 Nowhere To Be Found"
    assert response.body == b"gone"


def test_proxy_forwards_headers(tcp_server: FakeSCGIServer) -> None:
    tcp_server.reply = (
        b"Status: 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1; Path=/\r\n"
        b"X-Custom: v\r\nConnection: close\r\nSet-Cookie: b=2\r\nContent-Length: 5\r\n\r\nhello"
    )

    response = _proxy(tcp_server).get("/")

    assert response.headerlist == [
        ("Content-Type", "text/plain"),
        ("Set-Cookie", "a=1; Path=/"),
        ("X-Custom", "v"),
        ("Set-Cookie", "b=2"),
        ("Content-Length", "5"),
    ]
    assert response.text == "hello"


def test_proxy_raises_on_a_malformed_answer(tcp_server: FakeSCGIServer) -> None:
    tcp_server.reply = b"Status: nope\r\n\r\n"

    with pytest.raises(ResponseFormatError, match="Status"):
        _proxy(tcp_server).get("/")
