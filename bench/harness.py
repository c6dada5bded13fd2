"""Processes and measurements of one benchmark run.

:class:`Bench` owns a private directory, nginx and every peer process; as a
context manager it stops them all (SIGTERM to the process group, SIGKILL
after a bounded wait) and removes the directory, whatever happened.
:meth:`Bench.measure` runs wrk once and returns a :class:`Sample`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import nginx
from apps import FILE_ENV, HELLO
from peers import (
    BENCH_DIR,
    Peer,
    listening,
    process_group,
    tree_cpu_seconds,
    tree_rss_kib,
)

WRK_SCRIPT = BENCH_DIR / "wrk.lua"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
POST_BYTES = 64 * 1024
CHUNKED_SIZE = 1024 * 1024
FILE_SIZE = 10 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One request shape: ``path`` is the route in ``bench/apps.py``."""

    name: str
    path: str
    title: str
    post_bytes: int = 0
    single_connection: bool = False
    expect_body: bytes | None = None
    expect_length: int = 0


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("hello", "hello", "hello world", expect_body=HELLO),
    Scenario(
        "post64k", "post", "POST 64 KiB, read in full", POST_BYTES, expect_body=b"%d" % POST_BYTES
    ),
    Scenario("chunks1m", "chunks", "1 MiB response in 64 KiB chunks", expect_length=CHUNKED_SIZE),
    Scenario("file10m", "file", "10 MiB file, wsgi.file_wrapper", expect_length=FILE_SIZE),
    Scenario("latency", "hello", "hello, one connection (latency)", 0, True, expect_body=HELLO),
)
SCENARIO_BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


@dataclasses.dataclass(frozen=True)
class Sample:
    """One wrk run: counts, errors, latency and CPU seconds of both sides."""

    peer: str
    scenario: str
    round: int
    requests: int
    seconds: float
    errors: dict[str, int]
    latency_us: dict[str, float]
    server_cpu_s: float | None
    server_sys_s: float | None
    nginx_cpu_s: float
    peer_alive: bool = True
    note: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values()) + (0 if self.peer_alive else 1) + bool(self.note)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class _Process:
    peer: Peer
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    ready_s: float | None = None
    rss_kib: list[int] = dataclasses.field(default_factory=list)
    failure: str = ""


