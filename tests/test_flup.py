"""flup's launcher API (scgiwsgi.flup.scgi and .scgi_fork) over real sockets.

Argument mapping is checked directly; behaviour through live servers: the
threaded face in-process (run() in a thread), both faces as launcher scripts
in child processes (signals, exit statuses), and the issue's classic
launcher behind a real nginx with only its import changed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import exchange, recv_all, wait_for
from legacy_support import ScriptProcess, raw_request, split_response

from scgiwsgi.errors import ConfigError
from scgiwsgi.flup import NoDefault
from scgiwsgi.flup import scgi as flup_scgi
from scgiwsgi.flup import scgi_fork as flup_fork
from scgiwsgi.flup._base import allow_list, bind_address, log_level, script_name, socket_mode
from scgiwsgi.protocol import encode_request

# -- argument mapping -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (("", 8040), "0.0.0.0:8040"),
        (("localhost", 4000), "localhost:4000"),
        (("127.0.0.1", 0), "127.0.0.1:0"),
        (("::1", 4000, 0, 0), "[::1]:4000"),
        (("", 4000, 0, 0), "[::]:4000"),
        ("/run/app.sock", "unix:/run/app.sock"),
    ],
)
def test_bind_address(address: Any, expected: str) -> None:
    assert bind_address(address) == expected


def test_bind_address_rejects_other_shapes() -> None:
    with pytest.raises(ConfigError, match="bindAddress"):
        bind_address(("127.0.0.1",))


def test_socket_mode_follows_umask() -> None:
    assert socket_mode(0o022) == 0o755
    assert socket_mode(0o077) == 0o700
    current = os.umask(0o027)
    try:
        assert socket_mode(None) == 0o750
        assert os.umask(0o027) == 0o027, "socket_mode(None) must restore the umask"
    finally:
        os.umask(current)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(NoDefault, ""), (None, ""), ("", ""), ("/blog", "/blog"), ("/b/", "/b")],
)
def test_script_name(value: object, expected: str) -> None:
    assert script_name(value) == expected


@pytest.mark.parametrize(
    ("level", "name"),
    [
        (logging.DEBUG, "debug"),
        (5, "debug"),
        (logging.INFO, "info"),
        (25, "info"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "critical"),
    ],
)
def test_log_level(level: int, name: str) -> None:
    assert log_level(level) == name


def test_allowed_servers_become_the_allow_list() -> None:
    assert allow_list(None) == ()
    assert allow_list(["127.0.0.1", "::1"]) == ("127.0.0.1", "::1")
    assert allow_list("10.0.0.0/8") == ("10.0.0.0/8",)
    with pytest.raises(ConfigError, match="refuses every front end"):
        allow_list([])
    face = flup_scgi.WSGIServer(hello, allowedServers=["127.0.0.1", "fd00::/8"])
    assert face.server.config.allow == ("127.0.0.1", "fd00::/8")
    with pytest.raises(ConfigError, match="localhost"):
        flup_scgi.WSGIServer(hello, allowedServers=["localhost"])


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_threaded_face_options() -> None:
    config = flup_scgi.WSGIServer(hello, bindAddress=("127.0.0.1", 0), maxThreads=3).server.config
    assert (config.backend, config.thread_count, config.script_name) == ("threaded", 3, "")
    single = flup_scgi.WSGIServer(hello, multithreaded=False, scriptName="/app/").server.config
    assert (single.thread_count, single.script_name, single.bind) == (
        1,
        "/app",
        ("localhost:4000",),
    )
    with pytest.raises(TypeError, match="maxChildren"):
        flup_scgi.WSGIServer(hello, maxChildren=3)


def test_fork_face_options() -> None:
    default = flup_fork.WSGIServer(hello).server.config
    assert (default.backend, default.worker_count, default.thread_count) == ("fork", 50, 1)
    assert (default.max_requests, default.timeout) == (0, 0)
    config = flup_fork.WSGIServer(
        hello, maxChildren=3, maxSpare=4, maxRequests=100, timeout=12, sockTimeout=7
    ).server.config
    assert (config.worker_count, config.max_requests, config.timeout) == (4, 100, 12)
    assert (config.header_timeout, config.body_timeout) == (7, 7)
    with pytest.raises(ConfigError, match="minSpare"):
        flup_fork.WSGIServer(hello, minSpare=0)
    with pytest.raises(ConfigError, match="maxSpare"):
        flup_fork.WSGIServer(hello, minSpare=3, maxSpare=2)
    with pytest.raises(TypeError, match="maxThreads"):
        flup_fork.WSGIServer(hello, maxThreads=3)


# -- the threaded face, in-process ---------------------------------------------------------


def describe(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Answers JSON: the path variables, a few others, and the whole body."""
    body = environ["wsgi.input"].read()  # no size: flup 1.0.3 hung here
    shown = {
        name: environ.get(name)
        for name in ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "EXTRA", "wsgi.url_scheme")
    }
    shown |= {
        "multithread": environ["wsgi.multithread"],
        "multiprocess": environ["wsgi.multiprocess"],
        "body": body.decode("latin-1"),
        "pid": os.getpid(),
    }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(shown).encode()]


