"""systemd socket activation and sd_notify, and the supervisor snippets of the docs.

No systemd as PID 1 is needed: the test plays the service manager.  It binds
the sockets, starts the server through a tiny exec wrapper that puts them on
fds 3, 4... and sets ``LISTEN_PID`` to its own pid before ``exec`` (so it is
the server's pid), and reads the notifications on a datagram socket it
bound.  With Debian's ``systemd-socket-activate`` installed, that tool plays
the manager too.  The systemd units, the runit ``run`` script and the
xinetd/inetd lines of ``docs/`` are read from the pages and run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import IO_TIMEOUT, wait_for
from scgi_process import REPO_ROOT, Process, Processes, child_env, write_echo_app

from scgiwsgi import systemd
from scgiwsgi.client import SCGIResponse, parse_response, request
from scgiwsgi.errors import ConfigError
from scgiwsgi.protocol import encode_request

DOCS = REPO_ROOT / "docs"
RUN_TIMEOUT = 30.0

# Puts the inherited descriptors named in argv[1] on fds 3, 4..., sets
# LISTEN_PID to its own pid unless given, and executes argv[2:].
LAUNCHER = """
import fcntl, os, sys
sources = [int(fd) for fd in sys.argv[1].split(",") if fd]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in sources]
for fd in sources:
    os.close(fd)
for index, fd in enumerate(high):
    os.dup2(fd, 3 + index)
    os.close(fd)
os.environ.setdefault("LISTEN_PID", str(os.getpid()))
os.execv(sys.argv[2], sys.argv[2:])
"""


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for unix sockets (``sun_path`` holds 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="scgisd-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class NotifySocket:
    """The service manager's end of ``NOTIFY_SOCKET``: a bound datagram socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[str] = []

    def wait_for(self, assignment: str, timeout: float = IO_TIMEOUT, count: int = 1) -> str:
        """The ``count``-th message (received or arriving) containing ``assignment``."""
        deadline = time.monotonic() + timeout
        while True:
            matching = [m for m in self.messages if assignment in m.split("\n")]
            if len(matching) >= count:
                return matching[count - 1]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no {assignment} notification in {timeout}s: {self.messages}")
            self.sock.settimeout(remaining)
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except TimeoutError:
                continue

    def count(self, assignment: str) -> int:
        return sum(assignment in message.split("\n") for message in self.messages)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(short_dir: Path) -> Iterator[NotifySocket]:
    receiver = NotifySocket(str(short_dir / "notify"))
    try:
        yield receiver
    finally:
        receiver.close()


def tcp_listener(backlog: int = 16) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


def unix_listener(path: str, backlog: int = 16) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(backlog)
    return sock


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def activate(
    processes: Processes,
    passed: Sequence[socket.socket],
    command: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
) -> Process:
    """Start ``command`` with ``passed`` on fds 3, 4... and LISTEN_FDS set."""
    env = {"LISTEN_FDS": str(len(passed)), **env}
    fds = [sock.fileno() for sock in passed]
    argv = [sys.executable, "-c", LAUNCHER, ",".join(map(str, fds)), *command]
    return processes.start(argv, cwd=cwd, env=env, pass_fds=fds)


def get(address: str, path: str) -> SCGIResponse:
    return request(address, path=path, timeout=IO_TIMEOUT)


def report(address: str, path: str) -> dict[str, Any]:
    response = get(address, path)
    assert response.status == 200, response.body
    decoded: dict[str, Any] = json.loads(response.body)
    return decoded


NO_LISTEN_VARIABLES = {"LISTEN_PID": None, "LISTEN_FDS": None, "LISTEN_FDNAMES": None}
SERVER = [sys.executable, "-m", "scgiwsgi"]


# -- socket activation, the server as a process -------------------------------------------


