"""The ``scgi-wsgi`` command over real processes.

Every test starts ``python -m scgiwsgi`` (or the console script) as a child
process, talks SCGI to it over loopback TCP or a unix socket, and checks exit
statuses and log output.  Every process started here is killed at teardown;
every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scgiwsgi import __version__
from scgiwsgi.client import SCGIResponse, request

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
STARTUP_RE = re.compile(
    r"scgiwsgi \S+ serving (?P<app>.+) on (?P<addresses>.+) with the .+ backend.*$", re.MULTILINE
)
COMBINED_RE = re.compile(
    r'^(?P<host>\S+) - (?P<user>\S+) \[[^\]]+\] "(?P<request>[^"]*)" (?P<status>\d{3}) '
    r'(?P<size>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$'
)

# An app that reports what the server put in its environ, as JSON.
ENV_APP = """
import json, os

def app(environ, start_response):
    keys = ("SCRIPT_NAME", "PATH_INFO", "wsgi.multithread", "wsgi.multiprocess")
    report = {key: environ.get(key) for key in keys}
    report["cwd"] = os.getcwd()
    body = json.dumps(report).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""

# An app that takes one second; it touches a marker file once it has started.
SLOW_APP = """
import os, time

MARKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "started")

def app(environ, start_response):
    with open(MARKER, "w"):
        pass
    time.sleep(1.0)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"slept"]
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.pop("PYTHONWARNINGS", None)
    return env


def _run(
    *args: str, cwd: Path = REPO_ROOT, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """Run the command to completion (killed if it outlives ``timeout``)."""
    return subprocess.run(
        [sys.executable, "-m", "scgiwsgi", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


class Server:
    """A running ``python -m scgiwsgi`` with its output captured to files."""

    def __init__(self, args: list[str], workdir: Path, cwd: Path) -> None:
        self.args = args
        self.stderr_path = workdir / "stderr.log"
        self.stdout_path = workdir / "stdout.log"
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scgiwsgi", *args],
                cwd=cwd,
                env=_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        self.startup_line = ""
        self.address = ""

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def wait_started(self, timeout: float = START_TIMEOUT) -> str:
        """Wait for the startup line; fail if the process exits or it never comes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = STARTUP_RE.search(self.stderr)
            if match:
                self.startup_line = match.group(0)
                self.address = match.group("addresses").split(", ")[0]
                return self.startup_line
            if self.proc.poll() is not None:
                pytest.fail(
                    f"server exited with {self.proc.returncode} before starting:\n{self.stderr}"
                )
            time.sleep(0.02)
        pytest.fail(f"no startup line within {timeout}s:\n{self.stderr}")

    def request(self, address: str | None = None, **kwargs: object) -> SCGIResponse:
        kwargs.setdefault("timeout", 10.0)
        return request(address or self.address, **kwargs)  # type: ignore[arg-type]

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``signum`` and return the exit status (fails if it takes too long)."""
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server still running {timeout}s after {signum!r}:\n{self.stderr}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=STOP_TIMEOUT)


StartServer = Callable[..., Server]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path, so unix socket paths stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="scgicli-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sock_path(short_dir: Path) -> str:
    return str(short_dir / "s.sock")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start servers (waiting for their startup line); all are killed at teardown."""
    servers: list[Server] = []

    def start(*args: str, cwd: Path = REPO_ROOT, wait: bool = True) -> Server:
        workdir = tmp_path / f"server{len(servers)}"
        workdir.mkdir()
        server = Server(list(args), workdir, cwd)
        servers.append(server)
        if wait:
            server.wait_started()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.kill()


def _write_app(directory: Path, name: str, source: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# -- serving -------------------------------------------------------------------


def test_builtin_page_lists_sorted_cgi_parameters(
    start_server: StartServer, sock_path: str
) -> None:
    server = start_server("--bind", f"unix:{sock_path}")
    assert "the built-in CGI variables page" in server.startup_line

    response = server.request(
        f"unix:{sock_path}", path="/a/b", query="q=1", headers={"X-Probe": "it's here"}
    )

    assert response.status == 200
    lines = response.body.decode("utf-8").splitlines()
    assert lines, "the page is empty"
    for line in lines:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*: (?:'.*'|\".*\")", line), line
    names = [line.split(":", 1)[0] for line in lines]
    assert names == sorted(names)
    assert len(names) == len(set(names))
    assert "REQUEST_METHOD: 'GET'" in lines
    assert "SCRIPT_NAME: ''" in lines
    assert "PATH_INFO: '/a/b'" in lines
    assert "QUERY_STRING: 'q=1'" in lines
    assert "SCGI: '1'" in lines
    assert f"HTTP_X_PROBE: {'it' + chr(39) + 's here'!r}" in lines
    # wsgi.* entries are not CGI parameters.
    assert not any(name.startswith("wsgi") for name in names)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("examples.hello", b"Hello, world!\n"),
        ("examples/flask_app/__init__.py:app", b"Hello from Flask!\n"),
        ("examples.flask_app:app", b"Hello from Flask!\n"),
    ],
)
def test_example_apps_serve(start_server: StartServer, spec: str, expected: bytes) -> None:
    server = start_server(spec, "--bind", "127.0.0.1:0")
    assert f"serving {spec} on " in server.startup_line

    response = server.request()

    assert response.status == 200
    assert response.body == expected


