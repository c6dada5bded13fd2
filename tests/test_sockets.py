"""Tests of scgiwsgi.sockets with real sockets on loopback and in tmp_path."""

from __future__ import annotations

import os
import select
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scgiwsgi.errors import BindError, ConfigError
from scgiwsgi.sockets import BindSpec, Listener, bind, bind_all, parse_bind

# --------------------------------------------------------------------------- helpers


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
needs_defer_accept = pytest.mark.skipif(
    not hasattr(socket, "TCP_DEFER_ACCEPT"), reason="no TCP_DEFER_ACCEPT (Linux only)"
)


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    """Listeners appended here are closed after the test."""
    opened: list[Listener] = []
    yield opened
    for listener in opened:
        listener.close()


def _stale_socket(path: Path) -> int:
    """Leave a socket file at ``path`` that nothing listens on; return its inode."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    return path.stat().st_ino


def _assert_accepts(listener: Listener) -> None:
    """A client can connect to ``listener`` and the connection is accepted."""
    family = listener.sock.family
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        client.connect(listener.sock.getsockname())
        listener.sock.settimeout(5)
        conn, _ = listener.sock.accept()
        conn.close()


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("127.0.0.1:4000", BindSpec("tcp", host="127.0.0.1", port=4000), "127.0.0.1:4000"),
        ("0.0.0.0:0", BindSpec("tcp", host="0.0.0.0", port=0), "0.0.0.0:0"),
        ("localhost:65535", BindSpec("tcp", host="localhost", port=65535), "localhost:65535"),
        ("app-1.example.com:80", BindSpec("tcp", host="app-1.example.com", port=80), None),
        ("[::1]:80", BindSpec("tcp", host="::1", port=80), "[::1]:80"),
        ("[::]:4000", BindSpec("tcp", host="::", port=4000), "[::]:4000"),
        ("[fe80::1%eth0]:4000", BindSpec("tcp", host="fe80::1%eth0", port=4000), None),
        ("unix:/run/app.sock", BindSpec("unix", path="/run/app.sock"), "unix:/run/app.sock"),
        ("unix:run/app.sock", BindSpec("unix", path="run/app.sock"), "unix:run/app.sock"),
        ("fd://3", BindSpec("fd", fd=3), "fd://3"),
        ("fd://0", BindSpec("fd", fd=0), "fd://0"),
    ],
)
def test_parse_valid(text: str, expected: BindSpec, canonical: str | None) -> None:
    spec = parse_bind(text)
    assert spec == expected
    assert str(spec) == (canonical or text)
    assert parse_bind(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("host:99999", "port must be a number from 0 to 65535"),
        ("host:", "port must be a number from 0 to 65535"),
        ("host:-1", "port must be a number from 0 to 65535"),
        ("host:80a", "port must be a number from 0 to 65535"),
        ("host:\u0664\u0660", "port must be a number from 0 to 65535"),  # Arabic-Indic digits
        ("[::1]:99999", "port must be a number from 0 to 65535"),
        ("unix:", "unix socket path is empty"),
        ("unix:/tmp/a\0b", "NUL"),
        ("fd://x", "fd://N needs a non-negative file descriptor number"),
        ("fd://", "fd://N needs a non-negative file descriptor number"),
        ("fd://-1", "fd://N needs a non-negative file descriptor number"),
        (":4000", "use 0.0.0.0:4000 for all interfaces or 127.0.0.1:4000"),
        ("4000", "use 0.0.0.0:4000 for all interfaces or 127.0.0.1:4000"),
        ("::1:80", "put IPv6 addresses in brackets"),
        ("[nonsense]:80", "'nonsense' is not an IPv6 address"),
        ("[127.0.0.1]:80", "is not an IPv6 address"),
        ("bad host:80", "is not a valid host name or IPv4 address"),
        ("foo", "expected HOST:PORT, [IPv6]:PORT, unix:/path or fd://N"),
        ("", "expected HOST:PORT, [IPv6]:PORT, unix:/path or fd://N"),
    ],
)
def test_parse_invalid(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_bind(text)
    message = str(info.value)
    assert message.startswith(f"invalid bind address {text!r}: ")
    assert fragment in message
    assert "\n" not in message


def test_parse_invalid_generic_message() -> None:
    with pytest.raises(ConfigError) as info:
        parse_bind("foo")
    assert str(info.value) == (
        "invalid bind address 'foo': expected HOST:PORT, [IPv6]:PORT, unix:/path or fd://N"
    )
    assert info.value.exit_code == 2


# --------------------------------------------------------------------------- TCP


def test_tcp_port_zero_reports_real_address(listeners: list[Listener]) -> None:
    listener = bind(parse_bind("127.0.0.1:0"))
    listeners.append(listener)
    host, port = listener.sock.getsockname()
    assert host == "127.0.0.1"
    assert port != 0
    assert listener.display == f"127.0.0.1:{port}"
    assert listener.server_name == "127.0.0.1"
    assert listener.server_port == str(port)
    assert listener.fileno() == listener.sock.fileno() >= 0
    _assert_accepts(listener)


def test_tcp_socket_options(listeners: list[Listener]) -> None:
    listener = bind(parse_bind("127.0.0.1:0"))
    listeners.append(listener)
    sock = listener.sock
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 0
    assert sock.getblocking() is False
    assert sock.get_inheritable() is False
    with pytest.raises(BlockingIOError):
        sock.accept()


def _seconds_until_acceptable(listener: Listener, limit: float) -> float | None:
    """How long until ``listener`` has a connection to accept; None past ``limit``."""
    started = time.monotonic()
    readable, _, _ = select.select([listener.sock], [], [], limit)
    return time.monotonic() - started if readable else None


@needs_defer_accept
def test_tcp_defer_accept_hands_over_a_connection_with_its_first_bytes(
    listeners: list[Listener],
) -> None:
    listener = bind(parse_bind("127.0.0.1:0"), defer_accept=True)
    listeners.append(listener)
    assert listener.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0
    with socket.create_connection(listener.sock.getsockname(), timeout=5) as client:
        # connect() returned: for the client the connection is open, but the
        # kernel keeps it from accept() until bytes arrive.
        assert _seconds_until_acceptable(listener, 0.3) is None
        client.sendall(b"24:CONTENT_LENGTH")
        assert _seconds_until_acceptable(listener, 5) is not None
        conn, _ = listener.sock.accept()
        with conn:
            conn.settimeout(5)
            assert conn.recv(64) == b"24:CONTENT_LENGTH"


@needs_defer_accept
def test_tcp_defer_accept_still_hands_over_a_silent_connection(
    listeners: list[Listener],
) -> None:
    # A peer that never sends must still reach the server (and its header
    # timeout), about a second later: not wait in the kernel for ever.
    listener = bind(parse_bind("127.0.0.1:0"), defer_accept=True)
    listeners.append(listener)
    with socket.create_connection(listener.sock.getsockname(), timeout=5):
        waited = _seconds_until_acceptable(listener, 10)
        assert waited is not None and 0.3 <= waited < 10


def test_tcp_without_defer_accept_hands_over_at_once(listeners: list[Listener]) -> None:
    listener = bind(parse_bind("127.0.0.1:0"))
    listeners.append(listener)
    if hasattr(socket, "TCP_DEFER_ACCEPT"):
        assert listener.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) == 0
    with socket.create_connection(listener.sock.getsockname(), timeout=5):
        waited = _seconds_until_acceptable(listener, 5)
        assert waited is not None and waited < 0.9


def test_tcp_hostname_is_resolved(listeners: list[Listener]) -> None:
    listener = bind(parse_bind("localhost:0"))
    listeners.append(listener)
    assert listener.server_name in ("127.0.0.1", "::1")
    assert listener.display.endswith(f":{listener.server_port}")
    _assert_accepts(listener)


@needs_ipv6
def test_ipv6_loopback(listeners: list[Listener]) -> None:
    listener = bind(parse_bind("[::1]:0"))
    listeners.append(listener)
    port = listener.sock.getsockname()[1]
    assert listener.sock.family == socket.AF_INET6
    assert listener.display == f"[::1]:{port}"
    assert listener.server_name == "::1"
    assert listener.server_port == str(port)
    assert listener.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    _assert_accepts(listener)


@needs_ipv6
def test_ipv6_wildcard_is_ipv6_only(listeners: list[Listener]) -> None:
    # The kernel forces V6ONLY on sockets bound to ::1, so check on [::].
    listener = bind(parse_bind("[::]:0"))
    listeners.append(listener)
    assert listener.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    port = int(listener.server_port)
    assert listener.display == f"[::]:{port}"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as ipv4:
        ipv4.bind(("0.0.0.0", port))  # free: the IPv6 socket does not hold IPv4


def test_address_in_use(listeners: list[Listener]) -> None:
    first = bind(parse_bind("127.0.0.1:0"))
    listeners.append(first)
    port = int(first.server_port)
    with pytest.raises(BindError) as info:
        bind(parse_bind(f"127.0.0.1:{port}"))
    assert str(info.value) == f"cannot bind 127.0.0.1:{port}: address already in use"
    assert info.value.exit_code == 3
    _assert_accepts(first)


def test_address_not_available() -> None:
    # 192.0.2.0/24 is TEST-NET-1: never assigned to a local interface.
    with pytest.raises(BindError) as info:
        bind(parse_bind("192.0.2.1:0"))
    assert str(info.value) == "cannot bind 192.0.2.1:0: address not available"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may bind privileged ports")
def test_permission_denied() -> None:
    with pytest.raises(BindError) as info:
        bind(parse_bind("127.0.0.1:1"))
    assert str(info.value) == "cannot bind 127.0.0.1:1: permission denied"


def test_unresolvable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(BindError) as info:
        bind(parse_bind("nosuchhost.invalid:4000"))
    assert str(info.value) == (
        "cannot bind nosuchhost.invalid:4000: "
        "cannot resolve host 'nosuchhost.invalid' (Name or service not known)"
    )


# --------------------------------------------------------------------------- unix


@pytest.mark.parametrize("mode", [0o600, 0o660, 0o666])
def test_unix_mode_applied(tmp_path: Path, mode: int, listeners: list[Listener]) -> None:
    path = tmp_path / "app.sock"
    listener = bind(parse_bind(f"unix:{path}"), socket_mode=mode)
    listeners.append(listener)
    info = path.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == mode
    assert listener.display == f"unix:{path}"
    assert listener.server_name == "localhost"
    assert listener.server_port == "80"
    assert listener.sock.getblocking() is False
    _assert_accepts(listener)


def test_unix_relative_path_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listeners: list[Listener]
) -> None:
    monkeypatch.chdir(tmp_path)
    listener = bind(parse_bind("unix:rel.sock"))
    listeners.append(listener)
    assert listener.display == "unix:rel.sock"
    assert stat.S_ISSOCK((tmp_path / "rel.sock").stat().st_mode)


def test_unix_stale_socket_replaced(tmp_path: Path, listeners: list[Listener]) -> None:
    path = tmp_path / "app.sock"
    old_inode = _stale_socket(path)
    # A second link keeps the old inode alive, so its number cannot be reused.
    os.link(path, tmp_path / "old.sock")
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client,
        pytest.raises(ConnectionRefusedError),
    ):
        client.connect(str(path))
    listener = bind(parse_bind(f"unix:{path}"))
    listeners.append(listener)
    assert path.stat().st_ino != old_inode
    assert (tmp_path / "old.sock").stat().st_ino == old_inode
    _assert_accepts(listener)


def test_unix_live_socket_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen()
        inode = path.stat().st_ino
        with pytest.raises(BindError) as info:
            bind(parse_bind(f"unix:{path}"))
        assert str(info.value) == (
            f"address already in use: unix:{path} (another server is listening)"
        )
        assert path.stat().st_ino == inode
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))


def test_unix_regular_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    path.write_text("precious")
    with pytest.raises(BindError) as info:
        bind(parse_bind(f"unix:{path}"))
    assert "exists and is not a socket" in str(info.value)
    assert str(info.value).startswith(f"cannot bind unix:{path}: ")
    assert path.read_text() == "precious"


def test_unix_directory_at_path_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    path.mkdir()
    with pytest.raises(BindError, match="is not a socket"):
        bind(parse_bind(f"unix:{path}"))
    assert path.is_dir()


def test_unix_missing_directory(tmp_path: Path) -> None:
    directory = tmp_path / "missing"
    path = directory / "app.sock"
    with pytest.raises(BindError) as info:
        bind(parse_bind(f"unix:{path}"))
    assert str(info.value) == f"cannot bind unix:{path}: directory {directory} does not exist"
    assert not directory.exists()


def test_unix_close_unlinks_own_socket(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    listener = bind(parse_bind(f"unix:{path}"))
    assert path.exists()
    listener.close()
    assert not path.exists()
    assert listener.fileno() == -1
    listener.close()  # a second close is harmless
    assert not path.exists()


def test_unix_close_leaves_replacement_file(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    listener = bind(parse_bind(f"unix:{path}"))
    path.unlink()
    path.write_text("someone else's")
    listener.close()
    assert path.read_text() == "someone else's"


def test_unix_close_leaves_replacement_socket(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    first = bind(parse_bind(f"unix:{path}"))
    path.unlink()
    with bind(parse_bind(f"unix:{path}")) as second:
        inode = path.stat().st_ino
        first.close()
        assert path.stat().st_ino == inode
        _assert_accepts(second)
    assert not path.exists()


# --------------------------------------------------------------------------- fd://


def test_fd_adopts_listening_socket() -> None:
    original = socket.create_server(("127.0.0.1", 0))
    port = original.getsockname()[1]
    fd = original.detach()
    with bind(parse_bind(f"fd://{fd}")) as listener:
        assert listener.fileno() == fd
        assert listener.display == f"fd://{fd} (127.0.0.1:{port})"
        assert listener.server_name == "127.0.0.1"
        assert listener.server_port == str(port)
        assert listener.sock.getblocking() is False
        _assert_accepts(listener)
    with pytest.raises(OSError):
        os.fstat(fd)


def test_fd_adopts_unix_socket_and_never_unlinks(tmp_path: Path) -> None:
    path = tmp_path / "inherited.sock"
    original = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    original.bind(str(path))
    original.listen()
    fd = original.detach()
    with bind(parse_bind(f"fd://{fd}")) as listener:
        assert listener.display == f"fd://{fd} (unix:{path})"
        assert listener.server_name == "localhost"
        _assert_accepts(listener)
    assert stat.S_ISSOCK(path.stat().st_mode)


def test_fd_non_listening_socket_rejected() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        fd = sock.fileno()
        with pytest.raises(BindError) as info:
            bind(parse_bind(f"fd://{fd}"))
        assert str(info.value) == f"cannot adopt fd://{fd}: the socket is not listening"
        assert sock.fileno() == fd
        os.fstat(fd)  # still open: a rejected descriptor is left to its owner


def test_fd_datagram_socket_rejected() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fd = sock.fileno()
        with pytest.raises(BindError, match="not a stream socket"):
            bind(parse_bind(f"fd://{fd}"))
        os.fstat(fd)


def test_fd_not_a_socket_rejected() -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(BindError) as info:
            bind(parse_bind(f"fd://{read_end}"))
        assert str(info.value) == f"cannot adopt fd://{read_end}: it is not a socket"
        os.fstat(read_end)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_fd_closed_descriptor_rejected() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    with pytest.raises(BindError) as info:
        bind(parse_bind(f"fd://{read_end}"))
    assert str(info.value) == f"cannot adopt fd://{read_end}: bad file descriptor"


# --------------------------------------------------------------------------- bind_all


def test_bind_all_binds_every_address(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    bound = bind_all(["127.0.0.1:0", BindSpec("unix", path=str(path))], socket_mode=0o600)
    try:
        assert [listener.spec.kind for listener in bound] == ["tcp", "unix"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for listener in bound:
            _assert_accepts(listener)
    finally:
        for listener in bound:
            listener.close()
    assert not path.exists()


def test_bind_all_closes_earlier_listeners_on_failure(tmp_path: Path) -> None:
    first_path = tmp_path / "first.sock"
    bad_path = tmp_path / "missing" / "second.sock"
    with pytest.raises(BindError, match="does not exist"):
        bind_all([f"unix:{first_path}", f"unix:{bad_path}"])
    assert not first_path.exists()


def test_bind_all_releases_tcp_port_on_failure(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BindError):
        bind_all([f"127.0.0.1:{port}", f"unix:{tmp_path / 'missing' / 'x.sock'}"])
    with bind(parse_bind(f"127.0.0.1:{port}")) as again:
        assert again.server_port == str(port)


def test_bind_all_parses_before_binding(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    with pytest.raises(ConfigError):
        bind_all([f"unix:{path}", "not-an-address"])
    assert not path.exists()
