"""Micro-benchmark of scgiwsgi's request path, without sockets.

Times each step of serving one realistic GET that nginx (stock
``scgi_params``) sends for a browser request, in microseconds per request
(best of ``--repeat`` timeit runs)::

    python bench/micro.py                 # the table
    python bench/micro.py --profile       # plus cProfile's top 15 of the handler path
    python bench/micro.py --profile 30    # top 30

Steps: parse the netstring (``RequestParser``), build the environ from the
head's decoded variables as the handler does (``environ_from_variables``; the
row keeps its old name ``build_environ``), ``start_response`` + ``write`` + ``finish`` into a list
(``Response``), the head encoding alone (``encode_response_head``), the
gateway with the benchmark's hello app (``run_application``), and the whole
``ConnectionHandler.handle`` over an in-memory socket: everything a worker
does per request except the system calls.

The code measured is this checkout's ``scgiwsgi/`` (the repository root is
put first on ``sys.path``), or with ``--rev GIT-REV`` that commit's.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent


def _source_path(argv: list[str]) -> str:
    # Decided before scgiwsgi is imported: the working tree, or an export.
    if "--rev" not in argv[:-1]:
        return str(BENCH_DIR.parent)
    sys.path.insert(0, str(BENCH_DIR))
    import atexit
    import shutil
    import tempfile

    from install import export_revision

    dest = tempfile.mkdtemp(prefix="scgiwsgi-src-")
    atexit.register(shutil.rmtree, dest, True)
    print(f"scgiwsgi/ at {export_revision(argv[argv.index('--rev') + 1], Path(dest))}")
    return dest


sys.path[:0] = [_source_path(sys.argv), str(BENCH_DIR)]

from apps import application  # noqa: E402

from scgiwsgi.config import Config  # noqa: E402
from scgiwsgi.environ import ServerInfo, build_environ  # noqa: E402
from scgiwsgi.gateway import run_application  # noqa: E402
from scgiwsgi.handler import ConnectionHandler  # noqa: E402
from scgiwsgi.protocol import RequestParser, encode_response_head  # noqa: E402
from scgiwsgi.response import FileWrapper, Response  # noqa: E402
from scgiwsgi.wsgi_input import BodyInput  # noqa: E402

# Captured from nginx 1.22 (Debian's scgi_params) for a Firefox-like GET:
# the variables in the order nginx sends them (the path renamed to reach the
# hello route of bench/apps.py).
NGINX_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"CONTENT_LENGTH", b"0"),
    (b"REQUEST_METHOD", b"GET"),
    (b"REQUEST_URI", b"/app/articles/hello?page=2&sort=date"),
    (b"QUERY_STRING", b"page=2&sort=date"),
    (b"CONTENT_TYPE", b""),
    (b"DOCUMENT_URI", b"/app/articles/hello"),
    (b"DOCUMENT_ROOT", b"/usr/share/nginx/html"),
    (b"SCGI", b"1"),
    (b"SERVER_PROTOCOL", b"HTTP/1.1"),
    (b"REQUEST_SCHEME", b"http"),
    (b"REMOTE_ADDR", b"127.0.0.1"),
    (b"REMOTE_PORT", b"35972"),
    (b"SERVER_PORT", b"8080"),
    (b"SERVER_NAME", b""),
    (b"HTTP_HOST", b"127.0.0.1"),
    (b"HTTP_USER_AGENT", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    (b"HTTP_ACCEPT", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (b"HTTP_ACCEPT_LANGUAGE", b"en-US,en;q=0.5"),
    (b"HTTP_ACCEPT_ENCODING", b"gzip, deflate, br"),
    (b"HTTP_REFERER", b"https://example.com/app/articles"),
    (
        b"HTTP_COOKIE",
        b"sessionid=3f8a9c2e7b1d4f6a8c0e2b4d6f8a0c2e; csrftoken=Zx81Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9L",
    ),
    (b"HTTP_UPGRADE_INSECURE_REQUESTS", b"1"),
    (b"HTTP_SEC_FETCH_DEST", b"document"),
    (b"HTTP_SEC_FETCH_MODE", b"navigate"),
    (b"HTTP_SEC_FETCH_SITE", b"same-origin"),
)
BLOCK = b"".join(name + b"\0" + value + b"\0" for name, value in NGINX_HEADERS)
REQUEST = b"%d:%s," % (len(BLOCK), BLOCK)
BODY = b"Hello, world!\n"
RESPONSE_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
SERVER = ServerInfo(server_name="127.0.0.1", server_port="4000", multiprocess=True)


class _Listener:
    display = "127.0.0.1:4000"
    server_name = "127.0.0.1"
    server_port = "4000"


class _MemorySocket:
    """Just enough of a connected socket for ``ConnectionHandler.handle``."""

    def __init__(self, request: bytes) -> None:
        self._incoming = request
        self.sent: list[bytes] = []

    def recv(self, size: int) -> bytes:
        data, self._incoming = self._incoming[:size], self._incoming[size:]
        return data

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)

    def getpeername(self) -> tuple[str, int]:
        return ("127.0.0.1", 35972)

    def __getattr__(self, name: str) -> Callable[..., None]:
        # settimeout, shutdown, setsockopt, close, setblocking...: no-ops, so
        # that a new call in the handler does not break the benchmark.
        return lambda *args, **kwargs: None


def parse() -> Any:
    parser = RequestParser()
    parser.receive_data(REQUEST)
    head = parser.next_event()
    parser.next_event()  # EndOfRequest
    return head


HEAD = parse()


_build: Callable[..., dict[str, Any]]
try:
    # What the handler calls; a --rev older than it has only build_environ,
    # which takes the head's raw headers.
    from scgiwsgi.environ import environ_from_variables
except ImportError:
    _build, _HEAD_FIELD = build_environ, "headers"
else:
    _build, _HEAD_FIELD = environ_from_variables, "variables"


def _environ_of(head: Any) -> dict[str, Any]:
    return _build(
        getattr(head, _HEAD_FIELD),
        server=SERVER,
        wsgi_input=BodyInput(lambda size: b"", 0),
        wsgi_errors=sys.stderr,
        file_wrapper=FileWrapper,
    )


def environ() -> dict[str, Any]:
    return _environ_of(HEAD)


ENVIRON = environ()


def respond() -> list[bytes]:
    out: list[bytes] = []
    response = Response(out.append)
    response.start_response("200 OK", list(RESPONSE_HEADERS))
    response.write(BODY)
    response.finish()
    return out


def encode_head() -> bytes:
    return encode_response_head("200 OK", RESPONSE_HEADERS)


def gateway() -> list[bytes]:
    out: list[bytes] = []
    run_application(application, ENVIRON, Response(out.append))
    return out


def pure_path() -> list[bytes]:
    env = _environ_of(parse())
    out: list[bytes] = []
    run_application(application, env, Response(out.append))
    return out


HANDLER = ConnectionHandler(application, Config(), multithread=False, multiprocess=True)


def handler() -> list[bytes]:
    sock = _MemorySocket(REQUEST)
    HANDLER.handle(sock, _Listener())  # type: ignore[arg-type]
    return sock.sent


STEPS: tuple[tuple[str, Callable[[], Any]], ...] = (
    (f"parse (RequestParser, {len(REQUEST)}-byte nginx request)", parse),
    ("build_environ", environ),
    ("Response: start_response + write + finish", respond),
    ("  of which encode_response_head", encode_head),
    ("run_application (hello app, Response to a list)", gateway),
    ("parse + environ + run_application", pure_path),
    ("ConnectionHandler.handle, in-memory socket", handler),
)


def _check() -> None:
    sent = b"".join(handler())
    if not sent.startswith(b"Status: 200 OK\r\n") or not sent.endswith(BODY):
        raise SystemExit(f"micro: the handler's answer is not the hello response: {sent[:200]!r}")


def _best_us(func: Callable[[], Any], repeat: int, seconds: float) -> float:
    timer = timeit.Timer(func)
    number, _ = timer.autorange()
    number = max(1, int(number * seconds / 0.2))
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def _profile(top: int, iterations: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(iterations):
        handler()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", metavar="GIT-REV", help="measure that commit's scgiwsgi/")
    parser.add_argument("--repeat", type=int, default=25, help="timeit repeats (best is kept)")
    parser.add_argument("--seconds", type=float, default=0.1, help="length of one repeat")
    parser.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=15,
        default=0,
        metavar="TOP",
        help="also print cProfile's TOP functions (default 15) of the handler path",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 50 or not 0.01 <= args.seconds <= 5:
        parser.error("--repeat must be 1..50 and --seconds 0.01..5")
    _check()
    print(f"Python {sys.version.split()[0]}; best of {args.repeat}; request {len(REQUEST)} bytes")
    results = [(label, _best_us(func, args.repeat, args.seconds)) for label, func in STEPS]
    whole = results[-1][1]
    width = max(len(label) for label, _ in results)
    print(f"{'step':{width}}  us/request  share of handle()")
    for label, micros in results:
        print(f"{label:{width}}  {micros:10.2f}  {micros / whole:8.0%}")
    if args.profile:
        print(_profile(args.profile, iterations=20000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
