"""The fork backend over real processes: ``python -m scgiwsgi APP --fork ...``.

Every test starts the server as a child process (cwd the repository, its
error log in a file), talks SCGI to it over loopback TCP or a unix socket,
and looks at its workers through ``/proc``.  Every wait is bounded in time,
every load in time and count.

No process of the server may outlive a test: each server gets a unique token
in its environment, which its workers inherit whoever their parent is by
then.  At teardown the ``prefork`` fixture stops every arbiter still running
(SIGINT, exit 0 expected), then looks for any live process carrying the
token, kills it and fails the test.

The application is ``tests/prefork_apps.py``; tests that rewrite code or need
a broken import write small modules into ``tmp_path``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_support import ServerProcess, StartServer, is_alive, server_processes, wait_for

from scgiwsgi.client import ResponseFormatError, SCGIResponse, request

APP_FILE = Path(__file__).resolve().parent / "prefork_apps.py"
APP_SPEC = "tests/prefork_apps.py:app"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
REQUEST_TIMEOUT = 5.0
FAILED = (OSError, ResponseFormatError)
"""What a request that gets no complete response raises."""


def _line_of(marker: str) -> int:
    lines = APP_FILE.read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if marker in line)


HANG_LINE = _line_of("# the line the timeout stack dump must name")


# -- fork servers -------------------------------------------------------------------


@pytest.fixture
def prefork(tmp_path: Path) -> Iterator[StartServer]:
    """Start fork servers; at teardown stop them and fail if any process is left.

    ``prefork(*args, app=APP_SPEC, transport="tcp", wait=True)`` runs
    ``python -m scgiwsgi APP --fork ARGS`` through
    :func:`reliability_support.server_processes`: it binds ``127.0.0.1:0`` or
    a unix socket in ``tmp_path`` unless ``args`` has a ``--bind``, and waits
    for the startup line (of the fork backend) unless ``wait`` is false.
    ``prefork.app_dir`` is on the servers' ``PYTHONPATH``.
    """
    app_dir = tmp_path / "apps"
    app_dir.mkdir()
    with server_processes(
        tmp_path,
        pythonpath=[app_dir],
        markers_var="PREFORK_MARKERS",
        start_timeout=START_TIMEOUT,
        stop_timeout=STOP_TIMEOUT,
        request_timeout=REQUEST_TIMEOUT,
    ) as start_server:

        def start(
            *args: str, app: str = APP_SPEC, transport: str = "tcp", wait: bool = True
        ) -> ServerProcess:
            server = start_server("--fork", *args, app=app, transport=transport, wait=wait)
            if wait:
                assert server.backend.startswith("fork "), f"not the fork backend:\n{server.log}"
            return server

        start.app_dir = app_dir  # type: ignore[attr-defined]
        yield start


def write_app(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


# -- load from client threads -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    body: bytes | None
    error: str | None


class Load:
    """``threads`` clients sending requests back to back for ``seconds``."""

    def __init__(
        self,
        address: str,
        *,
        threads: int = 4,
        seconds: float = 3.0,
        path: str = "/",
        query: str = "",
        max_per_thread: int = 2000,
    ) -> None:
        self.address = address
        self.seconds = seconds
        self.path = path
        self.query = query
        self.max_per_thread = max_per_thread
        self.outcomes: list[Outcome] = []
        self._threads = [
            threading.Thread(target=self._run, name=f"load-{n}", daemon=True)
            for n in range(threads)
        ]
        self._deadline = 0.0

    def start(self) -> Load:
        self._deadline = time.monotonic() + self.seconds
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Outcome]:
        """End the load now (requests in flight finish) and return the outcomes."""
        self._deadline = time.monotonic()
        return self.join()

    def join(self) -> list[Outcome]:
        for thread in self._threads:
            thread.join(timeout=self.seconds + REQUEST_TIMEOUT + 5.0)
            assert not thread.is_alive(), "a client thread is stuck"
        return sorted(self.outcomes, key=lambda outcome: outcome.started)

    def _run(self) -> None:
        for _ in range(self.max_per_thread):
            started = time.monotonic()
            if started >= self._deadline:
                return
            body, error = None, None
            try:
                response = request(
                    self.address, path=self.path, query=self.query, timeout=REQUEST_TIMEOUT
                )
            except FAILED as exc:
                error = repr(exc)
            else:
                body = response.body
                if response.status != 200:
                    error = f"status {response.status}: {response.body[:200]!r}"
            self.outcomes.append(Outcome(started, time.monotonic(), body, error))


def _failures(outcomes: list[Outcome]) -> list[Outcome]:
    return [outcome for outcome in outcomes if outcome.error is not None]


# -- crashes ------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_kill_9_of_a_worker_fails_at_most_its_request_and_is_replaced_within_1s(
    prefork: StartServer, transport: str
) -> None:
    server = prefork("--workers", "2", "--graceful-timeout", "2", transport=transport)
    before = server.wait_workers(2)
    load = Load(server.address, threads=4, seconds=3.0, query="0.01").start()
    time.sleep(1.0)
    victim = min(before)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    outcomes = load.join()

    failures = _failures(outcomes)
    assert len(failures) <= 1, failures
    for failure in failures:  # only the request the victim held may fail
        assert failure.started <= killed_at <= failure.ended, failure
    served_by_new = [o.ended for o in outcomes if o.body is not None and int(o.body) not in before]
    assert served_by_new, "no request was served by a new worker"
    respawn = min(served_by_new) - killed_at
    print(
        f"\n[{transport}] kill -9 -> new worker served after {respawn * 1000:.0f} ms; "
        f"{len(outcomes)} requests, {len(failures)} failed"
    )
    assert respawn < 1.0
    assert len(outcomes) > 100, "the load was too light to prove anything"
    assert not any(
        o.body is not None and int(o.body) == victim and o.started > killed_at for o in outcomes
    )
    server.wait_log(rf"worker {victim} was killed by signal SIGKILL; replacing it")
    workers = server.wait_workers(2)
    assert victim not in workers
    assert len(workers & before) == 1


def test_worker_dying_by_exit_status_or_signal_is_logged_and_replaced(
    prefork: StartServer,
) -> None:
    server = prefork("--workers", "2")
    before = server.wait_workers(2)

    with pytest.raises(FAILED):
        server.request("/exit")
    match = server.wait_log(r"worker (\d+) exited with status 3; replacing it")
    exited = int(match.group(1))
    assert exited in before
    middle = server.wait_workers(2)
    assert exited not in middle

    with pytest.raises(FAILED):
        server.request("/segv")
    match = server.wait_log(r"worker (\d+) was killed by signal SIGSEGV; replacing it")
    crashed = int(match.group(1))
    assert crashed in middle
    after = server.wait_workers(2)
    assert crashed not in after
    assert int(server.request().body) in after


# -- reload ---------------------------------------------------------------------------

VERSIONED_APP = """
import os
import time

