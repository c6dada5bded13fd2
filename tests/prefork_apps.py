"""The WSGI application that tests/test_prefork.py runs in ``--fork`` workers.

The server loads it as ``tests/prefork_apps.py:app``; the tests never import
it.  When ``PREFORK_MARKERS`` names a directory, the module touches
``imported.<pid>`` there when it is imported (in each worker without
``--preload``) and ``sleeping.<pid>`` when a slow request has started, so a
test can wait for a state instead of sleeping for a guessed time.

Routes (the body of each is small unless said otherwise):

=============  ==========================================================
``/``          the worker's pid; ``?S`` sleeps S seconds first
``/sleep``     sleeps ``?S`` seconds (default 1), then answers ``BIG_BODY``
``/hang``      stuck in :func:`hang_here` for ``?S`` seconds (for --timeout)
``/env``       JSON: pid, wsgi.multithread, wsgi.multiprocess, gc's frozen count
``/exit``      the worker ends with ``os._exit(3)``
``/segv``      the worker kills itself with SIGSEGV
=============  ==========================================================
"""

from __future__ import annotations

import gc
import json
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

BIG_BODY_SIZE = 256 * 1024


def big_body() -> bytes:
    """A body large enough to need many sends, with a checkable pattern."""
    return bytes(index % 251 for index in range(BIG_BODY_SIZE))


def _mark(name: str) -> None:
    directory = os.environ.get("PREFORK_MARKERS")
    if directory:
        Path(directory, f"{name}.{os.getpid()}").touch()


_mark("imported")


def hang_here(seconds: float) -> None:
    """Where a request sits too long; the timeout test looks for this line."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)  # the line the timeout stack dump must name


def _seconds(environ: dict[str, Any], default: float) -> float:
    query = environ.get("QUERY_STRING", "")
    return float(query) if query else default


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    content_type = "text/plain"
    if path == "/sleep":
        _mark("sleeping")
        time.sleep(_seconds(environ, 1.0))
        body = big_body()
    elif path == "/hang":
        hang_here(_seconds(environ, 60.0))
        body = b"woke up"
    elif path == "/env":
        report = {
            "pid": os.getpid(),
            "multithread": environ["wsgi.multithread"],
            "multiprocess": environ["wsgi.multiprocess"],
            "frozen_objects": gc.get_freeze_count(),
        }
        body = json.dumps(report).encode()
        content_type = "application/json"
    elif path == "/exit":
        os._exit(3)
    elif path == "/segv":
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(5)  # not reached: the signal ends the process
        body = b"survived SIGSEGV"
    else:
        time.sleep(_seconds(environ, 0.0))
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