@pytest.mark.parametrize("backend", [[], ["--fork", "--workers", "2"]], ids=["threaded", "fork"])
def test_activated_tcp_and_unix_sockets_and_notifications(
    processes: Processes,
    tmp_path: Path,
    short_dir: Path,
    notify_socket: NotifySocket,
    backend: list[str],
) -> None:
    spec = write_echo_app(tmp_path)
    unix_path = str(short_dir / "app.sock")
    tcp, unix = tcp_listener(), unix_listener(unix_path)
    port = tcp.getsockname()[1]
    # --bind names a port the test holds: binding it would fail (exit 3), so
    # a server that starts proves it used the passed sockets instead.
    with tcp_listener() as busy, tcp, unix:
        server = activate(
            processes,
            [tcp, unix],
            [*SERVER, spec, *backend, "--bind", f"127.0.0.1:{busy.getsockname()[1]}"],
            cwd=tmp_path,
            env=child_env({"LISTEN_FDNAMES": "web:admin", "NOTIFY_SOCKET": notify_socket.address}),
        )
        addresses = server.wait_started()
    # Only the server holds the sockets now.

    assert addresses == [f"fd://3 (web: 127.0.0.1:{port})", f"fd://4 (admin: unix:{unix_path})"]
    assert "socket activation: serving on 2 socket(s)" in server.stderr
    ready = notify_socket.wait_for("READY=1")
    assert ready.split("\n") == [
        "READY=1",
        f"STATUS=serving {spec} on {', '.join(addresses)}",
    ]

    over_tcp = report(f"127.0.0.1:{port}", "/over-tcp")
    over_unix = report(f"unix:{unix_path}", "/over-unix")
    assert over_tcp["PATH_INFO"] == "/over-tcp"
    assert over_unix["PATH_INFO"] == "/over-unix"
    for seen in (over_tcp, over_unix):
        # Removed from the environment: workers and subprocesses never see them.
        assert seen["process_env"] == NO_LISTEN_VARIABLES
        assert (seen["pid"] == server.pid) == (not backend)

    assert server.stop() == 0
    assert notify_socket.wait_for("STOPPING=1").startswith("STOPPING=1\nSTATUS=")
    assert notify_socket.count("STOPPING=1") == 1
    assert notify_socket.count("READY=1") == 1
    # The socket file belongs to the service manager: the server leaves it.
    assert stat.S_ISSOCK(os.lstat(unix_path).st_mode)
    assert wait_for(lambda: not server.group_alive(), 10.0), "processes left after the stop"


def test_listen_pid_of_another_process_is_ignored(
    processes: Processes, tmp_path: Path, short_dir: Path
) -> None:
    spec = write_echo_app(tmp_path)
    with tcp_listener() as tcp:
        server = activate(
            processes,
            [tcp],
            [*SERVER, spec, "--bind", "127.0.0.1:0"],
            cwd=tmp_path,
            env=child_env({"LISTEN_PID": "1"}),
        )
        addresses = server.wait_started()

    assert not addresses[0].startswith("fd://")
    assert "LISTEN_FDS is set for pid 1, not for this process" in server.stderr
    assert "start scgi-wsgi with exec" in server.stderr
    assert report(addresses[0], "/")["process_env"] == NO_LISTEN_VARIABLES
    assert server.stop() == 0


def _run_activated(
    passed: Sequence[socket.socket], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    fds = [sock.fileno() for sock in passed]
    return subprocess.run(
        [sys.executable, "-c", LAUNCHER, ",".join(map(str, fds)), *SERVER],
        env=child_env(env),
        cwd=REPO_ROOT,
        pass_fds=fds,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LISTEN_FDS": "1"}, "socket activation: fd 3 of LISTEN_FDS=1 is not open"),
        ({"LISTEN_FDS": "two"}, "socket activation: LISTEN_FDS='two' is not a number"),
        (
            {"LISTEN_FDS": "0", "LISTEN_FDNAMES": "a:b"},
            "socket activation: LISTEN_FDNAMES has 2 name(s) for LISTEN_FDS=0",
        ),
    ],
)
def test_broken_activation_variables_are_exit_2(env: dict[str, str], message: str) -> None:
    result = _run_activated([], env)

    assert result.returncode == 2, result.stderr
    assert f"scgi-wsgi: error: {message}" in result.stderr


def test_a_passed_connection_is_refused_with_a_hint() -> None:
    left, right = socket.socketpair()  # a connected stream socket, as Accept=yes passes
    with left, right:
        result = _run_activated([left], {"LISTEN_FDS": "1"})

    assert result.returncode == 3, result.stderr
    assert "cannot adopt fd://3: the socket is not listening" in result.stderr
    assert "Accept=yes" in result.stderr and "--inetd" in result.stderr


def test_a_passed_datagram_socket_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagram:
        datagram.bind(("127.0.0.1", 0))
        result = _run_activated([datagram], {"LISTEN_FDS": "1"})

    assert result.returncode == 3, result.stderr
    assert "cannot adopt fd://3: it is not a stream socket" in result.stderr


