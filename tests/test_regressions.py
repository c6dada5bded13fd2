"""One test per peer bug in ../shared/SCGI.md, "Where peers fail".

Each test is named after the peer and the bug it must not repeat (flup 1.0.3,
python-scgi 2.2, inetd_scgi, uWSGI ``--scgi-socket``, gunicorn), and asserts
the behaviour that bug broke, over real sockets: loopback TCP or unix.
In-process servers come from the ``serve`` fixture (conftest.py); the fork
backend, signals and ``--inetd`` run as child processes
(:mod:`reliability_support`), which every test stops and reaps.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import reliability_apps
from conftest import ServeFactory, connect, exchange, recv_all, stalled_request
from reliability_support import (
    APPS,
    REPO_ROOT,
    ServerProcess,
    StartServer,
    is_alive,
    run_clients,
    server_processes,
    wait_for,
)

from scgiwsgi.client import ResponseFormatError, SCGIResponse, parse_response, request
from scgiwsgi.config import Config
from scgiwsgi.protocol import encode_request

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
TIMEOUT = 10.0
FAILED = (OSError, ResponseFormatError)
"""What a request that gets no complete response raises."""


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[StartServer]:
    """``python -m scgiwsgi`` child processes; none outlives the test."""
    with server_processes(tmp_path) as start:
        yield start


def get(address: str, path: str = "/", **kwargs: Any) -> SCGIResponse:
    kwargs.setdefault("timeout", TIMEOUT)
    return request(address, path=path, **kwargs)


def netstring(block: bytes) -> bytes:
    return b"%d:%s," % (len(block), block)


def head_of(raw: bytes) -> bytes:
    """The response head, up to and including the blank line."""
    end = raw.find(b"\r\n\r\n")
    assert end > 0, f"no CRLF blank line in {raw[:200]!r}"
    return raw[: end + 4]


App = Callable[[Environ, StartResponse], Iterable[bytes]]


def json_app(report: Callable[[Environ], object]) -> App:
    """An app answering ``json.dumps(report(environ))``."""

    def application(environ: Environ, start_response: StartResponse) -> list[bytes]:
        body = json.dumps(report(environ)).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    return application


class CountingApp:
    """``reliability_apps.app`` that counts its calls (a rejected request makes none)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        self.calls += 1
        return reliability_apps.app(environ, start_response)


# == flup 1.0.3 ======================================================================

READERS: dict[str, Callable[[Any], bytes]] = {
    "read()": lambda stream: stream.read(),
    "read(-1)": lambda stream: stream.read(-1),
    "read(None)": lambda stream: stream.read(None),
    "readall()": lambda stream: stream.readall(),
    "readlines()": lambda stream: b"".join(stream.readlines()),
    "iteration": lambda stream: b"".join(stream),
    "readline() loop": lambda stream: b"".join(iter(stream.readline, b"")),
}


@pytest.mark.parametrize("reader", READERS)
def test_flup_input_read_without_size_does_not_wait_for_eof(
    serve: ServeFactory, transport: str, reader: str
) -> None:
    # Like every front end, client.request never half-closes: a server that
    # reads to EOF waits for the client's timeout and fails the request.
    def echo(environ: Environ, start_response: StartResponse) -> list[bytes]:
        body = READERS[reader](environ["wsgi.input"])
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]

    server = serve(echo, transport=transport)
    body = b"line one\nline two\n" + bytes(range(256)) * 400 + b"no newline at the end"
    started = time.monotonic()
    response = get(server.address, "/", method="POST", body=body, timeout=5.0)
    took = time.monotonic() - started
    assert response.status == 200
    assert response.body == body
    assert took < 2.0, f"{reader} took {took:.2f}s"


@pytest.mark.parametrize(
    ("prefix", "uri", "script_name", "path_info"),
    [
        ("", "/caf%C3%A9/a%20b%3Fc?q=%20x", "", "/caf\u00c3\u00a9/a b?c"),
        ("/app", "/app/%7Euser/x%2Fy", "/app", "/~user/x/y"),
        ("/app", "/ap%70/x", "/app", "/x"),
        ("/app", "/application", "", "/application"),
    ],
)
def test_flup_path_is_percent_decoded(
    serve: ServeFactory, prefix: str, uri: str, script_name: str, path_info: str
) -> None:
    # nginx sends REQUEST_URI raw and no PATH_INFO; flup handed the raw path on.
    app = json_app(lambda env: [env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]])
    server = serve(app, script_name=prefix)
    response = get(server.address, uri)
    query = uri.partition("?")[2]
    assert json.loads(response.body) == [script_name, path_info, query]


