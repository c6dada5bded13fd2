"""Slow and hostile peers, the --allow list, socket groups and privileges."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServeFactory, connect, exchange, wait_for

from scgiwsgi.client import request
from scgiwsgi.config import Config
from scgiwsgi.errors import ConfigError
from scgiwsgi.peers import AllowList
from scgiwsgi.protocol import encode_request

ROOT = Path(__file__).resolve().parent.parent
SLOW_PEERS = 500

StartResponse = Callable[..., Any]


def hello(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    body = f"uid={os.getuid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def slow_peers() -> Iterator[Callable[[str, int], list[socket.socket]]]:
    """Open N connections that send one byte of a header and then stall."""
    opened: list[socket.socket] = []

    def open_many(address: str, count: int) -> list[socket.socket]:
        for _ in range(count):
            sock = connect(address, timeout=5.0)
            sock.sendall(b"7")  # the first digit of a netstring length, then nothing
            opened.append(sock)
        return opened

    yield open_many
    for sock in opened:
        sock.close()


def timed_request(address: str) -> tuple[float, int]:
    started = time.monotonic()
    response = request(address, path="/", timeout=5.0)
    return time.monotonic() - started, response.status


@pytest.mark.parametrize(("backend", "options"), [("threaded", {"threads": 2}), ("single", {})])
def test_slow_peers_do_not_block_a_normal_request(
    serve: ServeFactory,
    slow_peers: Callable[[str, int], list[socket.socket]],
    backend: str,
    options: dict[str, Any],
) -> None:
    server = serve(hello, backend=backend, header_timeout=30.0, **options)
    slow_peers(server.address, SLOW_PEERS)
    elapsed, status = timed_request(server.address)
    assert status == 200
    assert elapsed < 1.0, f"a normal request took {elapsed:.2f}s behind {SLOW_PEERS} slow peers"


def test_slow_header_is_cut_at_the_header_timeout(serve: ServeFactory) -> None:
    server = serve(hello, backend="threaded", threads=1, header_timeout=0.5)
    sock = connect(server.address)
    started = time.monotonic()
    closed_at = None
    for byte in b"12:":
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        time.sleep(0.3)
    sock.settimeout(3.0)
    try:
        data = sock.recv(100)
        closed_at = time.monotonic()
    except OSError:
        data = b""
        closed_at = time.monotonic()
    finally:
        sock.close()
    assert data == b""
    assert closed_at - started < 2.0
    assert timed_request(server.address)[1] == 200


def test_fork_worker_is_not_held_by_slow_peers(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    path = str(tmp_path / "s.sock")
    log = (tmp_path / "err.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "scgiwsgi", "examples.hello", "--fork", "--workers", "1",
         "--bind", f"unix:{path}", "--header-timeout", "30"],
        cwd=ROOT, env=env, stderr=log, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    peers: list[socket.socket] = []
    try:
        assert wait_for(lambda: os.path.exists(path) and _answers(path), timeout=10.0)
        for _ in range(SLOW_PEERS):
            sock = connect(f"unix:{path}", timeout=5.0)
            sock.sendall(b"7")
            peers.append(sock)
        elapsed, status = timed_request(f"unix:{path}")
        assert status == 200
        assert elapsed < 1.0, f"took {elapsed:.2f}s behind {SLOW_PEERS} slow peers"
    finally:
        for sock in peers:
            sock.close()
        process.terminate()
        assert process.wait(timeout=15) == 0
        log.close()


def _answers(path: str) -> bool:
    try:
        return request(f"unix:{path}", timeout=2.0).status == 200
    except OSError:
        return False


def test_many_connections_opened_and_dropped(serve: ServeFactory, scgi_log: Any) -> None:
    server = serve(hello, backend="threaded", threads=2)
    for _ in range(10_000):
        connect(server.address, timeout=5.0).close()
    assert timed_request(server.address)[1] == 200
    noisy = [r for r in scgi_log.records if r.levelno >= logging.WARNING]
    assert not [r for r in noisy if not r.getMessage().startswith("running as root")]


# -- who may connect ---------------------------------------------------------------------


def test_allow_list_refuses_other_peers(serve: ServeFactory, scgi_log: Any) -> None:
    server = serve(hello, backend="threaded", allow=("10.0.0.0/8",))
    raw = encode_request({"REQUEST_METHOD": "GET", "REQUEST_URI": "/"})
    for _ in range(5):
        answer, _ = exchange(server.address, raw, timeout=5.0)
        assert answer == b""
    refusals = [r for r in scgi_log.records if "not in the --allow list" in r.getMessage()]
    assert len(refusals) == 1, "refusals must be rate-limited to one line"
    assert "127.0.0.1" in refusals[0].getMessage()


def test_allow_list_admits_its_networks(serve: ServeFactory) -> None:
    server = serve(hello, backend="threaded", allow=("10.0.0.0/8", "127.0.0.0/8"))
    assert timed_request(server.address)[1] == 200


def test_allow_list_unix_peers_always_pass(serve: ServeFactory) -> None:
    server = serve(hello, transport="unix", backend="threaded", allow=("10.0.0.0/8",))
    assert timed_request(server.address)[1] == 200


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_allow_list_covers_ipv6(serve: ServeFactory) -> None:
    admitted = serve(hello, bind=["[::1]:0"], backend="threaded", allow=("::1/128",))
    assert timed_request(admitted.address)[1] == 200
    refused = serve(hello, bind=["[::1]:0"], backend="threaded", allow=("127.0.0.0/8",))
    raw = encode_request({"REQUEST_METHOD": "GET", "REQUEST_URI": "/"})
    assert exchange(refused.address, raw, timeout=5.0)[0] == b""


def test_allow_list_matches_ipv4_mapped_addresses() -> None:
    allow = AllowList(["192.0.2.0/24"])
    assert allow.permits_address("::ffff:192.0.2.7")
    assert not allow.permits_address("::ffff:198.51.100.1")
    assert not allow.permits_address("not-an-address")


def test_allow_rejects_a_bad_network() -> None:
    with pytest.raises(ConfigError, match="allow: 'ten' is not"):
        Config(allow=("ten",))


def test_public_bind_without_allow_warns(serve: ServeFactory, scgi_log: Any) -> None:
    serve(hello, bind=["0.0.0.0:0"], backend="threaded")
    assert wait_for(
        lambda: any("reachable from other machines" in r.getMessage() for r in scgi_log.records),
        timeout=5.0,
    )


# -- unix socket group and privileges --------------------------------------------------


def test_socket_group_is_applied(serve: ServeFactory) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    if os.geteuid() == 0:
        group = "nogroup" if _group_exists("nogroup") else group
    server = serve(hello, transport="unix", backend="threaded", socket_group=group)
    path = server.address.removeprefix("unix:")
    assert os.stat(path).st_gid == grp.getgrnam(group).gr_gid


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_user_option_drops_root_after_binding(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    sock_dir = tmp_path / "run"
    sock_dir.mkdir()
    path = str(sock_dir / "s.sock")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    os.chmod(tmp_path, 0o755)
    process = subprocess.Popen(
        [sys.executable, "-m", "scgiwsgi", "--bind", f"unix:{path}", "--socket-mode", "666",
         "--user", "nobody"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert wait_for(lambda: os.path.exists(path) and _answers(path), timeout=10.0)
        body = request(f"unix:{path}", timeout=5.0).body
        status = Path(f"/proc/{process.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:3] == [str(nobody.pw_uid)] * 2
        assert b"REQUEST_METHOD: 'GET'" in body
    finally:
        process.terminate()
        _, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert "running as user nobody" in err


def test_root_without_user_warns_and_unknown_user_fails(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "scgiwsgi", "--bind", f"unix:{tmp_path / 's.sock'}",
         "--user", "no-such-user-xyz"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no user named 'no-such-user-xyz'" in result.stderr
    assert not (tmp_path / "s.sock").exists()


def test_trickled_body_is_cut_off(serve: ServeFactory, scgi_log: Any) -> None:
    def reader(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    server = serve(reader, backend="threaded", threads=1, body_timeout=0.5)
    head = encode_request({"REQUEST_METHOD": "POST", "REQUEST_URI": "/"}, b"x" * 64)[:-64]
    sock = connect(server.address)
    started = time.monotonic()
    sock.sendall(head)
    try:
        for _ in range(64):  # one byte every 0.2 s: each gap is under body_timeout
            sock.sendall(b"x")
            time.sleep(0.2)
    except OSError:
        pass  # the server closed the connection: what we want
    finally:
        sock.close()
    assert time.monotonic() - started < 5.0
    assert timed_request(server.address)[1] == 200
    assert any("request body slower than" in r.getMessage() for r in scgi_log.records)


def test_usr1_reopens_the_access_log_of_an_in_process_server(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    path = str(tmp_path / "s.sock")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "scgiwsgi", "examples.hello", "--bind", f"unix:{path}",
         "--access-log", str(access)],
        cwd=ROOT, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_for(lambda: os.path.exists(path) and _answers(path), timeout=10.0)
        rotated = tmp_path / "access.log.1"
        access.rename(rotated)
        process.send_signal(signal.SIGUSR1)
        assert wait_for(lambda: access.exists(), timeout=5.0)
        assert request(f"unix:{path}", path="/after", timeout=5.0).status == 200
        assert wait_for(lambda: "/after" in access.read_text(), timeout=5.0)
        assert "/after" not in rotated.read_text()
        assert process.poll() is None, "SIGUSR1 must not stop the server"
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0