def test_with_systemd_socket_activate(
    processes: Processes, tmp_path: Path, short_dir: Path, notify_socket: NotifySocket
) -> None:
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip(
            "systemd-socket-activate not installed (Debian: apt-get install systemd); "
            "the variables are tested without it"
        )
    spec = write_echo_app(tmp_path)
    port = free_port()
    unix_path = str(short_dir / "app.sock")
    server = processes.start(
        [
            tool,
            "-l",
            f"127.0.0.1:{port}",
            "-l",
            unix_path,
            "--fdname=web:admin",
            "-E",
            f"PYTHONPATH={REPO_ROOT}",
            "-E",
            f"NOTIFY_SOCKET={notify_socket.address}",
            *SERVER,
            spec,
        ],
        cwd=tmp_path,
    )
    # The tool binds, then waits for a first connection before it executes
    # the server (same pid); that request must be answered.
    assert wait_for(lambda: os.path.exists(unix_path), IO_TIMEOUT), server.stderr
    first = report(f"unix:{unix_path}", "/first")

    assert first["PATH_INFO"] == "/first"
    assert first["pid"] == server.pid
    assert first["process_env"] == NO_LISTEN_VARIABLES
    addresses = server.wait_started()
    assert addresses == [f"fd://3 (web: 127.0.0.1:{port})", f"fd://4 (admin: unix:{unix_path})"]
    assert notify_socket.wait_for("READY=1")
    assert report(f"127.0.0.1:{port}", "/second")["PATH_INFO"] == "/second"
    assert server.stop() == 0
    assert notify_socket.wait_for("STOPPING=1")


# -- sd_notify and LISTEN_* in-process ------------------------------------------------------


def test_notify_without_socket_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


def test_notify_to_a_path(monkeypatch: pytest.MonkeyPatch, notify_socket: NotifySocket) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)

    assert systemd.notify("READY=1", "STATUS=two\nlines") is True
    assert notify_socket.wait_for("READY=1") == "READY=1\nSTATUS=two lines"


def test_notify_to_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = NotifySocket(f"@scgiwsgi-test-{uuid.uuid4().hex}")
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", receiver.address)
        assert systemd.notify("STOPPING=1") is True
        assert receiver.wait_for("STOPPING=1") == "STOPPING=1"
    finally:
        receiver.close()


@pytest.mark.parametrize("address", ["relative/notify", "vsock:2:1234"])
def test_notify_to_an_unusable_address_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, address: str
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    with caplog.at_level(logging.WARNING, logger="scgiwsgi"):
        _propagating(lambda: systemd.notify("READY=1") is False)
    assert "is not a unix socket address" in caplog.text


def test_notify_to_a_missing_socket_warns_and_does_not_raise(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    with caplog.at_level(logging.WARNING, logger="scgiwsgi"):
        _propagating(lambda: systemd.notify("READY=1") is False)
    assert "cannot notify the service manager" in caplog.text


def _propagating(check: Any) -> None:
    logger = logging.getLogger("scgiwsgi")
    saved, logger.propagate = logger.propagate, True
    try:
        assert check()
    finally:
        logger.propagate = saved


def test_notifier_sends_stopping_once_and_only_after_ready(
    monkeypatch: pytest.MonkeyPatch, notify_socket: NotifySocket
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    notifier = systemd.Notifier()

    notifier.stopping()  # not ready yet: nothing
    notifier.ready("serving")
    notifier.stopping("going")
    notifier.stopping("again")
    notify_socket.wait_for("STOPPING=1")
    notify_socket.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        notify_socket.messages.append(notify_socket.sock.recv(65536).decode())

    assert notify_socket.messages == ["READY=1\nSTATUS=serving", "STOPPING=1\nSTATUS=going"]


def test_listen_fds_without_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)
    assert systemd.listen_fds() == []
    assert systemd.activated_listeners() == []


def test_listen_fds_for_another_pid_removes_the_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_FDNAMES", "a:b")

    assert systemd.listen_fds() == []
    assert not {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} & set(os.environ)


@pytest.mark.parametrize(
    ("pid", "fds", "names", "message"),
    [
        ("self", "x", None, "LISTEN_FDS='x' is not a number"),
        ("12ab", "1", None, "LISTEN_PID='12ab' is not a number"),
        ("self", "-1", None, "LISTEN_FDS='-1' is not a number"),
        ("self", "2", "only-one", "LISTEN_FDNAMES has 1 name(s) for LISTEN_FDS=2"),
    ],
)
def test_listen_fds_malformed(
    monkeypatch: pytest.MonkeyPatch, pid: str, fds: str, names: str | None, message: str
) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()) if pid == "self" else pid)
    monkeypatch.setenv("LISTEN_FDS", fds)
    if names is not None:
        monkeypatch.setenv("LISTEN_FDNAMES", names)

    with pytest.raises(ConfigError, match=re.escape(message)):
        systemd.listen_fds()
    assert "LISTEN_FDS" not in os.environ


# -- the unit files of docs/systemd.rst -----------------------------------------------------


