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


def test_one_client_at_a_time_rarely_meets_an_empty_queue() -> None:
    # After each request the loop tries accept() on the chance that a
    # connection is queued; with one client at a time none ever is, and each
    # failed try costs an exception.  The tries back off (1, 2, 4... up to 16
    # requests skip them), so 34 requests make 5 of them; every request used to.
    # The client pauses between requests so that the loop's try comes first.
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
    assert 1 <= counting.empty_accepts <= 8
