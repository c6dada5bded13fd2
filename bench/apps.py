"""The WSGI application every peer serves in the benchmark.

One callable, ``application``, dispatches on the last segment of the request
path, so each server runs the same code for every scenario:

``/hello``
    14 bytes with a Content-Length.
``/post``
    Reads the whole body with ``read(CONTENT_LENGTH)`` (not ``read()``: flup's
    input waits for an EOF that nginx never sends) and answers its size.
``/chunks``
    1 MiB as 16 chunks of 64 KiB from a generator.
``/file``
    The file named by ``SCGIWSGI_BENCH_FILE`` (10 MiB) through
    ``wsgi.file_wrapper`` when the server offers one, else read in 64 KiB
    blocks.

The dispatch reads ``REQUEST_URI`` first (nginx sends it over SCGI; servers
disagree on PATH_INFO without a mount prefix), then ``PATH_INFO``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

HELLO = b"Hello, world!\n"
CHUNK = b"x" * (64 * 1024)
CHUNK_COUNT = 16
FILE_ENV = "SCGIWSGI_BENCH_FILE"
BLOCK_SIZE = 64 * 1024

StartResponse = Callable[..., Any]


def _hello(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))])
    return [HELLO]


def _post(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    received = 0
    while received < length:
        data = stream.read(length - received)
        if not data:
            break
        received += len(data)
    body = str(received).encode("ascii")
    status = "200 OK" if received == length else "400 Bad Request"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _chunks(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    size = len(CHUNK) * CHUNK_COUNT
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
    )
    return _repeat(CHUNK, CHUNK_COUNT)


def _repeat(chunk: bytes, count: int) -> Iterator[bytes]:
    for _ in range(count):
        yield chunk


def _file(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = os.environ[FILE_ENV]
    handle = open(path, "rb")  # noqa: SIM115 - the server closes it through the wrapper
    size = os.fstat(handle.fileno()).st_size
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
    )
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(handle, BLOCK_SIZE)  # type: ignore[no-any-return]
    return _read_blocks(handle)


def _read_blocks(handle: Any) -> Iterator[bytes]:
    try:
        while block := handle.read(BLOCK_SIZE):
            yield block
    finally:
        handle.close()


def _not_found(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
    return []


ROUTES = {"hello": _hello, "post": _post, "chunks": _chunks, "file": _file}


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Dispatch to the scenario named by the last path segment."""
    path = environ.get("REQUEST_URI") or environ.get("PATH_INFO") or ""
    name = path.partition("?")[0].rpartition("/")[2]
    return ROUTES.get(name, _not_found)(environ, start_response)