def code_blocks(page: Path, language: str) -> list[str]:
    """The bodies of the ``.. code-block:: LANGUAGE`` directives of an rst page."""
    blocks = []
    lines = page.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.strip() != f".. code-block:: {language}":
            continue
        body = []
        for following in lines[index + 1 :]:
            if following.strip() and not following.startswith("    "):
                break
            body.append(following[4:])
        blocks.append("\n".join(body).strip("\n") + "\n")
    return blocks


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [value for name, value in section if name == key]


def the_unit(kind: str) -> dict[str, list[tuple[str, str]]]:
    units = [parse_unit(block) for block in code_blocks(DOCS / "systemd.rst", "ini")]
    matching = [unit for unit in units if kind in unit]
    assert len(matching) == 1, f"docs/systemd.rst must hold one unit with [{kind}]"
    return matching[0]


def write_myapp(directory: Path) -> None:
    """``myapp.py`` with the echo app as ``application``, as the docs name it."""
    write_echo_app(directory)
    source = (directory / "echo_app.py").read_text()
    (directory / "myapp.py").write_text(source + "\napplication = app\n")


def exec_command(line: str) -> list[str]:
    """An ExecStart= command, with the documented scgi-wsgi run from this checkout."""
    argv = shlex.split(line)
    assert argv[0].endswith("/scgi-wsgi"), argv
    return [*SERVER, *argv[1:]]


def test_documented_units_start_reload_and_stop(
    processes: Processes, tmp_path: Path, short_dir: Path, notify_socket: NotifySocket
) -> None:
    socket_unit, service_unit = the_unit("Socket"), the_unit("Service")
    sock_section, service = socket_unit["Socket"], service_unit["Service"]
    assert values(service, "Type") == ["notify"]
    assert values(service, "KillMode") == ["mixed"]

    # The sockets of the .socket unit: TCP ones on a free port instead of the
    # documented one, unix ones in a short temporary directory.
    backlog = int(values(sock_section, "Backlog")[0])
    passed: list[socket.socket] = []
    targets: list[str] = []
    for listen in values(sock_section, "ListenStream"):
        if listen.startswith("/"):
            path = str(short_dir / Path(listen).name)
            passed.append(unix_listener(path, backlog))
            os.chmod(path, int(values(sock_section, "SocketMode")[0], 8))
            targets.append(f"unix:{path}")
        else:
            assert re.fullmatch(r"127\.0\.0\.1:\d+", listen), listen
            passed.append(tcp_listener(backlog))
            targets.append(f"127.0.0.1:{passed[-1].getsockname()[1]}")
    assert len(passed) == 2
    name = values(sock_section, "FileDescriptorName")[0]

    workdir = tmp_path / "srv"
    workdir.mkdir()
    write_myapp(workdir)
    env = dict(value.split("=", 1) for value in values(service, "Environment"))
    env.update(
        {"LISTEN_FDNAMES": ":".join([name] * len(passed)), "NOTIFY_SOCKET": notify_socket.address}
    )
    command = exec_command(values(service, "ExecStart")[0])
    try:
        server = activate(processes, passed, command, cwd=workdir, env=child_env(env))
        notify_socket.wait_for("READY=1", RUN_TIMEOUT)
    finally:
        for sock in passed:
            sock.close()

    seen = [report(target, "/unit") for target in targets]
    assert {item["PATH_INFO"] for item in seen} == {"/unit"}
    assert all(item["pid"] != server.pid for item in seen)  # --fork: workers answer
    assert wait_for(lambda: "GET /unit" in server.stdout, IO_TIMEOUT), "no access log on stdout"

    # ExecReload, with $MAINPID as systemd expands it: the re-executed
    # arbiter (same pid, same sockets) says READY=1 again.
    reload_line = values(service, "ExecReload")[0].replace("$MAINPID", str(server.pid))
    subprocess.run(shlex.split(reload_line), check=True, timeout=RUN_TIMEOUT)
    notify_socket.wait_for("READY=1", RUN_TIMEOUT, count=2)
    assert wait_for(lambda: "stopping 4 old worker(s)" in server.stderr, 20.0), server.stderr
    after = report(targets[0], "/after-reload")
    assert after["PATH_INFO"] == "/after-reload"
    assert server.proc.poll() is None  # same main pid

    kill_signal = getattr(signal, values(service, "KillSignal")[0])
    status = server.stop(kill_signal, timeout=float(values(service, "TimeoutStopSec")[0]))
    assert status == 0
    assert notify_socket.wait_for("STOPPING=1")
    assert wait_for(lambda: not server.group_alive(), 10.0), "processes left for systemd to kill"


