"""Helpers for the legacy-launcher tests: scripts run as real child processes.

:class:`ScriptProcess` runs a Python script (a python-scgi or flup launcher)
with its stdout and stderr in a log file.  Launchers hard-code their port
(python-scgi's 4000, flup's 8040), so a test either hands the script a
listening socket the systemd way (``LISTEN_FDS=1``, fd 3, which
python-scgi's ``serve()`` honours) or runs it in a copy whose address line
was rewritten.  Every wait is bounded; :meth:`ScriptProcess.stop` always
reaps the process (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import exchange

from scgiwsgi.protocol import encode_request

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

# Put the socket at fd 3, claim it for this pid, then become the script:
# exec keeps the pid, so LISTEN_PID is right, as systemd would set it.
_SYSTEMD_LAUNCHER = """\
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def child_env() -> dict[str, str]:
    """The environment of a child that must import this checkout of scgiwsgi."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    return env


def listening_socket(transport: str, directory: Path) -> tuple[socket.socket, str]:
    """A listening socket on loopback TCP (port 0) or a unix socket, and its address."""
    if transport == "tcp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = str(directory / "s.sock")
        sock.bind(path)
        address = f"unix:{path}"
    sock.listen(64)
    return sock, address


class ScriptProcess:
    """``python SCRIPT ARGS`` as a child process, logging to ``log_path``."""

    def __init__(self, script: Path | str, log_path: Path, args: Sequence[str] = ()) -> None:
        self.script = str(script)
        self.args = list(args)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, inherit: socket.socket | None = None, cwd: Path = REPO_ROOT) -> None:
        """Start the script; with ``inherit``, pass that socket the systemd way."""
        command = [sys.executable, self.script, *self.args]
        pass_fds: tuple[int, ...] = ()
        if inherit is not None:
            fd = inherit.fileno()
            command = [sys.executable, "-c", _SYSTEMD_LAUNCHER, str(fd), *command[1:]]
            pass_fds = (fd,)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=cwd,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=pass_fds,
            )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """Wait (bounded) until the log matches ``pattern``; fail if the script exits first."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log_text())
            if match is not None:
                return match
            if self.proc.poll() is not None:
                pytest.fail(
                    f"{self.script} exited with {self.proc.returncode} before logging "
                    f"{pattern!r}\n{self.log_text()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{self.script} did not log {pattern!r} in {timeout}s\n{self.log_text()}"
                )
            time.sleep(0.02)

    def wait_started(self) -> str:
        """Wait for scgiwsgi's startup line; return the first address it names."""
        match = self.wait_for_log(r" serving .+? on (?P<addresses>.+?) with the ")
        return match.group("addresses").split(", ")[0]

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait (bounded) for the script to exit and return its status."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.script} did not exit within {timeout}s\n{self.log_text()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)

    def stop(self) -> int | None:
        """SIGTERM, a bounded wait, then SIGKILL; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


def raw_request(
    address: str,
    path: str = "/",
    *,
    method: str = "GET",
    body: bytes = b"",
    extra: dict[str, str] | None = None,
) -> bytes:
    """One nginx-like SCGI request (never half-closed); the raw answer, to EOF."""
    uri_path, _, query = path.partition("?")
    headers = {
        "REQUEST_METHOD": method,
        "REQUEST_URI": path,
        "QUERY_STRING": query,
        "DOCUMENT_URI": uri_path,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        **(extra or {}),
    }
    data, reset = exchange(address, encode_request(headers, body))
    assert not reset, f"connection reset; got {data[:300]!r}"
    return data


def split_response(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    """(status line value, headers, body) of a raw answer that starts with ``Status:``."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no CRLF blank line in {raw[:300]!r}"
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("Status: "), f"first line is not a Status line: {raw[:300]!r}"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0][len("Status: ") :], headers, body