VERSION = {version!r}

def app(environ, start_response):
    time.sleep(float(environ.get("QUERY_STRING") or 0))
    body = f"{{VERSION}} {{os.getpid()}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.mark.parametrize(("transport", "preload"), [("tcp", False), ("unix", False), ("tcp", True)])
def test_hup_under_load_loses_no_request_and_serves_the_new_code(
    prefork: StartServer, transport: str, preload: bool
) -> None:
    app_dir: Path = prefork.app_dir  # type: ignore[attr-defined]
    write_app(app_dir, "versioned", VERSIONED_APP.format(version="v1"))
    server = prefork(
        "--workers",
        "2",
        "--graceful-timeout",
        "3",
        *(["--preload"] if preload else []),
        app="versioned:app",
        transport=transport,
    )
    assert wait_for(lambda: len(server.workers()) == 2, 10.0)
    old = server.workers()
    load = Load(server.address, threads=4, seconds=15.0, query="0.005").start()
    time.sleep(1.0)
    write_app(app_dir, "versioned", VERSIONED_APP.format(version="v2-reloaded"))
    hup_at = time.monotonic()
    server.signal(signal.SIGHUP)
    # With --preload the arbiter checks the new code in a subprocess, then
    # re-executes: two interpreter starts, seconds on a loaded box.
    reloaded = wait_for(lambda: not (server.workers() & old), 10.0)
    reloaded_at = time.monotonic()
    time.sleep(1.0)  # the load goes on with the new workers only
    outcomes = load.stop()

    failures = _failures(outcomes)
    versions = [(o, o.body.split()[0]) for o in outcomes if o.body is not None]
    last_v1 = max((o.ended for o, v in versions if v == b"v1"), default=hup_at)
    print(
        f"\n[{transport}{', --preload' if preload else ''}] HUP under load: "
        f"{len(outcomes)} requests, {len(failures)} failed; "
        f"last old-code response {(last_v1 - hup_at) * 1000:.0f} ms after HUP"
    )
    assert reloaded, f"old workers still run 10s after HUP:\n{server.log}"
    assert failures == []
    assert len(outcomes) > 100
    assert {v for _, v in versions} == {b"v1", b"v2-reloaded"}
    assert all(v == b"v1" for o, v in versions if o.ended < hup_at)
    # Once the old workers are gone, no request gets the old code.
    assert all(v == b"v2-reloaded" for o, v in versions if o.started > reloaded_at)
    if not preload:
        assert last_v1 - hup_at < 1.0
    after_switch = [o for o, v in versions if o.started > last_v1]
    assert len(after_switch) > 50, "too few requests after the reload"
    assert outcomes[-1].body is not None and outcomes[-1].body.startswith(b"v2-reloaded ")
    assert len(server.workers()) == 2
    assert "received SIGHUP" in server.log


