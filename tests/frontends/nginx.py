"""A real nginx in front of a real scgiwsgi process, both private to one test.

:class:`ScgiServer` runs ``python -m scgiwsgi`` as a child process bound to
loopback TCP (port 0, read back from the startup line) or to a unix socket.
:class:`Nginx` writes its own ``nginx.conf`` into a temporary directory (own
pid file, error and access logs, temp paths, a free loopback port), includes
the stock ``/etc/nginx/scgi_params`` and ``scgi_pass``-es to the server.  The
system nginx service and its files are never touched.

Every wait is bounded and every process is stopped (politely, then with
SIGKILL) by :meth:`stop`; :class:`Deployment` stops both in reverse order.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

__all__ = [
    "BENIGN_NGINX_WARNINGS",
    "Deployment",
    "HTTPResult",
    "Nginx",
    "ScgiServer",
    "find_nginx",
    "free_port",
    "scgi_request",
    "wait_until",
    "write_app",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
SCGI_PARAMS = Path("/etc/nginx/scgi_params")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
IO_TIMEOUT = 30.0

# nginx levels at or above "warn"; anything logged at these levels fails a test
# unless it is one of the benign messages below.
_COMPLAINT_RE = re.compile(r"\[(warn|error|crit|alert|emerg)\]")
BENIGN_NGINX_WARNINGS = (
    # Bodies above client_body_buffer_size go to client_body_temp_path: that is
    # nginx working as configured (the 10 MB upload), not an upstream problem.
    "a client request body is buffered to a temporary file",
)
_STARTUP_RE = re.compile(r" serving .+? on (?P<addresses>.+?) with the ")


def find_nginx() -> str:
    """The nginx binary; skips the test when nginx is not installed."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    if found is None:
        pytest.skip("nginx not installed (Debian package: nginx)")
    if not SCGI_PARAMS.is_file():
        pytest.skip(f"{SCGI_PARAMS} missing (Debian package: nginx-common)")
    return found


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, on_fail: Callable[[], str]
) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{on_fail()}")
        time.sleep(0.02)


