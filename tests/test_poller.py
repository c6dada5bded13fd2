"""The accept loop's readiness poller (scgiwsgi/backends/poller.py)."""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator

import pytest

from scgiwsgi.backends import poller as poller_module
from scgiwsgi.backends.poller import Poller


@pytest.fixture(params=["default", "selectors"])
def poller(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Poller]:
    """The platform's poller, and the portable one every platform could use."""
    if request.param == "selectors":
        monkeypatch.delattr(select, "epoll", raising=False)
    made = poller_module.new_poller()
    try:
        yield made
    finally:
        made.close()


def test_poll_reports_readable_fds_by_their_data(poller: Poller) -> None:
    a_reader, a_writer = socket.socketpair()
    b_reader, b_writer = socket.socketpair()
    with a_reader, a_writer, b_reader, b_writer:
        poller.register(a_reader.fileno(), "a")
        poller.register(b_reader.fileno(), "b")
        assert poller.poll(0) == []
        b_writer.send(b"x")
        assert poller.poll(1.0) == ["b"]
        a_writer.send(b"x")
        assert sorted(poller.poll(1.0)) == ["a", "b"]  # type: ignore[type-var]
        poller.unregister(b_reader.fileno())
        assert poller.poll(1.0) == ["a"]


def test_an_exclusive_listener_is_reported_when_a_connection_waits(poller: Poller) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        poller.register(listener.fileno(), "listener", exclusive=True)
        assert poller.poll(0) == []
        with socket.create_connection(listener.getsockname()[:2], timeout=5):
            assert poller.poll(1.0) == ["listener"]
        poller.unregister(listener.fileno())


def test_unregister_after_the_fd_was_closed(poller: Poller) -> None:
    reader, writer = socket.socketpair()
    with writer:
        fd = reader.fileno()
        poller.register(fd, "gone")
        reader.close()
        poller.unregister(fd)
        assert poller.poll(0) == []


def test_an_fd_closed_while_another_holds_its_socket_is_not_reported(poller: Poller) -> None:
    # A prefork worker that closes its copy of a shared listener: the epoll
    # set keeps the registration while a sibling holds the socket.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        copy = os.dup(listener.fileno())
        poller.register(copy, "closed copy", exclusive=True)
        os.close(copy)
        poller.unregister(copy)
        with socket.create_connection(listener.getsockname()[:2], timeout=5):
            assert poller.poll(0.2) == []