BROKEN_IN_EVERY_WORKER = """
import signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
time.sleep(0.3)
raise RuntimeError("broken-at-import-" + "7f3a")
"""


def test_hup_to_code_that_cannot_be_imported_keeps_the_old_workers(
    prefork: StartServer,
) -> None:
    app_dir: Path = prefork.app_dir  # type: ignore[attr-defined]
    write_app(app_dir, "versioned", VERSIONED_APP.format(version="v1"))
    server = prefork("--workers", "2", app="versioned:app")
    assert wait_for(lambda: len(server.workers()) == 2, 10.0)
    old = server.workers()
    assert server.request().body.startswith(b"v1 ")
    # Every new worker fails: none is stopped first by the arbiter's SIGINT.
    write_app(app_dir, "versioned", BROKEN_IN_EVERY_WORKER)
    server.signal(signal.SIGHUP)
    server.wait_log("reload failed")
    time.sleep(1.5)  # the arbiter's loop turns at least once more
    assert server.proc.poll() is None, server.log
    assert server.workers() == old
    for _ in range(4):
        assert server.request().body.startswith(b"v1 ")
    # A later reload with good code still works.
    write_app(app_dir, "versioned", VERSIONED_APP.format(version="v3"))
    server.signal(signal.SIGHUP)
    assert wait_for(lambda: not (server.workers() & old), 5.0), server.log
    assert server.request().body.startswith(b"v3 ")


# -- stopping -------------------------------------------------------------------------