def _stop_process(proc: subprocess.Popen[bytes], first_signal: int) -> None:
    """Send ``first_signal``, wait (bounded), then SIGKILL; always reaps."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(first_signal)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


def _connectable(family: socket.AddressFamily, address: tuple[str, int] | str) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(address)
        except OSError:
            return False
    return True


class ScgiServer:
    """``python -m scgiwsgi [APP] --bind ...`` as a child process.

    ``transport`` is ``"tcp"`` (127.0.0.1, port 0) or ``"unix"`` (a socket in
    a short private directory: ``sun_path`` holds only 108 bytes).  Its
    stdout and stderr go to ``workdir / "scgiwsgi.log"``.
    """

    def __init__(
        self,
        workdir: Path,
        app: str | None,
        *,
        transport: str,
        script_name: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if transport not in ("tcp", "unix"):
            raise ValueError(f"transport must be 'tcp' or 'unix', not {transport!r}")
        self.workdir = workdir
        self.app = app
        self.transport = transport
        self.script_name = script_name
        self.extra_args = tuple(extra_args)
        self.log_path = workdir / "scgiwsgi.log"
        self.address = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._socket_dir: str | None = None

    def start(self) -> None:
        """Start the server and wait (bounded) for its startup log line."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "scgiwsgi"]
        if self.app is not None:
            command.append(self.app)
        command += ["--bind", self._bind_spec()]
        if self.script_name is not None:
            command += ["--script-name", self.script_name]
        command += list(self.extra_args)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        wait_until(self._started, START_TIMEOUT, "the scgiwsgi startup line", self.describe)
        if not self._accepts():
            pytest.fail(
                f"scgiwsgi logged its startup line but {self.address} refuses\n" + self.describe()
            )

    def _bind_spec(self) -> str:
        if self.transport == "tcp":
            return "127.0.0.1:0"
        self._socket_dir = tempfile.mkdtemp(prefix="scgiwsgi-")
        return f"unix:{self._socket_dir}/scgi.sock"

    def _started(self) -> bool:
        assert self.proc is not None
        match = _STARTUP_RE.search(self.log_text())
        if match is not None:
            self.address = match.group("addresses").split(", ")[0]
            return True
        if self.proc.poll() is not None:
            pytest.fail(f"scgiwsgi exited with status {self.proc.returncode}\n{self.describe()}")
        return False

    def _accepts(self) -> bool:
        if self.address.startswith("unix:"):
            return _connectable(socket.AF_UNIX, self.address[len("unix:") :])
        host, _, port = self.address.rpartition(":")
        return _connectable(socket.AF_INET, (host, int(port)))

    @property
    def upstream(self) -> str:
        """The address in nginx ``scgi_pass`` syntax."""
        return self.address  # "127.0.0.1:PORT" and "unix:/path" read the same in nginx

    def connect(self) -> socket.socket:
        """A new connection to the server, as a front end would open it."""
        if self.address.startswith("unix:"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: tuple[str, int] | str = self.address[len("unix:") :]
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            host, _, port = self.address.rpartition(":")
            target = (host, int(port))
        sock.settimeout(IO_TIMEOUT)
        try:
            sock.connect(target)
        except BaseException:
            sock.close()
            raise
        return sock

    def log_text(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def describe(self) -> str:
        """The command's log, for failure messages."""
        return f"--- scgiwsgi log ({self.log_path}) ---\n{self.log_text()}"

    def stop(self) -> None:
        """SIGTERM (graceful stop), then SIGKILL after a bounded wait."""
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGTERM)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None


_NGINX_CONF = """\
# Generated by tests/frontends/nginx.py for one test; everything lives in {prefix}.
daemon off;
# One process: nothing to orphan if the test is killed, and no switch to the
# "nobody" user when the tests run as root (it could not enter {prefix}).
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;

events {{
    worker_connections 64;
}}

http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/temp/client_body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    client_max_body_size 100m;
    default_type application/octet-stream;

    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {prefix}/html;

        location {location} {{
            scgi_pass {upstream};
            include {scgi_params};
        }}
    }}
}}
"""


class HTTPResult:
    """Status, headers and body of one response read with :mod:`http.client`."""

    def __init__(self, status: int, reason: str, headers: http.client.HTTPMessage, body: bytes):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def __repr__(self) -> str:
        return f"<HTTPResult {self.status} {self.reason} {self.body[:200]!r}>"


class Nginx:
    """nginx with a generated config in ``workdir``, passing ``location`` to ``upstream``."""

    def __init__(self, workdir: Path, upstream: str, *, location: str = "/") -> None:
        self.binary = find_nginx()
        self.workdir = workdir
        self.upstream = upstream
        self.location = location
        self.port = 0
        self.conf_path = workdir / "nginx.conf"
        self.error_log = workdir / "error.log"
        self.stdio_log = workdir / "nginx.stdio.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        (self.workdir / "temp").mkdir(parents=True, exist_ok=True)
        (self.workdir / "html").mkdir(exist_ok=True)
        self.conf_path.write_text(
            _NGINX_CONF.format(
                prefix=self.workdir,
                port=self.port,
                location=self.location,
                upstream=self.upstream,
                scgi_params=SCGI_PARAMS,
            )
        )

    def start(self) -> None:
        """Start nginx; retry with another port if the free one was taken meanwhile."""
        for _attempt in range(3):
            self.port = free_port()
            self.write_config()
            if self._start_once():
                return
            if "Address already in use" not in self.error_log_text():
                break
        pytest.fail(f"nginx did not start\n{self.describe()}")

    def _start_once(self) -> bool:
        command = [
            self.binary,
            "-c",
            str(self.conf_path),
            "-p",
            f"{self.workdir}/",
            "-e",
            str(self.error_log),
        ]
        with open(self.stdio_log, "wb") as stdio:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=stdio, stderr=stdio
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if _connectable(socket.AF_INET, ("127.0.0.1", self.port)):
                return True
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"nginx did not listen within {START_TIMEOUT}s\n{self.describe()}")

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> HTTPResult:
        """One HTTP/1.1 request with :mod:`http.client` (never through a proxy)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=IO_TIMEOUT)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            return HTTPResult(response.status, response.reason, response.headers, data)
        finally:
            conn.close()

    def raw_request(self, data: bytes) -> bytes:
        """Send ``data`` as is and read the answer until nginx closes (bounded)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT) as sock:
            sock.sendall(data)
            return _read_to_eof(sock, IO_TIMEOUT)

    def error_log_text(self) -> str:
        try:
            return self.error_log.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def complaints(self) -> list[str]:
        """Error log lines at ``warn`` or above that are not known to be benign."""
        return [
            line
            for line in self.error_log_text().splitlines()
            if _COMPLAINT_RE.search(line)
            and not any(benign in line for benign in BENIGN_NGINX_WARNINGS)
        ]

    def describe(self) -> str:
        stdio = self.stdio_log.read_text("utf-8", "replace") if self.stdio_log.exists() else ""
        conf = self.conf_path.read_text() if self.conf_path.exists() else ""
        return (
            f"--- nginx error log ({self.error_log}) ---\n{self.error_log_text()}"
            f"--- nginx stdout/stderr ---\n{stdio}"
            f"--- nginx.conf ---\n{conf}"
        )

    def stop(self) -> None:
        """SIGQUIT (graceful: in-flight requests finish), then SIGKILL after a bounded wait."""
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGQUIT)