def test_flask_example_sees_script_name(start_server: StartServer) -> None:
    server = start_server(
        "examples.flask_app:app", "--bind", "127.0.0.1:0", "--script-name", "/app"
    )

    response = server.request(path="/app/info")

    assert response.status == 200
    info = json.loads(response.body)
    assert info["path"] == "/info"
    assert info["script_root"] == "/app"
    assert info["url_for_index"] == "/app/"


def test_startup_line_names_app_every_address_and_backend(
    start_server: StartServer, sock_path: str
) -> None:
    server = start_server(
        "examples.hello", "--bind", "127.0.0.1:0", "--bind", f"unix:{sock_path}", "--threads", "5"
    )
    match = STARTUP_RE.search(server.startup_line)
    assert match is not None
    assert match.group("app") == "examples.hello"
    tcp, unix = match.group("addresses").split(", ")
    assert re.fullmatch(r"127\.0\.0\.1:\d+", tcp) and not tcp.endswith(":0"), tcp
    assert unix == f"unix:{sock_path}"
    assert "threaded (5 threads)" in server.startup_line
    assert f"pid {server.proc.pid}" in server.startup_line
    # Both addresses really serve.
    assert server.request(tcp).body == b"Hello, world!\n"
    assert server.request(unix).body == b"Hello, world!\n"


def test_default_backend_is_threaded_with_eight_threads(start_server: StartServer) -> None:
    server = start_server("--bind", "127.0.0.1:0")
    assert "threaded (8 threads)" in server.startup_line


@pytest.mark.parametrize(
    ("options", "description", "multithread"),
    [
        (["--single"], "single", False),
        (["--threaded", "--threads", "3"], "threaded (3 threads)", True),
    ],
)
def test_backend_choice_in_startup_line_and_environ(
    start_server: StartServer,
    tmp_path: Path,
    options: list[str],
    description: str,
    multithread: bool,
) -> None:
    _write_app(tmp_path, "envapp", ENV_APP)
    server = start_server(
        "envapp:app", "--pythonpath", str(tmp_path), "--bind", "127.0.0.1:0", *options
    )
    assert f"with the {description}" in server.startup_line

    report = json.loads(server.request().body)

    assert report["wsgi.multithread"] is multithread
    assert report["wsgi.multiprocess"] is False


def test_script_name_splits_path(start_server: StartServer, tmp_path: Path) -> None:
    _write_app(tmp_path, "envapp", ENV_APP)
    server = start_server(
        "envapp:app",
        "--pythonpath",
        str(tmp_path),
        "--bind",
        "127.0.0.1:0",
        "--script-name",
        "/app",
    )

    inside = json.loads(server.request(path="/app/x").body)
    outside = json.loads(server.request(path="/application").body)

    assert (inside["SCRIPT_NAME"], inside["PATH_INFO"]) == ("/app", "/x")
    assert (outside["SCRIPT_NAME"], outside["PATH_INFO"]) == ("", "/application")


def test_chdir_with_relative_file_spec(start_server: StartServer, tmp_path: Path) -> None:
    appdir = tmp_path / "site"
    appdir.mkdir()
    _write_app(appdir, "envapp", ENV_APP)
    # cwd is the repo root, where envapp.py does not exist: only --chdir finds it.
    assert not (REPO_ROOT / "envapp.py").exists()
    server = start_server("envapp.py:app", "--chdir", str(appdir), "--bind", "127.0.0.1:0")

    report = json.loads(server.request().body)

    assert os.path.realpath(report["cwd"]) == os.path.realpath(appdir)


# -- information options -------------------------------------------------------


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"scgi-wsgi, version {__version__}"


def test_help_lists_options() -> None:
    result = _run("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: scgi-wsgi [OPTIONS] [APP]")
    for option in ("--bind", "--threads", "--single", "--script-name", "--access-log", "--version"):
        assert option in result.stdout


def test_entry_point_function_runs() -> None:
    # What the console script `scgi-wsgi = scgiwsgi.cli:main` executes.
    code = "import sys; from scgiwsgi.cli import main; sys.argv = ['x', '--version']; main()"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"scgi-wsgi, version {__version__}"


