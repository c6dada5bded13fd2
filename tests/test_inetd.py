"""One request per process: ``scgi-wsgi APP --inetd`` and ``scgiwsgi.inetd``.

The super-server is played by the test: a socketpair whose one end becomes
the child's stdin and stdout (and stderr, as classic inetd does), or Debian's
``systemd-socket-activate --inetd`` on a loopback port.  Every wait is
bounded and every child is reaped.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import recv_all, wait_for
from legacy_support import REPO_ROOT, child_env, split_response

from scgiwsgi.errors import ConfigError
from scgiwsgi.inetd import serve_connection
from scgiwsgi.protocol import encode_request

EXIT_TIMEOUT = 15.0

APP = """\
import os, sys, logging

def app(environ, start_response):
    body = environ["wsgi.input"].read()
    print("stray print from the app")  # must not reach the wire
    logging.getLogger("scgiwsgi.error").warning("a log line from the app")
    text = "pid=%d run_once=%s multiprocess=%s body=%s path=%s\\n" % (
        os.getpid(),
        environ["wsgi.run_once"],
        environ["wsgi.multiprocess"],
        body.decode(),
        environ["PATH_INFO"],
    )
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [text.encode()]
"""

REQUEST = encode_request(
    {"REQUEST_METHOD": "POST", "REQUEST_URI": "/inetd/path?x=1", "SERVER_PROTOCOL": "HTTP/1.1"},
    b"hello body",
)
EXPECTED_BODY = re.compile(
    rb"pid=(\d+) run_once=True multiprocess=True body=hello body path=/inetd/path\n"
)


@pytest.fixture
def app_spec(tmp_path: Path) -> str:
    path = tmp_path / "inetd_app.py"
    path.write_text(APP)
    return f"{path}:app"


class Child:
    """A ``python -m scgiwsgi ... --inetd`` child on one end of a socketpair."""

    def __init__(self, args: list[str], *, stderr_on_socket: bool = False, **popen: Any) -> None:
        self.peer, theirs = socket.socketpair()
        self.log: IO[bytes] | None = None
        stderr: Any = theirs
        if not stderr_on_socket:
            self.log = popen.pop("stderr", None) or subprocess.PIPE
            stderr = self.log
        popen.setdefault("stdin", theirs)
        popen.setdefault("stdout", theirs)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scgiwsgi", *args],
            cwd=REPO_ROOT,
            env=child_env(),
            stderr=stderr,
            **popen,
        )
        theirs.close()
        self.peer.settimeout(EXIT_TIMEOUT)

    def wait(self) -> tuple[int, str]:
        """Exit status and stderr, within EXIT_TIMEOUT (the child is killed otherwise)."""
        try:
            _, err = self.proc.communicate(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=EXIT_TIMEOUT)
            pytest.fail(f"the --inetd process did not exit within {EXIT_TIMEOUT}s")
        return self.proc.returncode, (err or b"").decode("utf-8", "replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(EXIT_TIMEOUT)
        self.peer.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.close()


def spawn(children: list[Child], args: list[str], **kwargs: Any) -> Child:
    child = Child(args, **kwargs)
    children.append(child)
    return child


def test_one_request_answered_then_exit_0(children: list[Child], app_spec: str) -> None:
    child = spawn(children, [app_spec, "--inetd"])
    child.peer.sendall(REQUEST)  # never half-closed, like a front end
    raw, reset = recv_all(child.peer, EXIT_TIMEOUT)
    status, err = child.wait()
    assert not reset
    head, headers, body = split_response(raw)
    assert (head, headers["Content-Type"]) == ("200 OK", "text/plain")
    match = EXPECTED_BODY.fullmatch(body)
    assert match is not None, raw
    assert int(match.group(1)) == child.proc.pid
    assert status == 0, err
    assert "stray print from the app" in err
    assert "a log line from the app" in err


def test_stderr_on_the_socket_cannot_corrupt_the_answer(
    children: list[Child], app_spec: str
) -> None:
    # Classic inetd passes the connection as fds 0, 1 and 2 alike.
    child = spawn(children, [app_spec, "--inetd"], stderr_on_socket=True)
    child.peer.sendall(REQUEST)
    raw, _ = recv_all(child.peer, EXIT_TIMEOUT)
    status, _ = child.wait()
    assert EXPECTED_BODY.fullmatch(split_response(raw)[2]), raw
    assert b"stray print" not in raw and b"log line" not in raw
    assert status == 0


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"12", id="eof-in-netstring-length"),
        pytest.param(REQUEST[:20], id="eof-in-headers"),
        pytest.param(REQUEST[:-3], id="eof-in-body"),
    ],
)
def test_truncated_request_logs_an_error_and_exits_1(
    children: list[Child], app_spec: str, sent: bytes
) -> None:
    child = spawn(children, [app_spec, "--inetd", "--header-timeout", "30"])
    child.peer.sendall(sent)
    child.peer.shutdown(socket.SHUT_WR)
    started = time.monotonic()
    status, err = child.wait()
    assert status == 1, err
    # EOF is noticed at once: no spin, no waiting for the header timeout.
    assert time.monotonic() - started < 10
    assert "ERROR scgiwsgi.error: no request was answered" in err
    assert "Traceback" not in err


def test_silent_peer_times_out_and_exits_1(children: list[Child], app_spec: str) -> None:
    child = spawn(children, [app_spec, "--inetd", "--header-timeout", "0.5"])
    child.peer.sendall(b"70:CONTENT_LENGTH")
    status, err = child.wait()
    assert status == 1
    assert "no complete request header within 0.5s" in err


def test_stdin_not_a_socket_is_refused(children: list[Child], app_spec: str) -> None:
    child = spawn(children, [app_spec, "--inetd"], stdin=subprocess.DEVNULL)
    status, err = child.wait()
    assert status == 2
    assert "fd 0 is not a socket" in err


def test_stdout_elsewhere_is_refused(children: list[Child], app_spec: str) -> None:
    child = spawn(children, [app_spec, "--inetd"], stdout=subprocess.DEVNULL)
    status, err = child.wait()
    assert status == 2
    assert "fd 1 is not the connection on fd 0" in err


def test_inetd_with_bind_is_a_usage_error(children: list[Child], app_spec: str) -> None:
    child = spawn(children, [app_spec, "--inetd", "--bind", "127.0.0.1:0"])
    status, err = child.wait()
    assert status == 2
    assert "--inetd" in err and "--bind" in err


def test_unloadable_app_exits_4(children: list[Child]) -> None:
    child = spawn(children, ["no_such_module_4f2a:app", "--inetd"])
    status, err = child.wait()
    assert status == 4, err


def test_run_app_from_a_launcher_script(tmp_path: Path) -> None:
    script = tmp_path / "launcher.py"
    script.write_text(
        APP + "\nfrom scgiwsgi.inetd import run_app\nrun_app(app, max_body_size=100)\n"
    )
    peer, theirs = socket.socketpair()
    with peer:
        proc = subprocess.Popen(
            [sys.executable, str(script)],
            stdin=theirs,
            stdout=theirs,
            stderr=subprocess.PIPE,
            env=child_env(),
        )
        theirs.close()
        try:
            peer.sendall(REQUEST)
            raw, _ = recv_all(peer, EXIT_TIMEOUT)
            _, err = proc.communicate(timeout=EXIT_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(EXIT_TIMEOUT)
    assert EXPECTED_BODY.fullmatch(split_response(raw)[2]), (raw, err)
    assert proc.returncode == 0


# -- in-process: serve_connection on a socketpair --------------------------------------


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("201 Created", [("Content-Type", "text/plain")])
    return [b"run_once=%s" % str(environ["wsgi.run_once"]).encode()]


def test_serve_connection_returns_the_status() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(encode_request({"REQUEST_URI": "/"}))
        assert serve_connection(hello, fd=theirs.fileno()) == 201
        raw, _ = recv_all(ours)
    assert split_response(raw) == ("201 Created", {"Content-Type": "text/plain"}, b"run_once=True")


def test_serve_connection_none_when_nothing_was_answered() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(b"5:ab")
        ours.shutdown(socket.SHUT_WR)
        assert serve_connection(hello, fd=theirs.fileno()) is None
        raw, _ = recv_all(ours)
    assert raw.startswith(b"Status: 400 Bad Request\r\n")


def test_serve_connection_refuses_a_file(tmp_path: Path) -> None:
    with open(tmp_path / "f", "wb") as file, pytest.raises(ConfigError, match="not a socket"):
        serve_connection(hello, fd=file.fileno())


# -- systemd-socket-activate --inetd ---------------------------------------------------


@pytest.fixture
def activator(tmp_path: Path, app_spec: str) -> Iterator[tuple[int, Path]]:
    binary = shutil.which("systemd-socket-activate")
    if binary is None:
        pytest.skip("systemd-socket-activate not installed (Debian package: systemd)")
    log_path = tmp_path / "activate.log"
    for _attempt in range(3):
        port = _free_port()
        command = [
            binary,
            "--inetd",
            "--accept",
            f"--listen=127.0.0.1:{port}",
            f"--setenv=PYTHONPATH={REPO_ROOT}",
            sys.executable,
            "-m",
            "scgiwsgi",
            app_spec,
            "--inetd",
        ]
        with open(log_path, "wb") as log:
            # Its own session: teardown signals the activator and any child it spawned.
            proc = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        if _listening(proc, log_path):
            break
        _stop_group(proc)
    else:
        pytest.fail("systemd-socket-activate did not start:\n" + log_path.read_text())
    try:
        yield port, log_path
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the session we started, then SIGKILL after a bounded wait."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(EXIT_TIMEOUT)


def _listening(proc: subprocess.Popen[bytes], log_path: Path) -> bool:
    """Wait (bounded) for the activator to listen; False if it exited instead."""
    wait_for(lambda: "Listening on" in log_path.read_text() or proc.poll() is not None, 10)
    return proc.poll() is None and "Listening on" in log_path.read_text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_systemd_socket_activate_inetd(activator: tuple[int, Path]) -> None:
    port, log_path = activator
    pids = []
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", port), timeout=EXIT_TIMEOUT) as sock:
            sock.sendall(REQUEST)
            raw, reset = recv_all(sock, EXIT_TIMEOUT)
        assert not reset
        match = EXPECTED_BODY.fullmatch(split_response(raw)[2])
        assert match is not None, raw + log_path.read_bytes()
        pids.append(int(match.group(1)))
    assert pids[0] != pids[1], "each connection must get its own process"
    with socket.create_connection(("127.0.0.1", port), timeout=EXIT_TIMEOUT) as sock:
        sock.sendall(b"12")
        sock.shutdown(socket.SHUT_WR)
        recv_all(sock, EXIT_TIMEOUT)

    def exits_logged() -> bool:
        text = log_path.read_text()
        return len(re.findall(r"died with code 0", text)) == 2 and "died with code 1" in text

    assert wait_for(exits_logged, EXIT_TIMEOUT), log_path.read_text()
    assert "no request was answered" in log_path.read_text()
