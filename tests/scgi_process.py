"""Helpers for tests that run ``python -m scgiwsgi`` (and friends) as real processes.

Each process starts in a session of its own, so teardown can end it and every
process it forked (prefork workers, the ``--http`` front) by process group.
Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
STARTUP_RE = re.compile(
    r"scgiwsgi \S+ serving (?P<app>.+) on (?P<addresses>.+) with the .+ backend"
)
HTTP_FRONT_RE = re.compile(r"development HTTP front on http://(?P<address>\S+)/")

# The app of these tests: reports its environ (strings only), a digest of the
# body, and what the process environment holds; /status/NNN answers NNN.
ECHO_APP = """
import hashlib, json, os, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/status/"):
        code = path.rsplit("/", 1)[1]
        body = ("status %s body" % code).encode()
        headers = [("Content-Type", "text/plain"), ("X-Status", code)]
        if code not in ("204", "304"):
            headers.append(("Content-Length", str(len(body))))
        else:
            body = b""
        start_response(code + " Custom Reason", headers)
        return [body]
    if path == "/sleep":
        time.sleep(float(environ["QUERY_STRING"] or "1"))
    body = environ["wsgi.input"].read()
    report = {key: value for key, value in environ.items() if isinstance(value, str)}
    report["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
    report["body_sha256"] = hashlib.sha256(body).hexdigest()
    report["body_length"] = len(body)
    report["body_start"] = body[:200].decode("latin-1")
    report["pid"] = os.getpid()
    report["process_env"] = {
        name: os.environ.get(name) for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
    }
    out = json.dumps(report).encode()
    start_response("200 OK", [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(out))),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("X-Echo", "yes"),
    ])
    return [out]
"""


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment with the repository importable, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.pop("PYTHONWARNINGS", None)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def write_echo_app(directory: Path) -> str:
    """Write the echo app as ``echo_app.py`` in ``directory``; return its spec."""
    (directory / "echo_app.py").write_text(ECHO_APP)
    return "echo_app:app"


class Process:
    """A running command with stdout and stderr captured to files."""

    def __init__(
        self,
        argv: Sequence[str],
        workdir: Path,
        *,
        cwd: Path,
        env: Mapping[str, str],
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.argv = list(argv)
        self.stderr_path = workdir / "stderr.log"
        self.stdout_path = workdir / "stdout.log"
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                pass_fds=tuple(pass_fds),
                start_new_session=True,
            )
        self.pid = self.proc.pid

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def wait_for_log(
        self, pattern: re.Pattern[str], timeout: float = START_TIMEOUT, *, stdout: bool = False
    ) -> re.Match[str]:
        """Wait for ``pattern`` in stderr (or stdout); fail if the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.stdout if stdout else self.stderr
            match = pattern.search(text)
            if match:
                return match
            if self.proc.poll() is not None:
                pytest.fail(f"{self.argv} exited with {self.proc.returncode}:\n{text}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern.pattern!r} within {timeout}s:\n{text}")
            time.sleep(0.02)

    def wait_started(self, timeout: float = START_TIMEOUT, *, stdout: bool = False) -> list[str]:
        """Wait for the startup line; return the addresses it lists."""
        match = self.wait_for_log(STARTUP_RE, timeout, stdout=stdout)
        return match.group("addresses").split(", ")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``signum`` and return the exit status; fail if it takes too long."""
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {timeout}s after signal {signum}:\n{self.stderr}")

    def group_alive(self) -> bool:
        """Whether any process of this process's group (its session) is left."""
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def kill(self) -> None:
        """End the process and everything it forked (its process group)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


class Processes:
    """Starts processes for one test; :meth:`close` kills all of them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Process] = []

    def start(
        self,
        argv: Sequence[str],
        *,
        cwd: Path = REPO_ROOT,
        env: Mapping[str, str] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> Process:
        workdir = self.tmp_path / f"process{len(self.started)}"
        workdir.mkdir()
        process = Process(
            argv, workdir, cwd=cwd, env=env if env is not None else child_env(), pass_fds=pass_fds
        )
        self.started.append(process)
        return process

    def server(
        self, *args: str, cwd: Path = REPO_ROOT, env: Mapping[str, str] | None = None
    ) -> Process:
        """``python -m scgiwsgi ARGS``, started (its startup line seen)."""
        process = self.start([sys.executable, "-m", "scgiwsgi", *args], cwd=cwd, env=env)
        process.wait_started()
        return process

    def close(self) -> None:
        for process in self.started:
            process.kill()