class Running:
    def __init__(self, face: Any) -> None:
        self.face = face
        self.returned: list[bool] = []
        self.thread = threading.Thread(target=lambda: self.returned.append(face.run()))
        self.thread.start()
        if not wait_for(lambda: bool(face.server.listeners), 10):
            pytest.fail("the flup face did not bind in 10s")
        self.address = face.server.addresses[0]

    def stop(self) -> bool:
        self.face.server.shutdown()
        self.thread.join(10)
        assert not self.thread.is_alive(), "run() did not return within 10s"
        return self.returned[0]


@pytest.fixture
def run_face() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(app: Any = describe, **kwargs: Any) -> Running:
        kwargs.setdefault("bindAddress", ("127.0.0.1", 0))
        running = Running(flup_scgi.WSGIServer(app, **kwargs))
        started.append(running)
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()


def get_json(address: str, path: str, **kwargs: Any) -> dict[str, Any]:
    status, _, body = split_response(raw_request(address, path, **kwargs))
    assert status == "200 OK", body
    result: dict[str, Any] = json.loads(body)
    return result


def test_script_name_and_decoded_path_info(run_face: Callable[..., Running]) -> None:
    running = run_face(scriptName="/blog")
    shown = get_json(running.address, "/blog/a%20post/%C3%A9?page=2")
    assert shown["SCRIPT_NAME"] == "/blog"
    assert shown["PATH_INFO"] == "/a post/\u00c3\u00a9"  # latin-1 of the UTF-8 bytes (PEP 3333)
    assert shown["QUERY_STRING"] == "page=2"
    assert shown["multithread"] is True
    assert running.stop() is False


def test_environ_body_https_and_multiprocess(run_face: Callable[..., Running]) -> None:
    running = run_face(environ={"EXTRA": "yes"}, multiprocess=True, multithreaded=False)
    shown = get_json(running.address, "/x", method="POST", body=b"abc", extra={"HTTPS": "ON"})
    assert (shown["EXTRA"], shown["body"], shown["wsgi.url_scheme"]) == ("yes", "abc", "https")
    assert (shown["multithread"], shown["multiprocess"]) == (False, True)


