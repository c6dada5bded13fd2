"""``--reload``: a change to the app's source restarts the workers, sockets kept.

The server runs as ``python -m scgiwsgi mod:app --reload`` in a temporary
directory; the tests rewrite the module (or a module it imports) and poll
until the answer changes, counting every failed request on the way.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scgi_process import Process, Processes, child_env

from scgiwsgi import Config
from scgiwsgi.client import request
from scgiwsgi.errors import ConfigError

pytest.importorskip("watchfiles", reason="--reload needs watchfiles (pip install -e '.[reload]')")

RELOAD_WITHIN = 10.0

APP = """
from text import TEXT

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [TEXT.encode()]
"""


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def socket_path() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="scgireload-")  # short: sun_path has 108 bytes
    try:
        yield os.path.join(directory, "s.sock")
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


def _write_app(directory: Path, text: str) -> None:
    (directory / "mod.py").write_text(APP)
    (directory / "text.py").write_text(f"TEXT = {text!r}\n")


def _body(path: str) -> str:
    return request(f"unix:{path}", timeout=5.0).body.decode()


def _wait_for(path: str, expected: str, seen: set[str]) -> int:
    """Request until ``expected`` comes back; return how many requests failed."""
    failures = 0
    deadline = time.monotonic() + RELOAD_WITHIN
    while time.monotonic() < deadline:
        try:
            body = _body(path)
        except OSError:
            failures += 1
        else:
            seen.add(body)
            if body == expected:
                return failures
        time.sleep(0.02)
    pytest.fail(f"no {expected!r} within {RELOAD_WITHIN}s; answers seen: {sorted(seen)}")


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _stop_and_check_nothing_left(server: Process) -> None:
    children = _descendants(server.pid)
    assert children, "the server forked no worker and no watcher"
    assert server.stop(signal.SIGTERM) == 0, server.stderr
    deadline = time.monotonic() + 5.0
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = sorted(pid for pid in children if _alive(pid))
    assert not left, f"processes left after the server exited: {left}\n{server.stderr}"


def _start(processes: Processes, directory: Path, socket_path: str) -> Process:
    return processes.server("mod:app", "--reload", "--bind", f"unix:{socket_path}", cwd=directory)


def test_a_change_is_served_within_seconds_without_failed_requests(
    processes: Processes, tmp_path: Path, socket_path: str
) -> None:
    _write_app(tmp_path, "v1")
    server = _start(processes, tmp_path, socket_path)
    assert _body(socket_path) == "v1"
    seen: set[str] = set()
    # Same size, same second: the stale .pyc must not be used.
    (tmp_path / "text.py").write_text("TEXT = 'v2'\n")
    assert _wait_for(socket_path, "v2", seen) == 0
    assert "reloading: changed" in server.stderr
    assert str(tmp_path / "text.py") in server.stderr
    (tmp_path / "mod.py").write_text(APP.replace("TEXT.encode()", "(TEXT + '!').encode()"))
    assert _wait_for(socket_path, "v2!", seen) == 0
    _stop_and_check_nothing_left(server)


def test_broken_code_keeps_the_old_workers_until_fixed(
    processes: Processes, tmp_path: Path, socket_path: str
) -> None:
    _write_app(tmp_path, "v1")
    server = _start(processes, tmp_path, socket_path)
    assert _body(socket_path) == "v1"  # the first worker has imported the good code
    (tmp_path / "text.py").write_text("TEXT = (\n")
    server.wait_for_log(re.compile("reload failed"), RELOAD_WITHIN)
    assert _body(socket_path) == "v1"
    (tmp_path / "text.py").write_text("TEXT = 'v3'\n")
    assert _wait_for(socket_path, "v3", set()) == 0
    _stop_and_check_nothing_left(server)


def test_the_watcher_ends_with_a_killed_server(
    processes: Processes, tmp_path: Path, socket_path: str
) -> None:
    _write_app(tmp_path, "v1")
    server = _start(processes, tmp_path, socket_path)
    children = _descendants(server.pid)
    server.proc.kill()
    server.proc.wait(timeout=5.0)
    deadline = time.monotonic() + 5.0
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in children if _alive(pid)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preload"], "cannot be used with preload"),
        ([], "name the app to import"),
    ],
)
def test_impossible_combinations_are_one_line_errors(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    args = ["mod:app", *extra] if extra else []
    result = subprocess.run(
        [sys.executable, "-m", "scgiwsgi", *args, "--reload", "--bind", "127.0.0.1:0"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_reload_implies_the_fork_backend_with_one_worker() -> None:
    config = Config(app="mod:app", reload=True)
    assert (config.backend, config.worker_count) == ("fork", 1)
    assert Config(app="mod:app", reload=True, workers=3).worker_count == 3
    with pytest.raises(ConfigError):
        Config(app="mod:app", reload=True, preload=True)
