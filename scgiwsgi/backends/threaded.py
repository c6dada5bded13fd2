"""The threaded backend: a fixed pool of worker threads."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence

from ..config import Config
from ..handler import Pending
from .base import Backend, Handler, Listening

__all__ = ["ThreadedBackend"]

log = logging.getLogger("scgiwsgi.error")


class ThreadedBackend(Backend):
    """A bounded pool of ``config.thread_count`` threads.

    The loop accepts a connection only while a thread is free, and hands a
    thread only connections whose header is complete; excess connections
    wait in the kernel's listen queue.
    """

    name = "threaded"
    multithread = True

    def __init__(self, listeners: Sequence[Listening], handler: Handler, config: Config) -> None:
        super().__init__(listeners, handler, config)
        self._size = config.thread_count
        self._jobs: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._active = 0
        self._idle = threading.Condition()

    @classmethod
    def is_multithread(cls, config: Config) -> bool:
        return config.thread_count > 1

    def describe(self) -> str:
        threads = self.config.thread_count
        return f"threaded ({threads} thread{'s' if threads > 1 else ''})"

    def start(self) -> None:
        for number in range(self.config.thread_count):
            thread = threading.Thread(
                target=self._work, name=f"scgiwsgi-worker-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def free_workers(self) -> int:
        return self._size - self._active

    def dispatch(self, pending: Pending) -> None:
        with self._idle:
            self._active += 1
        self._jobs.put(pending)

    def finish(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            abandoned = self._active
        if abandoned:
            log.warning(
                "%d request(s) still running after the graceful timeout (%ss) are abandoned",
                abandoned,
                timeout,
            )
        for _ in self._threads:
            self._jobs.put(None)
        if not abandoned:
            for thread in self._threads:
                thread.join(timeout=1.0)

    def _work(self) -> None:
        while (pending := self._jobs.get()) is not None:
            try:
                self.handler.serve(pending)
            finally:
                with self._idle:
                    self._active -= 1
                    self._idle.notify_all()
                self.capacity_freed()