class Bench:
    """nginx plus the peers, on loopback, in a private directory."""

    def __init__(
        self, venv: Path, peers: list[Peer], scenarios: list[Scenario], source: Path | None = None
    ) -> None:
        self.venv = venv
        self.source = source
        self.scenarios = scenarios
        self.prefix = Path(tempfile.mkdtemp(prefix="scgiwsgi-bench-"))
        # nginx's workers run as "nobody" when started by root: let them in.
        self.prefix.chmod(0o755)
        self.port = _free_port()
        self.nginx: subprocess.Popen[bytes] | None = None
        self.procs = {peer.name: _Process(peer, _free_port()) for peer in peers}
        self.broken: dict[tuple[str, str], str] = {}
        self.died: list[str] = []

    # -- lifetime ------------------------------------------------------------------

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        for process in self.procs.values():
            if process.proc is not None:
                _stop(process.proc)
        if self.nginx is not None:
            _stop(self.nginx)
        shutil.rmtree(self.prefix, ignore_errors=True)

    def start(self) -> None:
        """Write the static files and the config, start nginx, then each peer."""
        static = self.prefix / "static"
        static.mkdir()
        (static / "chunks").write_bytes(b"x" * CHUNKED_SIZE)
        (static / "file").write_bytes(os.urandom(FILE_SIZE))
        for path in (static, static / "chunks", static / "file"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        upstreams = [
            (p.peer.name, p.peer.via, p.port) for p in self.procs.values() if p.peer.via != "static"
        ]
        conf = nginx.write_config(self.prefix, self.port, upstreams)
        binary = nginx.nginx_binary() or "nginx"
        self.nginx = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(self.prefix)],
            stdout=subprocess.DEVNULL,
            stderr=(self.prefix / "nginx.out").open("wb"),
            start_new_session=True,
        )
        _wait(lambda: listening(self.port), START_TIMEOUT, "nginx to listen")
        for process in self.procs.values():
            self._start_peer(process)
            if not process.failure:
                self._preflight(process.peer.name)

    def _start_peer(self, process: _Process) -> None:
        peer = process.peer
        if peer.argv is None:
            process.ready_s = 0.0
            return
        process.log = self.prefix / f"{peer.name}.log"
        env = {**os.environ, FILE_ENV: str(self.prefix / "static" / "file")}
        env.pop("PYTHONPATH", None)
        if self.source is not None:
            # An exported revision of scgiwsgi/ goes before the editable install.
            env["PYTHONPATH"] = str(self.source)
        started = time.monotonic()
        try:
            process.proc = subprocess.Popen(
                peer.argv(self.venv, process.port),
                stdout=process.log.open("wb"),
                stderr=subprocess.STDOUT,
                # Not the checkout: its scgiwsgi/ would shadow an exported --rev.
                cwd=self.prefix,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            process.failure = f"cannot start: {exc}"
            print(f"  {peer.name}: NOT AVAILABLE: {process.failure}", flush=True)
            return
        print(f"starting {peer.name} (pid {process.proc.pid}, port {process.port})", flush=True)
        if not self._wait_ready(process, started):
            _stop(process.proc)
            process.proc = None
            print(f"  {peer.name}: NOT AVAILABLE: {process.failure}", flush=True)
            return
        process.rss_kib = tree_rss_kib(process.proc.pid)

    def _wait_ready(self, process: _Process, started: float) -> bool:
        # Ready = the first hello answered 200 through nginx, timed from spawn.
        assert process.proc is not None
        deadline = started + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.proc.poll() is not None:
                process.failure = f"exited with status {process.proc.returncode}: " + _tail(
                    process.log
                )
                return False
            if listening(process.port):
                with contextlib.suppress(OSError, http.client.HTTPException):
                    status, _ = self._request(process.peer.name, "hello", b"", timeout=5)
                    if status == 200:
                        process.ready_s = time.monotonic() - started
                        return True
            time.sleep(0.01)
        process.failure = f"not answering after {START_TIMEOUT}s: " + _tail(process.log)
        return False

    # -- checks ------------------------------------------------------------------

    def _request(self, peer: str, path: str, body: bytes, timeout: float = 30) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            method = "POST" if body else "GET"
            connection.request(method, f"/p/{peer}/{path}", body=body or None)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def _preflight(self, peer: str) -> None:
        """Check every scenario's answer once; a wrong one disables the pair."""
        for scenario in self.scenarios:
            if not self.procs[peer].peer.serves(scenario.name):
                continue
            body = b"b" * scenario.post_bytes
            try:
                status, data = self._request(peer, scenario.path, body)
            except (OSError, http.client.HTTPException) as exc:
                self.broken[(peer, scenario.name)] = f"request failed: {exc}"
                continue
            if status != 200:
                self.broken[(peer, scenario.name)] = f"status {status}: {data[:80]!r}"
            elif scenario.expect_body is not None and data != scenario.expect_body:
                self.broken[(peer, scenario.name)] = f"unexpected body {data[:80]!r}"
            elif scenario.expect_length and len(data) != scenario.expect_length:
                self.broken[(peer, scenario.name)] = f"body of {len(data)} bytes"

    def available(self, peer: str) -> bool:
        process = self.procs[peer]
        return not process.failure and peer not in self.died

    def usable(self, peer: str, scenario: str) -> bool:
        return (
            self.available(peer)
            and self.procs[peer].peer.serves(scenario)
            and (peer, scenario) not in self.broken
        )

    # -- measuring ---------------------------------------------------------------

    def measure(self, peer: str, scenario_name: str, duration: int, connections: int) -> Sample:
        """One wrk run against ``peer`` for ``duration`` seconds (wrk takes whole seconds)."""
        scenario = SCENARIO_BY_NAME[scenario_name]
        process = self.procs[peer]
        conns = 1 if scenario.single_connection else connections
        url = f"http://127.0.0.1:{self.port}/p/{peer}/{scenario.path}"
        argv = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s"]
        argv += ["-s", str(WRK_SCRIPT), url]
        env = {**os.environ, "WRK_POST_BYTES": str(scenario.post_bytes)}
        assert self.nginx is not None
        pid = process.proc.pid if process.proc is not None else None
        server0 = tree_cpu_seconds(pid) if pid else None
        nginx0 = tree_cpu_seconds(self.nginx.pid)
        note, result = "", {}
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, env=env, timeout=duration + 60
            )
            result = _wrk_result(done.stdout)
            if not result:
                output = (done.stderr.strip() or done.stdout.strip())[:200]
                note = f"wrk gave no result (exit {done.returncode}): {output}"
        except subprocess.TimeoutExpired:
            note = "wrk timed out"
        server1 = tree_cpu_seconds(pid) if pid else None
        nginx1 = tree_cpu_seconds(self.nginx.pid)
        alive = process.proc is None or process.proc.poll() is None
        if not alive:
            self.died.append(peer)
        return Sample(
            peer=peer,
            scenario=scenario_name,
            round=0,
            requests=int(result.get("requests", 0)),
            seconds=result.get("duration_us", 0) / 1e6,
            errors=result.get("errors", {}),
            latency_us=result.get("latency_us", {}),
            server_cpu_s=_spent(server0, server1, both=True),
            server_sys_s=_spent(server0, server1, both=False),
            nginx_cpu_s=_spent(nginx0, nginx1, both=True) or 0.0,
            peer_alive=alive,
            note=note,
        )

    # -- what the report needs ---------------------------------------------------

    def process_info(self) -> dict[str, dict[str, Any]]:
        """Per peer: processes, RSS after the first request, time to ready."""
        return {
            name: {
                "processes": process.peer.processes,
                "rss_kib": process.rss_kib,
                "ready_s": process.ready_s,
                "failure": process.failure,
            }
            for name, process in self.procs.items()
        }

    def problems(self) -> list[dict[str, Any]]:
        """Everything that went wrong at start, in preflight or in a run."""
        found: list[dict[str, Any]] = []
        for name, process in self.procs.items():
            if process.failure:
                found.append(
                    {"peer": name, "what": f"not available: {process.failure}", "fatal": False}
                )
        for (peer, scenario), reason in sorted(self.broken.items()):
            found.append({"peer": peer, "what": f"{scenario}: {reason}", "fatal": True})
        for peer in self.died:
            tail = _tail(self.procs[peer].log)
            found.append({"peer": peer, "what": f"died during the run: {tail}", "fatal": True})
        for name, process in self.procs.items():
            tracebacks = _tracebacks(process.log)
            if tracebacks:
                kinds = "; ".join(sorted(set(tracebacks))[:3])
                what = f"{len(tracebacks)} traceback(s) in its log: {kinds}"
                found.append({"peer": name, "what": what, "fatal": False})
        for line in nginx.complaints(self.prefix / "error.log")[:20]:
            found.append({"peer": "nginx", "what": line, "fatal": False})
        return found


def _spent(
    before: tuple[float, float] | None, after: tuple[float, float] | None, both: bool
) -> float | None:
    """CPU seconds between two (user, system) readings: both, or system only."""
    if before is None or after is None:
        return None
    system = after[1] - before[1]
    return after[0] - before[0] + system if both else system


def _wrk_result(stdout: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith("BENCH-JSON "):
            return json.loads(line[len("BENCH-JSON ") :])  # type: ignore[no-any-return]
    return {}


def _tracebacks(log: Path | None) -> list[str]:
    """The exception line that ends each traceback in a peer's log."""
    if log is None:
        return []
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found, inside = [], False
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            inside = True
        elif inside and line and not line.startswith(" "):
            found.append(line.strip()[:160])
            inside = False
    return found


def _tail(log: Path | None, lines: int = 3) -> str:
    if log is None:
        return ""
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we created, then SIGKILL it; always reap."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT)
    # Children of a forking server may outlive their parent: end the group
    # (while it has members its id cannot have been reused).
    if process_group(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_TIMEOUT)
