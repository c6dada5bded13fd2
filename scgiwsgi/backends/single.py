"""The single backend: one request at a time, in the loop's own thread."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from ..handler import Pending
from .base import Backend

__all__ = ["SingleBackend"]

log = logging.getLogger("scgiwsgi.error")


class SingleBackend(Backend):
    """Serves each complete request inline; the lowest-overhead choice.

    Headers still arrive through the shared loop, so a slow peer never holds
    the process.  A stop request during a request lets it finish; if it is
    still running after ``graceful_timeout`` a watchdog ends the process (only
    when the server runs in the main thread, i.e. owns the process; embedded
    in a thread, the stop waits for the request).
    """

    name = "single"
    multithread = False
    serves_inline = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A plain flag: only this loop's thread writes it; a signal handler
        # or another thread only reads it (threading.Event costs a lock).
        self._busy = False
        self._watchdog: threading.Timer | None = None

    def describe(self) -> str:
        return "single (one request at a time)"

    def free_workers(self) -> int:
        return 0 if self._busy else 1

    def has_capacity(self) -> bool:
        return not self._busy

    def dispatch(self, pending: Pending) -> None:
        self._busy = True
        try:
            self.handler.serve(pending)
        finally:
            self._busy = False

    def shutdown(self) -> None:
        super().shutdown()
        if self._busy and self._watchdog is None and self.may_exit_process:
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
