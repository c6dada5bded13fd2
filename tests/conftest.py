"""Shared fixtures: live scgiwsgi servers on loopback TCP and unix sockets.

The ``serve`` factory starts ``WSGIServer(app, bind=[...], **options)`` in a
background thread, binding port 0 and/or a unix socket in a short temporary
directory, and returns a :class:`RunningServer` whose ``addresses`` are the
real ones.  At teardown every server is shut down and its thread joined with
a timeout; a server that does not stop, a ``serve_forever`` that raised, or
a worker thread left running fails the test.

``transport`` (tcp, unix) and ``backend`` (single, threaded) are
parametrized fixtures; ``live`` is ``serve`` bound to both, so a test that
asks for ``live`` runs once per transport and backend.

Caution: the single backend ends the whole process (``os._exit``) when a
request outlives ``graceful_timeout`` after shutdown, and here that process
is pytest.  Let every request of a single-backend server finish before the
test ends.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from scgiwsgi import WSGIServer
from scgiwsgi.gateway import WSGIApp

STOP_TIMEOUT = 10.0
"""Seconds a server gets to leave serve_forever() after shutdown()."""
WORKER_EXIT_TIMEOUT = 5.0
"""Seconds the server's worker threads get to exit after serve_forever()."""
IO_TIMEOUT = 10.0
"""Default bound on every socket operation of the raw-wire helpers."""

TRANSPORTS = ("tcp", "unix")
BACKENDS = ("single", "threaded")


class RunningServer:
    """A live server in a background thread; see :func:`serve`."""

    def __init__(self, server: WSGIServer, unix_dir: Path) -> None:
        self.server = server
        self.unix_dir = unix_dir
        self.error: BaseException | None = None
        self.returned = threading.Event()
        self.thread = threading.Thread(target=self._run, name="scgiwsgi-test-serve", daemon=True)
        self._addresses: list[str] = []

    @property
    def addresses(self) -> list[str]:
        """Every bound address (``127.0.0.1:PORT``, ``unix:/path``), kept after the stop."""
        return self._addresses

    @property
    def address(self) -> str:
        """The first bound address."""
        return self._addresses[0]

    def start(self) -> None:
        self.server.bind()
        self._addresses = list(self.server.addresses)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.server.serve_forever()
        except BaseException as exc:  # reported at stop()
            self.error = exc
        finally:
            self.returned.set()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """shutdown(), join the thread; fail if it does not stop in ``timeout``."""
        self.server.shutdown()
        self.join(timeout)

    def join(self, timeout: float = STOP_TIMEOUT) -> None:
        """Join the serving thread and the server's workers, failing on leftovers."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            pytest.fail(f"server on {self.addresses} did not stop within {timeout}s")
        if self.error is not None:
            raise AssertionError(f"serve_forever() raised {self.error!r}") from self.error
        self._join_workers()

    def _join_workers(self) -> None:
        # A worker abandoned after graceful_timeout is left running by design;
        # the test must have let its request end, so it must exit soon.  The
        # pool is private; a backend without one has nothing to join here.
        threads: list[threading.Thread] = getattr(self.server._backend, "_threads", [])
        deadline = time.monotonic() + WORKER_EXIT_TIMEOUT
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
            if thread.is_alive():
                pytest.fail(f"server thread {thread.name} still running after the server stopped")


class ServeFactory(Protocol):
    def __call__(
        self,
        app: WSGIApp | None,
        *,
        transport: str = ...,
        backend: str = ...,
        **options: Any,
    ) -> RunningServer: ...


class LiveFactory(Protocol):
    def __call__(self, app: WSGIApp | None, **options: Any) -> RunningServer: ...


@pytest.fixture
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeFactory]:
    """Factory: ``serve(app, transport="tcp"|"unix"|"both", backend=..., **options)``.

    ``options`` go to :class:`WSGIServer` (``threads``, ``script_name``...);
    passing ``bind`` overrides ``transport``.  Unix sockets live in a short
    temporary directory (``sun_path`` is limited to 107 bytes).
    """
    servers: list[RunningServer] = []
    crashes = _CrashRecorder()
    logger = logging.getLogger("scgiwsgi")
    logger.addHandler(crashes)

    def factory(
        app: WSGIApp | None,
        *,
        transport: str = "tcp",
        backend: str = "threaded",
        **options: Any,
    ) -> RunningServer:
        unix_dir = tmp_path_factory.mktemp("s", numbered=True)
        bind = options.pop("bind", None) or _bind_for(transport, unix_dir)
        running = RunningServer(WSGIServer(app, bind=bind, backend=backend, **options), unix_dir)
        running.start()
        servers.append(running)
        return running

    try:
        yield factory
    finally:
        logger.removeHandler(crashes)
    for running in servers:
        running.server.shutdown()
    failures: list[str] = []
    for running in servers:
        try:
            running.join()
        except BaseException as exc:  # stop every server before failing
            failures.append(str(exc))
    failures.extend(crashes.messages)
    if failures:
        pytest.fail("; ".join(failures))


class _CrashRecorder(logging.Handler):
    """Collects the handler's last-resort "unexpected error" log records.

    That record means an exception escaped the request pipeline: a server
    bug, whatever the test itself checks.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "unexpected error" in record.getMessage():
            detail = f" ({record.exc_info[1]!r})" if record.exc_info else ""
            self.messages.append(f"server crash logged: {record.getMessage()}{detail}")