def test_installed_console_script_version() -> None:
    script = shutil.which("scgi-wsgi")
    if script is None:
        pytest.skip("the scgi-wsgi console script is not installed")
    result = subprocess.run(
        [script, "--version"],
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"scgi-wsgi, version {__version__}"


# -- stopping ------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("backend", ["--threaded", "--single"])
def test_stop_signal_exits_zero(
    start_server: StartServer, sock_path: str, signum: signal.Signals, backend: str
) -> None:
    server = start_server("--bind", f"unix:{sock_path}", backend)
    assert server.request(f"unix:{sock_path}").status == 200

    started = time.monotonic()
    assert server.stop(signum) == 0

    assert time.monotonic() - started < STOP_TIMEOUT
    lines = _error_lines(server.stderr)
    assert any(f"received {signum.name}" in line for line in lines), lines
    assert lines[-1].endswith("stopped"), lines
    assert "Traceback" not in server.stderr
    assert not os.path.exists(sock_path), "the unix socket file was left behind"


@pytest.mark.parametrize("backend", ["--threaded", "--single"])
def test_request_in_flight_during_sigterm_completes(
    start_server: StartServer, tmp_path: Path, backend: str
) -> None:
    _write_app(tmp_path, "slowapp", SLOW_APP)
    server = start_server(
        "slowapp:app", "--pythonpath", str(tmp_path), "--bind", "127.0.0.1:0", backend
    )
    results: list[SCGIResponse | BaseException] = []

    def send() -> None:
        try:
            results.append(server.request())
        except BaseException as exc:  # reported by the assertions below
            results.append(exc)

    client = threading.Thread(target=send, daemon=True)
    client.start()
    assert _wait_for((tmp_path / "started").exists), "the app never started the request"

    assert server.stop(signal.SIGTERM) == 0

    client.join(timeout=10)
    assert not client.is_alive()
    assert len(results) == 1
    response = results[0]
    assert isinstance(response, SCGIResponse), response
    assert (response.status, response.body) == (200, b"slept")
    assert _error_lines(server.stderr)[-1].endswith("stopped")


# -- application loading failures ----------------------------------------------


def test_unknown_module_exits_4_with_one_line() -> None:
    result = _run("no_such_module_here.sub:app", "--bind", "127.0.0.1:0")
    assert result.returncode == 4
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("scgi-wsgi: error: cannot import module 'no_such_module_here.sub'")
    assert "Traceback" not in result.stderr


def test_module_raising_on_import_exits_4_with_traceback(tmp_path: Path) -> None:
    _write_app(tmp_path, "boomapp", "raise RuntimeError('kaboom at import')\n")
    result = _run("boomapp:app", "--pythonpath", str(tmp_path), "--bind", "127.0.0.1:0")
    assert result.returncode == 4
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: kaboom at import" in result.stderr
    assert "boomapp.py" in result.stderr
    assert _error_lines(result.stderr)[-1].startswith("scgi-wsgi: error: ")


def test_missing_attribute_exits_4() -> None:
    result = _run("examples.hello:no_such_app", "--bind", "127.0.0.1:0")
    assert result.returncode == 4
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("scgi-wsgi: error: ")
    assert "no_such_app" in lines[0]
    assert "Traceback" not in result.stderr


# -- bind and option errors ------------------------------------------------------


def test_tcp_address_in_use_exits_3() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        result = _run("--bind", f"127.0.0.1:{port}")
    assert result.returncode == 3
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("scgi-wsgi: error: ")
    assert f"127.0.0.1:{port}" in lines[0]
    assert "address already in use" in lines[0]


def test_unix_address_in_use_exits_3(sock_path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as blocker:
        blocker.bind(sock_path)
        blocker.listen(1)
        result = _run("--bind", f"unix:{sock_path}")
        assert os.path.exists(sock_path), "the server removed a live socket"
    assert result.returncode == 3
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, lines
    assert "already in use" in lines[0]


def test_unix_socket_in_missing_directory_exits_3(short_dir: Path) -> None:
    missing = short_dir / "nowhere" / "s.sock"
    result = _run("--bind", f"unix:{missing}")
    assert result.returncode == 3
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("scgi-wsgi: error: ")
    assert "does not exist" in lines[0]


def test_second_address_failing_releases_the_first(short_dir: Path) -> None:
    first = short_dir / "first.sock"
    result = _run("--bind", f"unix:{first}", "--bind", f"unix:{short_dir / 'no' / 'x.sock'}")
    assert result.returncode == 3
    assert not first.exists(), "the socket file of the bound address was left behind"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--bind", "foo"], "scgi-wsgi: error: invalid bind address 'foo'"),
        (["--bind", "127.0.0.1:99999"], "scgi-wsgi: error: invalid bind address"),
        (["--script-name", "app/"], "scgi-wsgi: error: script_name"),
        (["--script-name", "/app/"], "scgi-wsgi: error: script_name"),
    ],
)
def test_invalid_values_exit_2_with_one_line(options: list[str], message: str) -> None:
    result = _run(*options)
    assert result.returncode == 2
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith(message)