def _read_to_eof(sock: socket.socket, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no EOF within {timeout}s; got {b''.join(chunks)[:500]!r}")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def scgi_request(
    sock: socket.socket, headers: Sequence[tuple[str, str]], body: bytes = b""
) -> bytes:
    """Send one SCGI request the way nginx frames it and read the whole answer.

    ``CONTENT_LENGTH`` and ``SCGI`` are put first; the socket is left open
    for writing (front ends never half-close), so the server must not wait
    for EOF.
    """
    pairs = [("CONTENT_LENGTH", str(len(body))), ("SCGI", "1"), *headers]
    block = b"".join(
        name.encode("latin-1") + b"\0" + value.encode("latin-1") + b"\0" for name, value in pairs
    )
    sock.sendall(b"%d:%s,%s" % (len(block), block, body))
    return _read_to_eof(sock, IO_TIMEOUT)


class Deployment:
    """scgiwsgi behind nginx, as one unit; :meth:`stop` stops both."""

    def __init__(self, scgi: ScgiServer, nginx: Nginx) -> None:
        self.scgi = scgi
        self.nginx = nginx

    @classmethod
    def start(
        cls,
        workdir: Path,
        app: str | None,
        *,
        transport: str,
        prefix: str | None = None,
    ) -> Deployment:
        """Start scgiwsgi (``--script-name prefix``) and nginx (``location prefix/``)."""
        find_nginx()
        scgi = ScgiServer(workdir / "scgiwsgi", app, transport=transport, script_name=prefix)
        nginx = Nginx(workdir / "nginx", "", location=f"{prefix}/" if prefix else "/")
        deployment = cls(scgi, nginx)
        try:
            scgi.start()
            nginx.upstream = scgi.upstream
            nginx.start()
        except BaseException:
            deployment.stop()
            raise
        return deployment

    def assert_clean_logs(self) -> None:
        """Stop nginx gracefully and assert its error log holds no complaint.

        Stopping first makes sure nginx finished every request (and wrote
        whatever it had to say about the upstream) before the log is read.
        """
        self.nginx.stop()
        complaints = self.nginx.complaints()
        assert not complaints, (
            "nginx complained in its error log:\n" + "\n".join(complaints) + "\n" + self.describe()
        )

    def describe(self) -> str:
        return f"{self.nginx.describe()}\n{self.scgi.describe()}"

    def stop(self) -> None:
        try:
            self.nginx.stop()
        finally:
            self.scgi.stop()


def write_app(path: Path, source: str) -> str:
    """Write a WSGI app module to ``path`` and return its scgiwsgi APP spec."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return f"{path}:app"
