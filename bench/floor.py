"""The floor: the least a pure-Python prefork SCGI server can do per request.

Not a server to use: no limits, no timeouts, no validation of the request
or of the application's status and headers, no error handling beyond
closing the connection.  It exists so the benchmark can tell how much of
scgiwsgi's CPU per request is the price of Python itself (an interpreter
loop, a socket object, a dict, an app call) and how much is scgiwsgi's own
work on top (``floor`` in the tables of ``bench/run.py``).

Per request: ``accept``, ``recv`` until the header netstring and body are
in, one ``decode`` and ``split`` of the header block into the environ,
the app call, one ``sendall`` of head and body, ``close``::

    python bench/floor.py 127.0.0.1 4001 [WORKERS]
"""

from __future__ import annotations

import io
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _read_request(conn: socket.socket) -> tuple[str, bytes] | None:
    data = conn.recv(65536)
    colon = data.find(b":")
    while colon < 0:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
        colon = data.find(b":")
    length = int(data[:colon])
    while len(data) < colon + length + 2:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
    block = data[colon + 1 : colon + 1 + length].decode("latin-1")
    body = data[colon + 2 + length :]
    return block, body


def _serve_one(conn: socket.socket, app: WSGIApp, base: dict[str, Any]) -> None:
    request = _read_request(conn)
    if request is None:
        return
    block, body = request
    items = block.split("\0")
    environ = dict(base)
    environ.update(zip(items[0:-1:2], items[1::2], strict=False))
    wanted = int(environ["CONTENT_LENGTH"] or 0)
    while len(body) < wanted:
        more = conn.recv(65536)
        if not more:
            return
        body += more
    environ["wsgi.input"] = io.BytesIO(body)
    environ["PATH_INFO"] = environ.get("REQUEST_URI", "").partition("?")[0]
    answer: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        answer.append(f"Status: {status}\r\n")
        answer.extend(f"{name}: {value}\r\n" for name, value in headers)
        answer.append("\r\n")
        return None

    result = app(environ, start_response)
    try:
        chunks = list(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    conn.sendall("".join(answer).encode("latin-1") + b"".join(chunks))


def _worker(listener: socket.socket, app: WSGIApp) -> None:
    base = {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "SCRIPT_NAME": "",
    }
    while True:
        conn, _ = listener.accept()
        try:
            _serve_one(conn, app, base)
        except Exception as exc:  # the floor only survives: log and go on
            print(f"floor: {exc!r}", file=sys.stderr)
        finally:
            conn.close()


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from apps import application

    listener = socket.create_server((host, port), backlog=1024)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _worker(listener, application)
            os._exit(0)
        children.append(pid)
    # The parent waits; SIGTERM (from bench/harness.py) ends the whole group.
    for pid in children:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