@pytest.mark.parametrize(
    ("https", "scheme"),
    [
        *[("on", "https"), ("ON", "https"), ("On", "https"), ("1", "https")],
        *[("off", "http"), ("OFF", "http"), ("", "http")],
    ],
)
def test_flup_https_matched_case_insensitively(
    serve: ServeFactory, https: str, scheme: str
) -> None:
    # client.request also sends REQUEST_SCHEME=http: HTTPS must win over it.
    server = serve(json_app(lambda env: env["wsgi.url_scheme"]))
    response = get(server.address, "/", environ={"HTTPS": https})
    assert json.loads(response.body) == scheme


INJECTIONS = {
    "value CRLF": ("200 OK", ("X-Note", "a\r\nSet-Cookie: evil=1")),
    "value LF": ("200 OK", ("X-Note", "a\nSet-Cookie: evil=1")),
    "value CR": ("200 OK", ("X-Note", "a\rSet-Cookie: evil=1")),
    "value NUL": ("200 OK", ("X-Note", "a\0Set-Cookie: evil=1")),
    "name CRLF": ("200 OK", ("X-Note\r\nSet-Cookie", "evil=1")),
    "status CRLF": ("200 OK\r\nSet-Cookie: evil=1", ("X-Note", "fine")),
}


@pytest.mark.parametrize("case", INJECTIONS)
def test_flup_crlf_in_header_value_never_reaches_the_wire(
    serve: ServeFactory, case: str, scgi_log: pytest.LogCaptureFixture
) -> None:
    status, header = INJECTIONS[case]

    def injecting(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response(status, [("Content-Type", "text/plain"), header])
        return [b"body of the injected response"]

    server = serve(injecting)
    raw, reset = exchange(server.address, encode_request({"REQUEST_URI": "/"}))
    assert not reset
    assert b"evil" not in raw
    assert b"injected response" not in raw
    assert raw.startswith(b"Status: 500 Internal Server Error\r\n")
    assert "application failed; answered 500" in scgi_log.text


@pytest.mark.parametrize("declared", [False, True], ids=["no-length", "content-length"])
def test_flup_exception_after_output_is_not_a_silent_200(
    serve: ServeFactory, backend: str, declared: bool, scgi_log: pytest.LogCaptureFixture
) -> None:
    def late_failure(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        headers = [("Content-Type", "text/plain")]
        if declared:
            headers.append(("Content-Length", "1000"))
        start_response("200 OK", headers)
        yield b"the first part went out"
        raise RuntimeError("failed after the head was sent")

    server = serve(late_failure, transport="tcp", backend=backend)
    with connect(server.address) as sock:
        sock.sendall(encode_request({"REQUEST_URI": "/"}))
        raw, reset = recv_all(sock)
    # flup closed cleanly: the front end saw a complete, truncated 200.
    assert reset, f"connection closed cleanly after {raw!r}"
    assert "application failed after the response head was sent" in scgi_log.text
    assert get(server.address).status == 200


def test_flup_prefork_pool_serves_six_concurrently(servers: StartServer) -> None:
    server = servers("--fork", "--workers", "6")
    workers = server.wait_workers(6)
    barrier = threading.Barrier(6, timeout=5.0)
    bodies: list[bytes] = []

    def slow(_: int) -> None:
        barrier.wait()
        bodies.append(server.request("/sleep", "1").body)

    started = time.monotonic()
    assert run_clients(6, slow, timeout=10.0) == []
    took = time.monotonic() - started
    pids = {int(body.split()[1]) for body in bodies}
    assert len(bodies) == 6
    assert pids == workers, "six concurrent requests were not served by six processes"
    assert took < 1.8, f"six 1 s requests took {took:.2f}s"


def test_flup_sigusr1_does_not_crash_parent(servers: StartServer, tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    server = servers("--fork", "--workers", "2", "--access-log", str(access))
    workers = server.wait_workers(2)
    for number in range(1, 4):
        server.signal(signal.SIGUSR1)
        assert wait_for(functools.partial(_logged, server, "received SIGUSR1", number), 5.0)
    time.sleep(0.3)  # the arbiter's loop turns again after the last signal
    assert server.proc.poll() is None, server.log
    assert server.workers() == workers
    assert server.request().status == 200


def _logged(server: ServerProcess, text: str, times: int) -> bool:
    return server.log.count(text) == times


@pytest.mark.parametrize("backend", ["fork", "threaded", "single"])
def test_flup_idle_parent_obeys_sigterm(servers: StartServer, backend: str) -> None:
    args = ["--fork", "--workers", "2"] if backend == "fork" else [f"--{backend}"]
    server = servers(*args)
    workers = server.wait_workers(2) if backend == "fork" else set()
    sent = time.monotonic()
    server.signal(signal.SIGTERM)
    status = server.wait_exit(5.0)
    took = time.monotonic() - sent
    assert status == 0
    assert took < 2.0, f"an idle {backend} server took {took:.2f}s to obey SIGTERM"
    assert not any(is_alive(pid) for pid in workers)


ALLOW_MISSING = "allow" not in Config.option_names()


@pytest.mark.skipif(ALLOW_MISSING, reason="--allow is not an option yet (Config has no 'allow')")
def test_flup_allow_list_covers_ipv6(servers: StartServer) -> None:
    binds = ["--bind", "[::1]:0", "--bind", "127.0.0.1:0"]
    only_v6 = servers(*binds, "--allow", "::1/128")
    only_v4 = servers(*binds, "--allow", "127.0.0.0/8")
    v6, v4 = (_by_family(only_v6, "[::1]:"), _by_family(only_v6, "127.0.0.1:"))
    assert get(v6).status == 200
    _assert_refused(v4)
    v6, v4 = (_by_family(only_v4, "[::1]:"), _by_family(only_v4, "127.0.0.1:"))
    _assert_refused(v6)
    assert get(v4).status == 200
    assert get(_by_family(only_v6, "[::1]:")).status == 200, "refusals broke the server"


def _by_family(server: ServerProcess, prefix: str) -> str:
    return next(address for address in server.addresses if address.startswith(prefix))


def _assert_refused(address: str) -> None:
    started = time.monotonic()
    raw, _ = exchange(address, encode_request({"REQUEST_URI": "/"}), timeout=5.0)
    assert raw == b"", f"{address} answered a peer outside --allow: {raw[:100]!r}"
    assert time.monotonic() - started < 2.0, "a refused peer was not closed at once"


# Modules removed from the standard library by Python 3.12 and 3.13 (PEP 594
# and others): flup's debug page imported cgitb and stopped importing at all.
REMOVED_MODULES = {
    "aifc", "asynchat", "asyncore", "audioop", "cgi", "cgitb", "chunk", "crypt",
    "distutils", "imghdr", "imp", "lib2to3", "mailcap", "msilib", "nis", "nntplib",
    "ossaudiodev", "pipes", "smtpd", "sndhdr", "spwd", "sunau", "telnetlib", "uu",
    "xdrlib",
}  # fmt: skip


def _imported_modules(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value)
    return names


def test_no_cgitb_needed() -> None:
    sources = sorted((REPO_ROOT / "scgiwsgi").rglob("*.py"))
    assert len(sources) > 10
    found = {path.name: _imported_modules(path.read_text()) & REMOVED_MODULES for path in sources}
    assert {name: modules for name, modules in found.items() if modules} == {}
    assert "cgitb" in _imported_modules("import cgitb\nfrom cgi import escape")  # the check works


PROTOCOL_VIOLATIONS = {
    "SCGI missing": b"CONTENT_LENGTH\x000\x00REQUEST_METHOD\x00GET\x00",
    "SCGI=0": b"CONTENT_LENGTH\x000\x00SCGI\x000\x00",
    "SCGI empty": b"CONTENT_LENGTH\x000\x00SCGI\x00\x00",
    "CONTENT_LENGTH second": b"SCGI\x001\x00CONTENT_LENGTH\x000\x00",
    "CONTENT_LENGTH missing": b"SCGI\x001\x00REQUEST_METHOD\x00GET\x00",
    "CONTENT_LENGTH empty": b"CONTENT_LENGTH\x00\x00SCGI\x001\x00",
}


@pytest.mark.parametrize("case", PROTOCOL_VIOLATIONS)
def test_protocol_checks_content_length_first_and_scgi_1(serve: ServeFactory, case: str) -> None:
    app = CountingApp()
    server = serve(app)
    raw, _ = exchange(server.address, netstring(PROTOCOL_VIOLATIONS[case]))
    assert raw.startswith(b"Status: 400 Bad Request\r\n"), raw[:200]
    assert app.calls == 0
    assert get(server.address).status == 200
    assert app.calls == 1


def _request_with_header_block(size: int) -> bytes:
    """A valid request whose header netstring is exactly ``size`` bytes long."""
    base = encode_request({"REQUEST_URI": "/", "HTTP_COOKIE": ""})
    block_length = int(base[: base.index(b":")])
    request_bytes = encode_request({"REQUEST_URI": "/", "HTTP_COOKIE": "c" * (size - block_length)})
    assert int(request_bytes[: request_bytes.index(b":")]) == size
    return request_bytes


@pytest.mark.parametrize(
    ("limit", "size", "status"),
    [(None, 65536, 200), (None, 65537, 431), (1024, 1024, 200), (1024, 1025, 431)],
)
def test_header_size_limit(serve: ServeFactory, limit: int | None, size: int, status: int) -> None:
    app = CountingApp()
    options: dict[str, Any] = {"max_header_size": limit} if limit else {}
    server = serve(app, **options)
    raw, _ = exchange(server.address, _request_with_header_block(size))
    assert raw.startswith(b"Status: %d " % status), raw[:200]
    assert app.calls == (1 if status == 200 else 0)


def test_header_size_limit_answers_before_the_block_arrives(serve: ServeFactory) -> None:
    # Only the announced length is sent: the server must not wait for 9 MB.
    server = serve(CountingApp())
    started = time.monotonic()
    with connect(server.address) as sock:
        sock.sendall(b"9000000:CONTENT_LENGTH\x00")
        raw, _ = recv_all(sock, timeout=5.0)
    assert raw.startswith(b"Status: 431 "), raw[:200]
    assert time.monotonic() - started < 2.0


# == python-scgi 2.2 ==================================================================


def _raise_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    raise RuntimeError("handler failed")


def _not_found_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    start_response("404 Not Found", [])
    return [b"nothing here\n"]


STATUS_CASES: dict[str, tuple[Any, dict[str, Any], bytes, int]] = {
    "200": (reliability_apps.app, {}, encode_request({"REQUEST_URI": "/"}), 200),
    "404 without headers": (_not_found_app, {}, encode_request({"REQUEST_URI": "/"}), 404),
    "500 from a raising app": (_raise_app, {}, encode_request({"REQUEST_URI": "/"}), 500),
    "400 malformed": (reliability_apps.app, {}, b"5:abcde,", 400),
    "431 header": (reliability_apps.app, {"max_header_size": 64}, b"100:", 431),
    "413 body": (
        reliability_apps.app,
        {"max_body_size": 10},
        encode_request({"REQUEST_URI": "/"}, b"x" * 11),
        413,
    ),
}


@pytest.mark.parametrize("case", STATUS_CASES)
def test_python_scgi_status_line_always_sent_with_crlf(serve: ServeFactory, case: str) -> None:
    app, options, data, status = STATUS_CASES[case]
    server = serve(app, **options)
    raw, _ = exchange(server.address, data)
    head = head_of(raw)
    assert head.startswith(b"Status: %d " % status), head
    assert re.search(rb"(?<!\r)\n", head) is None, f"a bare LF in {head!r}"
    assert re.search(rb"\r(?!\n)", head) is None, f"a bare CR in {head!r}"
    assert parse_response(raw).status == status


def test_python_scgi_handler_exception_answers_500_and_server_keeps_serving(
    serve: ServeFactory, transport: str, backend: str, scgi_log: pytest.LogCaptureFixture
) -> None:
    server = serve(reliability_apps.app, transport=transport, backend=backend)
    for _ in range(3):
        failed = get(server.address, "/raise")
        assert failed.status == 500
        assert b"the application failed on purpose" not in failed.body
        assert get(server.address).status == 200
    assert scgi_log.text.count("RuntimeError: the application failed on purpose") == 3


def test_python_scgi_handler_exception_keeps_the_fork_worker(servers: StartServer) -> None:
    # python-scgi's child died with the exception; the connection got nothing.
    server = servers("--fork", "--workers", "1")
    (worker,) = server.wait_workers(1)
    for _ in range(3):
        assert server.request("/raise").status == 500
        assert server.request().body == f"ok {worker}".encode()
    assert server.workers() == {worker}
    assert server.log.count("RuntimeError: the application failed on purpose") == 3


@pytest.mark.parametrize(("backend", "clients"), [("threaded", 60), ("single", 20)])
def test_python_scgi_busy_server_drops_no_request(
    serve: ServeFactory, backend: str, clients: int
) -> None:
    # More connections than threads: python-scgi dropped one after 30 busy
    # retries.  Here the excess waits in the listen queue and is served.
    threads = 2 if backend == "threaded" else 1
    options: dict[str, Any] = {"threads": threads} if backend == "threaded" else {}
    server = serve(reliability_apps.app, backend=backend, **options)
    bodies: list[bytes] = []

    def one(_: int) -> None:
        bodies.append(get(server.address, "/sleep", query="0.05", timeout=20.0).body)

    started = time.monotonic()
    errors = run_clients(clients, one, timeout=25.0)
    took = time.monotonic() - started
    assert errors == []
    assert len(bodies) == clients
    assert all(body.startswith(b"slept ") for body in bodies)
    serial = clients * 0.05 / threads
    assert serial * 0.9 < took < serial + 5.0, f"{clients} requests took {took:.2f}s"


STALLS = {
    "in the header": (encode_request({"REQUEST_URI": "/echo"})[:30], "header_timeout"),
    "in the body": (
        encode_request({"REQUEST_URI": "/echo", "REQUEST_METHOD": "POST"}, b"0123456789")[:-7],
        "body_timeout",
    ),
}


@pytest.mark.parametrize("case", STALLS)
def test_python_scgi_timeouts_exist(serve: ServeFactory, case: str) -> None:
    # The single backend serves one connection at a time: the stalled peer
    # must let go of the only worker for the next request to be served.
    data, option = STALLS[case]
    options: dict[str, Any] = {option: 0.5}
    server = serve(reliability_apps.app, backend="single", **options)
    raw, took = stalled_request(server.address, data)
    assert b"Status: 200" not in raw
    assert 0.4 < took < 3.0, f"stalled peer closed after {took:.2f}s"
    assert get(server.address).status == 200


def test_python_scgi_limits_exist(serve: ServeFactory) -> None:
    app = CountingApp()
    server = serve(app, max_body_size=1000, max_header_size=512)
    head_only = encode_request({"REQUEST_URI": "/echo"}, b"x" * 1001)[:-1001]
    raw, _ = exchange(server.address, head_only, timeout=5.0)  # the body never comes
    # RFC 9110's phrase on every Python (http.HTTPStatus has it from 3.13).
    assert raw.startswith(b"Status: 413 Content Too Large\r\n"), raw[:200]
    raw, _ = exchange(server.address, _request_with_header_block(513))
    assert raw.startswith(b"Status: 431 "), raw[:200]
    assert app.calls == 0


@pytest.mark.parametrize("backend", ["threaded", "single"])
def test_python_scgi_graceful_stop_finishes_the_request_in_flight(
    servers: StartServer, backend: str
) -> None:
    server = servers(f"--{backend}", "--graceful-timeout", "10")
    result: dict[str, Any] = {}

    def slow() -> None:
        try:
            result["response"] = server.request("/sleep", "1.5")
        except FAILED as exc:
            result["error"] = exc

    client = threading.Thread(target=slow, daemon=True)
    client.start()
    assert wait_for(lambda: any(server.markers.glob("sleeping.*")), 5.0)
    server.signal(signal.SIGTERM)
    time.sleep(0.2)
    with pytest.raises(FAILED):
        server.request(timeout=2.0)
    client.join(10.0)
    assert not client.is_alive()
    response = result.get("response")
    assert isinstance(response, SCGIResponse), server.log
    assert response.status == 200
    assert response.body == f"slept {server.pid}".encode()
    assert server.wait_exit(5.0) == 0


# == inetd_scgi =======================================================================


@contextlib.contextmanager
def inetd_child(*args: str) -> Iterator[tuple[subprocess.Popen[bytes], socket.socket]]:
    """``python -m scgiwsgi APP --inetd`` on one end of a socketpair."""
    ours, theirs = socket.socketpair()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with ours:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scgiwsgi", f"{APPS}:app", "--inetd", *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=theirs.fileno(),
            stdout=theirs.fileno(),
            stderr=subprocess.PIPE,
        )
        theirs.close()
        ours.settimeout(TIMEOUT)
        try:
            yield proc, ours
        finally:
            if proc.returncode is None and proc.poll() is None:
                proc.kill()
                proc.wait(TIMEOUT)
            if proc.stderr is not None:
                proc.stderr.close()


def _reap_with_usage(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """Exit status and CPU seconds (user + system) of ``proc``, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        time.sleep(0.02)
    pytest.fail(f"the --inetd process still runs {timeout}s later")


def test_inetd_scgi_serves_a_request_on_python_3() -> None:
    # inetd_scgi compared bytes with str and rejected every request.
    body = "bytes, not str: \u00e9".encode()
    data = encode_request({"REQUEST_URI": "/echo", "REQUEST_METHOD": "POST"}, body)
    with inetd_child() as (proc, sock):
        sock.sendall(data)
        raw, reset = recv_all(sock)
        status, _ = _reap_with_usage(proc, TIMEOUT)
    assert not reset
    response = parse_response(raw)
    assert response.status == 200
    assert response.body == body
    assert status == 0


@pytest.mark.parametrize("sent", [b"", b"1", b"12", b"12:", b"30:CONTENT_LENGTH\x00"])
def test_inetd_scgi_eof_in_the_netstring_length_exits_without_spinning(sent: bytes) -> None:
    # The header timeout is far away: only seeing the EOF ends the process.
    with inetd_child("--header-timeout", "60") as (proc, sock):
        sock.sendall(sent)
        sock.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        status, cpu = _reap_with_usage(proc, 8.0)
        took = time.monotonic() - started
        raw, _ = recv_all(sock, timeout=2.0)
    assert status == 1
    assert took < 5.0
    assert cpu < 2.0, f"{cpu:.2f}s of CPU: the process spun on EOF"
    assert b"Status: 200" not in raw


# == uWSGI --scgi-socket ==============================================================


@pytest.mark.parametrize("size", [4097, 8 * 1024, 60 * 1024], ids=["4k+1", "8k", "60k"])
def test_uwsgi_8k_and_60k_header_blocks_accepted_by_default(serve: ServeFactory, size: int) -> None:
    # uWSGI answered "invalid SCGI request size" above 4 KiB by default.
    server = serve(json_app(lambda env: len(env["HTTP_COOKIE"])))
    data = _request_with_header_block(size)
    raw, _ = exchange(server.address, data)
    response = parse_response(raw)
    assert response.status == 200
    assert json.loads(response.body) > size - 100


def _block(*pairs: tuple[bytes, bytes]) -> bytes:
    return netstring(b"".join(name + b"\0" + value + b"\0" for name, value in pairs))


CL, SCGI, URI = (b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1"), (b"REQUEST_URI", b"/")
ORDERS = {
    "SCGI second (Apache)": (_block(CL, SCGI, URI), 200),
    "SCGI last (lighttpd)": (_block(CL, URI, (b"HTTP_HOST", b"x"), SCGI), 200),
    "CONTENT_LENGTH after SCGI": (_block(SCGI, CL, URI), 400),
    "CONTENT_LENGTH last": (_block(URI, SCGI, CL), 400),
    "lower-case scgi": (_block(CL, (b"scgi", b"1"), URI), 400),
    "SCGI=1 twice": (_block(CL, SCGI, URI, SCGI), 400),
    "SCGI=2": (_block(CL, (b"SCGI", b"2"), URI), 400),
}


@pytest.mark.parametrize("case", ORDERS)
def test_uwsgi_content_length_first_and_scgi_1_checked(serve: ServeFactory, case: str) -> None:
    data, status = ORDERS[case]
    app = CountingApp()
    server = serve(app)
    raw, _ = exchange(server.address, data)
    assert raw.startswith(b"Status: %d " % status), raw[:200]
    assert app.calls == (1 if status == 200 else 0)


# == gunicorn ==========================================================================


def _line_of(marker: str) -> int:
    lines = Path(reliability_apps.__file__).read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if marker in line)


def test_gunicorn_hung_worker_stack_is_logged(servers: StartServer) -> None:
    server = servers("--fork", "--workers", "1", "--timeout", "1")
    (worker,) = server.wait_workers(1)
    started = time.monotonic()
    with pytest.raises(FAILED):
        server.request("/hang", "20", timeout=10.0)
    assert time.monotonic() - started < 5.0, "the hung request was not cut off"
    server.wait_log(rf"worker {worker} killed after a request ran past the timeout")
    line = _line_of("# the hung request is here")
    where = rf'File "[^"]*reliability_apps\.py", line {line}, in hang_in_the_app'
    assert re.search(where, server.log), server.log
    (replacement,) = server.wait_workers(1)
    assert replacement != worker
    assert server.request().body == f"ok {replacement}".encode()


def test_gunicorn_exc_info_before_headers_replaces_the_headers(serve: ServeFactory) -> None:
    def changes_its_mind(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/html"), ("X-First", "1")])
        try:
            raise ValueError("late failure, before any body")
        except ValueError:
            headers = [("Content-Type", "text/plain"), ("X-Second", "2")]
            start_response("503 Service Unavailable", headers, sys.exc_info())
        return [b"error page"]

    server = serve(changes_its_mind)
    response = get(server.address)
    assert response.status == 503
    assert response.headers_all("Content-Type") == ["text/plain"]
    assert response.header("X-First") is None
    assert response.header("X-Second") == "2"
    assert response.body == b"error page"


def test_gunicorn_exc_info_after_headers_aborts(
    serve: ServeFactory, scgi_log: pytest.LogCaptureFixture
) -> None:
    def too_late(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"already sent"
        try:
            raise ValueError("too late to change the status")
        except ValueError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        yield b"never sent"

    server = serve(too_late, transport="tcp")
    with connect(server.address) as sock:
        sock.sendall(encode_request({"REQUEST_URI": "/"}))
        raw, reset = recv_all(sock)
    assert reset
    assert b"never sent" not in raw
    assert "ValueError: too late to change the status" in scgi_log.text


def test_gunicorn_short_output_aborts_the_connection(
    serve: ServeFactory, scgi_log: pytest.LogCaptureFixture
) -> None:
    def short(environ: Environ, start_response: StartResponse) -> list[bytes]:
        if environ["PATH_INFO"] == "/next":
            start_response("200 OK", [("Content-Length", "4")])
            return [b"next"]
        start_response("200 OK", [("Content-Length", "100")])
        return [b"ten bytes!"]

    server = serve(short, transport="tcp", backend="single")
    with connect(server.address) as sock:
        sock.sendall(encode_request({"REQUEST_URI": "/"}))
        raw, reset = recv_all(sock)
    assert reset, f"a 100-byte response closed cleanly after {raw!r}"
    assert "response body has 10 bytes, Content-Length said 100" in scgi_log.text
    raw, reset = exchange(server.address, encode_request({"REQUEST_URI": "/next"}))
    assert not reset
    assert raw == b"Status: 200 OK\r\nContent-Length: 4\r\n\r\nnext"


@pytest.mark.parametrize("preload", [False, True], ids=["plain", "preload"])
def test_gunicorn_reload_under_load_drops_nothing(servers: StartServer, preload: bool) -> None:
    server = servers("--fork", "--workers", "2", *(["--preload"] if preload else []))
    old = server.wait_workers(2) if not preload else _wait_count(server, 2)
    outcomes: list[tuple[float, str]] = []
    deadline = time.monotonic() + 3.0

    def load(_: int) -> None:
        for _ in range(5000):
            started = time.monotonic()
            if started >= deadline:
                return
            try:
                response = server.request("/sleep", "0.005", timeout=5.0)
                outcome = "ok" if response.status == 200 else f"status {response.status}"
            except FAILED as exc:
                outcome = repr(exc)
            outcomes.append((started, outcome))

    reload = threading.Timer(1.0, server.signal, args=(signal.SIGHUP,))
    reload.start()
    try:
        assert run_clients(4, load, timeout=12.0) == []
    finally:
        reload.cancel()
    failures = [outcome for outcome in outcomes if outcome[1] != "ok"]
    assert failures == []
    assert len(outcomes) > 100
    assert wait_for(lambda: len(server.workers()) == 2 and not server.workers() & old, 10.0)
    assert server.proc.poll() is None
    assert "received SIGHUP" in server.log


def _wait_count(server: ServerProcess, count: int) -> set[int]:
    assert wait_for(lambda: len(server.workers()) == count, 10.0), server.log
    assert server.request().status == 200
    return server.workers()