@pytest.mark.parametrize(("transport", "threads"), [("tcp", "1"), ("unix", "1"), ("tcp", "3")])
def test_term_lets_a_2s_request_finish_with_its_full_body_then_exits_0(
    prefork: StartServer, transport: str, threads: str
) -> None:
    server = prefork(
        "--workers", "2", "--threads", threads, "--graceful-timeout", "10", transport=transport
    )
    server.wait_workers(2)
    result: dict[str, object] = {}

    def slow() -> None:
        try:
            result["response"] = server.request("/sleep", "2", timeout=10.0)
        except FAILED as exc:
            result["error"] = exc

    client = threading.Thread(target=slow, daemon=True)
    client.start()
    assert wait_for(lambda: any(server.markers.glob("sleeping.*")), 5.0)
    term_at = time.monotonic()
    server.signal(signal.SIGTERM)

    # Stopping: a new connection is not served (refused, or reset unanswered).
    time.sleep(0.3)
    with pytest.raises(FAILED):
        server.request(timeout=5.0)
    refused_after = time.monotonic() - term_at

    client.join(timeout=10.0)
    assert not client.is_alive()
    assert "error" not in result, result
    response = result["response"]
    assert isinstance(response, SCGIResponse)
    assert response.status == 200
    assert response.body == bytes(index % 251 for index in range(256 * 1024))
    status = server.wait_exit(5.0)
    stopped_after = time.monotonic() - term_at
    print(
        f"\n[{transport}, {threads} thread(s)] TERM: a new connection failed after "
        f"{refused_after:.2f}s; exit {status} after {stopped_after:.2f}s"
    )
    assert status == 0
    assert 1.0 < stopped_after < 8.0  # after the request, well before the 10s grace
    assert refused_after < 1.0, "a new connection during the drain hung until the drain ended"
    with pytest.raises(OSError):
        server.request(timeout=2.0)
    assert "received SIGTERM: stopping gracefully" in server.log


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGQUIT])
def test_int_and_quit_stop_quickly_with_exit_0_and_remove_the_pid_file(
    prefork: StartServer, tmp_path: Path, signum: int
) -> None:
    pid_file = tmp_path / "server.pid"
    server = prefork("--workers", "2", "--graceful-timeout", "20", "--pid", str(pid_file))
    workers = server.wait_workers(2)
    assert pid_file.read_text().strip() == str(server.pid)
    slow_failed = threading.Event()

    def slow() -> None:
        try:
            server.request("/sleep", "15", timeout=20.0)
        except FAILED:
            slow_failed.set()

    client = threading.Thread(target=slow, daemon=True)
    client.start()
    assert wait_for(lambda: any(server.markers.glob("sleeping.*")), 5.0)
    sent_at = time.monotonic()
    server.signal(signum)
    status = server.wait_exit(STOP_TIMEOUT)
    took = time.monotonic() - sent_at
    assert status == 0
    assert took < 3.0, f"{took:.2f}s: not a quick stop"
    client.join(timeout=5.0)
    assert slow_failed.is_set(), "the request in flight was not cut off"
    assert not pid_file.exists()
    assert not any(is_alive(pid) for pid in workers)
    assert f"received {signal.Signals(signum).name}: stopping now" in server.log


@pytest.mark.parametrize("threads", ["1", "3"])
def test_workers_exit_when_the_arbiter_is_killed(prefork: StartServer, threads: str) -> None:
    server = prefork("--workers", "3", "--threads", threads)
    workers = server.wait_workers(3)
    killed_at = time.monotonic()
    server.proc.kill()
    server.proc.wait(timeout=STOP_TIMEOUT)
    gone = wait_for(lambda: not any(is_alive(pid) for pid in workers), 3.0)
    took = time.monotonic() - killed_at
    assert gone, f"workers still alive {took:.1f}s after the arbiter died"
    assert took < 2.0
    assert server.log.count("the arbiter is gone; stopping") == 3


# -- timeout ---------------------------------------------------------------------------


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_request_past_the_timeout_is_logged_with_its_stack_and_its_worker_replaced(
    prefork: StartServer, threads: str
) -> None:
    server = prefork("--workers", "2", "--threads", threads, "--timeout", "1")
    before = server.wait_workers(2)
    started = time.monotonic()
    with pytest.raises(FAILED):
        server.request("/hang", "6", timeout=10.0)
    took = time.monotonic() - started
    assert took < 4.5, f"the hung request was not cut off ({took:.1f}s)"

    match = server.wait_log(r"worker (\d+) killed after a request ran past the timeout")
    victim = int(match.group(1))
    assert victim in before
    log = server.log
    assert f"worker {victim}: request GET /hang?6 has run" in log
    where = rf'File "[^"]*prefork_apps\.py", line {HANG_LINE}, in hang_here\n'
    assert re.search(where, log), log
    assert "time.sleep(0.05)" in log
    after = server.wait_workers(2)
    assert victim not in after
    for _ in range(4):
        assert server.request().status == 200


# -- capacity ----------------------------------------------------------------------------


