"""Functional tests: a live WSGIServer, real sockets, one tiny app per scenario.

Modelled on waitress's test_functional: every server binds port 0 (or a unix
socket in a temporary directory) and the test reads the real address back;
the behaviour suite runs over TCP and unix sockets with the single and the
threaded backend (the ``live`` fixture).  Apps are wrapped in
``wsgiref.validate.validator``, so a PEP 3333 violation by the server raises
inside the app and shows up as a 500.

Traffic goes only to loopback or unix sockets; every wait has a timeout and
every server and thread is stopped and joined (see conftest.py).
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import logging
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
from conftest import (
    IO_TIMEOUT,
    LiveFactory,
    ServeFactory,
    connect,
    exchange,
    recv_all,
    unix_path,
    wait_for,
)

from scgiwsgi.client import SCGIProxyApp, SCGIResponse, parse_response, request
from scgiwsgi.protocol import encode_request

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
App = Callable[[Environ, StartResponse], Iterable[bytes]]

ROOT = Path(__file__).resolve().parent.parent
SECRET = "secret-token-7f3a9c"  # must never reach a client


# -- helpers ------------------------------------------------------------------------------


def get(address: str, path: str = "/", **kwargs: Any) -> SCGIResponse:
    """One request through scgiwsgi.client with a bounded timeout."""
    kwargs.setdefault("timeout", IO_TIMEOUT)
    return request(address, path=path, **kwargs)


def raw_request(path: str = "/", body: bytes = b"", method: str = "GET", **extra: str) -> bytes:
    """The bytes of an nginx-like SCGI request."""
    headers = {"REQUEST_METHOD": method, "REQUEST_URI": path, "SERVER_PROTOCOL": "HTTP/1.1"}
    headers.update(extra)
    return encode_request(headers, body)


def netstring(block: bytes) -> bytes:
    return b"%d:%s," % (len(block), block)


def plain(start_response: StartResponse, body: bytes, status: str = "200 OK") -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def hello(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    return plain(start_response, b"Hello, world!\n")


def routed(routes: dict[str, App]) -> App:
    """A validated app dispatching on PATH_INFO; anything else gets ``hello``."""

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return routes.get(environ["PATH_INFO"], hello)(environ, start_response)

    return validator(app)


def read_body(environ: Environ) -> bytes:
    """Read CONTENT_LENGTH bytes, looping over short reads."""
    stream = environ["wsgi.input"]
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    parts = []
    while remaining > 0:
        data = stream.read(min(remaining, 1 << 20))
        if not data:
            break
        parts.append(data)
        remaining -= len(data)
    return b"".join(parts)


def unvalidated_input(environ: Environ) -> Any:
    # wsgiref.validate's InputWrapper insists on read(size); PEP 3333 also
    # allows read() with no argument, which is what these tests exercise.
    stream = environ["wsgi.input"]
    return getattr(stream, "input", stream)


def assert_still_serving(address: str) -> None:
    response = get(address)
    assert (response.status, response.body) == (200, b"Hello, world!\n")


def logged_peer(sock: socket.socket, address: str, transport: str) -> str:
    """How the server's log lines name the client on ``sock``.

    A TCP client is named by its address; a unix client has none, so the
    listening socket's address stands in.
    """
    if transport == "tcp":
        host, port = sock.getsockname()[:2]
        return f"{host}:{port}"
    return address


def split_raw(raw: bytes) -> tuple[bytes, bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {raw[:200]!r}"
    return head, body


def declared_length(head: bytes) -> int:
    match = re.search(rb"(?im)^Content-Length: *(\d+)\r?$", head)
    assert match is not None, head
    return int(match.group(1))


def run_in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Start ``target`` in a thread; the dict gets ``result`` or ``error``."""
    outcome: dict[str, Any] = {}

    def runner() -> None:
        try:
            outcome["result"] = target()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=runner, daemon=True)
    thread.start()
    return thread, outcome


def joined(thread: threading.Thread, outcome: dict[str, Any], timeout: float = IO_TIMEOUT) -> Any:
    thread.join(timeout)
    assert not thread.is_alive(), "client thread did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "scgiwsgi.error" and r.levelno == level]


