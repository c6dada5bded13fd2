"""The single backend: one request at a time, in the main thread."""

from __future__ import annotations

import logging
import os
import socket
import threading

from .base import Backend, Listening

__all__ = ["SingleBackend"]

log = logging.getLogger("scgiwsgi.error")


class SingleBackend(Backend):
    """Serves each connection inline; the simplest and lowest-overhead choice.

    A stop request during a request lets it finish; if it is still running
    after ``graceful_timeout`` a watchdog ends the process (only when the
    server runs in the main thread, i.e. owns the process; embedded in a
    thread, the stop waits for the request).
    """

    name = "single"
    multithread = False

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._busy = threading.Event()
        self._watchdog: threading.Timer | None = None

    def describe(self) -> str:
        return "single (one request at a time)"

    def wait_for_capacity(self) -> bool:
        return not self.stopping

    def dispatch(self, sock: socket.socket, listener: Listening) -> None:
        self._busy.set()
        try:
            self.handler.handle(sock, listener)
        finally:
            self._busy.clear()

    def shutdown(self) -> None:
        super().shutdown()
        if self._busy.is_set() and self._watchdog is None and self.may_exit_process:
            self._watchdog = threading.Timer(self.config.graceful_timeout, self._give_up)
            self._watchdog.daemon = True
            self._watchdog.start()

    def finish(self, timeout: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()

    def _give_up(self) -> None:
        log.error(
            "the request in progress did not finish within the graceful timeout (%ss); exiting",
            self.config.graceful_timeout,
        )
        for listener in self.listeners:
            listener.close()
        logging.shutdown()
        os._exit(0)