@pytest.mark.parametrize(
    "options",
    [
        ["--threads", "0"],
        ["--threads", "many"],
        ["--max-body-size", "lots"],
        ["--log-level", "loud"],
        ["--socket-mode", "999"],
        ["--no-such-option"],
    ],
)
def test_usage_errors_exit_2(options: list[str]) -> None:
    result = _run(*options)
    assert result.returncode == 2
    assert "Usage: scgi-wsgi" in result.stderr
    assert "Error: " in result.stderr
    assert "Traceback" not in result.stderr


# -- logs ------------------------------------------------------------------------


def test_access_log_file_gets_combined_lines(start_server: StartServer, tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    server = start_server("examples.hello", "--bind", "127.0.0.1:0", "--access-log", str(access))

    server.request(path="/x", headers={"User-Agent": "cli-test/1.0", "Referer": "http://r/"})
    server.request(path="/y", query="z=1")

    assert _wait_for(lambda: access.exists() and access.read_text().count("\n") >= 2)
    lines = access.read_text().splitlines()
    assert len(lines) == 2
    first, second = (COMBINED_RE.match(line) for line in lines)
    assert first is not None, lines[0]
    assert second is not None, lines[1]
    assert '"GET /x HTTP/1.1" 200' in lines[0]
    assert first.group("host") == "127.0.0.1"
    assert first.group("size") == str(len(b"Hello, world!\n"))
    assert (first.group("referer"), first.group("agent")) == ("http://r/", "cli-test/1.0")
    assert '"GET /y?z=1 HTTP/1.1" 200' in lines[1]
    assert "GET /x" not in server.stdout


def test_access_log_dash_goes_to_stdout(start_server: StartServer) -> None:
    server = start_server("examples.hello", "--bind", "127.0.0.1:0", "--access-log", "-")

    server.request(path="/x")

    assert _wait_for(lambda: "GET /x" in server.stdout)
    lines = server.stdout.splitlines()
    assert len(lines) == 1
    assert COMBINED_RE.match(lines[0]), lines[0]
    assert '"GET /x HTTP/1.1" 200' in lines[0]
    assert "GET /x" not in server.stderr


@pytest.mark.parametrize("where", ["missing/dir/access.log", "."], ids=["missing-dir", "a-dir"])
def test_unopenable_access_log_exits_2_with_one_line(short_dir: Path, where: str) -> None:
    sock = short_dir / "s.sock"
    target = short_dir / where
    result = _run("--bind", f"unix:{sock}", "--access-log", str(target))
    assert result.returncode == 2, result.stderr
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("scgi-wsgi: error: access_log: cannot open")
    assert str(target) in lines[0]


def test_log_level_debug_accepted(start_server: StartServer) -> None:
    server = start_server("examples.hello", "--bind", "127.0.0.1:0", "--log-level", "debug")
    assert server.request().status == 200
    assert server.stop() == 0


def test_log_level_warning_hides_info_lines(start_server: StartServer, sock_path: str) -> None:
    server = start_server(
        "examples.hello", "--bind", f"unix:{sock_path}", "--log-level", "WARNING", wait=False
    )

    def answering() -> bool:
        assert server.proc.poll() is None, server.stderr
        try:
            return request(f"unix:{sock_path}", timeout=2).status == 200
        except OSError:
            return False

    assert _wait_for(answering, timeout=START_TIMEOUT)
    assert server.stop() == 0
    assert "serving" not in server.stderr
    assert "stopped" not in server.stderr


# -- limits ----------------------------------------------------------------------


def test_size_limits_accepted_and_enforced(start_server: StartServer) -> None:
    server = start_server(
        "examples.hello",
        "--bind",
        "127.0.0.1:0",
        "--max-header-size",
        "64K",
        "--max-body-size",
        "1M",
    )
    limit = 1024 * 1024

    at_limit = server.request(method="POST", body=b"a" * limit)
    over = server.request(method="POST", body=b"a" * (limit + 1))
    far_over = server.request(method="POST", body=b"a" * (3 * limit))
    big_header = server.request(headers={"X-Big": "h" * (65 * 1024)})

    assert at_limit.status == 200
    assert over.status == 413
    assert far_over.status == 413
    assert big_header.status == 431
    assert server.request().status == 200, "the server stopped serving after rejecting"


def test_small_header_limit_is_applied(start_server: StartServer) -> None:
    # 2K is far below the default, so a 431 here proves the option took effect.
    server = start_server("examples.hello", "--bind", "127.0.0.1:0", "--max-header-size", "2K")

    assert server.request(headers={"X-Mid": "m" * 1024}).status == 200
    assert server.request(headers={"X-Big": "h" * 3000}).status == 431
