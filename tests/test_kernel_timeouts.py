"""Served connections are blocking sockets with the kernel's timeouts.

The handler sets SO_RCVTIMEO/SO_SNDTIMEO on each listening socket once, and
relies on Linux TCP connections inheriting them; other sockets (unix, and
the first connection of each listener) get them one by one.  These tests
check the kernel behaviour relied on, and that every connection, first or
later, TCP or unix, is still cut off by ``body_timeout``.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import reliability_apps
from conftest import ServeFactory, connect, recv_all, stalled_request

from scgiwsgi.client import request
from scgiwsgi.gateway import WSGIApp
from scgiwsgi.protocol import encode_request

_STALLED_BODY = encode_request({"REQUEST_URI": "/echo", "REQUEST_METHOD": "POST"}, b"0123456789")[
    :-7
]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux kernel behaviour")
def test_linux_tcp_connections_inherit_the_listeners_timeouts() -> None:
    timeval = struct.pack("@ll", 7, 0)  # whole seconds: the kernel rounds to ticks
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        listener.listen()
        with socket.create_connection(listener.getsockname()):
            conn, _ = listener.accept()
            with conn:
                for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
                    raw = conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("@ll"))
                    assert struct.unpack("@ll", raw) == (7, 0)
                assert conn.gettimeout() is None


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_every_connection_is_cut_off_by_the_body_timeout(
    serve: ServeFactory, transport: str
) -> None:
    server = serve(reliability_apps.app, transport=transport, backend="single", body_timeout=0.5)
    for attempt in range(3):  # the first connection of a listener, then inherited ones
        raw, took = stalled_request(server.address, _STALLED_BODY)
        assert b"Status: 200" not in raw
        assert 0.4 < took < 3.0, f"attempt {attempt}: stalled body cut off after {took:.2f}s"


def test_an_application_default_timeout_does_not_replace_body_timeout(
    serve: ServeFactory,
) -> None:
    # socket.setdefaulttimeout() (some apps call it for their own clients)
    # also reaches accepted sockets; the server keeps its own body_timeout.
    server = serve(reliability_apps.app, backend="single", body_timeout=5.0)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(0.2)
    try:
        with connect(server.address) as sock:
            request = encode_request(
                {"REQUEST_URI": "/echo", "REQUEST_METHOD": "POST"}, b"0123456789"
            )
            sock.sendall(request[:-5])
            time.sleep(0.6)  # three default timeouts, well within body_timeout
            sock.sendall(request[-5:])
            raw, _ = recv_all(sock, timeout=5.0)
    finally:
        socket.setdefaulttimeout(previous)
    assert raw.startswith(b"Status: 200"), raw[:200]
    assert raw.endswith(b"0123456789")


_BIG = 32 * 1024 * 1024  # far beyond what the socket buffers of both ends hold


def _big_app(file_path: str) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/small":
            start_response("200 OK", [("Content-Length", "5")])
            return [b"small"]
        start_response("200 OK", [("Content-Length", str(_BIG))])
        if path == "/file":
            return environ["wsgi.file_wrapper"](open(file_path, "rb"))
        return [b"x" * _BIG]

    return app


@pytest.mark.parametrize("path", ["/list", "/file"])
def test_a_front_end_that_stops_reading_is_cut_off_by_the_body_timeout(
    serve: ServeFactory, tmp_path: Path, path: str
) -> None:
    # sendall waits under SO_SNDTIMEO; sendfile under CPython's timeout
    # (socket.sendfile would wait forever on a blocking socket).
    big_file = tmp_path / "big"
    with big_file.open("wb") as handle:
        handle.truncate(_BIG)
    server = serve(_big_app(str(big_file)), backend="single", body_timeout=0.5)
    started = time.monotonic()
    with connect(server.address) as stalled:
        stalled.sendall(encode_request({"REQUEST_URI": path}))
        # Never read: the only worker must give up and serve the next one.
        answer = request(server.address, path="/small", timeout=10.0)
        took = time.monotonic() - started
    assert answer.status == 200
    assert answer.body == b"small"
    assert 0.4 < took < 5.0, f"the stalled response held the worker for {took:.2f}s"