# -- the basics -----------------------------------------------------------------------------


def test_hello_world(live: LiveFactory) -> None:
    server = live(validator(hello))
    response = get(server.address)
    assert response.status == 200
    assert response.header("Content-Type") == "text/plain"
    assert response.body == b"Hello, world!\n"
    raw, reset = exchange(server.address, raw_request())
    assert not reset
    assert raw.startswith(b"Status: 200 OK\r\n")


def environ_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    keys = (
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "wsgi.url_scheme",
        "wsgi.multithread",
        "wsgi.multiprocess",
        "wsgi.run_once",
    )
    return plain(start_response, json.dumps({key: environ.get(key) for key in keys}).encode())


def seen_environ(address: str, path: str, **kwargs: Any) -> dict[str, Any]:
    response = get(address, path, **kwargs)
    assert response.status == 200, response.body
    result: dict[str, Any] = json.loads(response.body)
    return result


def test_path_info_is_percent_decoded_from_request_uri(live: LiveFactory) -> None:
    server = live(validator(environ_app))
    seen = seen_environ(server.address, "/caf%C3%A9/a%20b%2Bc?x=%20y&z=1")
    # PEP 3333: the decoded bytes as latin-1 text.
    assert seen["PATH_INFO"] == "/caf\u00c3\u00a9/a b+c"
    assert seen["SCRIPT_NAME"] == ""
    assert seen["QUERY_STRING"] == "x=%20y&z=1"


def test_script_name_option_splits_the_path(live: LiveFactory) -> None:
    server = live(validator(environ_app), script_name="/app")
    seen = seen_environ(server.address, "/app/some%20where")
    assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == ("/app", "/some where")
    seen = seen_environ(server.address, "/app")
    assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == ("/app", "")
    seen = seen_environ(server.address, "/application")
    assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == ("", "/application")


@pytest.mark.parametrize(
    ("variables", "scheme"),
    [
        ({}, "http"),
        ({"HTTPS": "on"}, "https"),
        ({"HTTPS": "ON"}, "https"),
        ({"HTTPS": "1"}, "https"),
        ({"HTTPS": "off"}, "http"),
        ({"REQUEST_SCHEME": "https"}, "https"),
    ],
)
def test_url_scheme(live: LiveFactory, variables: dict[str, str], scheme: str) -> None:
    server = live(validator(environ_app))
    assert seen_environ(server.address, "/", environ=variables)["wsgi.url_scheme"] == scheme


def test_multithread_and_multiprocess_flags(live: LiveFactory, backend: str) -> None:
    options = {"threads": 8} if backend == "threaded" else {}
    server = live(validator(environ_app), **options)
    seen = seen_environ(server.address, "/")
    assert seen["wsgi.multithread"] is (backend == "threaded")
    assert seen["wsgi.multiprocess"] is False
    assert seen["wsgi.run_once"] is False


def test_threaded_with_one_thread_is_not_multithread(serve: ServeFactory, transport: str) -> None:
    server = serve(validator(environ_app), transport=transport, backend="threaded", threads=1)
    assert seen_environ(server.address, "/")["wsgi.multithread"] is False


# -- the request body ---------------------------------------------------------------------


def echo_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    body = read_body(environ)
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))],
    )
    return [body]


def test_post_body_echo_exact_bytes(live: LiveFactory) -> None:
    server = live(validator(echo_app))
    body = bytes(range(256)) * 4 + b"\r\n\0,:" + b"12:not,a netstring"
    response = get(server.address, "/echo", method="POST", body=body)
    assert response.status == 200
    assert response.body == body


def test_post_empty_body(live: LiveFactory) -> None:
    server = live(validator(echo_app))
    response = get(server.address, "/echo", method="POST", body=b"")
    assert (response.status, response.body) == (200, b"")


def test_five_megabyte_body_sent_in_pieces(live: LiveFactory) -> None:
    server = live(validator(echo_app))
    body = random.Random(1234).randbytes(5 * 1024 * 1024)
    raw = raw_request("/echo", body, method="POST")
    pieces = [raw[i : i + 700_000] for i in range(0, len(raw), 700_000)]
    with connect(server.address) as sock:
        for piece in pieces:  # at most 8 pieces, 20 ms apart
            sock.sendall(piece)
            time.sleep(0.02)
        data, reset = recv_all(sock)
    assert not reset
    response = parse_response(data)
    assert response.status == 200
    assert len(response.body) == len(body)
    assert hashlib.sha256(response.body).hexdigest() == hashlib.sha256(body).hexdigest()


