"""``scgi-request`` (``python -m scgiwsgi.request_cli``) against live servers.

Every test runs the command as a subprocess against a ``python -m scgiwsgi``
process started here (or a raw loopback socket playing a broken server),
and checks its standard output, standard error and exit status.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scgi_process import REPO_ROOT, Processes, child_env, write_echo_app

RUN_TIMEOUT = 20.0


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def echo_server(processes: Processes, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A live server of the echo app on TCP and on a unix socket: (tcp, unix path)."""
    spec = write_echo_app(tmp_path)
    sock_dir = tempfile.mkdtemp(prefix="scgireq-")  # short: sun_path has 108 bytes
    try:
        server = processes.server(
            spec, "--bind", "127.0.0.1:0", "--bind", f"unix:{sock_dir}/s.sock", cwd=tmp_path
        )
        addresses = server.wait_started()
        yield addresses[0], addresses[1].removeprefix("unix:")
    finally:
        processes.close()
        shutil.rmtree(sock_dir, ignore_errors=True)


def scgi_request(
    *args: str, input: bytes | None = None, command: list[str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    argv = command or [sys.executable, "-m", "scgiwsgi.request_cli"]
    return subprocess.run(
        [*argv, *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=RUN_TIMEOUT,
        env=child_env(),
        cwd=REPO_ROOT,
    )


def report(result: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    decoded: dict[str, Any] = json.loads(result.stdout)
    return decoded


def test_get_prints_the_body_and_exits_0(echo_server: tuple[str, str]) -> None:
    tcp, _ = echo_server
    seen = report(scgi_request(tcp, "/caf%C3%A9/a%20b?x=1&y=%2F"))

    assert seen["REQUEST_METHOD"] == "GET"
    assert seen["REQUEST_URI"] == "/caf%C3%A9/a%20b?x=1&y=%2F"
    assert seen["PATH_INFO"] == "/café/a b".encode().decode("latin-1")
    assert seen["QUERY_STRING"] == "x=1&y=%2F"
    assert seen["CONTENT_LENGTH"] == "0"
    assert seen["body_length"] == 0


def test_default_path_is_root(echo_server: tuple[str, str]) -> None:
    seen = report(scgi_request(echo_server[0]))
    assert seen["REQUEST_URI"] == "/"
    assert seen["PATH_INFO"] == "/"


@pytest.mark.parametrize("form", ["unix:{}", "{}"])
def test_unix_socket_addresses(echo_server: tuple[str, str], form: str) -> None:
    _, path = echo_server
    seen = report(scgi_request(form.format(path), "/over-unix"))
    assert seen["PATH_INFO"] == "/over-unix"


def test_data_makes_a_post_with_that_body(echo_server: tuple[str, str]) -> None:
    seen = report(scgi_request(echo_server[0], "/form", "-d", "a=1&b=two words"))

    assert seen["REQUEST_METHOD"] == "POST"
    assert seen["CONTENT_LENGTH"] == str(len(b"a=1&b=two words"))
    assert seen["body_start"] == "a=1&b=two words"


def test_data_from_a_file_is_sent_byte_for_byte(
    echo_server: tuple[str, str], tmp_path: Path
) -> None:
    payload = bytes(range(256)) * 1200  # 300 KiB: streamed, not sent in one piece
    body_file = tmp_path / "body.bin"
    body_file.write_bytes(payload)

    seen = report(scgi_request(echo_server[0], "/upload", "-X", "PUT", "-d", f"@{body_file}"))

    assert seen["REQUEST_METHOD"] == "PUT"
    assert seen["CONTENT_LENGTH"] == str(len(payload))
    assert seen["body_sha256"] == hashlib.sha256(payload).hexdigest()


def test_data_from_standard_input(echo_server: tuple[str, str]) -> None:
    payload = b"\x00binary\r\nfrom stdin\xff"
    seen = report(scgi_request(echo_server[0], "/in", "-d", "-", input=payload))

    assert seen["CONTENT_LENGTH"] == str(len(payload))
    assert seen["body_sha256"] == hashlib.sha256(payload).hexdigest()


def test_method_headers_and_variables(echo_server: tuple[str, str]) -> None:
    seen = report(
        scgi_request(
            echo_server[0],
            "/h",
            "-X",
            "DELETE",
            "-H",
            "Content-Type: text/x-test",
            "-H",
            "X-Multi: one",
            "-H",
            "x-multi: two",
            "-H",
            "Host: example.org:8080",
            "-e",
            "HTTPS=on",
            "-e",
            "REMOTE_ADDR=192.0.2.7",
        )
    )

    assert seen["REQUEST_METHOD"] == "DELETE"
    assert seen["CONTENT_TYPE"] == "text/x-test"
    assert seen["HTTP_X_MULTI"] == "one, two"
    assert seen["HTTP_HOST"] == "example.org:8080"
    assert seen["SERVER_NAME"] == "example.org"
    assert seen["SERVER_PORT"] == "8080"
    assert seen["HTTPS"] == "on"
    assert seen["wsgi.url_scheme"] == "https"
    assert seen["REMOTE_ADDR"] == "192.0.2.7"


def test_include_prints_status_and_headers_first(echo_server: tuple[str, str]) -> None:
    result = scgi_request(echo_server[0], "/x", "-i")

    assert result.returncode == 0
    head, separator, body = result.stdout.partition(b"\r\n\r\n")
    assert separator
    lines = head.split(b"\r\n")
    assert lines[0] == b"Status: 200 OK"
    assert b"Content-Type: application/json" in lines
    assert lines.count(b"Set-Cookie: a=1") == 1
    assert lines.count(b"Set-Cookie: b=2") == 1
    assert b"X-Echo: yes" in lines
    assert json.loads(body)["PATH_INFO"] == "/x"


@pytest.mark.parametrize(
    ("status", "expected_exit"),
    [("200", 0), ("201", 0), ("302", 0), ("400", 1), ("404", 1), ("500", 1), ("503", 1)],
)
def test_exit_status_follows_the_response_status(
    echo_server: tuple[str, str], status: str, expected_exit: int
) -> None:
    result = scgi_request(echo_server[0], f"/status/{status}", "-i")

    assert result.returncode == expected_exit, result.stderr
    assert result.stdout.startswith(f"Status: {status} Custom Reason\r\n".encode())
    assert result.stdout.endswith(f"status {status} body".encode())
    assert result.stderr == b""


def test_connection_refused_is_exit_2_with_one_line(processes: Processes) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = scgi_request(f"127.0.0.1:{port}", "/")

    assert result.returncode == 2
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("scgi-request: error: cannot talk to 127.0.0.1:")
    assert "refused" in lines[0].lower()


def test_missing_unix_socket_is_exit_2(tmp_path: Path) -> None:
    result = scgi_request(f"unix:{tmp_path}/nothing.sock")

    assert result.returncode == 2
    assert result.stdout == b""
    assert "No such file or directory" in result.stderr.decode()


def test_timeout_is_exit_2_and_bounded() -> None:
    # A listener that never accepts: the connection completes in the
    # kernel's queue and no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        started = time.monotonic()
        result = scgi_request(f"127.0.0.1:{port}", "/", "--timeout", "0.5")
        elapsed = time.monotonic() - started

    assert result.returncode == 2
    assert result.stdout == b""
    assert "no complete response from" in result.stderr.decode()
    assert "within 0.5s" in result.stderr.decode()
    assert elapsed < 10.0


def _one_shot_server(answer: bytes) -> tuple[int, threading.Thread, socket.socket]:
    """A loopback server that reads the request head, answers ``answer``, closes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(RUN_TIMEOUT)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(RUN_TIMEOUT)
            conn.recv(65536)
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, listener


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"this is not a CGI response", "no blank line"),
        (b"Status: abc\r\n\r\nbody", "invalid Status line"),
        (b"", "without a response"),
    ],
)
def test_malformed_response_is_exit_2(answer: bytes, reason: str) -> None:
    port, thread, listener = _one_shot_server(answer)
    try:
        result = scgi_request(f"127.0.0.1:{port}", "/")
    finally:
        thread.join(RUN_TIMEOUT)
        listener.close()

    assert result.returncode == 2
    assert result.stdout == b""
    message = result.stderr.decode()
    assert message.startswith(f"scgi-request: error: invalid response from 127.0.0.1:{port}: ")
    assert reason in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["127.0.0.1:4000", "-H", "no colon"], "is not 'Name: value'"),
        (["127.0.0.1:4000", "-e", "NOEQUALS"], "is not NAME=VALUE"),
        (["localhost", "/"], "is not HOST:PORT"),
        (["127.0.0.1:4000", "-d", "@/nonexistent/body"], "cannot read the body file"),
        (["127.0.0.1:4000", "--timeout", "0"], "--timeout"),
    ],
)
def test_bad_options_are_exit_2(args: list[str], message: str) -> None:
    result = scgi_request(*args)

    assert result.returncode == 2
    assert result.stdout == b""
    assert message in result.stderr.decode()


def test_console_script(echo_server: tuple[str, str]) -> None:
    script = shutil.which("scgi-request")
    if script is None:
        pytest.skip("the scgi-request console script is not installed (pip install -e .)")
    seen = report(scgi_request(echo_server[0], "/via-script", command=[script]))
    assert seen["PATH_INFO"] == "/via-script"


def test_help_names_every_option() -> None:
    result = scgi_request("--help")

    assert result.returncode == 0
    text = result.stdout.decode()
    for option in ("-X", "-H", "-d", "-e", "-i", "--timeout", "ADDRESS", "Exit status"):
        assert option in text