def test_six_slow_requests_on_six_workers_run_in_parallel(prefork: StartServer) -> None:
    server = prefork("--workers", "6")
    workers = server.wait_workers(6)
    barrier = threading.Barrier(6)
    bodies: list[bytes] = []

    def slow() -> None:
        barrier.wait(timeout=5.0)
        bodies.append(server.request("/", "1", timeout=10.0).body)

    clients = [threading.Thread(target=slow, daemon=True) for _ in range(6)]
    started = time.monotonic()
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=10.0)
    took = time.monotonic() - started
    print(f"\nsix 1s requests on six workers: {took:.2f}s")
    assert len(bodies) == 6
    assert {int(body) for body in bodies} == workers
    assert took < 1.8


@pytest.mark.parametrize(("threads", "multithread"), [("1", False), ("3", True)])
def test_environ_says_multiprocess_and_multithread_when_threaded(
    prefork: StartServer, threads: str, multithread: bool
) -> None:
    server = prefork("--workers", "2", "--threads", threads)
    workers = server.wait_workers(2)
    report = json.loads(server.request("/env").body)
    assert report["pid"] in workers
    assert report["multiprocess"] is True
    assert report["multithread"] is multithread


def test_workers_leave_their_startup_objects_out_of_garbage_collection(
    prefork: StartServer,
) -> None:
    server = prefork("--workers", "1")
    server.wait_workers(1)
    report = json.loads(server.request("/env").body)
    # The app, its modules and the server's own objects: thousands.
    assert report["frozen_objects"] > 1000


def _wakeups(pid: int) -> int:
    """How many times the process went to sleep and was woken (voluntary switches)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_connection_wakes_one_idle_worker_not_all_of_them(prefork: StartServer) -> None:
    # Six idle workers wait on one listening socket.  The worker that serves
    # a connection wakes about twice (for the connection, then its header);
    # without EPOLLEXCLUSIVE all six wake for each one (about 7 a request).
    requests, workers = 100, 6
    server = prefork("--workers", str(workers))
    pids = server.wait_workers(workers)
    server.request()  # every worker is now idle in its wait
    before = {pid: _wakeups(pid) for pid in pids}
    for _ in range(requests):
        assert server.request().status == 200
    woken = sum(_wakeups(pid) - count for pid, count in before.items())
    print(f"\n{requests} requests, {workers} idle workers: {woken} wake-ups")
    assert woken < 4 * requests


@pytest.mark.parametrize("jitter", [0, 5])
def test_max_requests_recycles_workers_without_losing_a_request(
    prefork: StartServer, jitter: int
) -> None:
    server = prefork("--workers", "2", "--max-requests", "10", "--max-requests-jitter", str(jitter))
    first = server.wait_workers(2)
    served: collections.Counter[int] = collections.Counter()
    for _ in range(50):
        response = server.request(timeout=10.0)
        assert response.status == 200
        served[int(response.body)] += 1
    assert set(served) - first, "no worker was replaced"
    assert max(served.values()) <= 10 + jitter, served
    assert len(served) >= 50 // (10 + jitter), served
    assert "requests; retiring" in server.log
    assert "replacing it" not in server.log  # retirements are not crashes


def test_ttin_and_ttou_change_the_worker_count(prefork: StartServer) -> None:
    server = prefork("--workers", "2", "--graceful-timeout", "2")
    server.wait_workers(2)
    server.signal(signal.SIGTTIN)
    server.wait_workers(3)
    server.signal(signal.SIGTTIN)
    grown = server.wait_workers(4)
    for _ in range(4):
        server.signal(signal.SIGTTOU)
        time.sleep(0.05)
    shrunk = server.wait_workers(1)
    assert shrunk <= grown
    assert int(server.request().body) in shrunk
    assert "received SIGTTOU: 1 worker(s) wanted" in server.log


SLOW_IMPORT_APP = """
import os, pathlib, time