def size_read_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    # The common idiom: one read(CONTENT_LENGTH) expected to return it all,
    # as file objects, wsgiref, waitress and gunicorn do.
    body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
    return plain(start_response, str(len(body)).encode())


def test_read_with_size_returns_the_whole_body(live: LiveFactory) -> None:
    server = live(validator(size_read_app))
    body = b"x" * (1024 * 1024)
    response = get(server.address, "/", method="POST", body=body)
    assert response.body == str(len(body)).encode()


def read_all_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    body = unvalidated_input(environ).read()
    more = unvalidated_input(environ).read()
    return plain(start_response, b"%d %d %s" % (len(body), len(more), body[:10]))


def test_read_without_size_returns_without_eof(live: LiveFactory) -> None:
    # flup's hang: read() waited for an EOF that a front end never sends.
    # scgiwsgi.client never half-closes, so a hang would time out here.
    server = live(validator(read_all_app))
    body = b"0123456789" * 20_000
    started = time.monotonic()
    response = get(server.address, "/", method="POST", body=body, timeout=3.0)
    assert time.monotonic() - started < 2.0
    assert response.body == b"200000 0 0123456789"


def lines_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    stream = environ["wsgi.input"]
    first = stream.readline()
    part = stream.readline(3)
    rest = list(stream)
    after = stream.readline()
    result = {"first": first, "part": part, "rest": rest, "after": after}
    text = json.dumps(result, default=lambda value: value.decode("latin-1"))
    return plain(start_response, text.encode())


def readlines_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    lines = environ["wsgi.input"].readlines()
    return plain(start_response, json.dumps([line.decode("latin-1") for line in lines]).encode())


def test_readline_and_iteration_over_the_body(live: LiveFactory) -> None:
    server = live(validator(lines_app))
    body = b"first\nsecond line\n\nthird\xff\nno newline at the end"
    response = get(server.address, "/", method="POST", body=body)
    assert response.status == 200, response.body
    assert json.loads(response.body) == {
        "first": "first\n",
        "part": "sec",
        "rest": ["ond line\n", "\n", "third\xff\n", "no newline at the end"],
        "after": "",
    }


def test_readlines(live: LiveFactory) -> None:
    server = live(validator(readlines_app))
    lines = [b"a" * 100_000 + b"\n", b"b\n", b"c"]
    response = get(server.address, "/", method="POST", body=b"".join(lines))
    assert json.loads(response.body) == [line.decode() for line in lines]


# -- the response body --------------------------------------------------------------------


def generator_app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"one,"
    yield b""
    yield b"two,"
    yield b"three"


def test_generator_with_several_chunks(live: LiveFactory) -> None:
    server = live(validator(generator_app))
    raw, reset = exchange(server.address, raw_request())
    assert not reset
    head, body = split_raw(raw)
    assert head.startswith(b"Status: 200 OK\r\n")
    assert body == b"one,two,three"


def write_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written, ")
    write(b"then ")
    return [b"returned"]


def test_write_callable(live: LiveFactory) -> None:
    server = live(validator(write_app))
    response = get(server.address)
    assert (response.status, response.body) == (200, b"written, then returned")


def file_app(path: Path, opened: list[Any], content_length: int | None = None) -> App:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        handle = path.open("rb")
        opened.append(handle)
        handle.seek(5)
        headers = [("Content-Type", "application/octet-stream")]
        if content_length is not None:
            headers.append(("Content-Length", str(content_length)))
        start_response("200 OK", headers)
        wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](handle, 4)
        return wrapper

    return app


