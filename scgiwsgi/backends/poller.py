"""Readiness polling for the accept loop: epoll on Linux, ``selectors`` elsewhere.

Strategy: prefork workers all wait on the same listening sockets.  With a
plain registration the kernel wakes every waiting worker for each new
connection; all but one find nothing to accept (the thundering herd), and
with N idle workers a connection costs N wake-ups.  On Linux the listening
sockets are registered with ``EPOLLEXCLUSIVE``, so a connection wakes one
waiting worker.  A worker that is busy is not waiting, and the kernel passes
the wake-up to one that is.

The loop only ever waits for readability and keeps one object per file
descriptor, so this interface is smaller than :mod:`selectors`' and costs
less per wait.
"""

from __future__ import annotations

import contextlib
import errno
import select
import selectors
from typing import Protocol

__all__ = ["Poller", "new_poller"]


class Poller(Protocol):
    """Waits until registered file descriptors are readable."""

    def register(self, fd: int, data: object, *, exclusive: bool = False) -> None:
        """Watch ``fd``; :meth:`poll` reports it by ``data``.

        ``exclusive`` asks that one readiness event wake only one of the
        processes waiting on ``fd`` (for listening sockets).
        """

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd`` (which may have been closed since)."""

    def poll(self, timeout: float | None) -> list[object]:
        """The ``data`` of every readable ``fd``; waits up to ``timeout`` (None: forever)."""

    def close(self) -> None:
        """Release the poller."""


class _EpollPoller:
    __slots__ = ("_data", "_epoll", "_exclusive")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._data: dict[int, object] = {}
        self._exclusive: int = getattr(select, "EPOLLEXCLUSIVE", 0)

    def register(self, fd: int, data: object, *, exclusive: bool = False) -> None:
        flags = select.EPOLLIN | (self._exclusive if exclusive else 0)
        try:
            self._epoll.register(fd, flags)
        except OSError as exc:
            if not (flags & self._exclusive and exc.errno == errno.EINVAL):
                raise
            # A kernel before 4.5 rejects the flag: every waiter wakes.
            self._exclusive = 0
            self._epoll.register(fd, select.EPOLLIN)
        self._data[fd] = data

    def unregister(self, fd: int) -> None:
        del self._data[fd]
        # As selectors does: an fd closed since registration is already gone
        # from this process (EBADF), or was reused (ENOENT).
        with contextlib.suppress(OSError):
            self._epoll.unregister(fd)

    def poll(self, timeout: float | None) -> list[object]:
        # An fd closed while registered stays in the epoll set as long as
        # another process holds its socket (a shared listener): skip it.
        data = self._data
        events = self._epoll.poll(-1 if timeout is None else timeout)
        return [data[fd] for fd, _ in events if fd in data]

    def close(self) -> None:
        self._epoll.close()


class _SelectorPoller:
    __slots__ = ("_selector",)

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    def register(self, fd: int, data: object, *, exclusive: bool = False) -> None:
        self._selector.register(fd, selectors.EVENT_READ, data)

    def unregister(self, fd: int) -> None:
        self._selector.unregister(fd)

    def poll(self, timeout: float | None) -> list[object]:
        return [key.data for key, _ in self._selector.select(timeout)]

    def close(self) -> None:
        self._selector.close()


def new_poller() -> Poller:
    """An epoll poller where the platform has epoll, else a :mod:`selectors` one."""
    if hasattr(select, "epoll"):
        return _EpollPoller()
    return _SelectorPoller()
