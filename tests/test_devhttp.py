"""The ``--http`` development front (:mod:`scgiwsgi.devhttp`).

Two layers, both over real loopback and unix sockets:

* :class:`~scgiwsgi.devhttp.DevHTTPServer` in a thread, in front of a live
  in-process scgiwsgi server (the ``serve`` fixture, over TCP and unix),
  driven with ``urllib.request``, ``http.client`` and raw sockets;
* ``python -m scgiwsgi APP --http HOST:PORT`` as a process, with the
  threaded and the fork backends, including the stop and a ``--preload``
  reload, checking that no process or port is left behind.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import IO_TIMEOUT, ServeFactory, recv_all, wait_for
from scgi_process import (
    ECHO_APP,
    HTTP_FRONT_RE,
    REPO_ROOT,
    Processes,
    child_env,
    write_echo_app,
)

from scgiwsgi.client import Address
from scgiwsgi.config import Config
from scgiwsgi.devhttp import DevHTTPServer, parse_http_address, scgi_address
from scgiwsgi.errors import ConfigError
from scgiwsgi.sockets import bind

_namespace: dict[str, Any] = {}
exec(ECHO_APP, _namespace)  # the same app the process tests load from a file
echo_app = _namespace["app"]

StartFront = Callable[..., DevHTTPServer]


@pytest.fixture
def start_front() -> Iterator[StartFront]:
    """Start DevHTTPServers on 127.0.0.1:0 in threads; all stopped and checked at teardown."""
    running: list[tuple[DevHTTPServer, threading.Thread]] = []

    def start(target: Address, **options: Any) -> DevHTTPServer:
        server = DevHTTPServer(bind(parse_http_address("127.0.0.1:0")), target, **options)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        running.append((server, thread))
        return server

    try:
        yield start
    finally:
        leftovers = []
        for server, thread in running:
            server.shutdown()
            thread.join(IO_TIMEOUT)
            server.server_close()
            if thread.is_alive() or not server.close_connections(IO_TIMEOUT):
                leftovers.append(server.url)
        assert not leftovers, f"fronts that did not stop: {leftovers}"


@pytest.fixture(params=["tcp", "unix"])
def front_url(request: pytest.FixtureRequest, serve: ServeFactory, start_front: StartFront) -> str:
    """A front (its base URL) before a live echo server over TCP or a unix socket."""
    running = serve(echo_app, transport=request.param)
    server = start_front(scgi_address(running.server.listeners[0]))
    return server.url


def fetch(request: urllib.request.Request | str) -> tuple[int, Any, bytes]:
    """Status, headers and body, whatever the status (no exception for 4xx/5xx)."""
    try:
        with urllib.request.urlopen(request, timeout=IO_TIMEOUT) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read()


def environ_of(request: urllib.request.Request | str) -> dict[str, Any]:
    status, _, body = fetch(request)
    assert status == 200, body
    decoded: dict[str, Any] = json.loads(body)
    return decoded


def host_port(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
    return host, int(port)


# -- requests through the front ---------------------------------------------------------


def test_get_with_query(front_url: str) -> None:
    seen = environ_of(front_url + "search?q=a+b&x=%2F&empty=")
    host, port = host_port(front_url)

    assert seen["REQUEST_METHOD"] == "GET"
    assert seen["REQUEST_URI"] == "/search?q=a+b&x=%2F&empty="
    assert seen["QUERY_STRING"] == "q=a+b&x=%2F&empty="
    assert seen["PATH_INFO"] == "/search"
    assert seen["SCRIPT_NAME"] == ""
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert seen["HTTP_HOST"] == f"{host}:{port}"
    assert seen["SERVER_PORT"] == str(port)
    assert seen["REMOTE_ADDR"] == "127.0.0.1"
    assert seen["wsgi.url_scheme"] == "http"
    assert seen["SERVER_SOFTWARE"].startswith("scgiwsgi-devhttp/")


def test_percent_encoded_path_arrives_as_pep3333_path_info(front_url: str) -> None:
    seen = environ_of(front_url + "caf%C3%A9/a%20b/%E2%82%AC")

    # PEP 3333: PATH_INFO holds the decoded bytes, each one as a latin-1 character.
    assert seen["PATH_INFO"] == "/café/a b/€".encode().decode("latin-1")
    assert seen["REQUEST_URI"] == "/caf%C3%A9/a%20b/%E2%82%AC"


def test_post_body(front_url: str) -> None:
    data = b"name=value&other=%C3%A9"
    seen = environ_of(urllib.request.Request(front_url + "form", data=data))

    assert seen["REQUEST_METHOD"] == "POST"
    assert seen["CONTENT_LENGTH"] == str(len(data))
    assert seen["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert seen["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_large_binary_body_is_spooled_and_sent_whole(front_url: str) -> None:
    data = bytes(range(256)) * 12 * 1024  # 3 MiB: more than the in-memory spool
    request = urllib.request.Request(
        front_url + "upload", data=data, method="PUT", headers={"Content-Type": "x/bin"}
    )
    seen = environ_of(request)

    assert seen["REQUEST_METHOD"] == "PUT"
    assert seen["body_length"] == len(data)
    assert seen["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_chunked_body_is_dechunked(front_url: str) -> None:
    host, port = host_port(front_url)
    pieces = [b"first,", b"", b"second" * 1000, b"\x00\xff"]
    connection = http.client.HTTPConnection(host, port, timeout=IO_TIMEOUT)
    try:
        connection.request(
            "POST", "/chunks", body=iter(pieces), encode_chunked=True, headers={"X-A": "1"}
        )
        response = connection.getresponse()
        seen = json.loads(response.read())
    finally:
        connection.close()

    data = b"".join(pieces)
    assert response.status == 200
    assert seen["CONTENT_LENGTH"] == str(len(data))
    assert seen["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert "HTTP_TRANSFER_ENCODING" not in seen


@pytest.mark.parametrize("status", [201, 400, 404, 500, 503])
def test_status_reason_headers_and_body_pass_through(front_url: str, status: int) -> None:
    code, headers, body = fetch(front_url + f"status/{status}")

    assert code == status
    assert headers["X-Status"] == str(status)
    assert headers["Content-Type"] == "text/plain"
    assert headers["Content-Length"] == str(len(body))
    assert body == f"status {status} body".encode()


def test_reason_phrase_and_repeated_headers_kept(front_url: str) -> None:
    host, port = host_port(front_url)
    connection = http.client.HTTPConnection(host, port, timeout=IO_TIMEOUT)
    try:
        connection.request("GET", "/status/404")
        not_found = connection.getresponse()
        not_found.read()
        connection.request("GET", "/json")
        ok = connection.getresponse()
        ok.read()
    finally:
        connection.close()

    assert not_found.reason == "Custom Reason"
    assert ok.headers.get_all("Set-Cookie") == ["a=1", "b=2"]
    assert ok.headers.get_all("Date") is not None and len(ok.headers.get_all("Date")) == 1


def test_redirect_is_not_followed_by_the_front(front_url: str) -> None:
    host, port = host_port(front_url)
    connection = http.client.HTTPConnection(host, port, timeout=IO_TIMEOUT)
    try:
        connection.request("GET", "/status/302")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 302
    assert body == b"status 302 body"


def test_no_content_has_no_body(front_url: str) -> None:
    host, port = host_port(front_url)
    connection = http.client.HTTPConnection(host, port, timeout=IO_TIMEOUT)
    try:
        connection.request("GET", "/status/204")
        response = connection.getresponse()
        body = response.read()
        # The connection is still usable: the empty response was framed right.
        connection.request("GET", "/after")
        after = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    assert response.status == 204
    assert body == b""
    assert response.headers["Content-Length"] is None
    assert after["PATH_INFO"] == "/after"


def test_head_has_the_length_but_no_body(front_url: str) -> None:
    host, port = host_port(front_url)
    connection = http.client.HTTPConnection(host, port, timeout=IO_TIMEOUT)
    try:
        connection.request("HEAD", "/status/200")
        response = connection.getresponse()
        body = response.read()
        connection.request("GET", "/status/200")
        get_body = connection.getresponse().read()
    finally:
        connection.close()
    assert response.status == 200
    assert body == b""
    assert response.headers["Content-Length"] == str(len(get_body))


def test_request_headers_merged_and_underscores_dropped(front_url: str) -> None:
    host, port = host_port(front_url)
    connection = http.client.HTTPConnection(host, port, timeout=IO_TIMEOUT)
    try:
        connection.putrequest("GET", "/headers")
        connection.putheader("X-Multi", "one")
        connection.putheader("X-Multi", "two")
        connection.putheader("Cookie", "a=1")
        connection.putheader("Cookie", "b=2")
        connection.putheader("X_Forwarded_For", "198.51.100.1")
        connection.putheader("Connection", "keep-alive")
        connection.endheaders()
        seen = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    assert seen["HTTP_X_MULTI"] == "one, two"
    assert seen["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_X_FORWARDED_FOR" not in seen
    assert "HTTP_CONNECTION" not in seen


def test_keep_alive_serves_several_requests_on_one_connection(front_url: str) -> None:
    host, port = host_port(front_url)
    connection = http.client.HTTPConnection(host, port, timeout=IO_TIMEOUT)
    try:
        paths = []
        for index in range(3):
            connection.request("POST", f"/n{index}", body=b"x" * index)
            paths.append(json.loads(connection.getresponse().read())["PATH_INFO"])
            if index == 0:
                first_socket = connection.sock
        assert connection.sock is first_socket
    finally:
        connection.close()
    assert paths == ["/n0", "/n1", "/n2"]


# -- failures -----------------------------------------------------------------------------


def test_unreachable_scgi_server_is_502(start_front: StartFront, tmp_path: Path) -> None:
    server = start_front(f"unix:{tmp_path}/nobody.sock")
    status, _, body = fetch(server.url)
    assert status == 502
    assert b"Cannot reach the SCGI server" in body


def test_silent_scgi_server_is_504(start_front: StartFront) -> None:
    with socket.socket() as silent:  # listens, never accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        server = start_front(silent.getsockname(), scgi_timeout=0.5)
        started = time.monotonic()
        status, _, _ = fetch(server.url)
        elapsed = time.monotonic() - started
    assert status == 504
    assert elapsed < 5.0


def raw_exchange(url: str, raw: bytes) -> bytes:
    with socket.create_connection(host_port(url), timeout=IO_TIMEOUT) as sock:
        sock.sendall(raw)
        data, _ = recv_all(sock)
    return data


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", b"400"),
        (b"Transfer-Encoding: gzip, chunked\r\n", b"501"),
        (b"Content-Length: 3\r\nContent-Length: 4\r\n", b"400"),
        (b"Content-Length: -1\r\n", b"400"),
    ],
)
def test_ambiguous_bodies_are_refused(front_url: str, head: bytes, status: bytes) -> None:
    answer = raw_exchange(front_url, b"POST /x HTTP/1.1\r\nHost: t\r\n" + head + b"\r\nabc")
    assert answer.startswith(b"HTTP/1.1 " + status + b" ")


def test_bad_chunk_size_is_400(front_url: str) -> None:
    raw = b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    assert raw_exchange(front_url, raw).startswith(b"HTTP/1.1 400 ")


def test_close_ends_idle_keep_alive_connections(serve: ServeFactory) -> None:
    running = serve(echo_app)
    server = DevHTTPServer(
        bind(parse_http_address("127.0.0.1:0")), scgi_address(running.server.listeners[0])
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    connection = http.client.HTTPConnection(*host_port(server.url), timeout=IO_TIMEOUT)
    try:
        connection.request("GET", "/")
        connection.getresponse().read()
        assert wait_for(lambda: len(server._connections) == 1, IO_TIMEOUT)

        server.shutdown()
        thread.join(IO_TIMEOUT)
        server.server_close()
        assert server.close_connections(IO_TIMEOUT)
        assert connection.sock is not None
        connection.sock.settimeout(IO_TIMEOUT)
        assert connection.sock.recv(1) == b""  # the front closed the idle connection
    finally:
        connection.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(host_port(server.url), timeout=IO_TIMEOUT).close()


# -- the address ------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["127.0.0.1:8000", "[::1]:8000", "localhost:0"])
def test_http_address_accepts_host_port(text: str) -> None:
    assert parse_http_address(text).kind == "tcp"
    assert Config(http=text).http == text


@pytest.mark.parametrize("text", ["unix:/tmp/x.sock", "fd://3", "8000", "nohost", "[zz]:1"])
def test_http_address_rejects_the_rest(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^http: .* is not HOST:PORT or \[IPv6\]:PORT"):
        Config(http=text)


# -- the command line ---------------------------------------------------------------------


def _get_json(url: str) -> dict[str, Any]:
    return environ_of(url)


def _refused(url: str) -> bool:
    try:
        socket.create_connection(host_port(url), timeout=IO_TIMEOUT).close()
    except ConnectionRefusedError:
        return True
    return False


def _front_url(process_stderr: str) -> str:
    match = HTTP_FRONT_RE.search(process_stderr)
    assert match, process_stderr
    return f"http://{match.group('address')}/"


def test_cli_http_threaded(processes: Processes, tmp_path: Path) -> None:
    spec = write_echo_app(tmp_path)
    server = processes.server(spec, "--bind", "127.0.0.1:0", "--http", "127.0.0.1:0", cwd=tmp_path)
    front_line = server.wait_for_log(re.compile(r".*development HTTP front.*"))
    url = _front_url(server.stderr)

    assert "for development only" in front_line.group(0)
    seen = _get_json(url + "hello?x=1")
    assert seen["PATH_INFO"] == "/hello"
    assert seen["pid"] == server.pid  # in-process: the server's own process

    assert server.stop() == 0
    assert _refused(url)


def test_cli_http_with_fork_runs_the_front_in_its_own_process(
    processes: Processes, tmp_path: Path
) -> None:
    spec = write_echo_app(tmp_path)
    server = processes.server(
        spec,
        "--fork",
        "--workers",
        "2",
        "--bind",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        cwd=tmp_path,
    )
    url = _front_url(server.stderr)

    seen = _get_json(url + "forked")
    assert seen["PATH_INFO"] == "/forked"
    assert seen["pid"] != server.pid  # a worker answered
    front_pid = int(
        server.wait_for_log(re.compile(r"\[(\d+)\] INFO scgiwsgi\.devhttp: .*GET /forked")).group(1)
    )
    assert front_pid not in (server.pid, seen["pid"])

    assert server.stop() == 0
    assert wait_for(lambda: not server.group_alive(), 10.0), "processes left after the stop"
    assert _refused(url)


def test_cli_http_front_survives_a_preload_reload(processes: Processes, tmp_path: Path) -> None:
    # A fixed port, so the re-executed server must bind the very port the old
    # front held (it retries while the old front lets go).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = write_echo_app(tmp_path)
    server = processes.server(
        spec,
        "--fork",
        "--preload",
        "--workers",
        "1",
        "--bind",
        "127.0.0.1:0",
        "--http",
        f"127.0.0.1:{port}",
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}/"
    _get_json(url + "before")
    front_re = re.compile(r"\[(\d+)\] INFO scgiwsgi\.devhttp: .*GET /(before|after)")
    old_front = int(server.wait_for_log(front_re).group(1))

    server.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: server.stderr.count("development HTTP front on") == 2, 15.0), (
        server.stderr
    )
    assert wait_for(lambda: _pid_gone(old_front), 10.0), "the old front still runs"
    assert _get_json(url + "after")["PATH_INFO"] == "/after"
    assert wait_for(lambda: "GET /after" in server.stderr, 10.0)
    new_fronts = {
        int(m.group(1)) for m in front_re.finditer(server.stderr) if m.group(2) == "after"
    }
    assert new_fronts and old_front not in new_fronts
    assert "cannot bind" not in server.stderr

    assert server.stop() == 0
    assert wait_for(lambda: not server.group_alive(), 10.0)


def _pid_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")  # a zombie is gone too
    except FileNotFoundError:
        return True


def test_cli_http_from_the_environment(processes: Processes, tmp_path: Path) -> None:
    spec = write_echo_app(tmp_path)
    server = processes.server(
        spec,
        "--bind",
        "127.0.0.1:0",
        cwd=tmp_path,
        env=child_env({"SCGI_WSGI_HTTP": "127.0.0.1:0"}),
    )
    url = _front_url(server.wait_for_log(HTTP_FRONT_RE).string)
    assert _get_json(url + "env")["PATH_INFO"] == "/env"


def test_cli_http_bad_address_is_exit_2(processes: Processes) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scgiwsgi", "--bind", "127.0.0.1:0", "--http", "unix:/tmp/x"],
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
        cwd=REPO_ROOT,
    )
    assert result.returncode == 2
    assert "http: 'unix:/tmp/x' is not HOST:PORT" in result.stderr


def test_cli_http_port_in_use_is_exit_3() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "scgiwsgi",
                "--bind",
                "127.0.0.1:0",
                "--http",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env=child_env(),
            cwd=REPO_ROOT,
        )
    assert result.returncode == 3
    assert f"http: cannot bind 127.0.0.1:{port}: address already in use" in result.stderr


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.close()