def boom(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    raise RuntimeError("boom-9d1c raised on purpose")


@pytest.mark.parametrize("debug", [False, True])
def test_debug_shows_the_traceback_only_when_asked(
    run_face: Callable[..., Running], scgi_log: pytest.LogCaptureFixture, debug: bool
) -> None:
    running = run_face(boom, debug=debug)
    status, _, body = split_response(raw_request(running.address, "/"))
    assert status == "500 Internal Server Error"
    assert (b"boom-9d1c" in body) is debug
    assert (b"Traceback" in body) is debug
    logged = [r for r in scgi_log.records if r.exc_info and "boom-9d1c" in str(r.exc_info[1])]
    assert len(logged) == 1, scgi_log.text


def test_allowed_servers_refuses_other_peers(
    run_face: Callable[..., Running], scgi_log: pytest.LogCaptureFixture
) -> None:
    refused = run_face(hello, allowedServers=["10.1.2.3", "::1"])
    data, _ = exchange(refused.address, encode_request({"REQUEST_URI": "/"}))
    assert data == b""
    assert "refused: not in the --allow list" in scgi_log.text
    allowed = run_face(hello, allowedServers=["10.1.2.3", "127.0.0.0/8"])
    assert split_response(raw_request(allowed.address, "/"))[2] == b"hello"
    # The refused one keeps serving (and refusing): one bad peer stops nothing.
    assert exchange(refused.address, encode_request({"REQUEST_URI": "/"}))[0] == b""


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_allowed_servers_over_ipv6(run_face: Callable[..., Running]) -> None:
    running = run_face(hello, bindAddress=("::1", 0, 0, 0), allowedServers=["::1"])
    assert running.address.startswith("[::1]:")
    assert split_response(raw_request(running.address, "/"))[2] == b"hello"


def test_unix_socket_mode_from_umask(run_face: Callable[..., Running], tmp_path: Path) -> None:
    path = tmp_path / "flup.sock"
    running = run_face(hello, bindAddress=str(path), umask=0o077)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert split_response(raw_request(running.address, "/"))[2] == b"hello"
    running.stop()
    assert not path.exists()


def test_bind_failure_logs_and_returns_false(
    scgi_log: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("not a socket")
    face = flup_scgi.WSGIServer(hello, bindAddress=str(tmp_path / "file"))
    assert face.run() is False
    assert "Failed to bind socket" in scgi_log.text
    assert (tmp_path / "file").read_text() == "not a socket"  # flup unlinked any file


# -- launcher scripts in child processes ---------------------------------------------------

WSGI_APP = """\
import json, os, time

def application(environ, start_response):
    if environ["QUERY_STRING"] == "slow":
        time.sleep(1.0)
    received = environ["wsgi.input"].read()  # no size: flup 1.0.3 hung here
    body = json.dumps({
        "received": len(received),
        "query": environ["QUERY_STRING"],
        "pid": os.getpid(),
        "SCRIPT_NAME": environ["SCRIPT_NAME"],
        "PATH_INFO": environ["PATH_INFO"],
        "multithread": environ["wsgi.multithread"],
        "multiprocess": environ["wsgi.multiprocess"],
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""

# The launcher of issue 5, import changed; only the address differs in tests.
LAUNCHER = """\
import sys
from scgiwsgi.flup.{face} import WSGIServer
from wsgi_app import application
server = WSGIServer(application, bindAddress={address}, scriptName='/blog'{extra})
ret = server.run()
sys.exit(ret and 42 or 0)
"""


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Callable[..., tuple[ScriptProcess, str]]]:
    started: list[ScriptProcess] = []

    def start(face: str, address: str, extra: str = "") -> tuple[ScriptProcess, str]:
        directory = tmp_path / f"l{len(started)}"
        directory.mkdir()
        (directory / "wsgi_app.py").write_text(WSGI_APP)
        script = directory / "launcher.py"
        script.write_text(LAUNCHER.format(face=face, address=address, extra=extra))
        process = ScriptProcess(script, directory / "launcher.log")
        started.append(process)
        process.start(cwd=directory)
        return process, process.wait_started()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # sun_path holds 107 bytes; pytest's tmp_path can be longer.
    directory = Path(tempfile.mkdtemp(prefix="flup-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("face", ["scgi", "scgi_fork"])
def test_launcher_sigterm_exits_0_after_the_request(
    launcher: Callable[..., tuple[ScriptProcess, str]], face: str
) -> None:
    process, address = launcher(face, "('127.0.0.1', 0)", ", maxChildren=2" * (face != "scgi"))
    with socket.create_connection(_tcp(address), timeout=10) as sock:
        sock.sendall(encode_request({"REQUEST_URI": "/blog/x", "QUERY_STRING": "slow"}))
        time.sleep(0.3)  # inside the app's 1 s sleep
        process.signal(signal.SIGTERM)
        raw, reset = recv_all(sock)
    assert not reset
    assert json.loads(split_response(raw)[2])["PATH_INFO"] == "/x"
    assert process.wait() == 0


def test_threaded_launcher_sighup_exits_42_after_the_request(
    launcher: Callable[..., tuple[ScriptProcess, str]],
) -> None:
    process, address = launcher("scgi", "('127.0.0.1', 0)")
    with socket.create_connection(_tcp(address), timeout=10) as sock:
        sock.sendall(encode_request({"REQUEST_URI": "/blog/", "QUERY_STRING": "slow"}))
        time.sleep(0.3)
        process.signal(signal.SIGHUP)
        raw, _ = recv_all(sock)
    assert split_response(raw)[0] == "200 OK"
    assert process.wait() == 42
    assert "received SIGHUP" in process.log_text()


def test_fork_launcher_sighup_exits_42(
    launcher: Callable[..., tuple[ScriptProcess, str]],
) -> None:
    process, _ = launcher("scgi_fork", "('127.0.0.1', 0)", ", maxChildren=2")
    assert process.proc is not None
    process.signal(signal.SIGHUP)
    try:
        status = process.proc.wait(5)
    except subprocess.TimeoutExpired:
        status = None
    assert status == 42


def test_fork_launcher_serves_from_several_processes(
    launcher: Callable[..., tuple[ScriptProcess, str]], short_dir: Path
) -> None:
    path = str(short_dir / "s.sock")
    process, address = launcher("scgi_fork", repr(path), ", maxChildren=3, umask=0o007")
    assert address == f"unix:{path}"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o770
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: raw_request(address, "/blog/p?slow"), range(3)))
    shown = [json.loads(split_response(raw)[2]) for raw in answers]
    assert len({entry["pid"] for entry in shown}) == 3, "three slow requests, three workers"
    assert all(entry["multiprocess"] and not entry["multithread"] for entry in shown)
    assert {entry["PATH_INFO"] for entry in shown} == {"/p"}
    assert process.stop() == 0, process.log_text()
    assert not os.path.exists(path)


def _tcp(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


# -- the issue's launcher behind a real nginx ------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "unix"])
@pytest.mark.parametrize("face", ["scgi_fork", "scgi"])
def test_issue_launcher_behind_nginx(
    launcher: Callable[..., tuple[ScriptProcess, str]],
    tmp_path: Path,
    short_dir: Path,
    transport: str,
    face: str,
) -> None:
    from frontends.common import Site
    from frontends.nginx import Nginx

    Nginx.find()  # skip (naming the Debian package) before starting anything
    # The launcher as the issue gives it, flup's default pool of 50 children
    # included; only ('', 8040) became a loopback port or a unix socket.
    where = "('127.0.0.1', 0)" if transport == "tcp" else repr(str(short_dir / "blog.sock"))
    process, address = launcher(face, where)
    nginx = Nginx(tmp_path / "nginx", Site.example("nginx.conf", prefix="/blog"), upstream=address)
    try:
        nginx.start()
        page = nginx.request("GET", "/blog/2024/a%20post?page=2")
        upload = os.urandom(300_000)
        posted = nginx.request("POST", "/blog/comments", body=upload)
    finally:
        nginx.stop()
    assert page.status == 200, page
    shown = json.loads(page.body)
    assert (shown["SCRIPT_NAME"], shown["PATH_INFO"]) == ("/blog", "/2024/a post")
    assert shown["query"] == "page=2"
    forking = face == "scgi_fork"
    assert (shown["multiprocess"], shown["multithread"]) == (forking, not forking)
    assert posted.status == 200, posted
    assert json.loads(posted.body)["received"] == len(upload)
    assert not nginx.complaints(), nginx.describe() + process.log_text()
