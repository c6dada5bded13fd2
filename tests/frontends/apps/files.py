"""Serves files with ``wsgi.file_wrapper``, for the offload tests.

``/files/NAME`` sends ``$SCGIWSGI_TEST_FILES/NAME``; ``/outside/NAME`` sends
``$SCGIWSGI_TEST_OUTSIDE/NAME`` (a directory that is not offloaded).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

ROOTS = {"files": "SCGIWSGI_TEST_FILES", "outside": "SCGIWSGI_TEST_OUTSIDE"}


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    _, kind, name = environ["PATH_INFO"].split("/", 2)
    path = os.path.join(os.environ[ROOTS[kind]], name)
    size = os.path.getsize(path)
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
    )
    wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](open(path, "rb"))  # noqa: SIM115
    return wrapper