time.sleep(1.0)
pathlib.Path(os.environ["PREFORK_MARKERS"], f"imported.{os.getpid()}").touch()

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
"""


def test_ttou_while_a_new_worker_imports_the_app_retires_it_once_it_is_up(
    prefork: StartServer,
) -> None:
    write_app(prefork.app_dir, "slowimport", SLOW_IMPORT_APP)  # type: ignore[attr-defined]
    server = prefork("--workers", "1", "--graceful-timeout", "30", app="slowimport:app")
    first = server.wait_workers(1)
    server.signal(signal.SIGTTIN)
    assert wait_for(lambda: len(server.workers()) == 2, 5.0)
    booting = server.workers() - first
    assert not booting & server.imported(), "the new worker imported too fast for this test"
    server.signal(signal.SIGTTOU)
    sent_at = time.monotonic()
    # It gets TERM while importing; it must stop once up, not 30s later by SIGKILL.
    assert wait_for(lambda: server.workers() == first, 5.0), server.log
    took = time.monotonic() - sent_at
    assert took < 3.0
    assert "killing them" not in server.log
    assert server.request().body == b"ok"


def test_usr1_reopens_the_access_log(prefork: StartServer, tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    server = prefork("--workers", "2", "--access-log", str(access))
    server.wait_workers(2)
    server.request("/", "", headers={"User-Agent": "before-rotation"})
    assert wait_for(lambda: access.exists() and "before-rotation" in access.read_text(), 5.0)
    rotated = tmp_path / "access.log.1"
    access.rename(rotated)
    server.signal(signal.SIGUSR1)
    server.wait_log("received SIGUSR1")
    time.sleep(0.3)  # both workers get the signal from the arbiter
    for number in range(6):
        server.request("/", "", headers={"User-Agent": f"after-rotation-{number}"})
    assert wait_for(lambda: access.exists() and access.read_text().count("after-rot") == 6, 5.0)
    assert "after-rotation" not in rotated.read_text()
    assert rotated.read_text().count("before-rotation") == 1


# -- an application that cannot be imported -------------------------------------------

BROKEN_APP = """
raise RuntimeError("broken-at-import-" + "7f3a")
"""


@pytest.mark.parametrize("preload", [True, False])
def test_an_app_that_cannot_be_imported_stops_the_server_with_exit_4(
    prefork: StartServer, preload: bool
) -> None:
    write_app(prefork.app_dir, "broken", BROKEN_APP)  # type: ignore[attr-defined]
    args = ["--workers", "3", *(["--preload"] if preload else [])]
    started = time.monotonic()
    server = prefork(*args, app="broken:app", wait=False)
    status = server.wait_exit(10.0)
    took = time.monotonic() - started
    log = server.log
    assert status == 4, log
    assert took < 5.0
    assert "RuntimeError: broken-at-import-7f3a" in log
    if preload:
        assert "serving" not in log  # nothing was forked
    else:
        failed = set(re.findall(r"\[(\d+)\] ERROR scgiwsgi.error: worker \1: ", log))
        assert 1 <= len(failed) <= 3, log  # one try per worker at most, no respawn loop
        assert log.count("cannot import the application: stopping the server") == 1


def test_hup_with_preload_to_code_that_cannot_be_imported_keeps_serving(
    prefork: StartServer,
) -> None:
    app_dir: Path = prefork.app_dir  # type: ignore[attr-defined]
    write_app(app_dir, "versioned", VERSIONED_APP.format(version="v1"))
    server = prefork("--workers", "2", "--preload", app="versioned:app")
    assert wait_for(lambda: len(server.workers()) == 2, 10.0)
    assert server.request().body.startswith(b"v1 ")
    write_app(app_dir, "versioned", BROKEN_APP)
    server.signal(signal.SIGHUP)
    server.wait_log("re-executing the arbiter")
    time.sleep(1.5)
    assert server.proc.poll() is None, server.log
    for _ in range(4):
        assert server.request().body.startswith(b"v1 ")


def test_a_stop_asked_during_a_preload_reload_is_not_lost(prefork: StartServer) -> None:
    write_app(prefork.app_dir, "slowimport", SLOW_IMPORT_APP)  # type: ignore[attr-defined]
    server = prefork("--workers", "2", "--preload", app="slowimport:app")
    assert wait_for(lambda: len(server.workers()) == 2, 10.0)
    server.signal(signal.SIGHUP)
    server.wait_log("re-executing the arbiter")
    time.sleep(0.2)  # the new code (one second to import) is being checked
    server.signal(signal.SIGINT)
    assert server.wait_exit(8.0) == 0
    assert "received SIGINT: stopping now" in server.log