@pytest.mark.parametrize("validated", [True, False], ids=["validated", "sendfile"])
def test_file_wrapper_starts_at_the_file_position(
    live: LiveFactory, tmp_path: Path, validated: bool
) -> None:
    # Without the validator the server sees its own FileWrapper and uses
    # sendfile; the validator hides it behind an iterator, so iteration runs.
    path = tmp_path / "data.bin"
    content = bytes(range(256)) * 300
    path.write_bytes(content)
    opened: list[Any] = []
    app = file_app(path, opened, content_length=len(content) - 5)
    server = live(validator(app) if validated else app)
    response = get(server.address)
    assert response.status == 200
    assert response.body == content[5:]
    assert len(opened) == 1
    assert opened[0].closed


def test_file_wrapper_without_content_length(live: LiveFactory, tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(b"0123456789abcdef")
    opened: list[Any] = []
    server = live(file_app(path, opened))
    assert get(server.address).body == b"56789abcdef"
    assert opened[0].closed


def test_file_wrapper_when_the_kernel_refuses_sendfile_is_read_and_sent(
    live: LiveFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some file systems cannot sendfile (EINVAL): the bytes go by read and send.
    calls: list[int] = []

    def refuse(out: int, source: int, offset: int, count: int) -> int:
        calls.append(count)
        raise OSError(errno.EINVAL, "sendfile refused by this test")

    monkeypatch.setattr(os, "sendfile", refuse)
    path = tmp_path / "data.bin"
    content = random.Random(7).randbytes(200_000)
    path.write_bytes(content)
    opened: list[Any] = []
    server = live(file_app(path, opened, content_length=len(content) - 5))
    response = get(server.address)
    assert response.status == 200
    assert response.body == content[5:]
    assert calls == [len(content) - 5]
    assert opened[0].closed


MIB = 1024 * 1024
STREAM_DATA = random.Random(99).randbytes(MIB)


def streaming_app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(MIB))],
    )
    for offset in range(0, MIB, 64 * 1024):
        yield STREAM_DATA[offset : offset + 64 * 1024]


def test_one_mebibyte_streamed_response(live: LiveFactory) -> None:
    server = live(validator(streaming_app))
    response = get(server.address)
    assert response.status == 200
    assert response.header("Content-Length") == str(MIB)
    assert hashlib.sha256(response.body).digest() == hashlib.sha256(STREAM_DATA).digest()


# -- application failures -------------------------------------------------------------------


def raise_early_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    raise RuntimeError(SECRET)


def test_exception_before_start_response_gives_500(
    live: LiveFactory, scgi_log: pytest.LogCaptureFixture
) -> None:
    server = live(routed({"/fail": raise_early_app}))
    response = get(server.address, "/fail")
    assert response.status == 500
    assert (response.header("Content-Type") or "").startswith("text/plain")
    assert SECRET.encode() not in response.body
    assert b"Traceback" not in response.body
    errors = records(scgi_log, logging.ERROR)
    assert any(r.exc_info and SECRET in str(r.exc_info[1]) for r in errors)
    assert_still_serving(server.address)


def raise_midstream_app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "1000")])
    yield b"x" * 100
    raise RuntimeError(SECRET)


def short_body_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
    return [b"short"]


@pytest.mark.parametrize("broken", [raise_midstream_app, short_body_app])
def test_broken_response_after_the_head_is_aborted(
    live: LiveFactory, transport: str, broken: App, scgi_log: pytest.LogCaptureFixture
) -> None:
    server = live(routed({"/broken": broken}))
    raw, reset = exchange(server.address, raw_request("/broken"))
    if transport == "tcp":
        # SO_LINGER 0: the front end sees a reset, not a clean end.
        assert reset, raw
    if raw:
        head, body = split_raw(raw)
        assert head.startswith(b"Status: 200 OK")
        assert len(body) < declared_length(head)
        assert SECRET.encode() not in body
    assert records(scgi_log, logging.ERROR)
    assert_still_serving(server.address)


def injecting_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("X-Note", "a\r\nSet-Cookie: injected=1")],
    )
    return [b"should not be sent"]


@pytest.mark.parametrize("validated", [True, False], ids=["validated", "server-check"])
def test_header_injection_gives_500(live: LiveFactory, validated: bool) -> None:
    # Without the validator, the server's own header check must catch it.
    server = live(validator(injecting_app) if validated else injecting_app)
    raw, reset = exchange(server.address, raw_request())
    assert not reset
    assert raw.startswith(b"Status: 500 ")
    assert b"injected" not in raw
    assert b"should not be sent" not in raw


