"""Real front-end web servers in front of a real scgiwsgi process, private to one test.

:class:`ScgiServer` runs ``python -m scgiwsgi`` as a child process bound to
loopback TCP (port 0, read back from the startup line) or to a unix socket.
A :class:`FrontEnd` subclass (nginx, Apache httpd, lighttpd) writes its own
configuration into a temporary directory (own pid file, error log, a free
loopback port) and includes a *site* rendered from a template: by default
the deployment example of the repository (``examples/nginx.conf``,
``examples/apache.conf``, ``examples/lighttpd.conf``), so the examples are
exactly what the tests run.  The system services and their files are never
touched.

Every wait is bounded and every process is stopped (politely, then with
SIGKILL) by ``stop()``; :class:`Deployment` stops both in reverse order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

__all__ = [
    "EXAMPLES",
    "REPO_ROOT",
    "Deployment",
    "FrontEnd",
    "HTTPResult",
    "ScgiServer",
    "Site",
    "TLSFiles",
    "free_port",
    "make_tls_files",
    "render_template",
    "scgi_request",
    "wait_until",
    "write_app",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
IO_TIMEOUT = 30.0

_STARTUP_RE = re.compile(r" serving .+? on (?P<addresses>.+?) with the ")
_PLACEHOLDER_RE = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


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


def stop_process(proc: subprocess.Popen[bytes], first_signal: int) -> None:
    """Send ``first_signal``, wait (bounded), then SIGKILL; always reaps."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(first_signal)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


def connectable(family: socket.AddressFamily, address: tuple[str, int] | str) -> bool:
    """True when a connection to ``address`` is accepted within a second."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(address)
        except OSError:
            return False
    return True


def render_template(text: str, values: Mapping[str, str]) -> str:
    """Replace every ``{{name}}`` in ``text`` outside ``#`` comment lines.

    An unknown name raises KeyError; comment lines (which explain the
    placeholders) are kept as they are.
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"no value for the placeholder {{{{{name}}}}}")
        return values[name]

    return "".join(
        line if line.lstrip().startswith("#") else _PLACEHOLDER_RE.sub(substitute, line)
        for line in text.splitlines(keepends=True)
    )


