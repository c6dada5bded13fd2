"""WSGI applications for the reliability suites (regressions, integrity, soak).

Servers load them in-process (imported) or by file path in child processes
(``tests/reliability_apps.py:NAME``), so this module imports the standard
library only.

Routes of :func:`app` (the body is small unless said otherwise):

==============  ==============================================================
``/``           ``ok <pid>``
``/sleep``      sleeps ``?S`` seconds (default 1), then ``slept <pid>``
``/hang``       stuck in :func:`hang_in_the_app` for ``?S`` seconds (default 60)
``/echo``       the body, read with ``wsgi.input.read()`` (no size)
``/raise``      raises before ``start_response``
``/environ``    JSON of the CGI variables named in ``?NAME,NAME`` plus
                ``wsgi.url_scheme``; PATH_INFO and SCRIPT_NAME come back as
                latin-1 code points (``\\u00c3``), so the test sees raw bytes
==============  ==============================================================

:func:`sha256_echo` reads the whole body with the method named in the query
and answers ``{"sha256": ..., "bytes": ...}``.

When ``RELIABILITY_MARKERS`` names a directory, importing the module touches
``imported.<pid>`` there and ``/sleep`` touches ``sleeping.<pid>``, so a
test can wait until each worker loaded the app or a request is running.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]


def _mark(name: str) -> None:
    # Lets a test wait for a state (a worker loaded the app, a request is
    # running) instead of sleeping for a guessed time.
    directory = os.environ.get("RELIABILITY_MARKERS")
    if directory:
        with open(os.path.join(directory, f"{name}.{os.getpid()}"), "wb"):
            pass


_mark("imported")


def _text(start_response: StartResponse, body: bytes, status: str = "200 OK") -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def hang_in_the_app(seconds: float) -> None:
    """Where a hung request sits; the stack-dump regression looks for this name."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)  # the hung request is here


def _seconds(environ: dict[str, Any], default: float) -> float:
    query = environ.get("QUERY_STRING", "")
    return float(query) if query else default


def _environ_report(environ: dict[str, Any]) -> bytes:
    names = [name for name in environ.get("QUERY_STRING", "").split(",") if name]
    report = {name: environ.get(name) for name in names}
    report["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
    return json.dumps(report).encode()


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The general-purpose application; see the module docstring for routes."""
    path = environ.get("PATH_INFO", "/")
    if path == "/sleep":
        _mark("sleeping")
        time.sleep(_seconds(environ, 1.0))
        return _text(start_response, f"slept {os.getpid()}".encode())
    if path == "/hang":
        hang_in_the_app(_seconds(environ, 60.0))
        return _text(start_response, b"woke up")
    if path == "/echo":
        return _text(start_response, environ["wsgi.input"].read())
    if path == "/raise":
        raise RuntimeError("the application failed on purpose")
    if path == "/environ":
        return _text(start_response, _environ_report(environ))
    return _text(start_response, f"ok {os.getpid()}".encode())


# -- upload integrity ---------------------------------------------------------

_READ_SIZE = 64 * 1024


def _chunks_read(stream: Any) -> Iterable[bytes]:
    while chunk := stream.read(_READ_SIZE):
        yield chunk


def _chunks_odd(stream: Any) -> Iterable[bytes]:
    # A size that never lines up with the server's 64 KiB receive size.
    while chunk := stream.read(8191):
        yield chunk


def _chunks_readinto(stream: Any) -> Iterable[bytes]:
    buffer = bytearray(100_003)
    while count := stream.readinto(buffer):
        yield bytes(buffer[:count])


def _chunks_readline(stream: Any) -> Iterable[bytes]:
    # Random bytes hold a newline every 256 bytes on average: many short lines.
    while line := stream.readline(70_000):
        yield line


def _chunks_iterate(stream: Any) -> Iterable[bytes]:
    yield from stream


READ_METHODS: dict[str, Callable[[Any], Iterable[bytes]]] = {
    "read": _chunks_read,
    "odd": _chunks_odd,
    "readinto": _chunks_readinto,
    "readline": _chunks_readline,
    "iterate": _chunks_iterate,
}
"""How :func:`sha256_echo` reads the body, chosen by the query string."""


def sha256_echo(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Hash the body read with ``READ_METHODS[QUERY_STRING]``; answer JSON."""
    method = READ_METHODS[environ.get("QUERY_STRING") or "read"]
    digest = hashlib.sha256()
    total = 0
    for chunk in method(environ["wsgi.input"]):
        digest.update(chunk)
        total += len(chunk)
    body = json.dumps({"sha256": digest.hexdigest(), "bytes": total}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


# -- soak ------------------------------------------------------------------------


def soak(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Small answers over the common paths: GET, POST echo, a 500, a generator."""
    path = environ.get("PATH_INFO", "/")
    if path == "/post":
        body = environ["wsgi.input"].read()
        return _text(start_response, hashlib.sha256(body).hexdigest().encode())
    if path == "/raise":
        raise RuntimeError("soak: the application failed on purpose")
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part %d\n" % number for number in range(8))
    return _text(start_response, b"hello soak " + environ.get("QUERY_STRING", "").encode())