# -- malformed requests ---------------------------------------------------------------------

MALFORMED = {
    "bad_netstring": (b"abc:def,", {}, 400),
    "missing_scgi": (netstring(b"CONTENT_LENGTH\x000\x00REQUEST_METHOD\x00GET\x00"), {}, 400),
    "content_length_plus": (
        netstring(b"CONTENT_LENGTH\x00+5\x00SCGI\x001\x00") + b"hello",
        {},
        400,
    ),
    "header_too_large": (
        raw_request("/", HTTP_X_BIG="x" * 2000),
        {"max_header_size": 1024},
        431,
    ),
    "body_too_large": (raw_request("/", b"y" * 100, method="POST"), {"max_body_size": 10}, 413),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_request_is_rejected(
    live: LiveFactory, transport: str, case: str, scgi_log: pytest.LogCaptureFixture
) -> None:
    data, options, status = MALFORMED[case]
    server = live(validator(hello), **options)
    with connect(server.address) as sock:
        peer = logged_peer(sock, server.address, transport)
        sock.sendall(data)
        raw, reset = recv_all(sock)
    assert not reset
    assert raw.startswith(b"Status: %d " % status), raw
    warnings = [r.getMessage() for r in records(scgi_log, logging.WARNING)]
    assert any(peer in message and str(status) in message for message in warnings), warnings
    assert_still_serving(server.address)


def test_connection_closed_without_bytes(
    live: LiveFactory, scgi_log: pytest.LogCaptureFixture
) -> None:
    server = live(validator(hello))
    for _ in range(3):
        connect(server.address).close()
    assert_still_serving(server.address)
    warnings = [r.getMessage() for r in scgi_log.records if r.levelno >= logging.WARNING]
    assert not [m for m in warnings if not m.startswith("running as root")]


def test_client_closes_in_the_middle_of_the_body(
    live: LiveFactory, scgi_log: pytest.LogCaptureFixture
) -> None:
    failures: list[BaseException] = []
    attempted = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            body = read_body(environ)
        except Exception as exc:
            failures.append(exc)
            raise
        finally:
            attempted.set()
        return plain(start_response, body)

    server = live(routed({"/upload": app}))
    data = raw_request("/upload", b"z" * 1000, method="POST")
    with connect(server.address) as sock:
        sock.sendall(data[:-900])
    assert attempted.wait(IO_TIMEOUT)
    assert len(failures) == 1
    assert isinstance(failures[0], ConnectionError)
    assert_still_serving(server.address)
    assert not records(scgi_log, logging.ERROR)


def test_client_disconnects_during_the_response(live: LiveFactory) -> None:
    closed = threading.Event()
    produced: list[int] = []
    chunk = b"w" * (64 * 1024)

    class Endless:
        def __iter__(self) -> Iterator[bytes]:
            for number in range(4096):  # 256 MiB at most
                produced.append(number)
                yield chunk

        def close(self) -> None:
            closed.set()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Endless()

    server = live(routed({"/stream": app}))
    with connect(server.address) as sock:
        sock.sendall(raw_request("/stream"))
        assert sock.recv(4096).startswith(b"Status: 200 OK")
    assert closed.wait(IO_TIMEOUT), "close() of the app's iterable was not called"
    assert len(produced) < 4096
    assert_still_serving(server.address)


@pytest.mark.parametrize("sent", [b"", b"70:CONTENT_LENGTH\x00"], ids=["nothing", "partial"])
def test_header_timeout_closes_the_connection(
    live: LiveFactory, sent: bytes, scgi_log: pytest.LogCaptureFixture
) -> None:
    server = live(validator(hello), header_timeout=0.5)
    started = time.monotonic()
    with connect(server.address) as sock:
        sock.sendall(sent)
        raw, _ = recv_all(sock, timeout=5.0)
    elapsed = time.monotonic() - started
    assert raw == b""
    # A TCP connection that sends nothing reaches the server about a second
    # late (defer_accept), then gets its header_timeout.
    assert 0.4 <= elapsed < 3.5
    assert any("header" in r.getMessage() for r in records(scgi_log, logging.WARNING))
    assert_still_serving(server.address)


@pytest.mark.skipif(not hasattr(socket, "TCP_DEFER_ACCEPT"), reason="Linux only")
@pytest.mark.parametrize("defer_accept", [True, False])
def test_defer_accept_option_reaches_the_tcp_listener(
    serve: ServeFactory, defer_accept: bool
) -> None:
    server = serve(validator(hello), defer_accept=defer_accept)
    sock = server.server.listeners[0].sock
    assert (sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0) is defer_accept
    assert_still_serving(server.address)


# -- concurrency ----------------------------------------------------------------------------


def test_threaded_backend_serves_requests_concurrently(serve: ServeFactory, transport: str) -> None:
    barrier = threading.Barrier(4, timeout=5.0)

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return plain(start_response, b"barrier broken", "503 Service Unavailable")
        return plain(start_response, b"met")

    server = serve(validator(app), transport=transport, backend="threaded", threads=4)
    clients = [run_in_thread(lambda: get(server.address)) for _ in range(4)]
    responses = [joined(thread, outcome) for thread, outcome in clients]
    assert [(r.status, r.body) for r in responses] == [(200, b"met")] * 4


def test_single_backend_serves_one_request_at_a_time(serve: ServeFactory, transport: str) -> None:
    lock = threading.Lock()
    active = [0, 0]  # now, most ever

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        with lock:
            active[0] += 1
            active[1] = max(active)
        time.sleep(0.4)
        with lock:
            active[0] -= 1
        return plain(start_response, b"slept")

    server = serve(validator(app), transport=transport, backend="single")
    started = time.monotonic()
    clients = [run_in_thread(lambda: get(server.address)) for _ in range(2)]
    responses = [joined(thread, outcome) for thread, outcome in clients]
    assert time.monotonic() - started >= 0.8
    assert [r.status for r in responses] == [200, 200]
    assert active[1] == 1


# -- stopping -------------------------------------------------------------------------------


def refused(address: str) -> bool:
    try:
        connect(address, timeout=1.0).close()
    except (ConnectionRefusedError, FileNotFoundError):
        return True
    return False


def test_graceful_stop_finishes_the_request_in_flight(live: LiveFactory, backend: str) -> None:
    entered = threading.Event()

    def slow(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        entered.set()
        time.sleep(1.0)
        return plain(start_response, b"finished")

    server = live(routed({"/slow": slow}))
    thread, outcome = run_in_thread(lambda: get(server.address, "/slow"))
    assert entered.wait(IO_TIMEOUT)
    server.server.shutdown()
    if backend == "threaded":
        # The threaded backend closes its listeners at once.
        assert wait_for(lambda: refused(server.address), timeout=0.8)
        assert thread.is_alive(), "the slow request ended too early"
    response = joined(thread, outcome)
    assert (response.status, response.body) == (200, b"finished")
    assert server.returned.wait(5.0), "serve_forever did not return"
    assert refused(server.address)


def test_graceful_timeout_abandons_a_hung_request(
    serve: ServeFactory, transport: str, tmp_path: Path, scgi_log: pytest.LogCaptureFixture
) -> None:
    entered, release = threading.Event(), threading.Event()

    def hung(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        entered.set()
        release.wait(5.0)
        return plain(start_response, STREAM_DATA)

    server = serve(
        routed({"/hung": hung}),
        transport=transport,
        backend="threaded",
        graceful_timeout=0.5,
        access_log=str(tmp_path / "access.log"),
    )
    thread, outcome = run_in_thread(lambda: get(server.address, "/hung"))
    try:
        assert entered.wait(IO_TIMEOUT)
        started = time.monotonic()
        server.server.shutdown()
        assert server.returned.wait(2.0), "serve_forever did not return within 2 s"
        assert 0.4 <= time.monotonic() - started < 2.0
        assert any("abandoned" in r.getMessage() for r in records(scgi_log, logging.WARNING))
    finally:
        release.set()  # let the abandoned worker finish so teardown can join it
        thread.join(IO_TIMEOUT)
    # The abandoned request still answers in full, although the server
    # closed its access log meanwhile.
    response = joined(thread, outcome)
    assert response.status == 200
    assert response.body == STREAM_DATA


def test_unix_socket_file_removed_after_stop(serve: ServeFactory, backend: str) -> None:
    server = serve(validator(hello), transport="unix", backend=backend)
    path = unix_path(server.address)
    assert path is not None
    assert Path(path).is_socket()
    assert_still_serving(server.address)
    server.stop()
    assert not Path(path).exists()


def test_serves_tcp_and_unix_at_once(serve: ServeFactory, backend: str) -> None:
    server = serve(validator(hello), transport="both", backend=backend)
    assert len(server.addresses) == 2
    for address in server.addresses:
        assert_still_serving(address)


# -- access log -----------------------------------------------------------------------------

COMBINED = re.compile(
    r"127\.0\.0\.1 - - \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "
    r'"GET /logged\?x=1 HTTP/1\.1" 200 14 "http://example\.com/from" "probe/1\.0"'
)


def test_access_log_in_combined_format(live: LiveFactory, tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    server = live(validator(hello), access_log=str(log_path))
    headers = {"User-Agent": "probe/1.0", "Referer": "http://example.com/from"}
    assert get(server.address, "/logged?x=1", headers=headers).status == 200
    server.stop()
    lines = log_path.read_text().splitlines()
    assert len(lines) == 1
    assert COMBINED.fullmatch(lines[0]), lines[0]


def test_an_access_log_that_cannot_be_written_costs_no_response(
    live: LiveFactory, transport: str, scgi_log: pytest.LogCaptureFixture
) -> None:
    # /dev/full fails every write with ENOSPC: the answer still goes out
    # whole, and the warning names the peer (as in test_malformed_request_is_rejected).
    server = live(validator(hello), access_log="/dev/full")
    with connect(server.address) as sock:
        peer = logged_peer(sock, server.address, transport)
        sock.sendall(encode_request({"REQUEST_METHOD": "GET", "REQUEST_URI": "/logged"}))
        raw, reset = recv_all(sock)
    assert not reset
    assert raw.startswith(b"Status: 200 ") and raw.endswith(b"\r\n\r\nHello, world!\n"), raw
    warnings = [r.getMessage() for r in records(scgi_log, logging.WARNING)]
    assert any("access log line not written" in m and peer in m for m in warnings), warnings


# -- WebTest through SCGIProxyApp -----------------------------------------------------------


def load_flask_app() -> Any:
    pytest.importorskip("flask")
    path = ROOT / "examples" / "flask_app" / "__init__.py"
    spec = importlib.util.spec_from_file_location("scgiwsgi_test_flask_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


@pytest.fixture
def flask_client(serve: ServeFactory, transport: str) -> Any:
    webtest = pytest.importorskip("webtest")
    # Not validated: werkzeug calls wsgi.input.read() with no size (allowed
    # by PEP 3333, refused by wsgiref.validate since wsgi.input_terminated).
    server = serve(load_flask_app(), transport=transport, script_name="/app")
    return webtest.TestApp(SCGIProxyApp(server.address, timeout=IO_TIMEOUT))


def test_webtest_get(flask_client: Any) -> None:
    response = flask_client.get("/app/")
    assert response.status_int == 200
    assert response.text == "Hello from Flask!\n"
    assert flask_client.get("/app/missing", status=404).status_int == 404


def test_webtest_post_form(flask_client: Any) -> None:
    response = flask_client.post("/app/echo", {"name": "Zo\u00eb", "n": "1"})
    assert response.json == {"name": ["Zo\u00eb"], "n": ["1"]}


def test_webtest_url_for_under_script_name(flask_client: Any) -> None:
    info = flask_client.get("/app/info").json
    assert info["path"] == "/info"
    assert info["script_root"] == "/app"
    assert info["url_for_index"] == "/app/"
    assert info["url"] == "http://localhost/app/info"


def test_webtest_upload(flask_client: Any) -> None:
    data = random.Random(5).randbytes(300_000)
    response = flask_client.post("/app/upload", upload_files=[("file", "blob.bin", data)])
    assert response.text == hashlib.sha256(data).hexdigest() + "\n"
