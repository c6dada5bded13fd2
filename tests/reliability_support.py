"""Servers as child processes, and fast raw clients, for the reliability suites.

The ``prefork`` fixture of ``test_prefork.py`` starts its servers here too.

:func:`server_processes` is a context manager yielding ``start(*args)``,
which runs ``python -m scgiwsgi APP ARGS`` from the repository root with its
error log in a file and waits for the startup line.  Each child carries a
unique token in its environment, inherited by every worker it forks.  On
exit the context stops each server still running (SIGINT, exit 0 expected),
then kills any process still carrying the token and fails the test: no
process outlives a test.

:func:`raw_request` is a minimal SCGI exchange for load loops (a
pre-encoded request, read to EOF, every wait bounded), over the raw-wire
helpers of ``conftest``; :func:`run_clients` runs a function in N threads,
each bounded in count and time.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from conftest import connect, recv_all, wait_for

from scgiwsgi.client import SCGIResponse, request

REPO_ROOT = Path(__file__).resolve().parent.parent
APPS = "tests/reliability_apps.py"
TOKEN_VAR = "SCGIWSGI_RELIABILITY_TOKEN"
MARKERS_VAR = "RELIABILITY_MARKERS"
"""A directory where ``reliability_apps`` touches ``imported.<pid>`` when imported."""
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
REQUEST_TIMEOUT = 10.0
_STARTUP_RE = re.compile(
    r"serving \S+ on (?P<addresses>.+) with the (?P<backend>.+?) backend, pid (?P<pid>\d+)"
)


# -- /proc ------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """``(state, ppid)`` of ``pid``, None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def is_alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def children(ppid: int) -> set[int]:
    """Live children of ``ppid``."""
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None and stat[1] == ppid and stat[0] != "Z":
                found.add(int(name))
    return found