def _bind_for(transport: str, unix_dir: Path) -> list[str]:
    unix = f"unix:{unix_dir / 'scgi.sock'}"
    binds = {"tcp": ["127.0.0.1:0"], "unix": [unix], "both": ["127.0.0.1:0", unix]}
    if transport not in binds:
        raise ValueError(f"unknown transport {transport!r}")
    return binds[transport]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """``tcp`` or ``unix``."""
    return str(request.param)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``single`` or ``threaded``."""
    return str(request.param)


@pytest.fixture
def live(serve: ServeFactory, transport: str, backend: str) -> LiveFactory:
    """``serve`` over the parametrized transport and backend."""

    def factory(app: WSGIApp | None, **options: Any) -> RunningServer:
        return serve(app, transport=transport, backend=backend, **options)

    return factory


@pytest.fixture
def scgi_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """``caplog`` capturing the ``scgiwsgi`` loggers from INFO.

    Propagation is forced on: :func:`scgiwsgi.logs.configure_error_log`
    (run by CLI tests in this process) turns it off.
    """
    logger = logging.getLogger("scgiwsgi")
    saved = logger.propagate
    logger.propagate = True
    caplog.set_level(logging.INFO, logger="scgiwsgi")
    try:
        yield caplog
    finally:
        logger.propagate = saved


# -- raw-wire helpers -----------------------------------------------------------


def connect(address: str, timeout: float = IO_TIMEOUT) -> socket.socket:
    """A connected blocking socket to ``127.0.0.1:PORT`` or ``unix:/path``."""
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(address[len("unix:") :])
        except BaseException:
            sock.close()
            raise
        return sock
    host, _, port = address.rpartition(":")
    return socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)


def recv_all(sock: socket.socket, timeout: float = IO_TIMEOUT) -> tuple[bytes, bool]:
    """Everything until EOF within ``timeout`` seconds, and whether it ended in a reset.

    Raises TimeoutError when the peer neither closes nor resets in time.
    """
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no EOF within {timeout}s ({sum(map(len, chunks))} bytes read)")
        sock.settimeout(remaining)
        try:
            data = sock.recv(256 * 1024)
        except ConnectionResetError:
            return b"".join(chunks), True
        if not data:
            return b"".join(chunks), False
        chunks.append(data)


def stalled_request(address: str, data: bytes, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send ``data``, which never completes a request, and read until the server closes.

    Returns what the server sent and how many seconds it kept the connection.
    """
    started = time.monotonic()
    with connect(address) as sock:
        sock.sendall(data)
        raw, _ = recv_all(sock, timeout)
    return raw, time.monotonic() - started


def exchange(address: str, raw: bytes, timeout: float = IO_TIMEOUT) -> tuple[bytes, bool]:
    """Send ``raw`` (never half-closing, like a front end) and read to EOF."""
    with connect(address, timeout) as sock:
        with contextlib.suppress(ConnectionError):
            sock.sendall(raw)
        return recv_all(sock, timeout)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def unix_path(address: str) -> str | None:
    """The file path of a ``unix:/path`` address, else None."""
    return address[len("unix:") :] if address.startswith("unix:") else None


__all__ = [
    "BACKENDS",
    "IO_TIMEOUT",
    "TRANSPORTS",
    "LiveFactory",
    "RunningServer",
    "ServeFactory",
    "connect",
    "exchange",
    "recv_all",
    "unix_path",
    "wait_for",
]