def test_documented_restart_prevent_statuses_match_the_server(tmp_path: Path) -> None:
    service = the_unit("Service")["Service"]
    prevented = {int(code) for code in values(service, "RestartPreventExitStatus")[0].split()}
    command = exec_command(values(service, "ExecStart")[0])

    no_app = subprocess.run(  # no myapp module in this working directory
        [*command, "--bind", "127.0.0.1:0"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    bad_option = subprocess.run(
        [*command, "--workers", "0"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert no_app.returncode == 4, no_app.stderr
    assert bad_option.returncode == 2, bad_option.stderr
    assert {no_app.returncode, bad_option.returncode} <= prevented


# -- docs/supervisors.rst ----------------------------------------------------------------------


def _substitute(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{old!r} must appear once in the documented snippet"
        text = text.replace(old, new)
    return text


def test_documented_run_script(processes: Processes, tmp_path: Path) -> None:
    scripts = [b for b in code_blocks(DOCS / "supervisors.rst", "sh") if "chpst" in b]
    assert len(scripts) == 1
    write_myapp(tmp_path)
    port = free_port()
    script = _substitute(
        scripts[0],
        {
            "cd /srv/myapp": f"cd {shlex.quote(str(tmp_path))}",
            "chpst -u myapp ": "",  # no user switch in the test
            "/srv/myapp/venv/bin/scgi-wsgi": f"{shlex.quote(sys.executable)} -m scgiwsgi",
            "127.0.0.1:4000": f"127.0.0.1:{port}",
        },
    )
    run = tmp_path / "run"
    run.write_text(script)
    run.chmod(0o755)

    server = processes.start([str(run)], cwd=REPO_ROOT)
    server.wait_started(stdout=True)  # exec 2>&1: the log goes to the log service

    with open(f"/proc/{server.pid}/cmdline", "rb") as cmdline:
        assert b"scgiwsgi" in cmdline.read()  # exec all the way: the supervised pid serves
    assert report(f"127.0.0.1:{port}", "/runit")["PATH_INFO"] == "/runit"
    assert server.stderr == ""
    assert server.stop() == 0
    assert wait_for(lambda: not server.group_alive(), 10.0)


def _inetd_arguments() -> list[tuple[str, list[str]]]:
    blocks = code_blocks(DOCS / "supervisors.rst", "text")
    xinetd = next(block for block in blocks if block.startswith("service "))
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition("=") for line in xinetd.splitlines())
        if _ and not key.strip().startswith(("{", "}", "service"))
    )
    assert fields["socket_type"] == "stream" and fields["wait"] == "no"
    inetd = next(block for block in blocks if " nowait " in block)
    words = shlex.split(inetd)
    assert words[1:4] == ["stream", "tcp", "nowait"]
    assert words[5] == fields["server"]
    return [
        ("xinetd", [fields["server"], *shlex.split(fields["server_args"])]),
        ("inetd", [words[5], *words[7:]]),  # words[6] is argv[0]
    ]


@pytest.mark.parametrize(("flavour", "argv"), _inetd_arguments(), ids=lambda v: str(v)[:6])
def test_documented_inetd_lines(tmp_path: Path, flavour: str, argv: list[str]) -> None:
    if (
        "--inetd"
        not in subprocess.run(
            [*SERVER, "--help"],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=RUN_TIMEOUT,
        ).stdout
    ):
        pytest.skip("this checkout has no --inetd yet")
    write_myapp(tmp_path)
    args = [tmp_path.as_posix() if arg == "/srv/myapp" else arg for arg in argv[1:]]
    assert str(tmp_path) in args, "the documented --chdir is /srv/myapp"

    # Play xinetd: accept a TCP connection and give it to the program as
    # standard input, output and error.
    with tcp_listener() as listener:
        client = socket.create_connection(listener.getsockname(), timeout=IO_TIMEOUT)
        connection, _ = listener.accept()
    with client:
        with connection:
            child = subprocess.Popen(
                [*SERVER, *args],
                stdin=connection,
                stdout=connection,
                stderr=connection,
                env=child_env(),
                cwd=REPO_ROOT,
            )
        try:
            client.sendall(encode_request({"REQUEST_METHOD": "GET", "REQUEST_URI": "/inetd"}))
            chunks = []
            while data := client.recv(65536):
                chunks.append(data)
            status = child.wait(timeout=RUN_TIMEOUT)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=RUN_TIMEOUT)

    response = parse_response(b"".join(chunks))
    assert status == 0
    assert response.status == 200
    assert b'"PATH_INFO": "/inetd"' in response.body