def rss_kib(pid: int) -> int:
    """The resident set size of ``pid`` in KiB (``VmRSS`` of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def _tagged(token: str) -> dict[int, str]:
    needle = f"{TOKEN_VAR}={token}\0".encode()
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes()
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in environ and is_alive(int(name)):
            found[int(name)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


# -- a server process ----------------------------------------------------------------


class ServerProcess:
    """A running ``python -m scgiwsgi ...``, its addresses and its error log."""

    def __init__(
        self,
        argv: list[str],
        workdir: Path,
        env: dict[str, str],
        *,
        markers_var: str = MARKERS_VAR,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.argv = argv
        self.workdir = workdir
        self.request_timeout = request_timeout
        self.log_path = workdir / "error.log"
        self.markers = workdir / "markers"
        self.markers.mkdir()
        env = {**env, markers_var: str(self.markers)}
        with open(self.log_path, "wb") as log, open(workdir / "stdout.log", "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scgiwsgi", *argv],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                preexec_fn=_no_core_files,
            )
        self.pid = self.proc.pid
        self.addresses: list[str] = []
        self.backend = ""

    @property
    def address(self) -> str:
        return self.addresses[0]

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout: float = START_TIMEOUT) -> None:
        """Wait for the startup line; read the bound addresses and the backend from it."""

        def started() -> bool:
            return _STARTUP_RE.search(self.log) is not None or self.proc.poll() is not None

        wait_for(started, timeout)
        match = _STARTUP_RE.search(self.log)
        if match is None:
            state = "still running" if self.proc.poll() is None else f"exit {self.proc.returncode}"
            pytest.fail(f"no startup line within {timeout}s ({state}):\n{self.log}")
        assert int(match.group("pid")) == self.pid, "the startup line is not our process's"
        self.addresses = [part.split(" (")[0] for part in match.group("addresses").split(", ")]
        self.backend = match.group("backend")

    def workers(self) -> set[int]:
        return children(self.pid)

    def imported(self) -> set[int]:
        """Pids that imported the app (each worker, without ``--preload``)."""
        return {int(path.suffix[1:]) for path in self.markers.glob("imported.*")}

    def wait_workers(self, count: int, timeout: float = 10.0) -> set[int]:
        """Wait until exactly ``count`` workers run and each imported the app."""

        def ready() -> bool:
            workers = self.workers()
            return len(workers) == count and workers <= self.imported()

        if not wait_for(ready, timeout):
            pytest.fail(
                f"wanted {count} ready workers, have {sorted(self.workers())} "
                f"(imported: {sorted(self.imported())}):\n{self.log}"
            )
        return self.workers()

    def request(self, path: str = "/", query: str = "", **kwargs: object) -> SCGIResponse:
        kwargs.setdefault("timeout", self.request_timeout)
        return request(self.address, path=path, query=query, **kwargs)  # type: ignore[arg-type]

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server still runs {timeout}s later:\n{self.log}")

    def wait_log(self, pattern: str, timeout: float = 5.0) -> re.Match[str]:
        if not wait_for(lambda: re.search(pattern, self.log) is not None, timeout):
            pytest.fail(f"no {pattern!r} in the log within {timeout}s:\n{self.log}")
        match = re.search(pattern, self.log)
        assert match is not None
        return match


def _no_core_files() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


StartServer = Callable[..., ServerProcess]


@contextlib.contextmanager
def server_processes(
    tmp_path: Path,
    *,
    pythonpath: Sequence[Path] = (),
    markers_var: str = MARKERS_VAR,
    start_timeout: float = START_TIMEOUT,
    stop_timeout: float = STOP_TIMEOUT,
    request_timeout: float = REQUEST_TIMEOUT,
) -> Iterator[StartServer]:
    """Yield ``start(*args, app=..., transport="tcp", wait=True)``; clean up after.

    ``args`` are command-line options; ``--bind`` is added (``127.0.0.1:0``,
    a unix socket, or ``both``) unless ``args`` has one.  ``pythonpath``
    goes after the repository on the children's ``PYTHONPATH``; the app
    finds its markers directory in ``markers_var``.  At the end each server
    still running gets SIGINT and ``stop_timeout`` seconds to exit 0.
    """
    token = uuid.uuid4().hex
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *map(str, pythonpath)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # rewritten modules must not come back from a .pyc
    env[TOKEN_VAR] = token
    servers: list[ServerProcess] = []

    def start(
        *args: str, app: str = f"{APPS}:app", transport: str = "tcp", wait: bool = True
    ) -> ServerProcess:
        workdir = tmp_path / f"server{len(servers)}"
        workdir.mkdir()
        argv = [app, *args]
        if "--bind" not in args:
            binds = {
                "tcp": ["127.0.0.1:0"],
                "unix": [f"unix:{workdir / 's.sock'}"],
                "both": ["127.0.0.1:0", f"unix:{workdir / 's.sock'}"],
            }[transport]
            for bind in binds:
                argv += ["--bind", bind]
        server = ServerProcess(
            argv, workdir, env, markers_var=markers_var, request_timeout=request_timeout
        )
        servers.append(server)
        if wait:
            server.wait_started(start_timeout)
        return server

    try:
        yield start
    finally:
        _stop_all(servers, token, stop_timeout)


def _stop_all(servers: list[ServerProcess], token: str, stop_timeout: float) -> None:
    problems = []
    for server in servers:
        if server.proc.poll() is None:
            server.signal(signal.SIGINT)
            try:
                status = server.proc.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(timeout=stop_timeout)
                problems.append(f"server {server.pid} ignored SIGINT for {stop_timeout}s")
            else:
                if status != 0:
                    problems.append(f"server {server.pid} exited with {status} after SIGINT")
    left = _tagged(token)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if left:
        problems.append(f"processes left behind: {left}")
    if problems:
        logs = "\n".join(f"--- {server.argv}\n{server.log[-4000:]}" for server in servers)
        pytest.fail("; ".join(problems) + "\n" + logs)


# -- raw clients ---------------------------------------------------------------------


def raw_request(address: str, data: bytes, timeout: float = REQUEST_TIMEOUT) -> bytes:
    """Send ``data`` without half-closing, return everything read until EOF.

    Raises OSError (a reset included) or TimeoutError past ``timeout``.
    """
    with connect(address, timeout) as sock:
        sock.sendall(data)
        response, reset = recv_all(sock, timeout)
    if reset:
        raise ConnectionResetError(f"reset after {len(response)} bytes")
    return response


def run_clients(count: int, target: Callable[[int], None], timeout: float) -> list[BaseException]:
    """Run ``target(index)`` in ``count`` threads; return what they raised.

    Fails the test when a thread is still running ``timeout`` seconds later
    (each target must bound its own work; daemon threads die with pytest).
    """
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:  # collected and reported by the caller
            with lock:
                errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(index,), name=f"client-{index}", daemon=True)
        for index in range(count)
    ]
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
    stuck = [thread.name for thread in threads if thread.is_alive()]
    if stuck:
        pytest.fail(f"{len(stuck)} client thread(s) still running after {timeout}s: {stuck[:5]}")
    return errors