# -- the scgiwsgi process ------------------------------------------------------------


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
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Also writes an access log to ``workdir / "access.log"``."""
        if transport not in ("tcp", "unix"):
            raise ValueError(f"transport must be 'tcp' or 'unix', not {transport!r}")
        self.workdir = workdir
        self.app = app
        self.transport = transport
        self.script_name = script_name
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.log_path = workdir / "scgiwsgi.log"
        self.access_log_path = workdir / "access.log"
        self.address = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._socket_dir: str | None = None

    def start(self) -> None:
        """Start the server and wait (bounded) for its startup log line."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "scgiwsgi"]
        if self.app is not None:
            command.append(self.app)
        command += ["--bind", self._bind_spec(), "--access-log", str(self.access_log_path)]
        if self.script_name:
            command += ["--script-name", self.script_name]
        command += list(self.extra_args)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
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
            return connectable(socket.AF_UNIX, self.address[len("unix:") :])
        host, _, port = self.address.rpartition(":")
        return connectable(socket.AF_INET, (host, int(port)))

    @property
    def unix_path(self) -> str | None:
        """The socket path for a unix-socket server, else None."""
        return self.address[len("unix:") :] if self.address.startswith("unix:") else None

    @property
    def host_port(self) -> tuple[str, int]:
        """``(host, port)`` of a TCP server."""
        host, _, port = self.address.rpartition(":")
        return host, int(port)

    def connect(self) -> socket.socket:
        """A new connection to the server, as a front end would open it."""
        if self.unix_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: tuple[str, int] | str = self.unix_path
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = self.host_port
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

    def access_log_text(self) -> str:
        """The access log so far (one line per request that reached scgiwsgi)."""
        try:
            return self.access_log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def describe(self) -> str:
        """The command's log, for failure messages."""
        return f"--- scgiwsgi log ({self.log_path}) ---\n{self.log_text()}"

    def stop(self) -> None:
        """SIGTERM (graceful stop), then SIGKILL after a bounded wait."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None


# -- TLS -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files)."""

    cert: Path
    key: Path
    combined: Path
    """Certificate and key in one file (lighttpd's ``ssl.pemfile``)."""

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts exactly this certificate."""
        return ssl.create_default_context(cafile=str(self.cert))


def make_tls_files(directory: Path) -> TLSFiles:
    """Generate the certificate with the ``openssl`` command (skips without it)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed (Debian package: openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, combined = directory / "cert.pem", directory / "key.pem", directory / "both.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
            *("-addext", "basicConstraints=critical,CA:FALSE"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    return TLSFiles(cert, key, combined)


# -- HTTP ----------------------------------------------------------------------------


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


def read_to_eof(sock: socket.socket, timeout: float) -> bytes:
    """Everything ``sock`` sends until it closes, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no EOF within {timeout}s; got {b''.join(chunks)[:500]!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ssl.SSLZeroReturnError:
            chunk = b""
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
    return read_to_eof(sock, IO_TIMEOUT)


# -- front ends ----------------------------------------------------------------------


@dataclasses.dataclass
class Site:
    """The part of a front end's configuration that a deployment writes.

    ``template`` holds ``{{name}}`` placeholders; the front end fills in
    ``prefix`` (the mount, ``""`` or ``/app``), ``mount`` (``/`` or the
    prefix), ``static_dir`` (served by the front end under
    ``{{prefix}}/static/``), its own spelling of the scgiwsgi address and
    ``values``.
    """

    template: str
    prefix: str = ""
    static_dir: Path | None = None
    values: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def example(cls, name: str, prefix: str = "", **kwargs: object) -> Site:
        """The repository's ``examples/NAME`` as the site."""
        return cls((EXAMPLES / name).read_text(), prefix, **kwargs)  # type: ignore[arg-type]

    def edited(self, old: str, new: str) -> Site:
        """A copy with the line(s) ``old`` replaced by ``new`` (which must be there once)."""
        if self.template.count(old) != 1:
            raise ValueError(f"{old!r} is not in the template exactly once")
        return dataclasses.replace(self, template=self.template.replace(old, new))


class FrontEnd:
    """A web server binary with a generated configuration in ``workdir``.

    Subclasses give the binary (:meth:`find`), the configuration
    (:meth:`config_text`), the command line and how the scgiwsgi address is
    written (:meth:`backend`).
    """

    name: ClassVar[str] = ""
    stop_signal: ClassVar[int] = signal.SIGTERM
    benign: ClassVar[tuple[str, ...]] = ()
    """Error-log fragments that are expected and harmless."""

    def __init__(
        self,
        workdir: Path,
        site: Site,
        *,
        upstream: str = "",
        tls: TLSFiles | None = None,
        https_flag: bool = False,
    ) -> None:
        self.binary = self.find()
        self.workdir = workdir
        self.site = site
        self.upstream = upstream
        self.tls = tls
        self.https_flag = https_flag
        self.port = 0
        self.conf_path = workdir / f"{self.name}.conf"
        self.error_log = workdir / "error.log"
        self.access_log = workdir / "access.log"
        self.pid_file = workdir / f"{self.name}.pid"
        self.stdio_log = workdir / f"{self.name}.stdio.log"
        self.html_dir = workdir / "html"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- to override -----------------------------------------------------------------

    @classmethod
    def find(cls) -> str:
        """The binary; skips the test (naming the Debian package) when missing."""
        raise NotImplementedError

    def config_text(self, site_text: str) -> str:
        """The whole configuration file around the rendered site."""
        raise NotImplementedError

    def command(self) -> list[str]:
        """The command line running the server in the foreground."""
        raise NotImplementedError

    def backend(self, address: str) -> str:
        """The scgiwsgi address (``127.0.0.1:PORT`` or ``unix:/path``) as the config says it."""
        raise NotImplementedError

    def is_complaint(self, line: str) -> bool:
        """Whether an error-log line reports a problem."""
        raise NotImplementedError

    # -- common ----------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def site_values(self) -> dict[str, str]:
        prefix = self.site.prefix
        static_dir = self.site.static_dir or self.html_dir / "static"
        return {
            "prefix": prefix,
            "mount": prefix or "/",
            "static_dir": str(static_dir),
            "listen": f"127.0.0.1:{self.port}",
            "backend": self.backend(self.upstream),
            **self.site.values,
        }

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.html_dir / "static").mkdir(parents=True, exist_ok=True)
        site_text = render_template(self.site.template, self.site_values())
        self.conf_path.write_text(self.config_text(site_text))

    def start(self) -> None:
        """Start the server; retry with another port if the free one was taken meanwhile."""
        for _attempt in range(3):
            self.port = free_port()
            self.write_config()
            if self._start_once():
                return
            if "in use" not in self.error_log_text() + self._stdio_text():
                break
        pytest.fail(f"{self.name} did not start\n{self.describe()}")

    def _start_once(self) -> bool:
        with open(self.stdio_log, "wb") as stdio:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=stdio,
                stderr=stdio,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if connectable(socket.AF_INET, ("127.0.0.1", self.port)):
                return True
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"{self.name} did not listen within {START_TIMEOUT}s\n{self.describe()}")

    def connection(self) -> http.client.HTTPConnection:
        """A new HTTP(S) connection to the front end (never through a proxy)."""
        if self.tls is not None:
            return http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=IO_TIMEOUT, context=self.tls.client_context()
            )
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=IO_TIMEOUT)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> HTTPResult:
        """One HTTP/1.1 request with :mod:`http.client`."""
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            return HTTPResult(response.status, response.reason, response.headers, data)
        finally:
            conn.close()

    def raw_request(self, data: bytes) -> bytes:
        """Send ``data`` as is and read the answer until the server closes (bounded)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT) as plain:
            sock = plain
            if self.tls is not None:
                sock = self.tls.client_context().wrap_socket(plain, server_hostname="127.0.0.1")
            sock.sendall(data)
            return read_to_eof(sock, IO_TIMEOUT)

    def error_log_text(self) -> str:
        try:
            return self.error_log.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _stdio_text(self) -> str:
        try:
            return self.stdio_log.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def complaints(self) -> list[str]:
        """Error-log lines reporting a problem that is not known to be benign."""
        return [
            line
            for line in self.error_log_text().splitlines()
            if self.is_complaint(line) and not any(benign in line for benign in self.benign)
        ]

    def describe(self) -> str:
        conf = self.conf_path.read_text() if self.conf_path.exists() else ""
        return (
            f"--- {self.name} error log ({self.error_log}) ---\n{self.error_log_text()}"
            f"--- {self.name} stdout/stderr ---\n{self._stdio_text()}"
            f"--- {self.conf_path.name} ---\n{conf}"
        )

    def stop(self) -> None:
        """The graceful stop signal, then SIGKILL after a bounded wait."""
        if self.proc is not None:
            stop_process(self.proc, self.stop_signal)


class Deployment:
    """scgiwsgi behind a front end, as one unit; :meth:`stop` stops both."""

    def __init__(self, scgi: ScgiServer, front: FrontEnd) -> None:
        self.scgi = scgi
        self.front = front

    @classmethod
    def start(
        cls,
        workdir: Path,
        app: str | None,
        front_end: type[FrontEnd],
        *,
        transport: str,
        site: Site,
        script_name: str | None = None,
        scgi_args: Sequence[str] = (),
        scgi_env: Mapping[str, str] | None = None,
        tls: TLSFiles | None = None,
        https_flag: bool = False,
    ) -> Deployment:
        """Start scgiwsgi (``--script-name script_name``), then the front end."""
        front_end.find()  # skip before starting anything
        scgi = ScgiServer(
            workdir / "scgiwsgi",
            app,
            transport=transport,
            script_name=script_name,
            extra_args=scgi_args,
            env=scgi_env,
        )
        front = front_end(workdir / front_end.name, site, tls=tls, https_flag=https_flag)
        deployment = cls(scgi, front)
        try:
            scgi.start()
            front.upstream = scgi.address
            front.start()
        except BaseException:
            deployment.stop()
            raise
        return deployment

    def assert_clean_logs(self) -> None:
        """Stop the front end gracefully and assert its error log holds no complaint.

        Stopping first makes sure it finished every request (and wrote
        whatever it had to say about the upstream) before the log is read.
        """
        self.front.stop()
        complaints = self.front.complaints()
        assert not complaints, (
            f"{self.front.name} complained in its error log:\n"
            + "\n".join(complaints)
            + "\n"
            + self.describe()
        )

    def describe(self) -> str:
        return f"{self.front.describe()}\n{self.scgi.describe()}"

    def stop(self) -> None:
        try:
            self.front.stop()
        finally:
            self.scgi.stop()


def write_app(path: Path, source: str) -> str:
    """Write a WSGI app module to ``path`` and return its scgiwsgi APP spec."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return f"{path}:app"
