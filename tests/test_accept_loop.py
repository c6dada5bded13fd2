"""The shared accept loop (scgiwsgi/backends/base.py), driven directly."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from scgiwsgi.backends.base import FRESH_SECONDS
from scgiwsgi.backends.single import SingleBackend
from scgiwsgi.config import Config
from scgiwsgi.handler import ConnectionHandler
from scgiwsgi.protocol import encode_request
from scgiwsgi.sockets import Listener, bind, parse_bind


def _hello(environ: dict[str, object], start_response: object) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "2")])  # type: ignore[operator]
    return [b"hi"]


@pytest.fixture
def sharing_worker() -> Iterator[tuple[Listener, threading.Thread]]:
    """A single backend set up as in a prefork worker (siblings share its listener)."""
    config = Config()
    listener = bind(parse_bind("127.0.0.1:0"))
    handler = ConnectionHandler(_hello, config, multithread=False, multiprocess=True)
    backend = SingleBackend([listener], handler, config)
    backend.shares_listeners = True
    thread = threading.Thread(target=backend.serve_forever, daemon=True)
    thread.start()
    try:
        yield listener, thread
    finally:
        backend.shutdown()
        thread.join(10)


def _thread_cpu(thread: threading.Thread) -> float:
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def test_a_silent_new_connection_does_not_spin_the_loop(
    sharing_worker: tuple[Listener, threading.Thread],
) -> None:
    # A connection accepted before its header arrived reserves the worker
    # for FRESH_SECONDS; the loop must sleep through that, not poll.
    listener, thread = sharing_worker
    host, port = listener.sock.getsockname()[:2]
    silent = 10
    before = _thread_cpu(thread)
    for _ in range(silent):
        with socket.create_connection((host, port), timeout=5) as sock:
            time.sleep(FRESH_SECONDS * 2)
            sock.sendall(encode_request({"REQUEST_URI": "/"}))
            assert sock.recv(4096).startswith(b"Status: 200 OK")
    used = _thread_cpu(thread) - before
    # Spinning burns the whole fresh period of each connection (0.5 s here);
    # sleeping costs a few milliseconds.
    assert used < silent * FRESH_SECONDS / 4, f"loop used {used:.3f}s of CPU"


class _CountingListenSocket(socket.socket):
    """A listening socket that counts the accepts that found its queue empty."""

    empty_accepts = 0

    def _accept(self) -> tuple[int, object]:
        try:
            return super()._accept()  # type: ignore[misc, no-any-return]
        except BlockingIOError:
            self.empty_accepts += 1
            raise


def test_one_client_at_a_time_never_meets_an_empty_queue() -> None:
    # After each request the loop looks for a queued connection to accept
    # straight away; with one client at a time none ever is.  It asks
    # poll(2) first, so it never pays for an accept() that fails (an
    # exception each): until the probe, the tries backed off, and 34
    # requests made 5 of them; before that, every request made one.
    # The client pauses between requests so that the loop's look comes first.
    config = Config()
    listener = bind(parse_bind("127.0.0.1:0"))
    counting = _CountingListenSocket(fileno=listener.sock.detach())
    counting.setblocking(False)
    listener.sock = counting
    handler = ConnectionHandler(_hello, config, multithread=False, multiprocess=True)
    backend = SingleBackend([listener], handler, config)
    thread = threading.Thread(target=backend.serve_forever, daemon=True)
    thread.start()
    host, port = counting.getsockname()[:2]
    try:
        for _ in range(34):
            with socket.create_connection((host, port), timeout=5) as sock:
                sock.sendall(encode_request({"REQUEST_URI": "/"}))
                assert sock.recv(4096).startswith(b"Status: 200 OK")
            time.sleep(0.05)
    finally:
        backend.shutdown()
        thread.join(10)
    assert counting.empty_accepts == 0


def _served_in_order(targets: list[int]) -> list[str]:
    """Queue requests on two listeners while the first one runs; the URIs in the order served.

    A single backend listens on two sockets.  While its ``/first`` request
    (on listener 0) sleeps, one request ``/queued/N`` is queued on listener
    ``targets[N]`` for each N; every answer must be a 200.
    """
    config = Config()
    listeners = [bind(parse_bind("127.0.0.1:0")), bind(parse_bind("127.0.0.1:0"))]
    first_running = threading.Event()
    served: list[str] = []

    def slow_first(environ: dict[str, object], start_response: object) -> list[bytes]:
        served.append(str(environ["REQUEST_URI"]))
        if environ["REQUEST_URI"] == "/first":
            first_running.set()
            time.sleep(0.3)
        return _hello(environ, start_response)

    handler = ConnectionHandler(slow_first, config, multithread=False, multiprocess=True)
    backend = SingleBackend(listeners, handler, config)
    thread = threading.Thread(target=backend.serve_forever, daemon=True)
    thread.start()
    addresses = [listener.sock.getsockname()[:2] for listener in listeners]
    try:
        first = socket.create_connection(addresses[0], timeout=5)
        first.sendall(encode_request({"REQUEST_URI": "/first"}))
        assert first_running.wait(5)
        queued = []
        for index, target in enumerate(targets):
            sock = socket.create_connection(addresses[target], timeout=5)
            sock.sendall(encode_request({"REQUEST_URI": f"/queued/{index}"}))
            queued.append(sock)
        for sock in [first, *queued]:
            with sock:
                assert sock.recv(4096).startswith(b"Status: 200 OK")
    finally:
        backend.shutdown()
        thread.join(10)
    return served


def test_connections_queued_on_two_listeners_are_all_served() -> None:
    # The loop takes them back to back, each from the listener the probe
    # found ready.
    served = _served_in_order([index % 2 for index in range(6)])
    assert sorted(served) == ["/first"] + [f"/queued/{index}" for index in range(6)]


def test_a_busy_listener_does_not_starve_another() -> None:
    # Twelve connections queue on one listener, then one on the other; once
    # the first request ends, the burst takes from both listeners in turn.
    served = _served_in_order([0] * 12 + [1])
    assert len(served) == 14
    assert served.index("/queued/12") <= 3, served
